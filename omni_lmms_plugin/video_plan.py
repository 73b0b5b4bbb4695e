"""The video planner: what qwen-omni-utils would sample from a video (the reference plan), and what gives way when that
does not fit the token budget. Pure Python: no torch, no numpy.

The reference rules mirror qwen-omni-utils 0.0.9 (``smart_nframes``, ``linspace`` frame indices, ``fetch_video``'s
per-frame pixel cap); ``tests/test_reference_parity.py`` checks them against its own functions and against
``fetch_video`` on real files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from .budget import (
    BLOCK_SPECIAL_TOKENS,
    GRID_PIXELS,
    MAX_AUDIO_SECONDS,
    QWEN25_OMNI,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    Geometry,
    TokenBudget,
    audio_block_tokens,
    audio_samples,
    audio_tokens,
    check_aspect_ratio,
    smart_grid,
    video_block_tokens,
    video_tokens,
)
from .errors import BudgetError, ConfigError

__all__ = [
    "FramePolicy",
    "FRAME_POLICIES",
    "PLAN_RULES",
    "REFERENCE_FRAMES_FPS",
    "VideoPolicy",
    "VideoPlan",
    "reference_frame_count",
    "linspace_indices",
    "reference_max_pixels",
    "smallest_grid",
    "plan_video",
]


FramePolicy = Literal["qwen", "resolution"]
FRAME_POLICIES: tuple[str, ...] = ("qwen", "resolution")

# qwen-omni-utils sizes a video against MODEL_SEQ_LEN (default 128,000 tokens, read from the environment):
# ``total_pixels = MODEL_SEQ_LEN * 28 * 28 * 0.9``. The reference plan uses its default; the budget rules below replace
# it with the real context when the reference plan does not fit.
REFERENCE_SEQ_LEN = 128_000
# qwen-omni-utils takes a list of frames as sampled at this rate (its ``sample_fps`` default): the rate of an
# image-sequence video unless the task states one.
REFERENCE_FRAMES_FPS = 2.0
# The reference never lowers the per-frame pixel cap below this multiple of min_pixels.
REFERENCE_MIN_PIXELS_SLACK = 1.05


@dataclass(frozen=True)
class VideoPolicy:
    """How to sample a video before the budget is applied. Defaults follow qwen-omni-utils (2 fps, 4 to 768 frames,
    128 to 768 grid cells per frame).

    ``frame_policy`` says what gives way when the reference plan does not fit the budget: ``"qwen"`` (default, the
    reference's own rule) keeps the reference frame count and lowers the per-frame pixels down to ``min_pixels``, then
    drops frames; ``"resolution"`` drops frames first, down to ``frame_floor``, then lowers the size.
    """

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    frame_floor: int = 128
    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS
    use_audio: bool = True
    max_audio_seconds: float = MAX_AUDIO_SECONDS
    frame_policy: FramePolicy = "qwen"

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
        if self.frame_policy not in FRAME_POLICIES:
            raise ConfigError(
                f"Invalid frame_policy ({self.frame_policy!r}). Supported values are {', '.join(FRAME_POLICIES)}."
            )


# --------------------------------------------------------------------------------------------------------------------
# The reference sampling rule (qwen-omni-utils ``smart_nframes``, ``torch.linspace(...).round()``, ``fetch_video``)
# --------------------------------------------------------------------------------------------------------------------


def _floor_to(value: float, factor: int) -> int:
    return math.floor(value / factor) * factor


def reference_frame_count(
    total_frames: int, video_fps: float, policy: VideoPolicy, *, geometry: Geometry = QWEN25_OMNI
) -> int:
    """Frames qwen-omni-utils' ``smart_nframes`` samples: ``total / video_fps * fps`` clamped to
    ``[ceil_even(min_frames), floor_even(min(max_frames, total))]`` and to ``total``, then floored to an even count.

    A video of fewer than 2 frames (which the reference refuses) yields its single frame.
    """
    factor = geometry.temporal_patch  # qwen-omni-utils' FRAME_FACTOR
    if total_frames < factor:
        return max(total_frames, 1)
    low = math.ceil(policy.min_frames / factor) * factor
    high = _floor_to(min(policy.max_frames, total_frames), factor)
    wanted = total_frames / video_fps * policy.fps
    return max(_floor_to(min(min(max(wanted, low), high), total_frames), factor), factor)


def linspace_indices(total_frames: int, count: int) -> tuple[int, ...]:
    """``linspace(0, total - 1, count)`` rounded half to even, in exact integer arithmetic: always the first and the
    last frame. It equals ``torch.linspace(...).round()`` up to float32 ties, which appear past ~10k frames; the
    adapter passes the torch rule itself (``frame_indices=``) so that long videos match the reference exactly."""
    if count <= 1:
        return (0,)
    indices = []
    for step in range(count):
        whole, rest = divmod(step * (total_frames - 1), count - 1)
        twice = 2 * rest
        indices.append(whole + (twice > count - 1 or (twice == count - 1 and whole % 2 == 1)))
    return tuple(indices)


def reference_max_pixels(frames: int, policy: VideoPolicy, *, geometry: Geometry = QWEN25_OMNI) -> float:
    """``fetch_video``'s per-frame pixel cap: ``max(min(max_pixels, total_pixels / frames * 2), 1.05 * min_pixels)``
    with ``total_pixels = MODEL_SEQ_LEN * 28 * 28 * 0.9`` (the grid cell's area per token, 128k tokens)."""
    total_pixels = REFERENCE_SEQ_LEN * geometry.grid_pixels**2 * 0.9
    return max(
        min(policy.max_pixels, total_pixels / frames * geometry.temporal_patch),
        int(policy.min_pixels * REFERENCE_MIN_PIXELS_SLACK),
    )


def smallest_grid(height: int, width: int, min_pixels: int, *, geometry: Geometry = QWEN25_OMNI) -> tuple[int, int]:
    """The smallest grid Qwen's rule produces for a frame: ``smart_resize`` with the per-frame cap at its floor,
    ``1.05 * min_pixels`` (qwen-omni-utils never lowers the cap further). The floor rounding can leave it slightly
    under ``min_pixels`` (a 16:9 frame gets 8 x 15 = 120 cells for 128)."""
    return smart_grid(height, width, min_pixels, int(min_pixels * REFERENCE_MIN_PIXELS_SLACK), geometry=geometry)


# --------------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------------

# What gave way, in the order each frame policy tries it.
PLAN_RULES: dict[str, tuple[str, ...]] = {
    "qwen": ("reference", "fewer_pixels", "fewer_frames", "shorter_audio"),
    "resolution": ("reference", "fewer_frames", "fewer_pixels", "fewer_frames_below_floor", "shorter_audio"),
}


@dataclass(frozen=True)
class VideoPlan:
    """What to decode from one video and what it costs.

    ``frame_indices`` index the file's ``total_frames`` frames (``source_fps`` apart); ``frame_times`` are their
    presentation times in seconds from the start of the stream (``index / source_fps``). ``sample_fps`` is the rate
    passed to the processor, the reference's ``frames / total_frames * source_fps``. ``rule`` names what gave way to
    fit ``budget`` (``"reference"`` when nothing did); ``reference_*`` describe the plan qwen-omni-utils would make.
    """

    frames: int
    frame_indices: tuple[int, ...]
    frame_times: tuple[float, ...]
    height: int
    width: int
    sample_fps: float
    source_fps: float
    total_frames: int
    duration: float
    audio_start: float
    audio_seconds: float
    audio_samples: int
    audio_dropped_seconds: float
    video_tokens: int
    audio_tokens: int
    total_tokens: int
    budget: int
    frame_policy: str
    rule: str
    reason: str
    reference_fits: bool
    reference_frames: int
    reference_height: int
    reference_width: int
    reference_tokens: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def degraded(self) -> bool:
        """True when the budget made the plan differ from the reference's."""
        return self.rule != "reference"

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("frame_indices", "frame_times", "notes"):
            data[name] = list(data[name])
        return data


def plan_video(
    *,
    duration: float,
    frame_rate: float,
    width: int,
    height: int,
    has_audio: bool,
    budget: TokenBudget | int,
    policy: VideoPolicy | None = None,
    total_frames: int | None = None,
    frame_indices: Callable[[int, int], Sequence[int]] = linspace_indices,
    geometry: Geometry = QWEN25_OMNI,
) -> VideoPlan:
    """Choose frames, size and audio span of one video so its block fits ``budget`` tokens.

    The reference plan is what qwen-omni-utils' ``fetch_video`` would feed the model: ``smart_nframes`` frames at
    ``linspace(0, total_frames - 1, n)`` rounded (first and last frame always in), ``smart_resize`` with the per-frame
    cap ``total_pixels / n * 2`` (``total_pixels`` from its default 128k-token context), the sample rate
    ``n / total_frames * frame_rate``, and the audio track up to ``max_audio_seconds``. When it fits, it is the plan
    (``rule="reference"``). When it does not, the budget's own total-pixel figure replaces the reference's and, with
    ``frame_policy="qwen"``:

    1. ``fewer_pixels``: keep the reference frame count, lower the per-frame pixel cap to what fits (Qwen's
       ``smart_resize`` rule), down to ``min_pixels``;
    2. ``fewer_frames``: at that smallest size, fewer frames, still spread over the whole video from the first to
       the last; the size then grows back into what the count leaves, down to ``min_frames``;
    3. ``shorter_audio``: the audio span shrinks (from its end) until ``min_frames`` at the smallest size fit;
    4. nothing fits: :class:`BudgetError` with the smallest budget that would.

    ``frame_policy="resolution"`` drops frames first (down to ``frame_floor``), then lowers the size, then drops frames
    below the floor, then shortens audio. ``total_frames`` defaults to ``floor(duration * frame_rate)``;
    ``frame_indices(total, n)`` is the index rule (the adapter passes ``torch.linspace`` rounding itself); ``geometry``
    the model's (grid cell, temporal patch, audio front end).

    Audio longer than ``max_audio_seconds`` (at most 300 s, the feature extractor's cap) is planned as the first
    ``max_audio_seconds`` of the track and the rest is reported in ``audio_dropped_seconds`` and ``notes``.
    """
    policy = policy or VideoPolicy()
    available = budget.media_tokens if isinstance(budget, TokenBudget) else int(budget)
    if not duration > 0 or not math.isfinite(duration):
        raise ConfigError(f"duration={duration} must be a positive number of seconds")
    if not frame_rate > 0:
        raise ConfigError(f"frame_rate={frame_rate} must be positive")
    check_aspect_ratio(height, width)
    total = total_frames if total_frames and total_frames > 0 else max(1, math.floor(duration * frame_rate + 1e-6))
    cell, temporal = geometry.grid_pixels, geometry.temporal_patch
    reference_count = reference_frame_count(total, frame_rate, policy, geometry=geometry)
    reference_rows, reference_cols = smart_grid(
        height,
        width,
        policy.min_pixels,
        reference_max_pixels(reference_count, policy, geometry=geometry),
        geometry=geometry,
    )
    smallest_rows, smallest_cols = smallest_grid(height, width, policy.min_pixels, geometry=geometry)
    smallest_cells = smallest_rows * smallest_cols
    pairs_reference = math.ceil(reference_count / temporal)
    pairs_min = min(pairs_reference, math.ceil(policy.min_frames / temporal))
    pairs_floor = min(pairs_reference, math.ceil(policy.frame_floor / temporal))

    notes: list[str] = []
    audio_seconds = 0.0
    if has_audio and policy.use_audio:
        audio_seconds = min(duration, policy.max_audio_seconds)
        if duration > audio_seconds:
            notes.append(
                f"audio planned as its first {audio_seconds:g} s; the last {duration - audio_seconds:.3f} s are not "
                f"heard (the audio feature extractor takes at most {MAX_AUDIO_SECONDS} s)"
            )

    def audio_cost(seconds: float) -> int:
        return audio_block_tokens(audio_samples(seconds), geometry=geometry) if seconds > 0 else 0

    reference_tokens = video_block_tokens(
        reference_count, reference_rows * cell, reference_cols * cell, geometry=geometry
    ) + audio_cost(audio_seconds)
    reference_fits = reference_tokens <= available

    def plan(rule: str, reason: str, pairs: int, rows: int, cols: int, seconds: float) -> VideoPlan:
        frames = reference_count if pairs >= pairs_reference else pairs * temporal
        indices = tuple(int(i) for i in frame_indices(total, frames)) if total > 1 else (0,)
        samples = audio_samples(seconds) if seconds > 0 else 0
        frame_height, frame_width = rows * cell, cols * cell
        return VideoPlan(
            frames=frames,
            frame_indices=indices,
            frame_times=tuple(round(index / frame_rate, 6) for index in indices),
            height=frame_height,
            width=frame_width,
            sample_fps=frames / total * frame_rate,
            source_fps=frame_rate,
            total_frames=total,
            duration=duration,
            audio_start=0.0,
            audio_seconds=seconds,
            audio_samples=samples,
            audio_dropped_seconds=round(duration - seconds, 6) if seconds > 0 else 0.0,
            video_tokens=video_tokens(frames, frame_height, frame_width, geometry=geometry),
            audio_tokens=audio_tokens(samples, geometry=geometry) if samples else 0,
            total_tokens=video_block_tokens(frames, frame_height, frame_width, samples, geometry=geometry),
            budget=available,
            frame_policy=policy.frame_policy,
            rule=rule,
            reason=reason,
            reference_fits=reference_fits,
            reference_frames=reference_count,
            reference_height=reference_rows * cell,
            reference_width=reference_cols * cell,
            reference_tokens=reference_tokens,
            notes=tuple(notes),
        )

    def qwen_grid(pairs: int, video_budget: int) -> tuple[int, int] | None:
        """Qwen's resize rule with the per-frame cap the budget leaves ``pairs`` frame pairs, or None if even the
        smallest size does not fit."""
        cap = video_budget // pairs
        if cap < smallest_cells:
            return None
        max_pixels = max(min(policy.max_pixels, cap * cell**2), int(policy.min_pixels * REFERENCE_MIN_PIXELS_SLACK))
        rows, cols = smart_grid(height, width, policy.min_pixels, max_pixels, geometry=geometry)
        return (rows, cols) if rows * cols <= cap else None

    video_budget = available - audio_cost(audio_seconds) - BLOCK_SPECIAL_TOKENS
    reference_cells = reference_rows * reference_cols
    if reference_fits:
        return plan(
            "reference", "the reference plan fits", pairs_reference, reference_rows, reference_cols, audio_seconds
        )

    if policy.frame_policy == "qwen":
        grid = qwen_grid(pairs_reference, video_budget)
        if grid is not None:
            return plan(
                "fewer_pixels",
                f"budget binds: {reference_count} reference frames at {grid[1] * cell}x{grid[0] * cell} "
                f"instead of {reference_cols * cell}x{reference_rows * cell}",
                pairs_reference,
                *grid,
                audio_seconds,
            )
    else:
        if pairs_floor * reference_cells <= video_budget:
            pairs = video_budget // reference_cells
            return plan(
                "fewer_frames",
                f"budget binds: frames reduced to {pairs * temporal} at the reference size",
                pairs,
                reference_rows,
                reference_cols,
                audio_seconds,
            )
        grid = qwen_grid(pairs_floor, video_budget)
        if grid is not None:
            pairs = min(pairs_reference, video_budget // (grid[0] * grid[1]))
            return plan(
                "fewer_pixels",
                f"budget binds: size reduced to {grid[1] * cell}x{grid[0] * cell}",
                pairs,
                *grid,
                audio_seconds,
            )

    # Fewer frames (for "resolution", below the floor) at the smallest size; the size then grows into what is left.
    if pairs_min * smallest_cells <= video_budget:
        pairs = min(pairs_reference, video_budget // smallest_cells)
        grid = qwen_grid(pairs, video_budget) or (smallest_rows, smallest_cols)
        rule = "fewer_frames" if policy.frame_policy == "qwen" else "fewer_frames_below_floor"
        return plan(rule, f"budget binds: {pairs * temporal} frames at the smallest size", pairs, *grid, audio_seconds)

    # Shorten the audio so the smallest video fits beside it.
    smallest_video = pairs_min * smallest_cells + BLOCK_SPECIAL_TOKENS
    if audio_seconds > 0:
        room = available - smallest_video
        # Audio costs about 25 tokens/s; step down until the exact count fits.
        seconds = min(audio_seconds, max(room - BLOCK_SPECIAL_TOKENS, 0) / 25.0)
        while seconds > 0 and audio_cost(seconds) > room:
            seconds = round(seconds - 0.04, 6)
        if seconds > 0:
            notes.append(f"audio shortened from {audio_seconds:g} s to {seconds:g} s to fit the budget")
            return plan(
                "shorter_audio", "budget binds: audio shortened", pairs_min, smallest_rows, smallest_cols, seconds
            )

    needed = smallest_video + (audio_cost(0.04) if audio_seconds > 0 else 0)
    raise BudgetError(
        f"the video needs at least {needed} tokens ({pairs_min * temporal} frames at "
        f"{smallest_cols * cell}x{smallest_rows * cell}), but the budget leaves {available}: "
        "raise max_model_len, lower max_new_tokens, shorten the prompt, or lower min_frames/min_pixels",
        needed=needed,
    )
