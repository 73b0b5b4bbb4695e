"""The ``omni_*`` task YAMLs and their utils, shipped inside the wheel as ``omni_lmms_plugin.tasks``."""

from __future__ import annotations

from pathlib import Path


def folder() -> Path:
    """The folder to pass to lmms-eval as ``--include_path`` (what ``omni-lmms tasks-dir`` prints)."""
    return Path(__file__).resolve().parent
