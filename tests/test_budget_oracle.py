"""The token arithmetic against the real ``Qwen2_5OmniProcessor`` as the oracle: build inputs of the planned size, run
the processor, count the tokens it produced."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from omni_lmms_plugin.budget import (
    AUDIO_SAMPLE_RATE,
    audio_block_tokens,
    image_block_tokens,
    plan_image,
    video_block_tokens,
)

SYSTEM = [{"role": "system", "content": [{"type": "text", "text": "You are a test."}]}]


def _prompt(processor, kinds: list[str]) -> tuple[str, int]:
    """The templated text and its tokens without the media blocks (bos + placeholder + eos per item)."""
    content = [{"type": kind} for kind in kinds] + [{"type": "text", "text": "What happens?"}]
    text = processor.apply_chat_template(
        [*SYSTEM, {"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    count = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    return text, count - 3 * len(kinds)


def _video_tokens_from_processor(
    processor, frames: int, height: int, width: int, samples: int, patch_size: int = 14
) -> int:
    text, prompt = _prompt(processor, ["video"])
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    kwargs = {
        "text": [text],
        "videos": [video],
        "videos_kwargs": {"do_resize": False, "fps": 2.0},
        "return_tensors": "pt",
    }
    if samples:
        kwargs.update(
            audio=[np.zeros(samples, dtype=np.float32)], audio_from_video_indices=[0], load_audio_from_video=True
        )
    batch = processor(**kwargs)
    grid = batch["video_grid_thw"][0].tolist()
    assert grid[1:] == [height // patch_size, width // patch_size], "the processor resized frames already planned"
    return int(batch["input_ids"].shape[1]) - prompt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.integers(1, 12),
    rows=st.integers(1, 14),
    cols=st.integers(1, 14),
    seconds=st.one_of(st.just(0.0), st.floats(0.02, 30.0)),
)
def test_video_blocks_match_the_processor(processor, frames, rows, cols, seconds):
    samples = int(round(seconds * AUDIO_SAMPLE_RATE))
    expected = video_block_tokens(frames, rows * 28, cols * 28, samples)
    assert _video_tokens_from_processor(processor, frames, rows * 28, cols * 28, samples) == expected


@pytest.mark.parametrize("seconds", [299.99, 300.0, 300.5, 420.0])
def test_audio_in_video_past_300_s_counts_what_the_extractor_keeps(processor, seconds):
    samples = int(seconds * AUDIO_SAMPLE_RATE)
    assert _video_tokens_from_processor(processor, 4, 56, 56, samples) == video_block_tokens(4, 56, 56, samples)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seconds=st.one_of(st.floats(0.01, 60.0), st.sampled_from([299.0, 300.0, 301.0, 360.0])))
def test_standalone_audio_blocks_match_the_processor(processor, seconds):
    samples = max(1, int(round(seconds * AUDIO_SAMPLE_RATE)))
    text, prompt = _prompt(processor, ["audio"])
    batch = processor(text=[text], audio=[np.zeros(samples, dtype=np.float32)], return_tensors="pt")
    assert int(batch["input_ids"].shape[1]) - prompt == audio_block_tokens(samples)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(30, 1500), height=st.integers(30, 1500))
def test_image_blocks_match_the_processor(processor, width, height):
    size = processor.image_processor.size
    planned_h, planned_w, expected = plan_image(
        height, width, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"]
    )
    text, prompt = _prompt(processor, ["image"])
    batch = processor(text=[text], images=[Image.new("RGB", (width, height))], return_tensors="pt")
    assert batch["image_grid_thw"][0].tolist()[1:] == [planned_h // 14, planned_w // 14]
    assert int(batch["input_ids"].shape[1]) - prompt == expected == image_block_tokens(planned_h, planned_w)


def test_several_media_in_one_prompt_add_up(processor):
    text, prompt = _prompt(processor, ["image", "audio", "video"])
    batch = processor(
        text=[text],
        images=[Image.new("RGB", (100, 80))],
        audio=[np.zeros(48_000, dtype=np.float32)],
        videos=[np.zeros((6, 84, 112, 3), dtype=np.uint8)],
        videos_kwargs={"do_resize": False, "fps": 1.0},
        return_tensors="pt",
    )
    size = processor.image_processor.size
    image = plan_image(80, 100, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])[2]
    expected = image + audio_block_tokens(48_000) + video_block_tokens(6, 84, 112)
    assert int(batch["input_ids"].shape[1]) - prompt == expected


def test_another_geometry_is_a_configuration(tiny_7b):
    """A model whose vision tower takes 16-pixel patches (grid cells of 32) is planned by the same code from its config:
    the geometry is read from the thinker config and the processor, and the planned tokens equal what a processor with
    that patch size produces. Catches the arithmetic falling back to module constants (cells of 28): the token counts
    and the 32-pixel multiples then differ."""
    import copy
    from types import SimpleNamespace

    from transformers import Qwen2_5OmniProcessor

    from omni_lmms_plugin.budget import Geometry, video_tokens
    from omni_lmms_plugin.video_plan import plan_video

    processor = Qwen2_5OmniProcessor.from_pretrained(tiny_7b)
    processor.video_processor = copy.deepcopy(processor.video_processor)
    processor.video_processor.patch_size = 16
    vision = SimpleNamespace(patch_size=16, spatial_merge_size=2, temporal_patch_size=2)
    geometry = Geometry.from_model(SimpleNamespace(vision_config=vision), processor.feature_extractor)
    assert (geometry.grid_pixels, geometry.audio_hop, geometry.max_audio_seconds) == (32, 160, 300)

    plan = plan_video(
        duration=6.0, frame_rate=10, width=640, height=360, has_audio=False, budget=2_000, geometry=geometry
    )
    assert plan.height % 32 == 0 and plan.width % 32 == 0
    assert plan.video_tokens == video_tokens(plan.frames, plan.height, plan.width, geometry=geometry)
    assert plan.total_tokens <= 2_000
    produced = _video_tokens_from_processor(processor, plan.frames, plan.height, plan.width, 0, patch_size=16)
    assert produced == plan.total_tokens
