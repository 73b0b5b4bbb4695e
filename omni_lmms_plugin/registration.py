"""lmms-eval entry point. Imported on every lmms-eval start, so it imports neither torch nor transformers."""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_ID = "qwen2_5_omni_safe"
SIMPLE_CLASS_PATH = "omni_lmms_plugin.adapter.Qwen25OmniSafe"


def manifests() -> ModelManifest:
    """The manifest lmms-eval registers: a simple model whose class is imported only when the model is used."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=SIMPLE_CLASS_PATH)
