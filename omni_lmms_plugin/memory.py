"""Analytic peak-memory estimate for one request to the Qwen2.5-Omni thinker. Pure arithmetic, no torch.

The estimate is a sum of byte counts per unit of work, from the model's configuration, one per stage of a request
(the stages run one after another, so the peak is the largest of them):

- weights: parameters x bytes per parameter (read from the loaded model, or estimated from the config);
- inputs: the batch on the device (token ids and mask, pixel patches, padded audio features), alive throughout;
- audio stage: the audio tower's working set, linear in mel frames;
- vision stage: the vision tower's working set, linear in the patches of one encoding group
  (``vision_group_frames`` frames at a time; the tower never attends across 2-frame temporal grids);
- prefill: the KV cache of the whole sequence plus one decoder layer's working set per token (eager attention adds
  the ``heads x L^2`` scores), or the logits of the kept positions (one with last-position logits, all L otherwise);
- decode: the cache plus one layer's keys or values concatenated anew per step;
- the text embeddings (``L x hidden``) are alive in every stage.

Peak = weights + inputs + max(stages) + a fixed allowance for what no tensor accounts for: the CUDA context, the
caching allocator's slack and the kernels' workspaces. Every term except that allowance is checked against the live
tensor bytes of the real 7B and 3B thinkers, traced without a GPU by ``benchmarks/memory_trace.py`` (within 3% per
stage, 1% at the peak, for 4k-32k-token videos with and without audio, plugin and stock settings);
``tests/test_memory_trace.py`` keeps it so. The allowance (1 GiB) is not traced: ``benchmarks/gpu_memory.py``
measures it on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .budget import MAX_AUDIO_FEATURES, PATCH_SIZE, TEMPORAL_PATCH

__all__ = ["ModelDims", "MemoryEstimate", "estimate_peak_memory", "kv_cache_bytes", "GIB", "PATCH_VALUES", "MEL_BINS"]

GIB = 1024**3
_OVERHEAD_BYTES = 1 * GIB
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}  # bytes per value of each model dtype
PATCH_VALUES = 3 * TEMPORAL_PATCH * PATCH_SIZE**2  # values of one flattened ViT patch in pixel_values_videos
MEL_BINS = 128  # values of one mel frame in input_features


@dataclass(frozen=True)
class ModelDims:
    """The sizes of the thinker that memory depends on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    vision_hidden: int
    vision_intermediate: int
    parameters: int
    vision_heads: int = 16
    audio_hidden: int = 1280
    audio_intermediate: int = 5120
    patch_values: int = PATCH_VALUES  # values of one flattened ViT patch: channels x temporal patch x patch side^2

    @classmethod
    def from_config(cls, config: Any, parameters: int | None = None) -> ModelDims:
        """Read the sizes from a ``Qwen2_5OmniThinkerConfig`` (or the full Omni config, whose ``thinker_config``
        holds them). ``parameters`` defaults to an estimate from the sizes."""
        config = getattr(config, "thinker_config", config)
        text = config.text_config
        vision = config.vision_config
        audio = config.audio_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        dims = cls(
            hidden_size=text.hidden_size,
            num_layers=text.num_hidden_layers,
            num_heads=text.num_attention_heads,
            num_kv_heads=text.num_key_value_heads,
            head_dim=head_dim,
            intermediate_size=text.intermediate_size,
            vocab_size=text.vocab_size,
            vision_hidden=vision.hidden_size,
            vision_intermediate=vision.intermediate_size,
            parameters=parameters or 0,
            vision_heads=vision.num_heads,
            audio_hidden=audio.d_model,
            audio_intermediate=audio.encoder_ffn_dim,
            patch_values=getattr(vision, "in_channels", 3) * vision.temporal_patch_size * vision.patch_size**2,
        )
        if parameters is None:
            dims = _with_parameters(dims, config)
        return dims


def _with_parameters(dims: ModelDims, config: Any) -> ModelDims:
    """Parameter count from the sizes: embeddings + head, decoder layers, vision and audio towers."""
    h, i = dims.hidden_size, dims.intermediate_size
    attention = h * dims.num_heads * dims.head_dim * 2 + h * dims.num_kv_heads * dims.head_dim * 2
    layer = attention + 3 * h * i
    text_params = 2 * dims.vocab_size * h + dims.num_layers * layer
    vision = config.vision_config
    vision_layer = 4 * dims.vision_hidden**2 + 3 * dims.vision_hidden * dims.vision_intermediate
    vision_params = vision.depth * vision_layer
    audio = config.audio_config
    audio_params = audio.encoder_layers * (4 * audio.d_model**2 + 2 * audio.d_model * audio.encoder_ffn_dim)
    return ModelDims(**{**dims.__dict__, "parameters": text_params + vision_params + audio_params})


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each term and the predicted peak, all for batch 1.

    ``inputs`` is alive for the whole request; ``audio_stage``, ``vision_stage``, ``language_stage``, ``logits`` and
    ``decode_step`` are the working sets of the stages, which run one after another; ``kv_cache`` is alive from the
    prefill on. :meth:`stages` gives what is alive above the weights at each stage's peak.
    """

    weights: int
    inputs: int
    audio_stage: int
    vision_stage: int
    kv_cache: int
    language_stage: int
    logits: int
    decode_step: int
    overhead: int
    peak: int

    def stages(self) -> dict[str, int]:
        """Bytes alive above the weights at the peak of each stage (``benchmarks/memory_trace.py`` traces these)."""
        return {
            "audio_stage": self.inputs + self.audio_stage,
            "vision_stage": self.inputs + self.vision_stage,
            "prefill": self.inputs + self.kv_cache + max(self.language_stage, self.logits),
            "decode": self.inputs + self.kv_cache + self.decode_step,
        }

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def kv_cache_bytes(dims: ModelDims, tokens: int, dtype: str) -> int:
    """Bytes of the key/value cache of ``tokens`` positions: keys and values, every layer, every KV head."""
    return tokens * 2 * dims.num_layers * dims.num_kv_heads * dims.head_dim * DTYPE_BYTES[dtype]


def estimate_peak_memory(
    dims: ModelDims,
    *,
    sequence_length: int,
    vision_patches: int,
    vision_group_patches: int | None = None,
    audio_frames: int = 0,
    attention: str = "sdpa",
    dtype: str = "bfloat16",
    last_position_logits: bool = True,
    max_new_tokens: int = 0,
    weight_bytes: int | None = None,
) -> MemoryEstimate:
    """Predicted peak device memory of one request.

    Args:
        dims: the thinker's sizes.
        sequence_length: input tokens (prompt, media placeholders, special tokens).
        vision_patches: ViT patches of all videos (4 per video token).
        vision_group_patches: patches encoded per vision-tower call (None: all in one pass).
        audio_frames: mel frames (100 per second) of the audio the audio tower encodes (one audio stream).
        attention: ``"sdpa"``/``"flash_attention_2"`` (no score matrix) or ``"eager"``.
        dtype: the model dtype.
        last_position_logits: whether ``install_last_position_logits`` is on (else logits for every position).
        max_new_tokens: tokens generated after the prefill.
        weight_bytes: the loaded model's parameter bytes (default: parameters x dtype width).

    Returns:
        The terms and the peak, in bytes.
    """
    width = DTYPE_BYTES.get(dtype)
    if width is None:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(DTYPE_BYTES)}; pass the model's dtype")
    weights = weight_bytes if weight_bytes is not None else dims.parameters * width
    total_tokens = sequence_length + max_new_tokens
    embeddings = sequence_length * dims.hidden_size * width  # inputs_embeds: alive from the first stage to the end

    # The batch on the device: input_ids and attention_mask (int64), pixel_values_videos in the model dtype, and the
    # audio features padded to 300 s by the feature extractor, with their int32 mask.
    inputs = 2 * 8 * sequence_length + vision_patches * dims.patch_values * width
    if audio_frames:
        inputs += MAX_AUDIO_FEATURES * (MEL_BINS * width + 4)

    # Audio tower, one layer at a time over mel frames / 2 positions: the residual, its norm and the layer output
    # (3 x d_model) and the MLP's fc1 and activation (2 x ffn); the valid frames are copied out of the padded features.
    audio_stage = 0
    if audio_frames:
        per_position = width * (3 * dims.audio_hidden + 2 * dims.audio_intermediate)
        audio_stage = embeddings + audio_frames * (per_position // 2 + MEL_BINS * width)

    # Vision tower, one block at a time over one group's patches. The peak is in the attention half of a block: the
    # residual, its norm, q, k, v and the attention output in the model dtype (5 x width), the float32 temporaries
    # of apply_rotary_pos_emb_vision for q and k (6 x 4 bytes), the float32 cos/sin tables and the int64 (h, w)
    # position ids. Eager attention adds nothing at the peak (a window or one 2-frame grid at a time). The merged
    # embeddings of the groups already encoded stay alive: one LLM-width vector per 4 patches.
    group = min(vision_patches, vision_group_patches or vision_patches)
    vision_head_dim = dims.vision_hidden // dims.vision_heads
    per_patch = (5 * width + 6 * 4) * dims.vision_hidden + 2 * 4 * vision_head_dim + 2 * 8
    vision_stage = embeddings + group * per_patch + (vision_patches - group) // 4 * dims.hidden_size * width

    kv_per_token = kv_cache_bytes(dims, 1, dtype)
    kv_cache = total_tokens * kv_per_token
    # One decoder layer at a time, beside the embeddings and the cache. sdpa: the peak is in the MLP (the residual,
    # its norm and the attention output, 3 x hidden; gate, up and their product, 3 x intermediate). Eager: in the
    # attention, over the heads' L x L scores (scaled, masked, float32 softmax and its cast: 3 x width + 4 per score)
    # and the shared mask (width per score), beside the residual, its norm, q and k/v repeated to every head. Both:
    # the rotary cos/sin (2 x head_dim) and the int64 3-D positions.
    rotary = 2 * dims.head_dim * width + 3 * 8
    if attention == "eager":
        heads = dims.num_heads * dims.head_dim
        per_token = width * (2 * dims.hidden_size + 3 * heads) + rotary
        scores = (dims.num_heads * (3 * width + 4) + width) * sequence_length**2
    else:
        per_token = width * (3 * dims.hidden_size + 3 * dims.intermediate_size) + rotary
        scores = 0
    language_stage = embeddings + sequence_length * per_token + scores

    # Logits: the kept positions in the model dtype beside their normed hidden states; generate copies the last
    # position to float32.
    kept = 1 if last_position_logits else sequence_length
    logits = embeddings + kept * (dims.vocab_size + dims.hidden_size) * width + dims.vocab_size * 4

    # A decode step: the cache plus one layer's keys (or values) concatenated anew; eager also repeats that layer's
    # keys and values to every head. And the step's logits.
    per_layer = kv_per_token // dims.num_layers
    decode_step = total_tokens * (
        per_layer * dims.num_heads // dims.num_kv_heads if attention == "eager" else per_layer // 2
    )
    decode_step += dims.vocab_size * (width + 4)

    estimate = MemoryEstimate(
        weights=weights,
        inputs=inputs,
        audio_stage=audio_stage,
        vision_stage=vision_stage,
        kv_cache=kv_cache,
        language_stage=language_stage,
        logits=logits,
        decode_step=decode_step,
        overhead=_OVERHEAD_BYTES,
        peak=0,
    )
    return replace(estimate, peak=weights + max(estimate.stages().values()) + _OVERHEAD_BYTES)
