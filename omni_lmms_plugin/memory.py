"""Analytic peak-memory estimate for one prefill of the Qwen2.5-Omni thinker. Pure arithmetic, no torch.

The estimate is a sum of terms, each a byte count per unit of work, from the model's configuration:

- weights: parameters x bytes per parameter (read from the loaded model, or estimated from the config);
- vision stage: the vision tower's activations, linear in the patches of one encoding group
  (``vision_group_frames`` frames at a time; the tower never attends across 2-frame temporal grids);
- language stage: the KV cache of the whole sequence plus one decoder layer's working set per token; eager
  attention adds the ``heads x L^2`` score matrix (scores in the model dtype plus a float32 softmax);
- logits: ``vocab`` values per kept position (one with last-position logits, all L otherwise), plus a float32 copy.

Peak = weights + max(vision stage, language stage + KV cache, KV cache + logits) + a fixed allowance for the CUDA
context, allocator slack and the audio tower. The constants are derived from the architecture, not tuned on one GPU;
``benchmarks/gpu_memory.py`` compares them with measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ModelDims", "MemoryEstimate", "estimate_peak_memory", "GIB"]

GIB = 1024**3
_OVERHEAD_BYTES = 1 * GIB
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelDims:
    """The sizes of the thinker that memory depends on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    vision_hidden: int
    vision_intermediate: int
    parameters: int

    @classmethod
    def from_config(cls, config: Any, parameters: int | None = None) -> ModelDims:
        """Read the sizes from a ``Qwen2_5OmniThinkerConfig`` (or the full Omni config, whose ``thinker_config``
        holds them). ``parameters`` defaults to an estimate from the sizes."""
        config = getattr(config, "thinker_config", config)
        text = config.text_config
        vision = config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        dims = cls(
            hidden_size=text.hidden_size,
            num_layers=text.num_hidden_layers,
            num_heads=text.num_attention_heads,
            num_kv_heads=text.num_key_value_heads,
            head_dim=head_dim,
            intermediate_size=text.intermediate_size,
            vocab_size=text.vocab_size,
            vision_hidden=vision.hidden_size,
            vision_intermediate=vision.intermediate_size,
            parameters=parameters or 0,
        )
        if parameters is None:
            dims = _with_parameters(dims, config)
        return dims


def _with_parameters(dims: ModelDims, config: Any) -> ModelDims:
    """Parameter count from the sizes: embeddings + head, decoder layers, vision and audio towers."""
    h, i = dims.hidden_size, dims.intermediate_size
    attention = h * dims.num_heads * dims.head_dim * 2 + h * dims.num_kv_heads * dims.head_dim * 2
    layer = attention + 3 * h * i
    text_params = 2 * dims.vocab_size * h + dims.num_layers * layer
    vision = config.vision_config
    vision_layer = 4 * dims.vision_hidden**2 + 3 * dims.vision_hidden * dims.vision_intermediate
    vision_params = vision.depth * vision_layer
    audio = config.audio_config
    audio_params = audio.encoder_layers * (4 * audio.d_model**2 + 2 * audio.d_model * audio.encoder_ffn_dim)
    return ModelDims(**{**dims.__dict__, "parameters": text_params + vision_params + audio_params})


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each term and the predicted peak, all for batch 1."""

    weights: int
    vision_stage: int
    kv_cache: int
    language_stage: int
    logits: int
    overhead: int
    peak: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def estimate_peak_memory(
    dims: ModelDims,
    *,
    sequence_length: int,
    vision_patches: int,
    vision_group_patches: int | None = None,
    attention: str = "sdpa",
    dtype: str = "bfloat16",
    last_position_logits: bool = True,
    max_new_tokens: int = 0,
    weight_bytes: int | None = None,
) -> MemoryEstimate:
    """Predicted peak device memory of one request: ``sequence_length`` tokens in, ``max_new_tokens`` out, with
    ``vision_patches`` ViT patches (4 per video token) encoded ``vision_group_patches`` at a time."""
    width = _DTYPE_BYTES.get(dtype)
    if width is None:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(_DTYPE_BYTES)}")
    weights = weight_bytes if weight_bytes is not None else dims.parameters * width
    total_tokens = sequence_length + max_new_tokens

    group = min(vision_patches, vision_group_patches or vision_patches)
    # Per patch: residual, norm and attention output (4 x width), q/k/v (3 x width), MLP gate/up/act (3 x inner),
    # and the float32 pixel patch itself (3 channels x 2 frames x 14 x 14).
    per_patch = width * (7 * dims.vision_hidden + 3 * dims.vision_intermediate) + 4 * 3 * 2 * 14 * 14
    # The merged embeddings of groups already encoded stay alive: one LLM-width vector per 4 patches.
    vision_stage = group * per_patch + vision_patches // 4 * dims.hidden_size * width

    kv_cache = total_tokens * 2 * dims.num_layers * dims.num_kv_heads * dims.head_dim * width
    # One decoder layer at a time: residual + normed input + attention output + MLP (gate, up, activation product)
    # and q/k/v projections; the inputs_embeds of the whole sequence stay alive beside them.
    per_token = width * (
        4 * dims.hidden_size + 3 * dims.intermediate_size + (dims.num_heads + 2 * dims.num_kv_heads) * dims.head_dim
    )
    language_stage = sequence_length * per_token
    if attention == "eager":
        language_stage += dims.num_heads * sequence_length**2 * (width + 4)

    kept = 1 if last_position_logits else sequence_length
    logits = kept * dims.vocab_size * (width + 4)

    peak = weights + max(vision_stage, language_stage + kv_cache, kv_cache + logits) + _OVERHEAD_BYTES
    return MemoryEstimate(
        weights=weights,
        vision_stage=vision_stage,
        kv_cache=kv_cache,
        language_stage=language_stage,
        logits=logits,
        overhead=_OVERHEAD_BYTES,
        peak=peak,
    )
