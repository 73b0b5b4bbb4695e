"""Tiny random-weight Qwen2.5-Omni checkpoints, built fully offline, for tests and CPU smoke runs.

A build writes one directory laid out like the real ``Qwen/Qwen2.5-Omni-*`` hub checkpoint: a full
``Qwen2_5OmniConfig`` (``model_type: qwen2_5_omni``) whose safetensors hold the thinker under the ``thinker.`` prefix,
plus a real ``Qwen2_5OmniProcessor`` (byte-level ``Qwen2Tokenizer``, ``WhisperFeatureExtractor``, Qwen2-VL image and
video processors, the Omni chat template). So ``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path)`` and
``Qwen2_5OmniProcessor.from_pretrained(path)`` take the same code path as with the real checkpoint.

What is real: the vision geometry (patch 14, temporal patch 2, spatial merge 2, 112-pixel windows), 128 mel bins at
16 kHz with 300 s padding, the image/video pixel ranges, ``max_position_embeddings`` 32768, the multimodal RoPE split
(in the real 16:24:24 proportion), the query:KV head ratio and the hidden:MLP ratio of each variant, the special tokens
and the chat template. What is tiny: widths, depths and the vocabulary (256 byte symbols plus the Omni specials, at the
real specials' relative ids), so a model has well under 1M parameters and generates on CPU in well under a second.
The talker and token2wav are not built (``enable_audio_output: false``); evaluation uses the thinker only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import transformers
from tokenizers import AddedToken
from transformers import (
    Qwen2_5OmniConfig,
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniProcessor,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

__all__ = ["TINY_CHECKPOINT_VERSION", "Variant", "build_tiny_checkpoint", "tiny_checkpoint"]

# Bump whenever the build's output changes, so cached builds made by older code are not reused.
TINY_CHECKPOINT_VERSION = "1"

Variant = Literal["7b", "3b"]

_SEEDED_INIT_LOCK = threading.Lock()

# The Omni special tokens in the order of their real ids (151643 ... 151656); the tiny tokenizer gives them ids
# 256 ... 269, i.e. the real id minus 151387, right after the 256 byte-level symbols.
_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)
_FIRST_SPECIAL_ID = 256
_TOKEN_ID = {token: _FIRST_SPECIAL_ID + i for i, token in enumerate(_SPECIAL_TOKENS)}
# The tokenizer has 270 entries; like the real 152064-row embedding over a 151665-token tokenizer, the model's
# vocabulary is padded past it. The last three padding rows stand in for the talker's tts_text pad/start/end rows.
_VOCAB_SIZE = 288

# The named multimodal tokens `Qwen2_5OmniProcessor.__init__` reads off the tokenizer (`tokenizer.image_token`, ...).
_NAMED_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}

# Renders like the Qwen2.5-Omni chat template: a default system turn when the first turn is not a system turn, string
# or typed-list content, each media item as its placeholder between bos/eos tokens (counted "Picture n: "/"Video n: "/
# "Audio n: " prefixes with `add_vision_id`/`add_audio_id`), and an open assistant turn with `add_generation_prompt`.
_CHAT_TEMPLATE = (
    "{% set counts = namespace(image=0, video=0, audio=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "{% set counts.image = counts.image + 1 %}"
    "{% if add_vision_id %}Picture {{ counts.image }}: {% endif %}"
    "<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif item['type'] == 'audio' or 'audio' in item or 'audio_url' in item %}"
    "{% set counts.audio = counts.audio + 1 %}"
    "{% if add_audio_id %}Audio {{ counts.audio }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif item['type'] == 'video' or 'video' in item %}"
    "{% set counts.video = counts.video + 1 %}"
    "{% if add_vision_id %}Video {{ counts.video }}: {% endif %}"
    "<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in item %}"
    "{{ item['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Pixel range of the real preprocessor_config.json (min 4 x 28^2, max 16384 x 28^2) for images and videos.
_MIN_PIXELS = 3136
_MAX_PIXELS = 12845056

# Each text head is 16 wide, so the mrope split [2, 3, 3] (sum = head_dim / 2) keeps the real [16, 24, 24] proportion.
_HEAD_DIM = 16
_MROPE_SECTION = [2, 3, 3]


@dataclass(frozen=True)
class _TextShape:
    """The language model's shape; query:KV heads and hidden:MLP follow the real variant."""

    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    num_hidden_layers: int

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * _HEAD_DIM


_TEXT_SHAPES: dict[str, _TextShape] = {
    # 7B: hidden 3584 = 28 heads x 128, 4 KV heads, MLP 18944 (5.2857 x hidden).
    # Tiny: hidden 112 = 7 heads x 16, 1 KV head (7:1), MLP 592 = 112 x 18944 / 3584 exactly.
    "7b": _TextShape(num_attention_heads=7, num_key_value_heads=1, intermediate_size=592, num_hidden_layers=2),
    # 3B: hidden 2048 = 16 heads x 128, 2 KV heads, MLP 11008 (5.375 x hidden).
    # Tiny: hidden 128 = 8 heads x 16, 1 KV head (8:1), MLP 688 = 128 x 11008 / 2048 exactly.
    "3b": _TextShape(num_attention_heads=8, num_key_value_heads=1, intermediate_size=688, num_hidden_layers=2),
}


def _vision_config(out_hidden_size: int) -> dict:
    """Both variants share the real vision tower (width 1280, 16 heads, MLP 3420, 32 blocks, full attention in blocks
    7/15/23/31); tiny: width 32, 2 heads of 16, MLP 86 (32 x 3420 / 1280, rounded), 2 blocks with the last one full
    attention, and the real 112-pixel window and patch geometry."""
    return {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 86,
        "num_heads": 2,
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "out_hidden_size": out_hidden_size,
    }


def _audio_config(output_dim: int) -> dict:
    """Both variants share the real audio tower (width 1280, 20 heads, FFN 4x, 32 layers, 128 mel bins, 1500 source
    positions, 100-frame windows); tiny: width 32, 2 heads, FFN 128, 2 layers, real front end and windowing."""
    return {
        "num_mel_bins": 128,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 128,
        "d_model": 32,
        "max_source_positions": 1500,
        "n_window": 100,
        "output_dim": output_dim,
    }


def _omni_config(variant: Variant) -> Qwen2_5OmniConfig:
    """The full `Qwen2_5OmniConfig` (thinker, plus a tiny, never-built talker whose token ids match the tokenizer)."""
    shape = _TEXT_SHAPES[variant]
    hidden = shape.hidden_size
    text_config = {
        "vocab_size": _VOCAB_SIZE,
        "hidden_size": hidden,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "max_window_layers": shape.num_hidden_layers,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(_MROPE_SECTION)},
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "bos_token_id": _TOKEN_ID["<|im_start|>"],
        "eos_token_id": _TOKEN_ID["<|im_end|>"],
        "pad_token_id": _TOKEN_ID["<|endoftext|>"],
    }
    media_ids = {
        "audio_token_index": _TOKEN_ID["<|AUDIO|>"],
        "image_token_index": _TOKEN_ID["<|IMAGE|>"],
        "video_token_index": _TOKEN_ID["<|VIDEO|>"],
        "audio_start_token_id": _TOKEN_ID["<|audio_bos|>"],
        "audio_end_token_id": _TOKEN_ID["<|audio_eos|>"],
        "position_id_per_seconds": 25,
        "seconds_per_chunk": 2,
    }
    # Not fields of Qwen2_5OmniThinkerConfig, but `get_rope_index` reads `config.vision_start_token_id`; the real
    # config.json carries them as extra keys, and so does this one.
    vision_ids = {
        "vision_start_token_id": _TOKEN_ID["<|vision_bos|>"],
        "vision_end_token_id": _TOKEN_ID["<|vision_eos|>"],
    }
    thinker_config = {
        "text_config": text_config,
        "vision_config": _vision_config(hidden),
        "audio_config": _audio_config(hidden),
        **media_ids,
        **vision_ids,
        "vision_token_id": _TOKEN_ID["<|vision_pad|>"],
        "bos_token_id": _TOKEN_ID["<|im_start|>"],
        "eos_token_id": _TOKEN_ID["<|im_end|>"],
        "pad_token_id": _TOKEN_ID["<|endoftext|>"],
        # The real id is that of the BPE token "user"; a byte-level vocabulary has none, "u" stands in.
        "user_token_id": ord("u"),
    }
    talker_config = {
        **media_ids,
        **vision_ids,
        "tts_text_pad_token_id": _VOCAB_SIZE - 3,
        "tts_text_start_token_id": _VOCAB_SIZE - 2,
        "tts_text_end_token_id": _VOCAB_SIZE - 1,
        "embedding_size": hidden,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": _HEAD_DIM,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": list(_MROPE_SECTION)},
    }
    return Qwen2_5OmniConfig(thinker_config=thinker_config, talker_config=talker_config, enable_audio_output=False)


def _tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE `Qwen2Tokenizer` (no merges) over the 256 byte symbols plus the Omni special tokens."""
    vocab = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
    vocab.update(_TOKEN_ID)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(_NAMED_TOKENS),
        model_max_length=32768,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in _SPECIAL_TOKENS], special_tokens=True
    )
    return tokenizer


def _processor() -> Qwen2_5OmniProcessor:
    """A `Qwen2_5OmniProcessor` with the real checkpoint's feature extractor, image and video processor settings."""
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=300,
        n_fft=400,
        padding_value=0.0,
        dither=0.0,
        padding_side="right",
        return_attention_mask=True,
    )
    vision = {
        "min_pixels": _MIN_PIXELS,
        "max_pixels": _MAX_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(**vision),
        feature_extractor=feature_extractor,
        tokenizer=_tokenizer(),
        chat_template=_CHAT_TEMPLATE,
    )


def build_tiny_checkpoint(path: str | os.PathLike, variant: Variant = "7b", seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2.5-Omni checkpoint plus its processor into ``path`` and return it.

    ``variant`` picks the head and MLP ratios of Qwen2.5-Omni-7B or -3B. The weights depend only on ``seed`` (the
    global torch RNG is left untouched), so two builds with one seed write byte-identical safetensors. ``path`` is
    created if missing; files already in it are overwritten.
    """
    if variant not in _TEXT_SHAPES:
        raise ValueError(f"variant must be one of {sorted(_TEXT_SHAPES)}, got {variant!r}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = _omni_config(variant)
    # Initialisation draws from torch's global RNG: seed it in a forked state, one build at a time per process.
    with _SEEDED_INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5OmniForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(out)
    _processor().save_pretrained(out)
    return out


def tiny_checkpoint(variant: Variant = "7b", cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cached tiny checkpoint of ``variant`` (seed 0), building it on first use.

    The checkpoint lives in ``<root>/tiny-<variant>-<version>``, with ``root`` = ``cache_dir``, else
    ``$OMNI_LMMS_CACHE``, else ``~/.cache/omni_lmms_plugin``; ``<version>`` names this module's build version and the
    installed transformers version. A build goes to a temporary sibling directory that is renamed into place, so
    concurrent processes (accelerate ranks, pytest-xdist workers) never see a half-written checkpoint: the first rename
    wins and the others discard their copy.
    """
    root = Path(cache_dir or os.environ.get("OMNI_LMMS_CACHE") or Path.home() / ".cache" / "omni_lmms_plugin")
    version = f"v{TINY_CHECKPOINT_VERSION}-transformers{transformers.__version__}"
    final = root.expanduser() / f"tiny-{variant}-{version}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build_tiny_checkpoint(staging, variant=variant)
        try:
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
