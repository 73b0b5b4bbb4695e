"""Does a GPU host's CPU keep one GPU fed? Measures the CPU side of one 32k-token sample here and projects it.

    python benchmarks/projection.py [--cache DIR] [--seek-mode exact] [--resize reference] [--prefill-seconds 1.0]
                                    [--host-cores 16]

Plans the benchmark's realistic 10-minute 720p30 video (``benchmarks/loader.py`` generates it; 2 s GOP, B-frames) for
a 32,768-token context exactly as ``qwen2_5_omni_safe`` does (the adapter's planner, the tiny checkpoint's processor:
the real Qwen2.5-Omni processor classes, so the token count and the processor's work are those of the 7B's), then
prepares it three times per decoding setting and keeps the fastest: decoding with one segment and with one per core
of this machine (wall, and CPU seconds: the preparation's less the processor's), and the processor call (wall and CPU
seconds).

From those it projects a host with ``--host-cores`` cores: the adapter's defaults there (``prefetch_workers`` half the
cores, each with its own processor copy, ``decode_workers`` two segments each) keep every core busy, so the CPU
supplies ``host_cores x efficiency / (decoding CPU seconds + processor CPU seconds)`` videos per second, the
efficiency taken from this machine's own decoding on every core (one segment's CPU seconds over the cores' wall
seconds; assumed to hold up to the host's cores). The GPU's side is a stated figure, not a measurement:
``--prefill-seconds`` for a 32k-token prefill of the 7B (about 1 s on an H100/H200 in bf16 with flash attention); the
questions' own tokens and short answers are left out. All rates are per video: with video-level sharing a video's
questions share its decode, processor call and prefill, so the ratio holds per question too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

from lmms_eval.api.instance import Instance

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader import DEFAULT_CACHE, ensure_videos  # noqa: E402

from omni_lmms_plugin.adapter import Qwen25OmniSafe  # noqa: E402
from omni_lmms_plugin.config import ResizeChoice, SeekChoice  # noqa: E402
from omni_lmms_plugin.inputs import prepare_inputs  # noqa: E402
from omni_lmms_plugin.request import unpack_request  # noqa: E402
from omni_lmms_plugin.tiny_model import tiny_checkpoint  # noqa: E402

CONTEXT = 32_768
REPEATS = 3


class _TimedProcessor:
    """The processor, timing its last call: wall seconds and CPU seconds of the whole process (nothing else runs)."""

    def __init__(self, processor) -> None:
        self.processor, self.wall, self.cpu = processor, 0.0, 0.0

    def __call__(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self.processor(*args, **kwargs)
        finally:
            self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu

    def __getattr__(self, name: str):
        return getattr(self.processor, name)


def prepare_seconds(checkpoint: Path, video: Path, workers: int, seek_mode: str, resize: str, workdir: Path) -> dict:
    """The fastest of ``REPEATS`` preparations of one request on ``video``: total, decoding, and the rest."""
    model = Qwen25OmniSafe(
        pretrained=str(checkpoint),
        device="cpu",
        max_model_len=CONTEXT,
        prefetch=0,
        decode_workers=workers,
        seek_mode=seek_mode,
        resize=resize,
        resume=False,
        provenance_dir=str(workdir / f"prov_{workers}"),
    )
    model.task_dict = {"bench": {"test": [{"visuals": [str(video)]}]}}
    instance = Instance(
        "generate_until",
        ("What happens in this video?", {"max_new_tokens": 32}, lambda doc: doc["visuals"], 0, "bench", "test"),
        0,
        {"task": "bench", "doc_id": 0, "repeats": 1},
    )
    request = unpack_request(0, instance, model.task_dict)
    settings = model.planner.settings(request)
    plan = model.planner.plan(request, settings)
    processor = _TimedProcessor(model.processor)
    best = None
    for _ in range(REPEATS):
        started, cpu = time.perf_counter(), time.process_time()
        prepared = prepare_inputs(processor, request, plan, model.config)
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
        if best is None or total < best["total"]:
            best = {
                "total": total,
                "decode": prepared.decode_seconds,
                # Decoding's CPU seconds: the preparation's less the processor's (what a host's cores pay for it,
                # whichever threads did the work; the wall time also counts waits).
                "decode_cpu": cpu - processor.cpu,
                "processor": processor.wall,
                "processor_cpu": processor.cpu,
            }
    video_plan = plan.planned[0].plan
    best.update(tokens=plan.input_tokens, frames=video_plan.frames, size=f"{video_plan.height}x{video_plan.width}")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the generated videos")
    parser.add_argument("--seek-mode", default="exact", choices=get_args(SeekChoice))
    parser.add_argument("--resize", default="reference", choices=get_args(ResizeChoice))
    parser.add_argument("--prefill-seconds", type=float, default=1.0, help="stated GPU seconds per 32k-token prefill")
    parser.add_argument("--host-cores", type=int, default=16)
    args = parser.parse_args(argv)

    video = next(path for path in ensure_videos(args.cache, False, ("realistic",)) if "gop2s" in path.name)
    checkpoint = tiny_checkpoint()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        one = prepare_seconds(checkpoint, video, 1, args.seek_mode, args.resize, Path(folder))
        every = prepare_seconds(checkpoint, video, cores, args.seek_mode, args.resize, Path(folder))
    print(
        f"{video.name}: {one['tokens']} input tokens, {one['frames']} frames at {one['size']}, "
        f"seek_mode={args.seek_mode}, resize={args.resize}"
    )
    print("| decode segments | prepare s | decode s (CPU s) | processor s (CPU s) |")
    print("|---|---|---|---|")
    for workers, result in ((1, one), (cores, every)):
        print(
            f"| {workers} | {result['total']:.2f} | {result['decode']:.2f} ({result['decode_cpu']:.2f}) | "
            f"{result['processor']:.2f} ({result['processor_cpu']:.2f}) |"
        )

    # How fully decoding on every core here uses them: one segment's CPU seconds over the cores' wall seconds.
    efficiency = min(1.0, one["decode_cpu"] / (cores * every["decode"]))
    core_seconds = one["decode_cpu"] + one["processor_cpu"]
    supply = args.host_cores * efficiency / core_seconds
    gpu_rate = 1.0 / args.prefill_seconds
    print(f"\nper-core decoding efficiency measured here at {cores} segments: {efficiency:.2f}")
    print(
        f"projection for a {args.host_cores}-core host and one GPU at a stated {args.prefill_seconds:g} s per 32k-token "
        "prefill, in videos per second (with sharing, a video's questions share its decode, processor call and "
        "prefill):"
    )
    print("| CPU core-seconds per video | CPU supplies | GPU consumes | GPU kept fed |")
    print("|---|---|---|---|")
    print(
        f"| {core_seconds:.2f} ({one['decode_cpu']:.2f} decoding + {one['processor_cpu']:.2f} processor) | "
        f"{supply:.3f} | {gpu_rate:.2f} | {'yes' if supply >= gpu_rate else 'no'} ({supply / gpu_rate:.3f}x) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
