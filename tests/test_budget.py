"""The token arithmetic and the planner's policy, without a model. The processor-oracle checks are in
test_budget_oracle.py."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_lmms_plugin.budget import (
    GRID_PIXELS,
    MAX_AUDIO_SECONDS,
    audio_tokens,
    smart_grid,
    video_block_tokens,
    video_tokens,
)
from omni_lmms_plugin.errors import BudgetError, ConfigError
from omni_lmms_plugin.video_plan import PLAN_RULES, VideoPolicy, linspace_indices, plan_video, smallest_grid


def test_importing_the_budget_engine_leaves_torch_out():
    code = "import sys, omni_lmms_plugin.budget, omni_lmms_plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_video_token_formula_pairs_frames_and_pads_odd_counts():
    assert video_tokens(2, 28, 28) == 1
    assert video_tokens(3, 56, 84) == 2 * 2 * 3  # three frames become two temporal pairs
    assert video_tokens(768, 560, 1008) == 384 * 20 * 36
    with pytest.raises(ConfigError, match="multiple of 28"):
        video_tokens(2, 30, 28)


def test_audio_tokens_are_about_25_per_second_and_capped_at_300_s():
    assert audio_tokens(16_000) == 25
    assert audio_tokens(16_000 * MAX_AUDIO_SECONDS) == 7500
    assert audio_tokens(16_000 * 2 * MAX_AUDIO_SECONDS) == 7500


def test_audio_in_video_block_is_v_plus_a_plus_4():
    v = video_tokens(8, 56, 56)
    assert video_block_tokens(8, 56, 56, 16_000) == v + 25 + 4
    assert video_block_tokens(8, 56, 56) == v + 2


def test_smart_grid_mirrors_qwen_rounding():
    assert smart_grid(720, 1280, 128 * 784, 768 * 784) == (20, 36)  # 560x1008, as the processor makes 720p
    assert smart_grid(168, 308, 128 * 784, 768 * 784) == (9, 16)  # small frames are upscaled to 252x448


def test_a_short_clip_is_planned_exactly_as_the_reference():
    plan = plan_video(duration=10, frame_rate=30, width=640, height=360, has_audio=True, budget=32_000)
    assert plan.rule == "reference" and plan.reference_fits and not plan.degraded
    assert plan.frames == plan.reference_frames == 20
    assert plan.frame_indices[0] == 0 and plan.frame_indices[-1] == 299  # first and last frame, linspace rounded
    assert (plan.height, plan.width) == (plan.reference_height, plan.reference_width) == (364, 644)
    assert plan.sample_fps == pytest.approx(20 / 300 * 30)  # the reference's nframes / total_frames * video_fps
    assert plan.frame_times == tuple(round(i / 30, 6) for i in plan.frame_indices)
    assert plan.audio_seconds == 10
    assert plan.total_tokens == plan.reference_tokens <= plan.budget


def test_the_reference_floors_the_frame_count_to_an_even_number():
    """smart_nframes floors: a 7.03 s 30 fps clip of 209 frames gets 12 frames (14.06 floored), not 14."""
    plan = plan_video(duration=209 / 30, frame_rate=30, width=640, height=360, has_audio=False, budget=32_000)
    assert plan.total_frames == 209 and plan.frames == 12
    assert plan.frame_indices == linspace_indices(209, 12) == (0, 19, 38, 57, 76, 95, 113, 132, 151, 170, 189, 208)


def test_a_binding_budget_keeps_the_reference_frame_count_and_lowers_pixels_first():
    """qwen policy: a 10-minute 720p clip wants 768 frames at 644x336 (105,984 tokens); within 24k tokens it keeps
    768 frames and lowers the size; the resolution policy drops frames first instead."""
    kwargs = dict(duration=600, frame_rate=30, width=1280, height=720, has_audio=False)
    big = plan_video(**kwargs, budget=60_000)
    assert big.reference_frames == 768 and (big.reference_height, big.reference_width) == (336, 644)
    assert big.rule == "fewer_pixels" and big.frames == 768 and big.total_tokens <= 60_000
    assert big.height * big.width < big.reference_height * big.reference_width
    tight = plan_video(**kwargs, budget=24_000)
    assert tight.rule == "fewer_frames" and tight.frames < 768
    assert (tight.height, tight.width) >= smallest_size(720, 1280)
    assert tight.frame_indices[0] == 0 and tight.frame_indices[-1] == 17_999
    resolution = plan_video(**kwargs, budget=60_000, policy=VideoPolicy(frame_policy="resolution"))
    assert resolution.rule == "fewer_frames" and resolution.frames < 768
    assert (resolution.height, resolution.width) == (resolution.reference_height, resolution.reference_width)


def test_the_resolution_policy_rules_come_in_order():
    kwargs = dict(duration=300, frame_rate=30, width=1280, height=720, has_audio=False)
    policy = VideoPolicy(frame_policy="resolution")
    full = plan_video(**kwargs, budget=10**6, policy=policy)
    fewer_frames = plan_video(**kwargs, budget=64 * 364 + 2 + 100, policy=policy)  # 364 cells: 392x728
    smaller = plan_video(**kwargs, budget=64 * 150, policy=policy)
    fewest = plan_video(**kwargs, budget=20 * 128, policy=policy)
    rules = [p.rule for p in (full, fewer_frames, smaller, fewest)]
    assert rules == ["reference", "fewer_frames", "fewer_pixels", "fewer_frames_below_floor"]
    assert (full.height, full.width) == (fewer_frames.height, fewer_frames.width)
    assert fewer_frames.frames == 128 < full.frames
    assert smaller.height < full.height and smaller.frames >= 128
    assert fewest.frames < 128


def test_audio_is_shortened_explicitly_when_nothing_else_is_left():
    plan = plan_video(duration=120, frame_rate=30, width=640, height=480, has_audio=True, budget=2 * 128 + 2 + 1000)
    assert plan.rule == "shorter_audio"
    assert plan.audio_seconds < 120
    assert any("shortened" in note for note in plan.notes)
    assert plan.total_tokens <= plan.budget


def test_nothing_fits_names_the_smallest_budget():
    rows, cols = smallest_grid(480, 640, VideoPolicy().min_pixels)
    needed = 2 * rows * cols + 2
    with pytest.raises(BudgetError, match=f"needs at least {needed} tokens"):
        plan_video(duration=60, frame_rate=30, width=640, height=480, has_audio=False, budget=100)


def test_extreme_aspect_ratio_is_refused_with_the_rule():
    with pytest.raises(ConfigError, match="exceeds 200"):
        plan_video(duration=1, frame_rate=30, width=6000, height=20, has_audio=False, budget=10_000)


def test_a_single_frame_video_plans_one_frame():
    plan = plan_video(duration=1 / 30, frame_rate=30, width=320, height=240, has_audio=False, budget=10_000)
    assert plan.frames == 1 and plan.frame_indices == (0,)
    assert plan.video_tokens == video_tokens(1, plan.height, plan.width)


def test_an_unknown_frame_policy_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"Invalid frame_policy \('frames'\). Supported values are qwen, resolution"):
        VideoPolicy(frame_policy="frames")


def smallest_size(height: int, width: int) -> tuple[int, int]:
    rows, cols = smallest_grid(height, width, VideoPolicy().min_pixels)
    return rows * GRID_PIXELS, cols * GRID_PIXELS


sizes = st.tuples(st.integers(16, 3840), st.integers(16, 2160)).filter(lambda s: max(s) / min(s) <= 150)


@settings(max_examples=300, deadline=None)
@given(
    size=sizes,
    duration=st.floats(0.5, 3600),
    frame_rate=st.sampled_from([10.0, 23.976, 25.0, 30.0, 60.0]),
    has_audio=st.booleans(),
    budget=st.integers(300, 40_000),
    fps=st.sampled_from([0.5, 1.0, 2.0]),
    frame_policy=st.sampled_from(["qwen", "resolution"]),
)
def test_plans_include_both_ends_never_exceed_the_budget_and_keep_reference_frames_first(
    size, duration, frame_rate, has_audio, budget, fps, frame_policy
):
    """Every plan: within the budget, sizes on the 28-pixel grid, first and last frame in, indices ascending. Under the
    qwen policy a binding budget lowers pixels before frames: fewer frames than the reference only when the reference
    count does not fit even at the smallest size. (Breaking check: making the qwen branch drop frames first, as the
    resolution policy does, fails the last assertion.)"""
    width, height = size
    policy = VideoPolicy(fps=fps, frame_policy=frame_policy)
    try:
        plan = plan_video(
            duration=duration,
            frame_rate=frame_rate,
            width=width,
            height=height,
            has_audio=has_audio,
            budget=budget,
            policy=policy,
        )
    except BudgetError:
        return
    assert plan.total_tokens <= budget
    assert plan.height % GRID_PIXELS == 0 and plan.width % GRID_PIXELS == 0
    assert plan.total_tokens == video_block_tokens(plan.frames, plan.height, plan.width, plan.audio_samples)
    assert len(plan.frame_times) == len(plan.frame_indices) == plan.frames
    assert list(plan.frame_indices) == sorted(plan.frame_indices)
    if plan.total_frames > 1:
        assert plan.frame_indices[0] == 0 and plan.frame_indices[-1] == plan.total_frames - 1
    assert all(0 <= t < duration + 1e-6 for t in plan.frame_times)
    assert plan.frames % 2 == 0 or plan.frames == 1
    assert plan.reference_fits == (plan.rule == "reference") and plan.rule in PLAN_RULES[frame_policy]
    if has_audio and plan.rule != "shorter_audio":
        assert math.isclose(plan.audio_seconds, min(duration, MAX_AUDIO_SECONDS))
    if frame_policy == "qwen" and plan.frames < plan.reference_frames:
        rows, cols = smallest_grid(height, width, policy.min_pixels)
        audio = video_block_tokens(2, 28, 28, plan.audio_samples) - video_block_tokens(2, 28, 28)
        assert math.ceil(plan.reference_frames / 2) * rows * cols + 2 + audio > budget, plan
