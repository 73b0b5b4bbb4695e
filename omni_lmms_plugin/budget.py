"""Token arithmetic for Qwen2.5-Omni: exact token counts, Qwen's resize rule, the token budget. Pure Python: no torch,
no numpy. The video planner built on it is :mod:`omni_lmms_plugin.video_plan`.

Every count here mirrors what ``Qwen2_5OmniProcessor`` (transformers 5.x) produces; the tests use the real processor as
the oracle. Sizes are in pixels, times in float seconds, and a *grid cell* is one 28 x 28 pixel square: after the
vision tower's 2 x 2 spatial merge, one LLM token covers one grid cell of one temporal pair of frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "PATCH_SIZE",
    "GRID_PIXELS",
    "AUDIO_SAMPLE_RATE",
    "MAX_AUDIO_SECONDS",
    "TokenBudget",
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

# Vision tower geometry of Qwen2.5-Omni (3B and 7B alike): 14 px patches, 2 x 2 spatial merge, 2-frame temporal patch.
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
# Exact token counts
# --------------------------------------------------------------------------------------------------------------------


def _grid_side(pixels: int, name: str) -> int:
    if pixels <= 0 or pixels % GRID_PIXELS:
        raise ConfigError(f"{name}={pixels} must be a positive multiple of {GRID_PIXELS} pixels")
    return pixels // GRID_PIXELS


def video_tokens(frames: int, height: int, width: int) -> int:
    """LLM tokens of T frames at h x w: ``ceil(T/2) * (h/28) * (w/28)``.

    The processor pads an odd frame count by repeating the last frame, hence the ceiling.
    """
    if frames < 1:
        raise ConfigError(f"frames={frames} must be at least 1")
    return math.ceil(frames / TEMPORAL_PATCH) * _grid_side(height, "height") * _grid_side(width, "width")


def image_tokens(height: int, width: int) -> int:
    """LLM tokens of one image at h x w (already resized): one temporal pair, so ``(h/28) * (w/28)``."""
    return video_tokens(1, height, width)


def audio_samples(seconds: float) -> int:
    """Samples of ``seconds`` of 16 kHz audio, the count the loader guarantees for a planned span."""
    return int(round(seconds * AUDIO_SAMPLE_RATE))


def audio_tokens(n_samples: int) -> int:
    """LLM tokens of an audio clip of ``n_samples`` at 16 kHz.

    Mel frames ``F = min(ceil(n/160), 30000)`` (the extractor truncates at 300 s); the audio tower halves them with a
    stride-2 convolution (``(F-1)//2 + 1``) and pools by 2 again (``(x - 2)//2 + 1``).
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples} must be at least 1")
    features = min(math.ceil(n_samples / AUDIO_HOP), MAX_AUDIO_FEATURES)
    after_conv = (features - 1) // 2 + 1
    return max((after_conv - 2) // 2 + 1, 0)


def video_block_tokens(frames: int, height: int, width: int, n_audio_samples: int = 0) -> int:
    """Tokens of a video block including its special tokens; with its own audio track (audio-in-video), ``V + A + 4``."""
    total = video_tokens(frames, height, width) + BLOCK_SPECIAL_TOKENS
    if n_audio_samples:
        total += audio_block_tokens(n_audio_samples)
    return total


def audio_block_tokens(n_samples: int) -> int:
    """Tokens of a standalone audio block: ``A + 2``."""
    return audio_tokens(n_samples) + BLOCK_SPECIAL_TOKENS


def image_block_tokens(height: int, width: int) -> int:
    """Tokens of an image block: ``(h/28) * (w/28) + 2``."""
    return image_tokens(height, width) + BLOCK_SPECIAL_TOKENS


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


def smart_grid(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The grid (rows, cols) of Qwen's ``smart_resize``: round each side to a multiple of 28, then scale the area into
    ``[min_pixels, max_pixels]`` keeping the aspect ratio (floor when shrinking, ceil when growing)."""
    check_aspect_ratio(height, width)
    rows = max(1, round(height / GRID_PIXELS))
    cols = max(1, round(width / GRID_PIXELS))
    cell = GRID_PIXELS**2
    if rows * cols * cell > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        rows = max(1, math.floor(height / scale / GRID_PIXELS))
        cols = max(1, math.floor(width / scale / GRID_PIXELS))
    elif rows * cols * cell < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        rows = math.ceil(height * scale / GRID_PIXELS)
        cols = math.ceil(width * scale / GRID_PIXELS)
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
    height: int, width: int, *, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS
) -> tuple[int, int, int]:
    """(height, width, block tokens) the processor uses for an image of this size."""
    rows, cols = smart_grid(height, width, min_pixels, max_pixels)
    return rows * GRID_PIXELS, cols * GRID_PIXELS, image_block_tokens(rows * GRID_PIXELS, cols * GRID_PIXELS)
