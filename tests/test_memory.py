"""The analytic memory estimate: its terms follow the architecture, and the levers it models move it the right way.
(Its calibration against traced live bytes of the real 7B and 3B thinkers is tests/test_memory_trace.py.)"""

from __future__ import annotations

import pytest

from omni_lmms_plugin.memory import GIB, ModelDims, estimate_peak_memory

QWEN_7B = ModelDims(
    hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128, intermediate_size=18944,
    vocab_size=152064, vision_hidden=1280, vision_intermediate=3420, parameters=8_931_813_888,
)  # fmt: skip


def test_kv_cache_and_logits_per_token_match_the_architecture():
    one = estimate_peak_memory(QWEN_7B, sequence_length=1, vision_patches=0, last_position_logits=False)
    two = estimate_peak_memory(QWEN_7B, sequence_length=2, vision_patches=0, last_position_logits=False)
    assert one.kv_cache == 57_344  # 2 (k, v) x 28 layers x 4 heads x 128 x 2 bytes
    # Each kept position: bf16 logits and its normed hidden state, plus the embedding of the extra token.
    assert two.logits - one.logits == (152_064 + 3584) * 2 + 3584 * 2
    assert abs(one.weights / GIB - 16.64) < 0.01


def test_the_levers_cut_the_peak():
    stock = estimate_peak_memory(
        QWEN_7B, sequence_length=115_108, vision_patches=423_936, attention="eager", last_position_logits=False
    )
    ours = estimate_peak_memory(QWEN_7B, sequence_length=32_000, vision_patches=100_000, vision_group_patches=92_160)
    assert stock.peak > 3000 * GIB  # eager scores at 115k tokens (10 bytes per score and head in bf16)
    assert ours.peak < 25 * GIB
    full = estimate_peak_memory(QWEN_7B, sequence_length=32_000, vision_patches=0, last_position_logits=False)
    last = estimate_peak_memory(QWEN_7B, sequence_length=32_000, vision_patches=0)
    assert full.logits > 9 * GIB > 40 * last.logits
    grouped = estimate_peak_memory(QWEN_7B, sequence_length=32_000, vision_patches=400_000, vision_group_patches=20_000)
    whole = estimate_peak_memory(QWEN_7B, sequence_length=32_000, vision_patches=400_000)
    assert grouped.vision_stage < whole.vision_stage / 4


def test_audio_adds_its_tower_and_padded_features():
    silent = estimate_peak_memory(QWEN_7B, sequence_length=8000, vision_patches=0)
    audio = estimate_peak_memory(QWEN_7B, sequence_length=8000, vision_patches=0, audio_frames=30_000)
    assert silent.audio_stage == 0
    assert audio.inputs - silent.inputs == 30_000 * (128 * 2 + 4)  # 300 s of bf16 mel features and their mask
    assert audio.audio_stage > 30_000 * 10_000


def test_dims_are_read_from_a_real_config(tiny_7b):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_7b)
    dims = ModelDims.from_config(config)
    assert dims.num_heads // dims.num_kv_heads == 7 and dims.parameters > 0
    thinker = config.thinker_config
    assert (dims.vision_heads, dims.audio_hidden) == (thinker.vision_config.num_heads, thinker.audio_config.d_model)
    with pytest.raises(ValueError, match="dtype='int3' is not one of bfloat16"):
        estimate_peak_memory(dims, sequence_length=10, vision_patches=0, dtype="int3")
