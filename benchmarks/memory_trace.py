"""Peak live tensor bytes of the real Qwen2.5-Omni thinker (7B and 3B), traced without a GPU, against the estimator.

    python benchmarks/memory_trace.py [--models 7B 3B] [--json benchmarks/memory_trace.json]

The thinker is built at its full size under PyTorch's ``FakeTensorMode`` (shapes and dtypes, no storage) and
``torch.distributed._tools.mem_tracker.MemTracker`` records the bytes of every live tensor through one request:
the text embeddings, the audio tower (audio-in-video), the vision tower, the merge into the embeddings, a prefill of
the language model from ``inputs_embeds`` and a few decode steps. The plugin's settings (sdpa, the adapter's own
``install_last_position_logits`` and ``install_grouped_vision_encoding``) are traced beside the stock ones (eager
attention, full prefill logits, the whole video in one vision pass). Each row prints the traced peak, the estimate of
:func:`omni_lmms_plugin.memory.estimate_peak_memory` without its fixed allowance, and their ratio; every stage
(inputs, vision, audio, language, logits) is compared too. What the trace cannot see is the CUDA context, the
caching allocator's slack and the kernels' workspaces: the estimator's separate ``overhead`` term, measured by
``benchmarks/gpu_memory.py`` on a GPU.

A multimodal ``forward`` under fake tensors stops at data-dependent ops (``.tolist()`` on token masks and grids), so
the towers are called on their own, in the order the thinker's ``forward`` calls them, and the language model runs
from ``inputs_embeds``. The index tensors the towers derive from their grids (``transformers.vision_utils`` and the
audio helpers) are computed on real tensors and handed to the towers as fake constants (:func:`fake_thinker_mode`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch._subclasses.fake_tensor as fake_tensor
import transformers.models.qwen2_5_omni.modeling_qwen2_5_omni as modeling
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils._pytree import tree_map_only
from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

from omni_lmms_plugin import budget
from omni_lmms_plugin.memory import GIB, MEL_BINS, PATCH_VALUES, MemoryEstimate, ModelDims, estimate_peak_memory
from omni_lmms_plugin.model_surgery import install_grouped_vision_encoding, install_last_position_logits

# The thinker configurations, written out so that nothing is downloaded.
# 7B: Qwen/Qwen2.5-Omni-7B config.json (thinker_config), as recorded in /work/shared/design/qwen_omni_facts.md and
#     checked against transformers 5.24's Qwen2_5OmniThinkerConfig defaults (text) and the Qwen2.5-VL vision tower
#     (embed 1280, MLP 3420, 32 blocks, full attention in blocks 7/15/23/31) and Whisper-large-v3 audio encoder.
# 3B: Qwen/Qwen2.5-Omni-3B config.json text_config (vocab 151936, hidden 2048, MLP 11008, 36 layers, 16 heads,
#     2 KV heads, head_dim 128), read through a public port of that config.json (the hub is not reachable from here);
#     the towers are the 7B ones with their output projected to 2048. Both lm_heads are untied (tie_word_embeddings
#     false, as in the 7B's 8,931,813,888 parameters); for the 3B this is not verified against the hub file.
_MROPE = {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "mrope"}
_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "window_size": 112,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
}
_AUDIO = {"encoder_layers": 32, "d_model": 1280, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120}
CONFIGS: dict[str, dict[str, Any]] = {
    "7B": {
        "text": {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 32768,
        },
        "out": 3584,
    },
    "3B": {
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 32768,
        },
        "out": 2048,
    },
}

# The request shape: frames resized to 336x644 (what qwen-omni-utils picks for a long 720p clip, 12 x 23 = 276
# tokens per 2-frame temporal grid), sampled at 2 fps so one grid is one second of audio, a 64-token prompt and
# DECODE_STEPS generated tokens. Token counts are omni_lmms_plugin.budget's.
FRAME_SIZE = (336, 644)
TEXT_TOKENS = 64
DECODE_STEPS = 4
GROUP_FRAMES = 64  # AdapterConfig.vision_group_frames default
SEQUENCES = (4096, 8192, 16384, 32768)


@dataclass(frozen=True)
class Case:
    """One traced request: the longest video (with its audio when ``audio_in_video``) whose prompt, video block and
    generated tokens fit ``target_tokens``."""

    model: str
    target_tokens: int
    audio_in_video: bool
    stock: bool

    @property
    def grids(self) -> int:
        """Temporal grids (frame pairs, one second each) of the video."""
        grids = 1
        while self._length(grids + 1) + DECODE_STEPS <= self.target_tokens:
            grids += 1
        return grids

    @property
    def cells(self) -> int:
        """LLM tokens per temporal grid."""
        return budget.video_tokens(2, *FRAME_SIZE)

    @property
    def video_tokens(self) -> int:
        return self.grids * self.cells

    @property
    def audio_samples(self) -> int:
        return budget.audio_samples(self.grids) if self.audio_in_video else 0

    @property
    def audio_frames(self) -> int:
        """Mel frames of the video's audio track (10 ms each)."""
        return math.ceil(self.audio_samples / budget.AUDIO_HOP)

    @property
    def audio_tokens(self) -> int:
        return budget.audio_tokens(self.audio_samples) if self.audio_in_video else 0

    @property
    def sequence_length(self) -> int:
        """The prompt and the video block (with its audio block)."""
        return self._length(self.grids)

    def _length(self, grids: int) -> int:
        samples = budget.audio_samples(grids) if self.audio_in_video else 0
        return TEXT_TOKENS + budget.video_block_tokens(2 * grids, *FRAME_SIZE, n_audio_samples=samples)


def thinker_config(model: str, *, attention: str, layers: int | None = None) -> Qwen2_5OmniThinkerConfig:
    """The thinker configuration of ``model`` ("7B" or "3B"); ``layers`` cuts every stack (LM, ViT, audio) to that
    depth, keeping the real widths (for the CI test)."""
    spec = CONFIGS[model]
    text = {**spec["text"], "rope_scaling": _MROPE, "tie_word_embeddings": False}
    vision = {**_VISION, "out_hidden_size": spec["out"]}
    audio = {**_AUDIO, "output_dim": spec["out"]}
    if layers is not None:
        text["num_hidden_layers"] = layers
        vision.update(depth=layers, fullatt_block_indexes=[layers - 1])
        audio["encoder_layers"] = layers
    config = Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=audio)
    config._attn_implementation = attention
    return config


# The helpers the towers call to turn a grid (or audio lengths) into index tensors; the modeling module looks them
# up by these names at call time.
_INDEX_HELPERS = (
    "get_vision_position_ids",
    "get_vision_attention_seqlens",
    "get_vision_window_index",
    "get_valid_indices",
    "get_pool_indices",
    "get_audio_cu_seqlens",
)


@contextmanager
def fake_thinker_mode() -> Iterator[FakeTensorMode]:
    """A ``FakeTensorMode`` in which the thinker's towers run: grids and lengths are real constants, the index
    helpers run on them for real, and their results (and tensors derived from them, up to 4M elements) stay
    constants, so the towers' ``.tolist()`` calls see real values. Everything else is fake."""
    mode = FakeTensorMode()

    def to_constant(tensor: torch.Tensor) -> FakeTensor:
        return mode.fake_tensor_converter.from_real_tensor(mode, tensor, make_constant=True)

    def on_real(helper: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            real_args, real_kwargs = tree_map_only(FakeTensor, _constant_of, (args, kwargs))
            with unset_fake_temporarily():
                result = helper(*real_args, **real_kwargs)
            return tree_map_only(torch.Tensor, to_constant, result)

        return run

    def chunk_and_pad(input_features: torch.Tensor, feature_lens: torch.Tensor, n_window: int, **kwargs: Any) -> Any:
        # The chunk lengths come from the real helper run on a one-row stand-in of the features (they depend on the
        # lengths only); the padding is the helper's own split + pad_sequence, on the fake features.
        with unset_fake_temporarily():
            stand_in = torch.zeros(1, input_features.shape[1])
            _, chunk_lengths = chunk_and_pad_features(stand_in, _constant_of(feature_lens), n_window)
        chunks = input_features.T.split(chunk_lengths.tolist(), dim=0)
        padded = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True).transpose(1, 2)
        return padded, to_constant(chunk_lengths)

    originals = {name: getattr(modeling, name) for name in _INDEX_HELPERS}
    chunk_and_pad_features = modeling.chunk_and_pad_features
    limit = fake_tensor.CONSTANT_NUMEL_LIMIT
    try:
        fake_tensor.CONSTANT_NUMEL_LIMIT = 1 << 22
        for name, helper in originals.items():
            setattr(modeling, name, on_real(helper))
        modeling.chunk_and_pad_features = chunk_and_pad
        with mode:
            yield mode
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = limit
        for name, helper in originals.items():
            setattr(modeling, name, helper)
        modeling.chunk_and_pad_features = chunk_and_pad_features


def _constant_of(tensor: FakeTensor) -> torch.Tensor:
    if tensor.constant is None:
        raise RuntimeError(
            f"an index helper got a fake tensor of shape {tuple(tensor.shape)} without a real value; build grids and "
            "lengths with torch.tensor(...) inside fake_thinker_mode so that they stay constants"
        )
    return tensor.constant


def build_thinker(model: str, *, stock: bool, layers: int | None = None) -> torch.nn.Module:
    """The thinker in bf16 with fake weights (call inside :func:`fake_thinker_mode`); the plugin's settings unless
    ``stock`` (eager attention, full logits, one vision pass)."""
    attention = "eager" if stock else "sdpa"
    config = thinker_config(model, attention=attention, layers=layers)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
        config, dtype=torch.bfloat16, attn_implementation=attention
    )
    thinker.eval()
    if not stock:
        install_last_position_logits(thinker)
        install_grouped_vision_encoding(thinker, GROUP_FRAMES)
    return thinker


@contextmanager
def representative_blocks(thinker: torch.nn.Module) -> Iterator[None]:
    """Run each tower with one block of each kind it has: the vision tower's first windowed and first
    full-attention block, the audio tower's first layer. Blocks of one kind are the same computation on the same
    shapes, and without autograd a block's activations are freed before the next one runs, so the tower's peak is
    the peak of its largest block kind; the other blocks' weights stay alive and counted. (The fake-tensor
    dispatch of the per-window attention loop costs seconds per block at 32k tokens; this makes the full grid run in
    minutes. ``tests/test_memory_trace.py`` checks the peak equals the all-blocks trace.)"""
    visual, audio = thinker.model.visual, thinker.model.audio_tower
    blocks, full, layers = visual.blocks, visual.fullatt_block_indexes, audio.layers
    windowed = [index for index in range(len(blocks)) if index not in full][:1]
    try:
        visual.blocks = torch.nn.ModuleList([blocks[index] for index in windowed + list(full[:1])])
        visual.fullatt_block_indexes = [len(windowed)] if full else []
        audio.layers = torch.nn.ModuleList([layers[0]])
        yield
    finally:
        visual.blocks, visual.fullatt_block_indexes, audio.layers = blocks, full, layers


class _Stage(torch.nn.Module):
    """A stage as a module call: MemTracker allows a module (the vision tower, per group) to be called repeatedly
    only inside another module's call."""

    def forward(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)


class StageTracker(MemTracker):
    """``MemTracker`` keeping the request's peak and a peak per stage (reset by :meth:`stage`) instead of a peak per
    module: its per-module bookkeeping walks every module seen so far on every op, minutes per request at the full
    model. Live bytes are still MemTracker's own accounting (its ``_curr_mem_snap``)."""

    def __init__(self) -> None:
        super().__init__()
        self.request_peak = 0
        self.stage_peak = 0
        self._stage = _Stage()

    def live_bytes(self) -> int:
        return sum(snapshot["Total"] for snapshot in self._curr_mem_snap.values())

    def _update_peak_stats(self, peak_state: Any) -> None:
        live = self.live_bytes()
        self.stage_peak = max(self.stage_peak, live)
        self.request_peak = max(self.request_peak, live)

    def stage(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """Call ``function`` as one stage; returns its result and the stage's peak live bytes."""
        self.reset_mod_stats()  # MemTracker refuses a second top-level call of a module without it
        self.stage_peak = self.live_bytes()
        result = self._stage(function, *args, **kwargs)
        return result, self.stage_peak


def trace_case(thinker: torch.nn.Module, case: Case, *, all_blocks: bool = False) -> dict[str, int]:
    """Traced bytes of one request (inside :func:`fake_thinker_mode`); see :func:`run_request`. The towers run
    :func:`representative_blocks` unless ``all_blocks``."""
    tracker = StageTracker()
    tracker.track_external(thinker)
    with tracker, nullcontext() if all_blocks else representative_blocks(thinker):
        return run_request(thinker, case, tracker)


def run_request(thinker: torch.nn.Module, case: Case, meter: Any) -> dict[str, int]:
    """Run one request the way the thinker's ``generate`` does, stage by stage, and return the bytes ``meter`` saw:
    ``peak`` over the request, ``weights`` (alive before it), ``inputs`` (the batch, alive throughout) and the peak
    of each stage (``audio_stage``, ``vision_stage``, ``prefill``, ``decode``) with everything alive at the time.
    ``meter`` has ``live_bytes()``, ``stage(function, *args, **kwargs) -> (result, peak)`` and ``request_peak``
    (:class:`StageTracker` under fake tensors, ``benchmarks/gpu_memory.py``'s CUDA meter on a GPU). Tensors are
    created on the default device."""
    peaks: dict[str, int] = {}
    inner = thinker.model
    length = case.sequence_length
    with torch.no_grad():
        weights = meter.live_bytes()
        # The batch the adapter moves to the device; it stays alive until generate returns.
        patches = case.grids * 4 * case.cells
        batch = {
            "input_ids": torch.zeros(1, length, dtype=torch.long),
            "attention_mask": torch.ones(1, length, dtype=torch.long),
            "pixel_values_videos": torch.empty(patches, PATCH_VALUES, dtype=torch.bfloat16),
            "video_grid_thw": torch.tensor([[case.grids, *(side // budget.PATCH_SIZE for side in FRAME_SIZE)]]),
        }
        if case.audio_in_video:  # padded to 300 s by the feature extractor, with its int32 frame mask
            batch["input_features"] = torch.empty(1, MEL_BINS, budget.MAX_AUDIO_FEATURES, dtype=torch.bfloat16)
            batch["feature_attention_mask"] = torch.ones(1, budget.MAX_AUDIO_FEATURES, dtype=torch.int32)
        inputs = meter.live_bytes() - weights

        # The order of the thinker's forward: text embeddings, audio tower, vision tower, each merged in turn.
        embeds = inner.get_input_embeddings()(batch["input_ids"])
        if case.audio_in_video:
            # get_audio_features copies the valid frames out of the padded features (a boolean index there).
            valid = batch["input_features"][0, :, : case.audio_frames].contiguous()
            lengths = torch.tensor([case.audio_frames])
            after_cnn, _ = inner.audio_tower._get_feat_extract_output_lengths(lengths)
            audio, peaks["audio_stage"] = meter.stage(
                inner.audio_tower, valid, feature_lens=lengths, aftercnn_lens=after_cnn
            )
            del valid
            embeds = embeds.masked_scatter(_placeholder_mask(embeds), audio.last_hidden_state)
            del audio
        video, peaks["vision_stage"] = meter.stage(
            inner.get_video_features, batch["pixel_values_videos"], batch["video_grid_thw"]
        )
        video = torch.cat(video.pooler_output, dim=0)
        embeds = embeds.masked_scatter(_placeholder_mask(embeds), video)
        del video

        positions = torch.zeros(3, 1, length, dtype=torch.long)
        output, peaks["prefill"] = meter.stage(thinker, inputs_embeds=embeds, position_ids=positions, use_cache=True)
        # generate's first step: a float32 copy of the last position's logits, then the prefill output goes.
        scores = output.logits[:, -1].to(copy=True, dtype=torch.float32)
        cache = output.cache
        del output, embeds, scores
        peaks["decode"] = 0
        for step in range(DECODE_STEPS):
            token = inner.get_input_embeddings()(torch.zeros(1, 1, dtype=torch.long))
            position = torch.full((3, 1, 1), length + step, dtype=torch.long)
            output, peak = meter.stage(thinker, inputs_embeds=token, position_ids=position, cache=cache, use_cache=True)
            peaks["decode"] = max(peaks["decode"], peak)
            cache = output.cache
            del output
    return {"peak": meter.request_peak, "weights": weights, "inputs": inputs, **peaks}


def _placeholder_mask(embeds: torch.Tensor) -> torch.Tensor:
    """A placeholder mask shaped like the one ``get_placeholder_mask`` returns (a bool per token, expanded)."""
    mask = torch.zeros(embeds.shape[:2], dtype=torch.bool)
    return mask.unsqueeze(-1).expand_as(embeds)


def estimate_case(dims: ModelDims, case: Case, *, weight_bytes: int) -> MemoryEstimate:
    """The estimator's view of ``case`` with the adapter's settings (or the stock ones)."""
    return estimate_peak_memory(
        dims,
        sequence_length=case.sequence_length,
        vision_patches=4 * case.video_tokens,
        vision_group_patches=None if case.stock else 4 * case.cells * (GROUP_FRAMES // 2),
        audio_frames=case.audio_frames,
        attention="eager" if case.stock else "sdpa",
        last_position_logits=not case.stock,
        max_new_tokens=DECODE_STEPS,
        weight_bytes=weight_bytes,
    )


def compare(case: Case, traced: dict[str, int], estimate: MemoryEstimate) -> dict[str, Any]:
    """One table row: the traced and estimated peaks (without the fixed overhead) and each stage's ratio."""
    stages = estimate.stages()
    traced_stages = {
        "audio_stage": traced.get("audio_stage"),
        "vision_stage": traced["vision_stage"],
        "prefill": traced["prefill"],
        "decode": traced["decode"],
    }
    ratios = {
        name: round(stages[name] / (value - traced["weights"]), 4)
        for name, value in traced_stages.items()
        if value is not None
    }
    predicted = estimate.peak - estimate.overhead
    return {
        **asdict(case),
        "grids": case.grids,
        "video_tokens": case.video_tokens,
        "audio_tokens": case.audio_tokens,
        "sequence_length": case.sequence_length,
        "traced": traced,
        "estimate": estimate.to_dict(),
        "estimated_stages": stages,
        "stage_ratios": ratios,
        "traced_peak_gib": round(traced["peak"] / GIB, 3),
        "estimated_peak_gib": round(predicted / GIB, 3),
        "ratio": round(predicted / traced["peak"], 4),
    }


def run_grid(
    models: tuple[str, ...] = ("7B", "3B"),
    *,
    sequences: tuple[int, ...] = SEQUENCES,
    layers: int | None = None,
    settings: tuple[bool, ...] = (False, True),
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Trace and estimate every case of the grid; ``settings`` lists ``stock`` values (False = the plugin's)."""
    rows = []
    for model in models:
        for stock in settings:
            with fake_thinker_mode():
                thinker = build_thinker(model, stock=stock, layers=layers)
                weight_bytes = sum(p.numel() * p.element_size() for p in thinker.parameters())
                parameters = sum(p.numel() for p in thinker.parameters())
                dims = ModelDims.from_config(thinker.config, parameters=parameters)
                # The parameter count the estimator derives from the config alone (preflight has no weights).
                from_config = ModelDims.from_config(thinker.config).parameters / parameters
                for target in sequences:
                    for audio_in_video in (False, True):
                        case = Case(model, target, audio_in_video, stock)
                        started = time.perf_counter()
                        traced = trace_case(thinker, case)
                        row = compare(case, traced, estimate_case(dims, case, weight_bytes=weight_bytes))
                        row["parameters"] = parameters
                        row["parameters_from_config_ratio"] = round(from_config, 4)
                        row["seconds"] = round(time.perf_counter() - started, 2)
                        rows.append(row)
                        if progress is not None:
                            progress(row)
    return rows


def format_row(row: dict[str, Any]) -> str:
    setting = "stock" if row["stock"] else "plugin"
    audio = "audio" if row["audio_in_video"] else "-"
    stages = " ".join(f"{name.split('_')[0]}={ratio:.3f}" for name, ratio in row["stage_ratios"].items())
    return (
        f"{row['model']:>3} {setting:<6} {row['sequence_length']:>6} {audio:<5} {row['traced_peak_gib']:>9.2f} "
        f"{row['estimated_peak_gib']:>9.2f} {row['ratio']:>6.3f}  {stages}"
    )


HEADER = (
    f"{'':>3} {'set':<6} {'tokens':>6} {'audio':<5} {'trace GiB':>9} {'est GiB':>9} {'ratio':>6}  "
    "per stage: estimate / trace"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["7B", "3B"], choices=sorted(CONFIGS))
    parser.add_argument("--sequences", nargs="+", type=int, default=list(SEQUENCES))
    parser.add_argument("--layers", type=int, default=None, help="cut every stack to this depth (default: full)")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("memory_trace.json"))
    args = parser.parse_args(argv)

    print(HEADER, flush=True)
    started = time.perf_counter()
    rows = run_grid(
        tuple(args.models),
        sequences=tuple(args.sequences),
        layers=args.layers,
        progress=lambda row: print(format_row(row), flush=True),
    )
    outside = [row for row in rows if not 0.9 <= row["ratio"] <= 1.1]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "overhead_bytes_not_traced": rows[0]["estimate"]["overhead"] if rows else None,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"{len(rows)} rows in {report['seconds']} s; written to {args.json}")
    if outside:
        print(f"{len(outside)} rows outside the 10% band", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
