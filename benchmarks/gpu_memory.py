"""Measured GPU memory of the Qwen2.5-Omni thinker (random weights, no download) against the estimate and the trace.

    python benchmarks/gpu_memory.py [--models 7B 3B] [--cap-gib 20] [--out benchmarks/RESULTS.md]
    python benchmarks/gpu_memory.py --dry-run --out /tmp/RESULTS.md     # the same code on CPU, tiny shapes

1. The grid of ``benchmarks/memory_trace.py`` (4k-32k video tokens, with and without audio-in-video, the plugin's
   settings and the stock ones) run stage by stage on the GPU by the same :func:`memory_trace.run_request`, at the
   full 7B and 3B sizes with random bf16 weights: ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``
   per request, beside the estimate (without its fixed allowance) and the CPU trace from
   ``benchmarks/memory_trace.json``. A stock row that does not fit the card is recorded as out of memory.
2. The fixed allowance measured: the CUDA context (device memory in use minus what the allocator reserved) and the
   allocator's slack (reserved minus allocated at the peak), against the estimator's 1 GiB.
3. A real out-of-memory error recovered by the adapter: a random-weight checkpoint of ``--oom-model`` (the tiny
   checkpoint's processor, the real sizes) loaded by ``qwen2_5_omni_safe``, the process capped at ``--cap-gib`` with
   ``torch.cuda.set_per_process_memory_fraction`` (the adapter's estimate sees the whole card, so its first plan is
   too large), and one long video: the provenance record shows the OOM attempt(s) and the answered retry.

Everything is written to ``--out`` (``benchmarks/RESULTS.md``) with the command, the GPU and the versions. On one
H100/H200 the whole run takes a few minutes (most of it writing and loading the random checkpoint). ``--dry-run``
runs every step on the CPU with the tiny checkpoint's shapes and tiny requests (no OOM can be provoked there, and no
number it prints is a GPU measurement); ``tests/test_memory_trace.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_trace as trace  # noqa: E402

from omni_lmms_plugin.memory import GIB, ModelDims  # noqa: E402

_DRY_RUN_SEQUENCES = (700,)


class CudaMeter:
    """The :func:`memory_trace.run_request` meter on a GPU: the allocator's own counters."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.request_peak = 0
        self.reserved_peak = 0
        torch.cuda.reset_peak_memory_stats(device)

    def live_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def stage(self, function: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        # The peak since the last stage (the merges between stages) counts for the request before the reset.
        self.request_peak = max(self.request_peak, torch.cuda.max_memory_allocated(self.device))
        torch.cuda.reset_peak_memory_stats(self.device)
        result = function(*args, **kwargs)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        self.request_peak = max(self.request_peak, peak)
        self.reserved_peak = max(self.reserved_peak, torch.cuda.max_memory_reserved(self.device))
        return result, peak


class CpuMeter:
    """The dry run's meter: no device counters on a CPU, so every byte count is 0 (the code path is what runs)."""

    request_peak = 0
    reserved_peak = 0

    def live_bytes(self) -> int:
        return 0

    def stage(self, function: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        return function(*args, **kwargs), 0


@dataclass(frozen=True)
class Setup:
    """Where and at what size the run happens."""

    device: torch.device
    dry_run: bool  # the tiny checkpoint's shapes on the CPU

    def config(self, model: str, *, attention: str) -> Any:
        if self.dry_run:
            return _tiny_thinker_config(model, attention=attention)
        return trace.thinker_config(model, attention=attention)

    def meter(self) -> CudaMeter | CpuMeter:
        return CpuMeter() if self.dry_run else CudaMeter(self.device)


def _tiny_thinker_config(model: str, *, attention: str) -> Any:
    from transformers import AutoConfig

    from omni_lmms_plugin.tiny_model import tiny_checkpoint

    config = AutoConfig.from_pretrained(tiny_checkpoint(model.lower())).thinker_config
    config._attn_implementation = attention
    return config


def build(setup: Setup, model: str, *, stock: bool) -> torch.nn.Module:
    """A random-weight thinker on the device (``memory_trace.build_thinker``'s settings, real tensors)."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omni_lmms_plugin.model_surgery import install_grouped_vision_encoding, install_last_position_logits

    attention = "eager" if stock else "sdpa"
    with torch.device(setup.device):
        thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            setup.config(model, attention=attention), dtype=torch.bfloat16, attn_implementation=attention
        )
    thinker.eval()
    if not stock:
        install_last_position_logits(thinker)
        install_grouped_vision_encoding(thinker, trace.GROUP_FRAMES)
    return thinker


def measure_grid(setup: Setup, models: list[str], sequences: tuple[int, ...], traced: dict) -> list[dict[str, Any]]:
    """Step 1 and 2: every case of the grid, measured; out-of-memory cases recorded as such."""
    rows = []
    for model in models:
        for stock in (False, True):
            thinker = build(setup, model, stock=stock)
            parameters = sum(p.numel() for p in thinker.parameters())
            weight_bytes = sum(p.numel() * p.element_size() for p in thinker.parameters())
            dims = ModelDims.from_config(thinker.config, parameters=parameters)
            for target in sequences:
                for audio_in_video in (False, True):
                    case = trace.Case(model, target, audio_in_video, stock)
                    estimate = trace.estimate_case(dims, case, weight_bytes=weight_bytes)
                    row: dict[str, Any] = {
                        "model": model,
                        "stock": stock,
                        "audio_in_video": audio_in_video,
                        "sequence_length": case.sequence_length,
                        "estimate": estimate.peak - estimate.overhead,
                        "estimate_with_allowance": estimate.peak,
                        "trace": traced.get((model, stock, audio_in_video, case.sequence_length)),
                    }
                    row.update(_measure(setup, thinker, case))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            del thinker
            _free(setup)
    return rows


def _measure(setup: Setup, thinker: torch.nn.Module, case: trace.Case) -> dict[str, Any]:
    meter = setup.meter()
    started = time.perf_counter()
    failure = None
    try:
        with torch.device(setup.device):
            measured = trace.run_request(thinker, case, meter)
    except torch.cuda.OutOfMemoryError as error:
        failure = str(error).splitlines()[0][:200]
    if failure is not None:
        # Out of the except block, so the traceback's frames (and the tensors they hold) are gone.
        _free(setup)
        return {"outcome": "out_of_memory", "error": failure}
    result = {"outcome": "measured", "allocated": measured["peak"], "reserved": meter.reserved_peak}
    if not setup.dry_run:
        free, total = torch.cuda.mem_get_info(setup.device)
        # What the device has in use beyond the allocator's reservation: the CUDA context and library handles.
        result["context"] = (total - free) - torch.cuda.memory_reserved(setup.device)
    result["seconds"] = round(time.perf_counter() - started, 2)
    _free(setup)
    return result


def _free(setup: Setup) -> None:
    if not setup.dry_run:
        torch.cuda.empty_cache()


def oom_recovery(setup: Setup, model: str, cap_gib: float, folder: Path) -> dict[str, Any]:
    """Step 3: a real OOM under a per-process cap, recovered by the adapter's retry loop."""
    from lmms_eval.api.instance import Instance

    from omni_lmms_plugin.adapter import Qwen25OmniSafe
    from omni_lmms_plugin.synthetic_media import write_video

    checkpoint = _random_checkpoint(setup, model, folder / "checkpoint")
    duration = 12.0 if setup.dry_run else 400.0
    video = write_video(folder / "long.mp4", width=640, height=360, fps=4.0, duration=duration)
    adapter = Qwen25OmniSafe(
        pretrained=str(checkpoint),
        device=str(setup.device),
        provenance_dir=str(folder / "provenance"),
        resume=False,
        use_audio_in_video=True,
        oom_retries=5,  # 20 GiB holds the 7B's weights and a plan of about a third of the full context
    )
    if not setup.dry_run:
        total = torch.cuda.get_device_properties(setup.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total), setup.device)
    docs = [{"question": "What happens in the video?", "visuals": [str(video)]}]
    adapter.task_dict = {"oom": {"test": docs}}
    arguments = ("What happens in the video?", {"max_new_tokens": 4}, lambda doc: doc["visuals"], 0, "oom", "test")
    started = time.perf_counter()
    try:
        adapter.generate_until([Instance("generate_until", arguments, 0, {"task": "oom", "doc_id": 0, "repeats": 1})])
    finally:
        if not setup.dry_run:
            torch.cuda.set_per_process_memory_fraction(1.0, setup.device)
    record = json.loads((folder / "provenance" / "samples_rank0.jsonl").read_text().splitlines()[-1])
    return {
        "model": model,
        "cap_gib": cap_gib,
        "seconds": round(time.perf_counter() - started, 1),
        "attempts": [
            {key: attempt.get(key) for key in ("index", "budget_scale", "outcome", "input_tokens", "error")}
            for attempt in record.get("attempts", [])
        ],
        "answered": record.get("failure") is None,
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        "estimated_peak_bytes": record.get("estimated_peak_bytes"),
    }


def _random_checkpoint(setup: Setup, model: str, path: Path) -> Path:
    """The tiny checkpoint's processor beside a random-weight thinker of the real sizes (the tiny one's token ids,
    which the real vocabulary covers), saved so that the adapter loads it the way it loads a real checkpoint."""
    from omni_lmms_plugin.tiny_model import tiny_checkpoint

    tiny = tiny_checkpoint(model.lower())
    shutil.copytree(tiny, path, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json", "config.json"))
    tiny_thinker = _tiny_thinker_config(model, attention="sdpa")
    config = setup.config(model, attention="sdpa")
    for name, value in tiny_thinker.to_dict().items():
        if name.endswith(("_token_id", "_token_index", "_token")) or name in ("position_id_per_seconds",):
            setattr(config, name, value)
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    # Seeded: unseeded random weights sometimes generate only special tokens, which the adapter rightly records as an
    # empty answer (EmptyAnswerError); the dry run then failed about one run in five.
    torch.manual_seed(0)
    with torch.device(setup.device):
        thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    thinker.save_pretrained(path)
    del thinker
    _free(setup)
    return path


def load_trace(path: Path) -> dict:
    """The CPU trace's peaks by (model, stock, audio_in_video, sequence_length), if the JSON exists."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(r["model"], r["stock"], r["audio_in_video"], r["sequence_length"]): r["traced"]["peak"] for r in rows}


def write_results(out: Path, setup: Setup, command: str, rows: list[dict], oom: dict, seconds: float) -> None:
    device = "CPU dry run (no GPU numbers)" if setup.dry_run else torch.cuda.get_device_name(setup.device)
    lines = [
        "# GPU memory: measured vs estimated vs traced",
        "",
        f"Command: `{command}`  ",
        f"Device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}; {seconds:.0f} s.",
        "",
        "Estimate: `omni_lmms_plugin.memory.estimate_peak_memory` without its fixed allowance (1 GiB). Trace: live "
        "tensor bytes under FakeTensorMode (`benchmarks/memory_trace.py`, CPU). Allocated/reserved: "
        "`torch.cuda.max_memory_allocated` / `max_memory_reserved` of the request. Context: device memory in use "
        "minus the allocator's reservation. All GiB; random bf16 weights, batch 1.",
        "",
        "| model | settings | tokens | audio | estimate | trace | allocated | reserved | context | est/alloc |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        settings = "stock (eager, full logits, one vision pass)" if row["stock"] else "plugin"
        trace_gib = f"{row['trace'] / GIB:.2f}" if row["trace"] else "-"
        head = (
            f"| {row['model']} | {settings} | {row['sequence_length']} | {'yes' if row['audio_in_video'] else 'no'} "
            f"| {row['estimate'] / GIB:.2f} | {trace_gib} |"
        )
        if row["outcome"] == "out_of_memory":
            lines.append(f"{head} out of memory | - | - | - |")
            continue
        allocated = row["allocated"]
        ratio = f"{row['estimate'] / allocated:.3f}" if allocated else "-"
        lines.append(
            f"{head} {allocated / GIB:.2f} | {row['reserved'] / GIB:.2f} | "
            f"{row.get('context', 0) / GIB:.2f} | {ratio} |"
        )
    measured = [row for row in rows if row["outcome"] == "measured" and row["allocated"]]
    if measured:
        slack = max(row["reserved"] - row["allocated"] for row in measured)
        context = max(row.get("context", 0) for row in measured)
        lines += [
            "",
            f"Fixed allowance: largest context {context / GIB:.2f} GiB + largest allocator slack {slack / GIB:.2f} GiB"
            f" = {(context + slack) / GIB:.2f} GiB, against the estimator's 1 GiB.",
        ]
    lines += ["", "## Out of memory, recovered by the adapter", "", "```json", json.dumps(oom, indent=1), "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["7B", "3B"], choices=sorted(trace.CONFIGS))
    parser.add_argument("--sequences", nargs="+", type=int, default=list(trace.SEQUENCES))
    parser.add_argument("--oom-model", default="7B", choices=sorted(trace.CONFIGS))
    parser.add_argument("--cap-gib", type=float, default=20.0, help="per-process cap for the OOM step (GiB)")
    parser.add_argument("--trace", type=Path, default=Path(__file__).with_name("memory_trace.json"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU at tiny sizes")
    args = parser.parse_args(argv)

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or pass --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    setup = Setup(device=torch.device("cpu" if args.dry_run else "cuda"), dry_run=args.dry_run)
    sequences = _DRY_RUN_SEQUENCES if args.dry_run else tuple(args.sequences)
    command = " ".join(["python benchmarks/gpu_memory.py", *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()
    rows = measure_grid(setup, args.models, sequences, load_trace(args.trace))
    with tempfile.TemporaryDirectory(prefix="omni-gpu-memory-") as folder:
        oom = oom_recovery(setup, args.oom_model, args.cap_gib, Path(folder))
    print(json.dumps(oom, indent=1), flush=True)
    write_results(args.out, setup, command, rows, oom, time.perf_counter() - started)
    print(f"written to {args.out}")
    return 0 if oom["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
