"""End-to-end samples per second of qwen2_5_omni_safe on the CPU: sequential vs prefetch, and a Video-MME-shaped
task through the real lmms-eval CLI with video-level sharing on vs off.

    python benchmarks/pipeline.py [--videos 8] [--minutes 3] [--depth 2] [--cache DIR]
    python benchmarks/pipeline.py --videomme [--videos 4] [--minutes 3] [--questions 3]

The tiny random-weight checkpoint answers requests about long generated videos (640x360, 30 fps, H.264 + AAC), once
with ``prefetch=0`` (probe, plan, decode and processor in line) and once with ``prefetch=DEPTH`` (the same work for the
next requests on a background thread while the model generates). The model is held to one CPU thread so that it
stands in for a GPU and the loader has the other core, as on a GPU machine. Both runs must give identical answers and
input hashes; the benchmark prints the time of each and the ratio.

``--videomme`` writes a task shaped like Video-MME (``--questions`` multiple-choice questions per long video, in
Video-MME's order: a video's questions one after the other) and runs ``python -m lmms_eval`` on it twice, with
``share_video_prefix=true`` and ``=false``. It prints, per run, the CLI's wall time, the model's time (the sum of the
provenance records' ``wall_seconds``: the request loop without the CLI's start-up), samples per second of both, and the
time the model waited for media (``media_wait_seconds``); the two runs must give identical answers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from lmms_eval.api.instance import Instance

from omni_lmms_plugin.adapter import Qwen25OmniSafe
from omni_lmms_plugin.demo import lmms_eval_command, offline_env, write_demo_task
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


def videomme_task(folder: Path, videos: list[str], questions: int) -> Path:
    """The demo task's files with ``questions`` multiple-choice docs per video (absolute video paths)."""
    docs = [
        {
            "video": video,
            "question": f"Video {v}, question {q}: what happens? A. a B. b C. c D. d",
            "answer": "ABCD"[q % 4],
        }
        for v, video in enumerate(videos)
        for q in range(questions)
    ]
    return write_demo_task(folder, videos=[], extra_docs=docs)


def run_cli(checkpoint: Path, task: Path, output: Path, share: bool) -> tuple[float, list[dict], list[str]]:
    """One lmms-eval run; returns its wall time, the provenance records and the logged answers in doc order."""
    command = lmms_eval_command(
        checkpoint, task, output, model_args=f"share_video_prefix={str(share).lower()},max_model_len=8192,resume=false"
    )
    started = time.perf_counter()
    result = subprocess.run(command, env=offline_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    samples_files = sorted(output.glob("*/*_samples_omni_demo.jsonl"))
    if result.returncode != 0 or not samples_files:
        raise SystemExit(f"lmms-eval failed:\n{(result.stdout + result.stderr)[-4000:]}")
    records = [
        json.loads(line) for line in (output / "omni_provenance" / "samples_rank0.jsonl").read_text().splitlines()
    ]
    logged = sorted((json.loads(line) for line in samples_files[0].read_text().splitlines()), key=lambda s: s["doc_id"])
    return seconds, records, [str(sample["filtered_resps"]) for sample in logged]


def videomme(checkpoint: Path, videos: list[str], questions: int, workdir: Path) -> None:
    task = videomme_task(workdir / "task", videos, questions)
    samples = len(videos) * questions
    print(f"Video-MME-shaped task: {len(videos)} videos x {questions} questions = {samples} samples")
    print("| sharing | CLI wall s | CLI samples/s | model s | model samples/s | model waited for media s |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for share in (False, True):
        seconds, records, answers = run_cli(checkpoint, task, workdir / f"out_share_{share}", share)
        model = sum(r["wall_seconds"] for r in records)
        wait = sum(r["media_wait_seconds"] for r in records)
        rows[share] = (seconds, model, answers)
        print(
            f"| {'on' if share else 'off'} | {seconds:.1f} | {samples / seconds:.3f} | {model:.1f} | {samples / model:.3f} | {wait:.1f} |"
        )
    if rows[True][2] != rows[False][2]:
        raise SystemExit("sharing changed the answers")
    print(
        f"identical answers; shared vs unshared samples/s: {rows[False][0] / rows[True][0]:.2f}x (CLI), "
        f"{rows[False][1] / rows[True][1]:.2f}x (model)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "omni-lmms-bench")
    parser.add_argument("--videomme", action="store_true", help="the Video-MME-shaped task through the CLI")
    parser.add_argument("--questions", type=int, default=3, help="questions per video (--videomme)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    checkpoint = tiny_checkpoint("7b")
    print(f"generating {args.videos} videos of {args.minutes:g} min into {args.cache} (once)")
    videos = make_videos(args.cache, args.videos, args.minutes)
    if args.videomme:
        with tempfile.TemporaryDirectory() as work:
            videomme(checkpoint, videos, args.questions, Path(work))
        return
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
