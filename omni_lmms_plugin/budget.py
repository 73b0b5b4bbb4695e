"""Token arithmetic for Qwen2.5-Omni: exact token counts, Qwen's resize rule, the token budget. Pure Python: no torch,
no numpy. The video planner built on it is :mod:`omni_lmms_plugin.video_plan`.

Every count here mirrors what ``Qwen2_5OmniProcessor`` (transformers 5.x) produces; the tests use the real processor as
the oracle. Sizes are in pixels, times in float seconds, and a *grid cell* is one 28 x 28 pixel square: after the
vision tower's 2 x 2 spatial merge, one LLM token covers one grid cell of one temporal pair of frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = [
    "PATCH_SIZE",
    "GRID_PIXELS",
    "AUDIO_SAMPLE_RATE",
    "MAX_AUDIO_SECONDS",
    "TokenBudget",
    "Geometry",
    "QWEN25_OMNI",
    "video_tokens",
    "image_tokens",
    "audio_tokens",
    "audio_samples",
    "video_block_tokens",
    "audio_block_tokens",
    "image_block_tokens",
    "smart_grid",
    "check_aspect_ratio",
    "plan_image",
]

# Qwen2.5-Omni's geometry (3B and 7B alike), the defaults of Geometry: 14 px patches, 2 x 2 spatial merge, 2-frame
# temporal patch.
PATCH_SIZE = 14
SPATIAL_MERGE = 2
TEMPORAL_PATCH = 2
GRID_PIXELS = PATCH_SIZE * SPATIAL_MERGE  # 28: sizes are rounded to multiples of this
MAX_ASPECT_RATIO = 200  # the Qwen resize rule refuses anything more elongated

# Audio front end: 16 kHz, hop 160 (100 mel frames/s), and the feature extractor pads or truncates to 300 s.
AUDIO_SAMPLE_RATE = 16_000
AUDIO_HOP = 160
MAX_AUDIO_SECONDS = 300
MAX_AUDIO_FEATURES = MAX_AUDIO_SECONDS * AUDIO_SAMPLE_RATE // AUDIO_HOP  # 30,000

# Special tokens around each block: <|vision_bos|>..<|vision_eos|> and <|audio_bos|>..<|audio_eos|>.
BLOCK_SPECIAL_TOKENS = 2

# The Omni processor's per-frame pixel range for video and its default image range.
VIDEO_MIN_PIXELS = 128 * GRID_PIXELS**2
VIDEO_MAX_PIXELS = 768 * GRID_PIXELS**2
IMAGE_MIN_PIXELS = 4 * GRID_PIXELS**2
IMAGE_MAX_PIXELS = 16384 * GRID_PIXELS**2


# --------------------------------------------------------------------------------------------------------------------
# The model's geometry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """What the token counts depend on, read from the model (:meth:`from_model`): the vision tower's patch size,
    spatial merge and temporal patch, and the audio feature extractor's hop and longest input. The defaults are
    Qwen2.5-Omni's (3B and 7B alike); another Omni model is another geometry, not a fork of the arithmetic."""

    patch_size: int = PATCH_SIZE
    spatial_merge: int = SPATIAL_MERGE
    temporal_patch: int = TEMPORAL_PATCH
    audio_hop: int = AUDIO_HOP
    max_audio_seconds: int = MAX_AUDIO_SECONDS

    def __post_init__(self) -> None:
        for name in ("patch_size", "spatial_merge", "temporal_patch", "audio_hop", "max_audio_seconds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"geometry {name}={getattr(self, name)} must be at least 1")

    @property
    def grid_pixels(self) -> int:
        """Side of one grid cell (one LLM token per temporal patch): patch size x spatial merge, 28 for Qwen2.5-Omni."""
        return self.patch_size * self.spatial_merge

    @property
    def max_audio_features(self) -> int:
        """Mel frames the feature extractor keeps (it pads or truncates every clip to ``max_audio_seconds``)."""
        return self.max_audio_seconds * AUDIO_SAMPLE_RATE // self.audio_hop

    @classmethod
    def from_model(cls, thinker_config: Any, feature_extractor: Any = None) -> Geometry:
        """The geometry of a thinker config (``vision_config.patch_size``, ``spatial_merge_size``,
        ``temporal_patch_size``) and of its processor's audio feature extractor (``hop_length``, ``n_samples``).
        The loader decodes audio at 16 kHz, so a feature extractor at another rate is a :class:`ConfigError`."""
        vision = thinker_config.vision_config
        fields: dict[str, int] = {
            "patch_size": int(vision.patch_size),
            "spatial_merge": int(vision.spatial_merge_size),
            "temporal_patch": int(vision.temporal_patch_size),
        }
        if feature_extractor is not None:
            rate = int(getattr(feature_extractor, "sampling_rate", AUDIO_SAMPLE_RATE))
            if rate != AUDIO_SAMPLE_RATE:
                raise ConfigError(
                    f"the audio feature extractor samples at {rate} Hz; the loader decodes audio at {AUDIO_SAMPLE_RATE} Hz"
                )
            fields["audio_hop"] = int(getattr(feature_extractor, "hop_length", AUDIO_HOP))
            samples = getattr(feature_extractor, "n_samples", None)
            if samples:
                fields["max_audio_seconds"] = int(samples) // AUDIO_SAMPLE_RATE
        return cls(**fields)


QWEN25_OMNI = Geometry()


# --------------------------------------------------------------------------------------------------------------------
# Exact token counts
# --------------------------------------------------------------------------------------------------------------------


def _grid_side(pixels: int, name: str, geometry: Geometry) -> int:
    grid = geometry.grid_pixels
    if pixels <= 0 or pixels % grid:
        raise ConfigError(f"{name}={pixels} must be a positive multiple of {grid} pixels")
    return pixels // grid


def video_tokens(frames: int, height: int, width: int, *, geometry: Geometry = QWEN25_OMNI) -> int:
    """LLM tokens of T frames at h x w: ``ceil(T/2) * (h/28) * (w/28)`` (temporal patch 2, grid cell 28 by default).

    The processor pads an odd frame count by repeating the last frame, hence the ceiling.
    """
    if frames < 1:
        raise ConfigError(f"frames={frames} must be at least 1")
    rows, cols = _grid_side(height, "height", geometry), _grid_side(width, "width", geometry)
    return math.ceil(frames / geometry.temporal_patch) * rows * cols


def image_tokens(height: int, width: int, *, geometry: Geometry = QWEN25_OMNI) -> int:
    """LLM tokens of one image at h x w (already resized): one temporal pair, so ``(h/28) * (w/28)``."""
    return video_tokens(1, height, width, geometry=geometry)


def audio_samples(seconds: float) -> int:
    """Samples of ``seconds`` of 16 kHz audio, the count the loader guarantees for a planned span."""
    return int(round(seconds * AUDIO_SAMPLE_RATE))


def audio_tokens(n_samples: int, *, geometry: Geometry = QWEN25_OMNI) -> int:
    """LLM tokens of an audio clip of ``n_samples`` at 16 kHz.

    Mel frames ``F = min(ceil(n/160), 30000)`` (hop 160; the extractor truncates at 300 s); the audio tower halves them
    with a stride-2 convolution (``(F-1)//2 + 1``) and pools by 2 again (``(x - 2)//2 + 1``).
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples} must be at least 1")
    features = min(math.ceil(n_samples / geometry.audio_hop), geometry.max_audio_features)
    after_conv = (features - 1) // 2 + 1
    return max((after_conv - 2) // 2 + 1, 0)


def video_block_tokens(
    frames: int, height: int, width: int, n_audio_samples: int = 0, *, geometry: Geometry = QWEN25_OMNI
) -> int:
    """Tokens of a video block including its special tokens; with its own audio track (audio-in-video), ``V + A + 4``."""
    total = video_tokens(frames, height, width, geometry=geometry) + BLOCK_SPECIAL_TOKENS
    if n_audio_samples:
        total += audio_block_tokens(n_audio_samples, geometry=geometry)
    return total


def audio_block_tokens(n_samples: int, *, geometry: Geometry = QWEN25_OMNI) -> int:
    """Tokens of a standalone audio block: ``A + 2``."""
    return audio_tokens(n_samples, geometry=geometry) + BLOCK_SPECIAL_TOKENS


def image_block_tokens(height: int, width: int, *, geometry: Geometry = QWEN25_OMNI) -> int:
    """Tokens of an image block: ``(h/28) * (w/28) + 2``."""
    return image_tokens(height, width, geometry=geometry) + BLOCK_SPECIAL_TOKENS


# --------------------------------------------------------------------------------------------------------------------
# Resolution rules
# --------------------------------------------------------------------------------------------------------------------


def check_aspect_ratio(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ConfigError(f"frame size {width}x{height} must be positive")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ConfigError(
            f"aspect ratio {ratio:.1f} of {width}x{height} exceeds {MAX_ASPECT_RATIO}, the most the Qwen resize rule accepts"
        )


def smart_grid(
    height: int, width: int, min_pixels: int, max_pixels: int, *, geometry: Geometry = QWEN25_OMNI
) -> tuple[int, int]:
    """The grid (rows, cols) of Qwen's ``smart_resize``: round each side to a multiple of the grid cell (28), then
    scale the area into ``[min_pixels, max_pixels]`` keeping the aspect ratio (floor when shrinking, ceil when
    growing)."""
    check_aspect_ratio(height, width)
    grid = geometry.grid_pixels
    rows = max(1, round(height / grid))
    cols = max(1, round(width / grid))
    if rows * cols * grid**2 > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        rows = max(1, math.floor(height / scale / grid))
        cols = max(1, math.floor(width / scale / grid))
    elif rows * cols * grid**2 < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        rows = math.ceil(height * scale / grid)
        cols = math.ceil(width * scale / grid)
    return rows, cols


# --------------------------------------------------------------------------------------------------------------------
# Budget and policy
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens the media of one request may take.

    ``media_tokens = max_model_len - prompt_tokens - max_new_tokens``, optionally capped by ``max_video_tokens``.
    ``prompt_tokens`` are the exact text tokens of the chat-templated prompt without the media blocks.
    """

    max_model_len: int = 32_768
    prompt_tokens: int = 0
    max_new_tokens: int = 0
    max_video_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_model_len", "prompt_tokens", "max_new_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must not be negative")
        if self.max_video_tokens is not None and self.max_video_tokens <= 0:
            raise ConfigError(f"max_video_tokens={self.max_video_tokens} must be positive (or None for no cap)")

    @property
    def media_tokens(self) -> int:
        free = self.max_model_len - self.prompt_tokens - self.max_new_tokens
        if self.max_video_tokens is not None:
            free = min(free, self.max_video_tokens)
        return free


def plan_image(
    height: int,
    width: int,
    *,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
    geometry: Geometry = QWEN25_OMNI,
) -> tuple[int, int, int]:
    """(height, width, block tokens) the processor uses for an image of this size."""
    rows, cols = smart_grid(height, width, min_pixels, max_pixels, geometry=geometry)
    grid = geometry.grid_pixels
    return rows * grid, cols * grid, image_block_tokens(rows * grid, cols * grid, geometry=geometry)
