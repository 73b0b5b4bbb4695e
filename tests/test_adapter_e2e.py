"""qwen2_5_omni_safe through the real lmms-eval CLI, offline on CPU, with the tiny checkpoint and generated videos."""

from __future__ import annotations

import json
import sys

import pytest
from e2e import (
    FAULT_RUNNER,
    answer_of,
    assert_retry_shrank,
    lmms_eval,
    lmms_eval_args,
    logged_samples,
    provenance,
    results,
    run,
)

from omni_lmms_plugin.demo import write_demo_task
from omni_lmms_plugin.provenance import FAILURE_PREFIX

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_demo_task(tmp_path_factory.mktemp("demo") / "task")


@pytest.fixture(scope="module")
def first_run(tiny_7b, task_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("run_a")
    result = lmms_eval(lmms_eval_args(tiny_7b, task_dir, output, "resume=false"), cwd=output)
    (output / "cli.log").write_text(result.stdout + result.stderr)
    return output


def test_the_cli_writes_results_samples_and_provenance(first_run):
    """The real CLI's results, samples, journal and manifest. Breaking check (by hand) for the manifest's media
    libraries: soxr's version left out of ``build_manifest``: KeyError, failed."""
    metrics = results(first_run)["results"]["omni_demo"]
    assert "accuracy,none" in metrics and metrics["omni_failed,none"] == 0
    samples = logged_samples(first_run)
    assert sorted(s["doc_id"] for s in samples) == [0, 1, 2, 3]
    answers = [answer_of(s) for s in samples]
    assert all(isinstance(a, str) and a and not a.startswith(FAILURE_PREFIX) for a in answers), answers
    records = provenance(first_run)
    assert sorted(r["doc_id"] for r in records) == [0, 1, 2, 3]
    for record in records:
        assert record["status"] == "answered" and record["input_hash"]
        video = record["media"][0]
        assert video["frames"] == len(video["frame_times"]) == len(video["decoded_times"])
        assert record["tokens"]["input"] + 6 <= 32768 and record["tokens"]["generated"] <= 6
        assert record["attempts"][0]["outcome"] == "answered"
    by_doc = {r["doc_id"]: r for r in records}
    assert by_doc[0]["tokens"]["audio_in_video"] > 0, "audio-in-video=auto must use a file's audio track"
    assert by_doc[1]["tokens"]["audio_in_video"] == 0, "the mkv has no audio track"
    manifest = json.loads((first_run / "omni_provenance" / "manifest_rank0.json").read_text())
    for key in (
        "torch",
        "transformers",
        "lmms_eval",
        "av",
        "ffmpeg",
        "pillow",
        "soxr",
        "weight_sha256",
        "model_args",
        "attention",
        "datasets",
    ):
        assert manifest[key], key
    assert manifest["attention"] == "sdpa"
    assert manifest["datasets"]["omni_demo"]["docs"] == 4 and manifest["datasets"]["omni_demo"]["fingerprint"]


def test_the_run_log_carries_no_processor_warning_that_does_not_apply(first_run):
    """transformers (5.x with ``cap_pixels_per_frame``) warns once a run that its video processor does not cap the
    pixels per frame as qwen-vl-utils does, "so some videos cost far more tokens than they would there". Not so here:
    the frames reach it at the planned size (``do_resize=False``), planned with the reference's cap; a user must not
    read that warning beside our numbers. Catches (checked by hand): ``inputs.py`` not passing
    ``cap_pixels_per_frame=False``: the warning was in the log, failed."""
    assert "per-frame pixel cap" not in (first_run / "cli.log").read_text()


def test_two_runs_feed_bit_identical_inputs(first_run, tiny_7b, task_dir, tmp_path):
    lmms_eval(lmms_eval_args(tiny_7b, task_dir, tmp_path, "resume=false,prefetch=0"), cwd=tmp_path)
    first = {r["doc_id"]: (r["input_hash"], r["answer"]) for r in provenance(first_run)}
    second = {r["doc_id"]: (r["input_hash"], r["answer"]) for r in provenance(tmp_path)}
    assert first == second


def test_injected_out_of_memory_is_retried_smaller_and_recorded(tiny_7b, tmp_path):
    """The OOM is raised inside ``generate`` (tests/fault_runner.py), after the failed attempt recorded its plan; the
    retry must feed fewer input tokens and a video plan at most ``oom_shrink`` (0.7) of the failed one's tokens. The
    videos are long enough (20 s) that a 0.7x plan exists above the policy's smallest (4 frames).

    Catches a retry that re-plans at full size: with the re-plan disabled by hand (``budget_scale < 1.0`` branch of
    ``request_plan.plan_request`` skipped), the retry fed as many input tokens as the failed attempt and this test failed
    at ``retry["input_tokens"] < failed["input_tokens"]``.
    """
    videos = [("a.mp4", 320, 240, 10.0, 20.0, True), ("b.mp4", 200, 120, 10.0, 3.0, False), ("c.mkv", 256, 144, 10.0, 20.0, False)]  # fmt: skip
    task = write_demo_task(tmp_path / "task", videos)
    spec = json.dumps({"oom_first_attempt": [0, 2]})
    args = lmms_eval_args(tiny_7b, task, tmp_path, "resume=false,oom_retries=2")
    run([sys.executable, str(FAULT_RUNNER), spec, *args], cwd=tmp_path)
    records = {r["doc_id"]: r for r in provenance(tmp_path)}
    for doc_id in (0, 2):
        attempts = records[doc_id]["attempts"]
        assert [a["outcome"] for a in attempts] == ["out_of_memory", "answered"]
        assert_retry_shrank(attempts[0], attempts[1], shrink=0.7, allow_floor=False)
        assert records[doc_id]["tokens"]["input"] == attempts[1]["input_tokens"]
    assert [a["outcome"] for a in records[1]["attempts"]] == ["answered"]
    assert results(tmp_path)["results"]["omni_demo"]["omni_failed,none"] == 0


def test_out_of_memory_past_the_retries_is_an_explicit_counted_failure(tiny_7b, task_dir, tmp_path):
    spec = json.dumps({"oom_first_attempt": [1]})
    args = lmms_eval_args(tiny_7b, task_dir, tmp_path, "resume=false,oom_retries=0")
    run([sys.executable, str(FAULT_RUNNER), spec, *args], cwd=tmp_path)
    records = {r["doc_id"]: r for r in provenance(tmp_path)}
    assert records[1]["status"] == "failed" and "out of memory" in records[1]["failure"]
    sample = next(s for s in logged_samples(tmp_path) if s["doc_id"] == 1)
    assert answer_of(sample).startswith(FAILURE_PREFIX)
    assert results(tmp_path)["results"]["omni_demo"]["omni_failed,none"] == 1


def test_data_parallel_under_accelerate_answers_every_sample_once(tiny_7b, task_dir, tmp_path):
    args = lmms_eval_args(tiny_7b, task_dir, tmp_path, "resume=false")
    # accelerate 1.15 starts one process for `--cpu`; its multi-process launcher (torchrun underneath) on a machine
    # without GPUs gives two CPU ranks, each with its own model, as on a multi-GPU machine.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lmms_eval", *args]  # fmt: skip
    run(command, cwd=tmp_path)
    records = provenance(tmp_path)
    ranks = {path.name for path in (tmp_path / "omni_provenance").glob("samples_rank*.jsonl")}
    assert ranks == {"samples_rank0.jsonl", "samples_rank1.jsonl"}
    assert sorted(r["doc_id"] for r in records) == [0, 1, 2, 3]
    assert sorted(s["doc_id"] for s in logged_samples(tmp_path)) == [0, 1, 2, 3]
