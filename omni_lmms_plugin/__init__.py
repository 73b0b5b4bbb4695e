"""omni_lmms_plugin: evaluate Qwen2.5-Omni in lmms-eval within an exact token budget.

lmms-eval imports this package on every start (through the entry point), so only the pure budget arithmetic is
imported eagerly; the media loader and the model adapter load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .budget import TokenBudget
from .errors import BudgetError, ConfigError, DecodeTimeoutError, MediaError, OmniPluginError
from .subtitles import SUBTITLE_PLACEHOLDER, SubtitleTrack
from .video_plan import VideoPlan, VideoPolicy, plan_video

__version__ = "0.1.0"

_LAZY = {
    "load_video": "omni_lmms_plugin.media",
    "probe": "omni_lmms_plugin.media",
    "LoadedVideo": "omni_lmms_plugin.media",
    "MediaInfo": "omni_lmms_plugin.media",
}

__all__ = [
    "TokenBudget",
    "VideoPlan",
    "VideoPolicy",
    "plan_video",
    "SubtitleTrack",
    "SUBTITLE_PLACEHOLDER",
    "OmniPluginError",
    "ConfigError",
    "BudgetError",
    "MediaError",
    "DecodeTimeoutError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omni_lmms_plugin' has no attribute {name!r}")
