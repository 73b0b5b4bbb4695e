"""Helpers for end-to-end runs through the real lmms-eval CLI: a local video task with generated media, and the
commands that run it (plain, under accelerate, or with faults injected by tests/fault_runner.py)."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

from omni_lmms_plugin.demo import lmms_eval_command, offline_env

FAULT_RUNNER = Path(__file__).parent / "fault_runner.py"


def lmms_eval_args(
    checkpoint: Path, task_dir: Path, output: Path, model_args: str = "", tasks: str = "omni_demo"
) -> list[str]:
    return lmms_eval_command(checkpoint, task_dir, output, task=tasks, model_args=model_args)[3:]


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=offline_env(), capture_output=True, text=True, timeout=timeout)
    # lmms-eval logs an evaluation error and still exits 0: look for its results file instead of trusting the code.
    if result.returncode != 0 or "Error during evaluation" in result.stderr + result.stdout:
        raise AssertionError(f"run failed ({result.returncode}):\n{(result.stdout + result.stderr)[-6000:]}")
    return result


def lmms_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "lmms_eval", *args], cwd)


def results(output: Path) -> dict:
    return json.loads(Path(glob.glob(str(output / "*" / "*_results.json"))[0]).read_text())


def logged_samples(output: Path, task: str = "omni_demo") -> list[dict]:
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


def assert_retry_shrank(failed: dict, retry: dict, shrink: float, *, allow_floor: bool) -> None:
    """The attempt after an out-of-memory error (``failed`` and ``retry`` are attempt records of provenance) fed
    fewer input tokens, and each video's plan used at most ``shrink`` of the failed plan's tokens and fewer pixels.

    With ``allow_floor``, a video may instead be at the smallest plan the policy allows (rule ``fewer_frames`` or
    ``shorter_audio`` of ``video_plan.plan_video`` at ``min_frames`` = 4 frames or fewer) and no larger than before: a plan
    that short cannot shrink by the factor.
    """
    assert retry["budget_scale"] < failed["budget_scale"]
    failed_videos = [m for m in failed["plan"] if m["kind"] == "video"]
    retry_videos = [m for m in retry["plan"] if m["kind"] == "video"]
    assert failed_videos and len(retry_videos) == len(failed_videos), (failed, retry)
    floor = False
    for before, after in zip(failed_videos, retry_videos, strict=True):
        if allow_floor and after["rule"] in ("fewer_frames", "shorter_audio") and after["frames"] <= 4:
            assert after["total_tokens"] <= before["total_tokens"], (before, after)
            floor = True
            continue
        assert after["total_tokens"] <= shrink * before["total_tokens"], (before, after)
        assert (
            after["frames"] * after["height"] * after["width"] < before["frames"] * before["height"] * before["width"]
        )
    if floor:
        assert retry["input_tokens"] <= failed["input_tokens"], (failed["input_tokens"], retry["input_tokens"])
    else:
        assert retry["input_tokens"] < failed["input_tokens"], (failed["input_tokens"], retry["input_tokens"])
