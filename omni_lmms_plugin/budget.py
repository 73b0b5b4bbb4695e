"""Token arithmetic and the video planner for Qwen2.5-Omni. Pure Python: no torch, no numpy.

Every count here mirrors what ``Qwen2_5OmniProcessor`` (transformers 5.x) produces; the tests use the real processor as
the oracle. Sizes are in pixels, times in float seconds, and a *grid cell* is one 28 x 28 pixel square: after the
vision tower's 2 x 2 spatial merge, one LLM token covers one grid cell of one temporal pair of frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .errors import BudgetError, ConfigError

__all__ = [
    "PATCH_SIZE",
    "GRID_PIXELS",
    "AUDIO_SAMPLE_RATE",
    "MAX_AUDIO_SECONDS",
    "TokenBudget",
    "VideoPolicy",
    "VideoPlan",
    "video_tokens",
    "image_tokens",
    "audio_tokens",
    "audio_samples",
    "video_block_tokens",
    "audio_block_tokens",
    "image_block_tokens",
    "smart_grid",
    "smallest_grid",
    "fit_grid",
    "plan_image",
    "plan_video",
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


def _check_aspect(height: int, width: int) -> None:
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
    _check_aspect(height, width)
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


def smallest_grid(height: int, width: int, min_pixels: int) -> tuple[int, int]:
    """The grid Qwen's rule gives when it scales a frame up to ``min_pixels``: the smallest size the policy allows."""
    _check_aspect(height, width)
    scale = math.sqrt(min_pixels / (height * width))
    return max(1, math.ceil(height * scale / GRID_PIXELS)), max(1, math.ceil(width * scale / GRID_PIXELS))


def fit_grid(height: int, width: int, max_cells: int) -> tuple[int, int] | None:
    """The largest grid (rows, cols) with ``rows * cols <= max_cells`` whose shape keeps the aspect ratio of
    ``height x width`` as closely as rounding allows (cols within one cell of ``rows * width / height``).

    Returns None when not even a 1-cell-high grid fits.
    """
    _check_aspect(height, width)
    aspect = width / height
    best: tuple[int, int] | None = None
    best_key: tuple[int, float] = (0, 0.0)
    max_rows = math.isqrt(max(max_cells, 0) * max(1, math.ceil(1 / aspect))) + 2
    for rows in range(1, max_rows + 1):
        exact_cols = rows * aspect
        for cols in {max(1, math.floor(exact_cols)), max(1, math.ceil(exact_cols))}:
            if rows * cols > max_cells:
                continue
            # Prefer more cells; among equal areas, the shape closest to the source aspect.
            key = (rows * cols, -abs(math.log(cols / rows / aspect)))
            if best is None or key > best_key:
                best, best_key = (rows, cols), key
    return best


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


@dataclass(frozen=True)
class VideoPolicy:
    """How to sample a video before the budget is applied. Defaults follow qwen-omni-utils (2 fps, 4 to 768 frames,
    128 to 768 grid cells per frame) except ``frame_floor``, the frame count below which resolution shrinks first."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    frame_floor: int = 128
    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS
    use_audio: bool = True
    max_audio_seconds: float = MAX_AUDIO_SECONDS

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ConfigError(f"fps={self.fps} must be positive")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError(
                f"need 1 <= min_frames <= max_frames, got min_frames={self.min_frames}, max_frames={self.max_frames}"
            )
        if self.frame_floor < self.min_frames:
            raise ConfigError(f"frame_floor={self.frame_floor} must be at least min_frames={self.min_frames}")
        if not GRID_PIXELS**2 <= self.min_pixels <= self.max_pixels:
            raise ConfigError(
                f"need {GRID_PIXELS**2} <= min_pixels <= max_pixels, got min_pixels={self.min_pixels}, max_pixels={self.max_pixels}"
            )
        if not 0 < self.max_audio_seconds <= MAX_AUDIO_SECONDS:
            raise ConfigError(
                f"max_audio_seconds={self.max_audio_seconds} must be in (0, {MAX_AUDIO_SECONDS}]: the feature extractor drops audio past {MAX_AUDIO_SECONDS} s"
            )


# --------------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoPlan:
    """What to decode from one video and what it costs. Frame times are seconds from the start of the video; each
    frame stands for the half-open interval of ``1/sample_fps`` seconds centred on its time."""

    frames: int
    frame_times: tuple[float, ...]
    height: int
    width: int
    sample_fps: float
    duration: float
    audio_start: float
    audio_seconds: float
    audio_samples: int
    audio_dropped_seconds: float
    video_tokens: int
    audio_tokens: int
    total_tokens: int
    budget: int
    case: int
    reason: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frame_times"] = list(self.frame_times)
        data["notes"] = list(self.notes)
        return data


def _even_frames(count: int) -> int:
    """Frame counts go in temporal pairs; keep them even (a lone frame is padded by the processor)."""
    return max(TEMPORAL_PATCH, count - count % TEMPORAL_PATCH)


def _frame_times(frames: int, duration: float) -> tuple[float, ...]:
    step = duration / frames
    return tuple(round((index + 0.5) * step, 6) for index in range(frames))


def plan_image(
    height: int, width: int, *, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS
) -> tuple[int, int, int]:
    """(height, width, block tokens) the processor uses for an image of this size."""
    rows, cols = smart_grid(height, width, min_pixels, max_pixels)
    return rows * GRID_PIXELS, cols * GRID_PIXELS, image_block_tokens(rows * GRID_PIXELS, cols * GRID_PIXELS)


def plan_video(
    *,
    duration: float,
    frame_rate: float,
    width: int,
    height: int,
    has_audio: bool,
    budget: TokenBudget | int,
    policy: VideoPolicy | None = None,
) -> VideoPlan:
    """Choose frames, frame times, size and audio span of one video so its block fits ``budget`` tokens.

    The policy, in order (``case`` in the plan says which applied):

    1. Everything fits: ``fps`` sampling (``min_frames`` to ``max_frames``, never more frames than the file has) at
       the ``smart_resize`` size within ``[min_pixels, max_pixels]``, and the audio track up to ``max_audio_seconds``.
    2. Keep temporal coverage, spend fewer frames: frames stay spread over the whole video at full size, their count
       falls to what fits, but not below ``frame_floor``.
    3. Shrink resolution: at ``frame_floor`` frames the size falls to what fits, down to ``min_pixels``; frames then
       grow back to fill what the smaller size leaves.
    4. Fewer frames again: at the smallest size, the count falls below ``frame_floor`` to what fits, down to
       ``min_frames``; the size then grows back to fill what is left.
    5. Shorten the audio: the audio span shrinks (from its end) until ``min_frames`` at ``min_pixels`` fit beside it.
    6. Nothing fits: :class:`BudgetError` with the smallest budget that would.

    Audio longer than ``max_audio_seconds`` (at most 300 s, the feature extractor's cap) is planned as the first
    ``max_audio_seconds`` of the track and the rest is reported in ``audio_dropped_seconds`` and ``notes``, never
    dropped silently.
    """
    policy = policy or VideoPolicy()
    available = budget.media_tokens if isinstance(budget, TokenBudget) else int(budget)
    if not duration > 0 or not math.isfinite(duration):
        raise ConfigError(f"duration={duration} must be a positive number of seconds")
    if not frame_rate > 0:
        raise ConfigError(f"frame_rate={frame_rate} must be positive")
    native_rows, native_cols = smart_grid(height, width, policy.min_pixels, policy.max_pixels)
    min_cells = math.ceil(policy.min_pixels / GRID_PIXELS**2)
    smallest_rows, smallest_cols = smallest_grid(height, width, policy.min_pixels)
    smallest_cells = smallest_rows * smallest_cols

    # The file's own frames bound every count; a single-frame file yields one frame (the processor pads it).
    frames_in_file = max(1, math.floor(duration * frame_rate + 1e-6))
    wanted = min(max(round(duration * policy.fps), policy.min_frames), policy.max_frames)
    if frames_in_file == 1:
        frames_max = 1
    else:
        frames_max = _even_frames(min(wanted, frames_in_file))
    pairs_max = math.ceil(frames_max / TEMPORAL_PATCH)
    pairs_floor = min(pairs_max, math.ceil(policy.frame_floor / TEMPORAL_PATCH))
    pairs_min = min(pairs_max, math.ceil(policy.min_frames / TEMPORAL_PATCH))

    notes: list[str] = []
    audio_seconds = 0.0
    dropped = 0.0
    if has_audio and policy.use_audio:
        audio_seconds = min(duration, policy.max_audio_seconds)
        dropped = duration - audio_seconds
        if dropped > 0:
            notes.append(
                f"audio planned as its first {audio_seconds:g} s; the last {dropped:.3f} s are not heard "
                f"(the audio feature extractor takes at most {MAX_AUDIO_SECONDS} s)"
            )

    def audio_cost(seconds: float) -> int:
        return audio_block_tokens(audio_samples(seconds)) if seconds > 0 else 0

    def plan(case: int, reason: str, pairs: int, rows: int, cols: int, seconds: float) -> VideoPlan:
        frames = frames_max if pairs == pairs_max else pairs * TEMPORAL_PATCH
        samples = audio_samples(seconds) if seconds > 0 else 0
        vtok = video_tokens(frames, rows * GRID_PIXELS, cols * GRID_PIXELS)
        atok = audio_tokens(samples) if samples else 0
        total = video_block_tokens(frames, rows * GRID_PIXELS, cols * GRID_PIXELS, samples)
        return VideoPlan(
            frames=frames,
            frame_times=_frame_times(frames, duration),
            height=rows * GRID_PIXELS,
            width=cols * GRID_PIXELS,
            sample_fps=frames / duration,
            duration=duration,
            audio_start=0.0,
            audio_seconds=seconds,
            audio_samples=samples,
            audio_dropped_seconds=round(duration - seconds, 6) if seconds > 0 else 0.0,
            video_tokens=vtok,
            audio_tokens=atok,
            total_tokens=total,
            budget=available,
            case=case,
            reason=reason,
            notes=tuple(notes),
        )

    video_budget = available - audio_cost(audio_seconds) - BLOCK_SPECIAL_TOKENS
    native_cells = native_rows * native_cols

    # Case 1: everything fits.
    if pairs_max * native_cells <= video_budget:
        return plan(1, "fits: sampled at the policy fps and size", pairs_max, native_rows, native_cols, audio_seconds)

    # Case 2: fewer frames at full size, spread over the whole video, not below the frame floor.
    if pairs_floor * native_cells <= video_budget:
        pairs = video_budget // native_cells
        return plan(
            2,
            f"budget binds: frames reduced to {pairs * 2} at full size",
            pairs,
            native_rows,
            native_cols,
            audio_seconds,
        )

    # Case 3: at the frame floor, shrink the size; then fill the budget with frames again.
    if pairs_floor * smallest_cells <= video_budget:
        grid = fit_grid(height, width, video_budget // pairs_floor)
        if grid is not None and grid[0] * grid[1] >= min_cells:
            pairs = min(pairs_max, video_budget // (grid[0] * grid[1]))
            return plan(3, f"budget binds: size reduced to {grid[1] * 28}x{grid[0] * 28}", pairs, *grid, audio_seconds)

    # Case 4: at the smallest size, fewer frames than the floor; then grow the size into what is left.
    if pairs_min * smallest_cells <= video_budget:
        pairs = min(pairs_floor, video_budget // smallest_cells)
        grid = fit_grid(height, width, video_budget // pairs) or (smallest_rows, smallest_cols)
        if grid[0] * grid[1] < smallest_cells:
            grid = (smallest_rows, smallest_cols)
        pairs = min(pairs_max, video_budget // (grid[0] * grid[1]))
        return plan(4, f"budget binds: {pairs * 2} frames at the smallest size", pairs, *grid, audio_seconds)

    # Case 5: shorten the audio so the smallest video fits beside it.
    smallest_video = pairs_min * smallest_cells + BLOCK_SPECIAL_TOKENS
    if audio_seconds > 0:
        room = available - smallest_video
        seconds = audio_seconds
        # Audio costs about 25 tokens/s; step down until the exact count fits.
        seconds = min(seconds, max(room - BLOCK_SPECIAL_TOKENS, 0) / 25.0)
        while seconds > 0 and audio_cost(seconds) > room:
            seconds = round(seconds - 0.04, 6)
        if seconds > 0:
            notes.append(f"audio shortened from {audio_seconds:g} s to {seconds:g} s to fit the budget")
            return plan(5, "budget binds: audio shortened", pairs_min, smallest_rows, smallest_cols, seconds)

    # Case 6: nothing fits.
    needed = smallest_video + (audio_cost(0.04) if audio_seconds > 0 else 0)
    raise BudgetError(
        f"the video needs at least {needed} tokens ({pairs_min * 2} frames at "
        f"{smallest_cols * GRID_PIXELS}x{smallest_rows * GRID_PIXELS}), but the budget leaves {available}: "
        "raise max_model_len, lower max_new_tokens, shorten the prompt, or lower min_frames/min_pixels",
        needed=needed,
    )
