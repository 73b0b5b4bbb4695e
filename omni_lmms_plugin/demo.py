"""``omni-lmms demo``: the whole pipeline on a machine with no GPU and no weights.

It builds (once, cached) a tiny random-weight Qwen2.5-Omni checkpoint and a small task of generated videos, runs the
real ``lmms-eval`` CLI with ``qwen2_5_omni_safe`` on the CPU, and prints the run's report. The answers are random
(the weights are); what the run shows is the plumbing: planning to the token budget, decoding, audio-in-video,
generation, scoring, failure counting and provenance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["DEMO_VIDEOS", "write_demo_task", "lmms_eval_command", "offline_env", "run_demo"]

DEMO_TASK = Path(__file__).parent / "demo_task"
DEMO_TASK_VERSION = "1"

# (file, width, height, fps, seconds, with audio): mp4 with audio, mkv without, webm with, a small widescreen mp4.
DEMO_VIDEOS: list[tuple[str, int, int, float, float, bool]] = [
    ("a.mp4", 320, 240, 30.0, 4.0, True),
    ("b.mkv", 200, 120, 25.0, 3.0, False),
    ("c.webm", 160, 160, 24.0, 2.0, True),
    ("d.mp4", 256, 144, 30.0, 5.0, True),
]


def write_demo_task(folder: str | os.PathLike, videos=DEMO_VIDEOS, extra_docs: list[dict] | None = None) -> Path:
    """Copy the demo task into ``folder`` with one generated video and one multiple-choice doc per entry."""
    from .synthetic_media import write_video

    folder = Path(folder)
    shutil.copytree(DEMO_TASK, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    docs = []
    for index, (name, width, height, fps, seconds, audio) in enumerate(videos):
        write_video(folder / name, width=width, height=height, fps=fps, duration=seconds, audio=audio)
        docs.append({"video": name, "question": f"Question {index}? A. yes B. no", "answer": "AB"[index % 2]})
    docs.extend(extra_docs or [])
    (folder / "docs.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return folder


def offline_env() -> dict[str, str]:
    """The environment for a run that must never reach a hub."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def lmms_eval_command(
    checkpoint: Path, task_dir: Path, output: Path, *, task: str = "omni_demo", model_args: str = ""
) -> list[str]:
    """The ``python -m lmms_eval`` command line that evaluates ``task`` with qwen2_5_omni_safe on the CPU."""
    args = f"pretrained={checkpoint},device=cpu" + (f",{model_args}" if model_args else "")
    return [
        sys.executable, "-m", "lmms_eval",
        "--model", "qwen2_5_omni_safe",
        "--model_args", args,
        "--tasks", task,
        "--include_path", str(task_dir),
        "--log_samples",
        "--output_path", str(output),
        "--batch_size", "1",
    ]  # fmt: skip


def _cached_task(cache_root: Path) -> Path:
    folder = cache_root / f"demo-task-v{DEMO_TASK_VERSION}"
    if not (folder / "docs.jsonl").is_file():
        staging = Path(tempfile.mkdtemp(prefix=".demo-task-", dir=cache_root))
        write_demo_task(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def run_demo(output: str | os.PathLike | None = None) -> int:
    """Build what is missing, run the real lmms-eval CLI on the demo task, print the report; returns an exit code."""
    from .tiny_model import tiny_checkpoint

    cache_root = Path(os.environ.get("OMNI_LMMS_CACHE") or Path.home() / ".cache" / "omni_lmms_plugin").expanduser()
    cache_root.mkdir(parents=True, exist_ok=True)
    print("omni-lmms demo: tiny random-weight Qwen2.5-Omni on CPU; its answers are random, the pipeline is real.")
    checkpoint = tiny_checkpoint("7b")
    task_dir = _cached_task(cache_root)
    run_dir = Path(output) if output else Path(tempfile.mkdtemp(prefix="omni-lmms-demo-"))
    command = lmms_eval_command(checkpoint, task_dir, run_dir)
    print("running:", " ".join(command), flush=True)
    result = subprocess.run(command, env=offline_env(), text=True, capture_output=True)
    log = run_dir / "lmms_eval.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    # lmms-eval logs an evaluation error and may still exit 0: the results file is the proof of a finished run.
    if result.returncode != 0 or not list(run_dir.glob("*/*_results.json")):
        print(f"omni-lmms demo: lmms-eval did not finish; its log is {log}", file=sys.stderr)
        print((result.stdout + result.stderr)[-3000:], file=sys.stderr)
        return 1
    from .report import summarize

    print(summarize(run_dir))
    print(f"run folder: {run_dir}")
    return 0
