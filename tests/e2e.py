"""Helpers for end-to-end runs through the real lmms-eval CLI: a local video task with generated media, and the
commands that run it (plain, under accelerate, or with faults injected by tests/fault_runner.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from omni_lmms_plugin.synthetic_media import write_video

SMOKE_TASK = Path(__file__).parent / "smoke_task"
FAULT_RUNNER = Path(__file__).parent / "fault_runner.py"

# (file, width, height, fps, seconds, audio)
DEFAULT_VIDEOS = [
    ("a.mp4", 320, 240, 30.0, 4.0, True),
    ("b.mkv", 200, 120, 25.0, 3.0, False),
    ("c.webm", 160, 160, 24.0, 2.0, True),
    ("d.mp4", 256, 144, 30.0, 5.0, True),
]


def make_smoke_task(folder: Path, videos: list[tuple] = DEFAULT_VIDEOS, extra_docs: list[dict] | None = None) -> Path:
    """Copy the smoke task into ``folder`` with generated videos and one doc per video."""
    shutil.copytree(SMOKE_TASK, folder, dirs_exist_ok=True)
    docs = []
    for index, (name, width, height, fps, seconds, audio) in enumerate(videos):
        write_video(folder / name, width=width, height=height, fps=fps, duration=seconds, audio=audio)
        docs.append({"video": name, "question": f"Question {index}? A. yes B. no", "answer": "AB"[index % 2]})
    docs.extend(extra_docs or [])
    (folder / "docs.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return folder


def lmms_eval_args(
    checkpoint: Path, task_dir: Path, output: Path, model_args: str = "", tasks: str = "omni_smoke"
) -> list[str]:
    args = f"pretrained={checkpoint},device=cpu"
    if model_args:
        args += "," + model_args
    return [
        "--model", "qwen2_5_omni_safe",
        "--model_args", args,
        "--tasks", tasks,
        "--include_path", str(task_dir),
        "--log_samples",
        "--output_path", str(output),
        "--batch_size", "1",
    ]  # fmt: skip


def env() -> dict[str, str]:
    variables = dict(os.environ)
    variables.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    return variables


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    # lmms-eval logs an evaluation error and still exits 0: look for its results file instead of trusting the code.
    if result.returncode != 0 or "Error during evaluation" in result.stderr + result.stdout:
        raise AssertionError(f"run failed ({result.returncode}):\n{(result.stdout + result.stderr)[-6000:]}")
    return result


def lmms_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "lmms_eval", *args], cwd)


def results(output: Path) -> dict:
    return json.loads(Path(glob.glob(str(output / "*" / "*_results.json"))[0]).read_text())


def logged_samples(output: Path, task: str = "omni_smoke") -> list[dict]:
    path = glob.glob(str(output / "*" / f"*_samples_{task}.jsonl"))[0]
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def answer_of(sample: dict) -> str:
    """The scored answer of a logged sample (lmms-eval logs one filtered response as a string, several as a list)."""
    response = sample["filtered_resps"]
    return response[0] if isinstance(response, list) else response


def provenance(output: Path) -> list[dict]:
    records = []
    for path in sorted((output / "omni_provenance").glob("samples_rank*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records
