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
    TokenBudget,
    VideoPolicy,
    audio_tokens,
    fit_grid,
    plan_video,
    smart_grid,
    video_block_tokens,
    video_tokens,
)
from omni_lmms_plugin.errors import BudgetError, ConfigError


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


def test_fit_grid_keeps_the_aspect_ratio_within_rounding():
    rows, cols = fit_grid(720, 1280, 300)
    assert rows * cols <= 300
    assert abs(cols - rows * 1280 / 720) <= 1
    assert rows * cols >= 280


def test_a_short_clip_fits_whole():
    plan = plan_video(duration=10, frame_rate=30, width=640, height=360, has_audio=True, budget=32_000)
    assert plan.case == 1
    assert plan.frames == 20
    assert plan.audio_seconds == 10
    assert plan.total_tokens <= plan.budget


def test_ten_minute_720p_with_audio_fits_the_32k_context():
    budget = TokenBudget(max_model_len=32_768, prompt_tokens=120, max_new_tokens=512)
    plan = plan_video(duration=600, frame_rate=30, width=1280, height=720, has_audio=True, budget=budget)
    assert plan.total_tokens <= budget.media_tokens
    assert plan.total_tokens >= 0.95 * budget.media_tokens
    assert plan.frames >= VideoPolicy().frame_floor  # coverage kept before frames went below the floor
    assert plan.audio_seconds == MAX_AUDIO_SECONDS and plan.audio_dropped_seconds == 300
    assert any("not heard" in note for note in plan.notes)


def test_the_policy_cases_come_in_order():
    kwargs = dict(duration=300, frame_rate=30, width=1280, height=720, has_audio=False)
    full = plan_video(**kwargs, budget=10**6)
    fewer_frames = plan_video(**kwargs, budget=64 * 720 + 2 + 100)
    smaller = plan_video(**kwargs, budget=64 * 300)
    fewest = plan_video(**kwargs, budget=20 * 128)
    assert [p.case for p in (full, fewer_frames, smaller, fewest)] == [1, 2, 3, 4]
    assert (full.height, full.width) == (fewer_frames.height, fewer_frames.width) == (560, 1008)
    assert fewer_frames.frames == 128 < full.frames
    assert smaller.height < full.height and smaller.frames >= 128
    assert fewest.frames < 128


def test_audio_is_shortened_explicitly_when_nothing_else_is_left():
    plan = plan_video(duration=120, frame_rate=30, width=640, height=480, has_audio=True, budget=2 * 128 + 2 + 1000)
    assert plan.case == 5
    assert plan.audio_seconds < 120
    assert any("shortened" in note for note in plan.notes)
    assert plan.total_tokens <= plan.budget


def test_nothing_fits_names_the_smallest_budget():
    with pytest.raises(BudgetError, match="needs at least 282 tokens"):
        plan_video(duration=60, frame_rate=30, width=640, height=480, has_audio=False, budget=100)


def test_extreme_aspect_ratio_is_refused_with_the_rule():
    with pytest.raises(ConfigError, match="exceeds 200"):
        plan_video(duration=1, frame_rate=30, width=6000, height=20, has_audio=False, budget=10_000)


def test_a_single_frame_video_plans_one_frame():
    plan = plan_video(duration=1 / 30, frame_rate=30, width=320, height=240, has_audio=False, budget=10_000)
    assert plan.frames == 1
    assert plan.video_tokens == video_tokens(1, plan.height, plan.width)


sizes = st.tuples(st.integers(16, 3840), st.integers(16, 2160)).filter(lambda s: max(s) / min(s) <= 150)


@settings(max_examples=300, deadline=None)
@given(
    size=sizes,
    duration=st.floats(0.5, 3600),
    frame_rate=st.sampled_from([10.0, 23.976, 25.0, 30.0, 60.0]),
    has_audio=st.booleans(),
    budget=st.integers(300, 40_000),
    fps=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_plans_never_exceed_the_budget_and_use_it_when_it_binds(size, duration, frame_rate, has_audio, budget, fps):
    width, height = size
    policy = VideoPolicy(fps=fps)
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
    assert plan.height * plan.width >= policy.min_pixels or plan.case == 1
    assert plan.total_tokens == video_block_tokens(plan.frames, plan.height, plan.width, plan.audio_samples)
    assert len(plan.frame_times) == plan.frames
    assert all(0 <= t < duration for t in plan.frame_times)
    assert list(plan.frame_times) == sorted(plan.frame_times)
    assert plan.frames % 2 == 0 or plan.frames == 1
    # The budget binds the frame count: what is left over is less than one frame pair, >= 95% used. Below ~4k tokens
    # one pair at the smallest size (>= 128 tokens) is too coarse a step for that (2 pairs of 12x12 use 290 of 306).
    # When all wanted frames fit and only the size binds, the rules allow no larger size: one more row of cells (with
    # its aspect-kept columns) would not fit.
    unbounded = plan_video(
        duration=duration,
        frame_rate=frame_rate,
        width=width,
        height=height,
        has_audio=has_audio,
        budget=10**8,
        policy=policy,
    )
    if plan.case in (2, 3, 4) and budget >= 4000:
        if plan.frames < unbounded.frames:
            assert plan.total_tokens >= 0.95 * budget, plan
        else:
            area = (plan.height // GRID_PIXELS) * (plan.width // GRID_PIXELS)
            for rows in range(1, 200):
                for cols in {math.floor(rows * width / height), math.ceil(rows * width / height)} - {0}:
                    if rows * cols > area:
                        bigger = video_block_tokens(
                            plan.frames, rows * GRID_PIXELS, cols * GRID_PIXELS, plan.audio_samples
                        )
                        assert bigger > budget, (rows, cols, plan)
    if plan.case >= 3:
        rows, cols = plan.height // GRID_PIXELS, plan.width // GRID_PIXELS
        assert abs(cols - rows * width / height) <= 1 + 1e-9 or abs(rows - cols * height / width) <= 1 + 1e-9
    if has_audio and plan.case < 5:
        assert math.isclose(plan.audio_seconds, min(duration, MAX_AUDIO_SECONDS))
