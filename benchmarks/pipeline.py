"""End-to-end samples per second of qwen2_5_omni_safe on the CPU, sequential vs prefetch.

    python benchmarks/pipeline.py [--videos 8] [--minutes 3] [--depth 2] [--cache DIR]

The tiny random-weight checkpoint answers requests about long generated videos (640x360, 30 fps, H.264 + AAC), once
with ``prefetch=0`` (probe, plan, decode and processor in line) and once with ``prefetch=DEPTH`` (the same work for the
next requests on a background thread while the model generates). The model is held to one CPU thread so that it
stands in for a GPU and the loader has the other core, as on a GPU machine. Both runs must give identical answers and
input hashes; the benchmark prints the time of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from lmms_eval.api.instance import Instance

from omni_lmms_plugin.adapter import Qwen25OmniSafe
from omni_lmms_plugin.synthetic_media import write_video
from omni_lmms_plugin.tiny_model import tiny_checkpoint


def make_videos(folder: Path, count: int, minutes: float) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"long_{minutes:g}min_{index}.mp4"
        if not path.exists():
            write_video(
                path, width=640, height=360, fps=30.0, duration=60.0 * minutes, gop=60, tone_hz=300.0 + 50 * index
            )
        paths.append(str(path))
    return paths


def run(checkpoint: Path, videos: list[str], depth: int, workdir: Path) -> tuple[float, list[str], list[str]]:
    model = Qwen25OmniSafe(
        pretrained=str(checkpoint),
        device="cpu",
        prefetch=depth,
        resume=False,
        max_model_len=8192,
        provenance_dir=str(workdir / f"prov_depth{depth}"),
    )
    docs = [{"visuals": [path]} for path in videos]
    model.task_dict = {"bench": {"test": docs}}
    requests = [
        Instance(
            "generate_until",
            (
                "What happens in this video?",
                {"max_new_tokens": 32},
                lambda doc: doc["visuals"],
                doc_id,
                "bench",
                "test",
            ),
            0,
            {"task": "bench", "doc_id": doc_id, "repeats": 1},
        )
        for doc_id in range(len(docs))
    ]
    started = time.perf_counter()
    answers = [result.text for result in model.generate_until(requests)]
    seconds = time.perf_counter() - started
    records = [
        json.loads(line) for line in (workdir / f"prov_depth{depth}" / "samples_rank0.jsonl").read_text().splitlines()
    ]
    waits = sum(record["media_wait_seconds"] for record in records)
    print(f"  prefetch={depth}: {seconds:.2f} s, {len(videos) / seconds:.3f} samples/s, waited for media {waits:.2f} s")
    return seconds, answers, [record["input_hash"] for record in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "omni-lmms-bench")
    args = parser.parse_args()

    torch.set_num_threads(1)
    checkpoint = tiny_checkpoint("7b")
    print(f"generating {args.videos} videos of {args.minutes:g} min into {args.cache} (once)")
    videos = make_videos(args.cache, args.videos, args.minutes)
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        run(checkpoint, videos[:1], 0, workdir / "warmup")  # imports, first-call costs
        sequential, answers_a, hashes_a = run(checkpoint, videos, 0, workdir)
        prefetch, answers_b, hashes_b = run(checkpoint, videos, args.depth, workdir)
    if (answers_a, hashes_a) != (answers_b, hashes_b):
        raise SystemExit("prefetch changed the answers or the model inputs")
    print(f"identical answers and input hashes; prefetch speed-up: {sequential / prefetch:.2f}x")


if __name__ == "__main__":
    main()
