"""The tiny offline Qwen2.5-Omni checkpoint loads and runs through the same transformers entry points as the real one."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

from omni_lmms_plugin.tiny_model import TINY_CHECKPOINT_VERSION, build_tiny_checkpoint, tiny_checkpoint

# (query heads, KV heads) of the real models; the tiny ones keep the ratio.
REAL_HEADS = {"7b": (28, 4), "3b": (16, 2)}
# hidden : MLP of the real models.
REAL_MLP_RATIO = {"7b": 18944 / 3584, "3b": 11008 / 2048}

FRAMES, HEIGHT, WIDTH = 8, 56, 84  # multiples of 28: the processor must not resize them
AUDIO_SECONDS = 4
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {variant: build_tiny_checkpoint(root / variant, variant=variant) for variant in ("7b", "3b")}


@pytest.fixture(scope="module")
def model(checkpoints: dict[str, Path]) -> Qwen2_5OmniThinkerForConditionalGeneration:
    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(checkpoints["7b"]).eval()


@pytest.fixture(scope="module")
def processor(checkpoints: dict[str, Path]) -> Qwen2_5OmniProcessor:
    return Qwen2_5OmniProcessor.from_pretrained(checkpoints["7b"])


@pytest.fixture(scope="module")
def media() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "video": rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8),
        "image": rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
        "audio": (0.1 * rng.standard_normal(AUDIO_SECONDS * SAMPLE_RATE)).astype(np.float32),
    }


def _prompt(processor: Qwen2_5OmniProcessor, *items: dict) -> str:
    conversation = [{"role": "user", "content": [*items, {"type": "text", "text": "What happens?"}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def _audio_tokens(n_samples: int) -> int:
    frames = min(math.ceil(n_samples / 160), 30000)
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def _generate(model, inputs, **kwargs) -> list[int]:
    """Greedy 5 tokens; `min_new_tokens` keeps the random model from stopping at once, so cached decoding runs."""
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, **kwargs)
    prompt_len = inputs["input_ids"].shape[1]
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])  # the thinker returns prompt + new tokens
    return out[0, prompt_len:].tolist()


@pytest.mark.parametrize("variant", ["7b", "3b"])
def test_variant_loads_through_from_pretrained(checkpoints: dict[str, Path], variant: str) -> None:
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(checkpoints[variant])
    processor = Qwen2_5OmniProcessor.from_pretrained(checkpoints[variant])
    config = model.config
    text = config.text_config

    assert text.max_position_embeddings == 32768
    heads, kv_heads = REAL_HEADS[variant]
    assert text.num_attention_heads / text.num_key_value_heads == heads / kv_heads
    assert text.intermediate_size / text.hidden_size == pytest.approx(REAL_MLP_RATIO[variant], rel=1e-3)
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    vision = config.vision_config
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert vision.out_hidden_size == text.hidden_size
    assert all(0 <= i < vision.depth for i in vision.fullatt_block_indexes)
    assert config.audio_config.num_mel_bins == 128
    assert config.audio_config.output_dim == text.hidden_size

    tokenizer = processor.tokenizer
    assert text.vocab_size >= len(tokenizer)
    expected_ids = {
        "<|IMAGE|>": config.image_token_id,
        "<|VIDEO|>": config.video_token_id,
        "<|AUDIO|>": config.audio_token_id,
        "<|audio_bos|>": config.audio_start_token_id,
        "<|audio_eos|>": config.audio_end_token_id,
        "<|vision_bos|>": config.vision_start_token_id,
        "<|vision_eos|>": config.vision_end_token_id,
        "<|im_end|>": model.generation_config.eos_token_id,
        "<|endoftext|>": model.generation_config.pad_token_id,
    }
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in expected_ids} == expected_ids
    for token in expected_ids:  # one token each, never split into bytes
        assert len(tokenizer(token)["input_ids"]) == 1

    extractor = processor.feature_extractor
    assert (extractor.feature_size, extractor.sampling_rate, extractor.hop_length) == (128, 16000, 160)
    assert extractor.n_samples == 300 * 16000
    for vision_processor in (processor.image_processor, processor.video_processor):
        assert (vision_processor.size["shortest_edge"], vision_processor.size["longest_edge"]) == (3136, 12845056)
        assert (vision_processor.patch_size, vision_processor.temporal_patch_size) == (14, 2)
        assert vision_processor.merge_size == 2


def test_chat_template_renders_like_qwen2_5_omni(processor: Qwen2_5OmniProcessor) -> None:
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "v.mp4"},
                {"type": "audio", "audio": "a.wav"},
                {"type": "image", "image": "i.png"},
                {"type": "text", "text": "Why?"},
            ],
        },
        {"role": "assistant", "content": "Because."},
    ]
    assert processor.apply_chat_template(conversation, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>"
        "<|vision_bos|><|IMAGE|><|vision_eos|>Why?<|im_end|>\n"
        "<|im_start|>assistant\nBecause.<|im_end|>\n"
    )
    assert processor.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_video_with_its_audio_generates(model, processor: Qwen2_5OmniProcessor, media) -> None:
    fps = 4.0
    inputs = processor(
        text=_prompt(processor, {"type": "video", "video": "clip.mp4"}),
        videos=[media["video"]],
        audio=[media["audio"]],
        audio_from_video_indices=[0],
        load_audio_from_video=True,
        videos_kwargs={"do_resize": False, "fps": fps},
        return_tensors="pt",
    )
    # Frames already at multiples of 28 keep their size: one grid cell per 14 px, one temporal cell per 2 frames.
    assert inputs["video_grid_thw"].tolist() == [[FRAMES // 2, HEIGHT // 14, WIDTH // 14]]
    assert inputs["video_second_per_grid"].tolist() == [2 / fps]
    ids = inputs["input_ids"][0].tolist()
    video_tokens = FRAMES // 2 * (HEIGHT // 28) * (WIDTH // 28)
    audio_tokens = _audio_tokens(AUDIO_SECONDS * SAMPLE_RATE)
    assert ids.count(model.config.video_token_id) == video_tokens
    assert ids.count(model.config.audio_token_id) == audio_tokens
    # Audio-in-video nests one audio block in the vision block: V + A + 4 special tokens.
    start = ids.index(model.config.vision_start_token_id)
    assert ids[start + 1] == model.config.audio_start_token_id
    assert ids[start + video_tokens + audio_tokens + 3] == model.config.vision_end_token_id

    new_tokens = _generate(model, inputs, use_audio_in_video=True)
    assert len(new_tokens) == 5
    assert all(0 <= t < model.config.text_config.vocab_size for t in new_tokens)


def test_video_is_upscaled_unless_resizing_is_off(processor: Qwen2_5OmniProcessor, media) -> None:
    """The Omni processor's own per-frame pixel floor (128 x 28^2) upscales small frames by default."""
    text = _prompt(processor, {"type": "video", "video": "clip.mp4"})
    inputs = processor(text=text, videos=[media["video"]], return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[FRAMES // 2, 20, 28]]  # 56x84 became 280x392


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_generates_from_each_modality(model, processor: Qwen2_5OmniProcessor, media, modality: str) -> None:
    if modality == "text":
        inputs = processor(text=_prompt(processor), return_tensors="pt")
    elif modality == "image":
        inputs = processor(
            text=_prompt(processor, {"type": "image", "image": "frame.png"}),
            images=[media["image"]],
            return_tensors="pt",
        )
        assert inputs["image_grid_thw"].tolist() == [[1, HEIGHT // 14, WIDTH // 14]]
    else:
        inputs = processor(
            text=_prompt(processor, {"type": "audio", "audio": "speech.wav"}),
            audio=[media["audio"]],
            return_tensors="pt",
        )
        expected = _audio_tokens(AUDIO_SECONDS * SAMPLE_RATE)
        assert inputs["input_ids"][0].tolist().count(model.config.audio_token_id) == expected
    new_tokens = _generate(model, inputs)
    assert len(new_tokens) == 5
    assert isinstance(processor.batch_decode([new_tokens], skip_special_tokens=True)[0], str)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first = build_tiny_checkpoint(tmp_path / "a", seed=3)
    second = build_tiny_checkpoint(tmp_path / "b", seed=3)
    other = build_tiny_checkpoint(tmp_path / "c", seed=4)
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()
    assert (first / weights).read_bytes() != (other / weights).read_bytes()


def test_build_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_checkpoint(tmp_path / "ckpt", variant="3b")
    assert torch.equal(torch.rand(3), expected)


def test_tiny_checkpoint_is_cached_and_built_atomically(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda _: tiny_checkpoint("3b", cache_dir=tmp_path), range(2)))
    assert paths[0] == paths[1]
    assert paths[0].parent == tmp_path
    assert paths[0].name.startswith(f"tiny-3b-v{TINY_CHECKPOINT_VERSION}-")
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]  # the losing build's staging dir is gone
    stamp = (paths[0] / "model.safetensors").stat().st_mtime_ns
    assert tiny_checkpoint("3b", cache_dir=tmp_path) == paths[0]
    assert (paths[0] / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert Qwen2_5OmniProcessor.from_pretrained(paths[0]).tokenizer.image_token == "<|IMAGE|>"


def test_tiny_checkpoint_honours_the_cache_environment_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMNI_LMMS_CACHE", str(tmp_path))
    assert tiny_checkpoint("7b").parent == tmp_path
