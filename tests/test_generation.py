"""Memory-lean generation gives the same answers: grouped vision encoding equals one-pass encoding, last-position
logits give the same greedy output as full logits; and the OOM policy retries smaller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni_lmms_plugin import generation as gen
from omni_lmms_plugin import model_surgery as surgery
from omni_lmms_plugin import retries
from omni_lmms_plugin.errors import ConfigError, MediaError


@pytest.fixture(scope="module")
def thinker(tiny_7b):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_7b, dtype=torch.float32).eval()
    return model


def _video_inputs(processor, frames: int = 12, height: int = 56, width: int = 84, with_audio: bool = True):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, size=(frames, height, width, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = {
        "text": [text],
        "videos": [video],
        "videos_kwargs": {"do_resize": False, "fps": 2.0},
        "return_tensors": "pt",
    }
    if with_audio:
        audio = rng.standard_normal(16_000 * frames // 2).astype(np.float32) * 0.1
        kwargs.update(audio=[audio], audio_from_video_indices=[0], load_audio_from_video=True)
    return processor(**kwargs)


def test_grouped_vision_encoding_equals_one_pass(thinker, processor):
    batch = _video_inputs(processor, frames=14, with_audio=False)
    pixels, grid = batch["pixel_values_videos"], batch["video_grid_thw"]
    with torch.inference_mode():
        one_pass = thinker.model.get_video_features(pixels, grid, return_dict=True).pooler_output
    original = thinker.model.get_video_features
    try:
        surgery.install_grouped_vision_encoding(thinker, group_frames=4)
        with torch.inference_mode():
            grouped = thinker.model.get_video_features(pixels, grid).pooler_output
    finally:
        thinker.model.get_video_features = original
    assert len(grouped) == len(one_pass) == 1
    assert grouped[0].shape == one_pass[0].shape
    torch.testing.assert_close(grouped[0], one_pass[0], rtol=1e-5, atol=1e-5)


def test_last_position_logits_give_the_same_greedy_answer(thinker, processor):
    batch = _video_inputs(processor)
    params = gen.GenerationParams(max_new_tokens=12)
    full, _ = gen.run_generate(thinker, dict(batch), params, use_audio_in_video=True, tokenizer=processor.tokenizer)
    handle = surgery.install_last_position_logits(thinker)
    try:
        with torch.inference_mode():
            logits = thinker(**batch, use_audio_in_video=True).logits
        lean, _ = gen.run_generate(thinker, dict(batch), params, use_audio_in_video=True, tokenizer=processor.tokenizer)
    finally:
        handle.remove()
    assert logits.shape[1] == 1, "prefill computed logits for every position"
    assert lean == full


def test_generation_params_translate_lmms_kwargs_once():
    params = gen.GenerationParams.from_lmms(
        {"until": "\n\n", "temperature": 0, "max_new_tokens": 7, "image_aspect_ratio": "pad"}, 512
    )
    assert params.until == ("\n\n",) and params.max_new_tokens == 7 and not params.do_sample
    assert params.to_hf()["do_sample"] is False
    assert gen.GenerationParams.from_lmms({"temperature": 0.7}, 32).to_hf()["temperature"] == 0.7
    assert params.cut_at_stop("B\n\nbecause") == "B"
    with pytest.raises(ConfigError, match="unsupported generation_kwargs: bogus; supported: .*repetition_penalty"):
        gen.GenerationParams.from_lmms({"bogus": 1}, 32)
    with pytest.raises(ConfigError, match=r"top_k='many' must be int"):
        gen.GenerationParams.from_lmms({"top_k": "many"}, 32)


def test_every_accepted_generation_key_is_one_generate_understands():
    """The keys GenerationParams passes are attributes of transformers' GenerationConfig."""
    from transformers import GenerationConfig

    given = {"top_k": "5", "top_p": 0.9, "min_p": 0.1, "typical_p": 0.95, "repetition_penalty": 1.1,
             "length_penalty": 0.8, "no_repeat_ngram_size": 2, "min_new_tokens": 3, "use_cache": "false",
             "early_stopping": True}  # fmt: skip
    sampled = gen.GenerationParams.from_lmms({**given, "temperature": 0.5}, 16).to_hf()
    config = GenerationConfig()
    for key in sampled:
        assert hasattr(config, key), key
    assert sampled["top_k"] == 5 and sampled["use_cache"] is False and sampled["min_new_tokens"] == 3
    greedy = gen.GenerationParams.from_lmms(given, 16).to_hf()
    assert greedy["top_k"] is None and greedy["top_p"] is None and "min_p" not in greedy
    assert greedy["repetition_penalty"] == 1.1 and greedy["no_repeat_ngram_size"] == 2


def test_generation_keys_reach_generate(thinker, processor):
    """``no_repeat_ngram_size=1`` forbids any repeated token in the answer. Catches
    GenerationParams dropping the extra keys (then the tiny model repeats tokens and this fails)."""
    batch = _video_inputs(processor)
    plain = gen.GenerationParams.from_lmms({"max_new_tokens": 24}, 24)
    strict = gen.GenerationParams.from_lmms({"max_new_tokens": 24, "no_repeat_ngram_size": 1}, 24)
    with torch.inference_mode():
        repeated = thinker.generate(**batch, use_audio_in_video=True, **plain.to_hf())[0, batch["input_ids"].shape[1] :]
        unique = thinker.generate(**batch, use_audio_in_video=True, **strict.to_hf())[0, batch["input_ids"].shape[1] :]
    assert len(set(repeated.tolist())) < repeated.numel(), "precondition: the tiny model repeats itself"
    assert len(set(unique.tolist())) == unique.numel()


class Staged:
    """What a test attempt stages: the scale it was asked for, and input tokens proportional to it."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.input_tokens = int(1000 * scale)

    def plan_summary(self) -> list[dict]:
        return [{"kind": "video", "total_tokens": self.input_tokens}]

    def notes(self) -> list[str]:
        return []


def test_out_of_memory_retries_with_a_smaller_plan_then_answers():
    """Each retry stages at ``shrink`` times the scale the failed attempt ran at, and its record carries the smaller
    input. Breaking check: staging every retry at scale 1.0 fails the scale and token assertions."""
    seen = []

    def run(staged: Staged) -> str:
        seen.append(staged.scale)
        if len(seen) < 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return "A"

    outcome = retries.run_with_retries(Staged, run, oom_retries=3, shrink=0.5)
    assert outcome.result == "A" and outcome.failure is None
    assert seen == [1.0, 0.5, 0.25]
    assert [a.outcome for a in outcome.attempts] == ["out_of_memory", "out_of_memory", "answered"]
    assert [a.input_tokens for a in outcome.attempts] == [1000, 500, 250]


def test_a_retry_shrinks_from_the_scale_the_attempt_ended_at():
    """A stage that shrank its own plan (the memory fit) reports that scale; the retry shrinks from there."""
    seen = []

    def stage(scale: float) -> Staged:
        seen.append(scale)
        return Staged(scale * 0.5)

    def run(staged: Staged) -> str:
        if len(seen) < 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "A"

    outcome = retries.run_with_retries(stage, run, oom_retries=3, shrink=0.5)
    assert seen == [1.0, 0.25] and outcome.attempts[0].budget_scale == 0.5


def test_out_of_memory_on_every_attempt_is_an_explicit_failure():
    def run(staged):
        raise RuntimeError("CUDA error: out of memory")

    outcome = retries.run_with_retries(Staged, run, oom_retries=2, shrink=0.5)
    assert outcome.result is None and "out of memory on all 3 attempts" in outcome.failure
    assert len(outcome.attempts) == 3


def test_media_errors_are_not_retried():
    calls = []

    def stage(scale):
        calls.append(scale)
        raise MediaError("/data/x.mp4", "moov atom not found")

    outcome = retries.run_with_retries(stage, lambda staged: "A", oom_retries=3, shrink=0.5)
    assert len(calls) == 1 and "x.mp4" in outcome.failure
    assert outcome.attempts[0].outcome == "failed"
