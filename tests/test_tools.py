"""``omni-lmms report``, ``verify`` and ``preflight`` on real run folders: the demo task through the real lmms-eval
CLI with the tiny checkpoint, twice identically and once with one sample's plan changed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from e2e import lmms_eval_args, logged_samples, provenance
from PIL import Image

from omni_lmms_plugin.bundle import check_bundle
from omni_lmms_plugin.cli import main
from omni_lmms_plugin.demo import offline_env, write_demo_task
from omni_lmms_plugin.provenance import SampleRecord
from omni_lmms_plugin.report import summarize
from omni_lmms_plugin.runs import dedupe_records, load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_demo_task(tmp_path_factory.mktemp("tools") / "task")


@pytest.fixture(scope="module")
def runs(tiny_7b, task_dir, tmp_path_factory):
    """Three real runs started together: A and B identical (resume=false); C with max_frames=8, which changes the plan
    of the 5 s video (doc 3, 10 frames at 2 fps) and of no other."""
    settings = {"a": "resume=false", "b": "resume=false", "c": "resume=false,max_frames=8"}
    folders = {name: tmp_path_factory.mktemp(f"run_{name}") for name in settings}
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "lmms_eval", *lmms_eval_args(tiny_7b, task_dir, folders[name], args)],
            cwd=folders[name],
            env=offline_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name, args in settings.items()
    }
    for name, process in started.items():
        log, _ = process.communicate(timeout=600)
        finished = list(folders[name].glob("*/*_results.json"))
        assert process.returncode == 0 and finished and "Error during evaluation" not in log, log[-6000:]
    return folders


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _rewrite_records(run: Path, change) -> None:
    journal = run / "omni_provenance" / "samples_rank0.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    journal.write_text("".join(json.dumps(r) + "\n" for r in change(records)))


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------


def test_report_prints_scores_writes_a_plot_and_a_bundle_whose_checksums_verify(runs, tmp_path, capsys):
    bundle = tmp_path / "submission.tar.gz"
    assert main(["report", str(runs["a"]), "--output", str(tmp_path / "report"), "--bundle", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "omni_demo" in out and "accuracy" in out and "omni_failed 0" in out
    assert "Failures: none" in out
    assert "estimated" in out and "CPU run" in out, "a CPU run has no measured peak: the report must say so"

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [row["doc_id"] for row in report["per_sample"]] == [0, 1, 2, 3]
    assert all(row["peak_memory_bytes"] is None and row["estimated_peak_bytes"] > 0 for row in report["per_sample"])
    with Image.open(tmp_path / "report" / "peak_memory.png") as image:
        assert image.format == "PNG" and image.size == (700, 450)
    with Image.open(tmp_path / "report" / "sample_time.png") as image:
        assert image.format == "PNG" and image.size[1] == 450

    assert check_bundle(bundle) == []
    with tarfile.open(bundle) as archive:
        files = {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
    listed = dict(reversed(line.split("  ", 1)) for line in files.pop("SHA256SUMS").decode().splitlines())
    assert listed == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    names = set(files)
    assert {"omni_provenance/manifest_rank0.json", "omni_provenance/samples_rank0.jsonl"} <= names
    assert any(n.endswith("_results.json") for n in names) and any("_samples_omni_demo" in n for n in names)
    assert {"omni_report/report.json", "omni_report/peak_memory.png", "omni_report/sample_time.png"} <= names

    # A benchmark submission file beside the results (EgoSchema's) travels in the bundle.
    run = _copy(runs["a"], tmp_path / "with_submission")
    (run / "submissions").mkdir()
    (run / "submissions" / "omni_egoschema_20261130.json").write_text('{"q1": 2}')
    with_submission = tmp_path / "with_submission.tar.gz"
    assert main(["report", str(run), "--output", str(tmp_path / "report2"), "--bundle", str(with_submission)]) == 0
    assert check_bundle(with_submission) == []
    with tarfile.open(with_submission) as archive:
        assert any(m.name.endswith("submissions/omni_egoschema_20261130.json") for m in archive.getmembers())

    # A tampered bundle is caught.
    broken = tmp_path / "broken.tar.gz"
    with tarfile.open(bundle) as source, tarfile.open(broken, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith("samples_rank0.jsonl"):
                data = data.replace(b'"status": "answered"', b'"status": "failed"', 1)
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    assert any("samples_rank0.jsonl: SHA-256" in problem for problem in check_bundle(broken))


def test_report_lists_failures_retries_and_degradations_and_drops_duplicate_records(runs, tmp_path):
    run = _copy(runs["a"], tmp_path / "run")

    def change(records):
        by_doc = {r["doc_id"]: r for r in records}
        failed = dict(by_doc[2], status="failed", answer="[omni-lmms failed] out of memory", input_hash=None)
        failed.update(failure="out of memory on all 2 attempts (last budget scale 0.7)", media=[])
        failed["attempts"] = [
            {"index": 0, "budget_scale": 1.0, "outcome": "out_of_memory", "error": "OutOfMemoryError", "plan": [],
             "input_tokens": 589, "notes": [], "seconds": 0.1},
            {"index": 1, "budget_scale": 0.7, "outcome": "out_of_memory", "error": "OutOfMemoryError", "plan": [],
             "input_tokens": 400, "notes": [], "seconds": 0.1},
        ]  # fmt: skip
        clipped = json.loads(json.dumps(by_doc[3]))
        clipped["media"][0].update(rule="fewer_pixels", reason="budget binds: size reduced to 336x196")
        clipped["attempts"][0]["notes"] = [
            "plan shrunk 1x before generating: estimated peak above the memory available"
        ]
        # Resume and padding leave several records of one sample: the last answered one counts.
        records = [failed if r["doc_id"] == 2 else r for r in records]
        return [*records, dict(by_doc[0], answer="stale"), by_doc[0], clipped]

    _rewrite_records(run, change)
    text = summarize(run)
    assert "Failures: 1" in text and "omni_demo/2: out of memory on all 2 attempts" in text
    assert "2 out-of-memory retries" in text
    assert "omni_demo/3 (answered): " in text and "plan fewer_pixels: budget binds: size reduced" in text
    assert "plan shrunk 1x before generating" in text
    assert "4 with provenance (3 duplicate records dropped" in text
    assert load_run(run).record("omni_demo", 0).answer != "stale"


def test_dedupe_keeps_the_last_record_of_a_sample():
    def record(doc_id, status, answer):
        return SampleRecord("t", doc_id, "test", "k", "c", status, answer, None, [], {}, [], "sdpa", None, None, 0.0,
                            0.0, None)  # fmt: skip

    kept = dedupe_records([record(0, "answered", "x"), record(0, "failed", "f"), record(1, "failed", "f1"),
                           record(0, "answered", "y"), record(1, "failed", "f2"), record(0, "failed", "g")])  # fmt: skip
    # The latest outcome wins, as in lmms-eval's results of the latest run: doc 0 failed last.
    assert [(r.doc_id, r.answer) for r in kept] == [(0, "g"), (1, "f2")]


# ---------------------------------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------------------------------


def test_verify_passes_on_two_identical_runs(runs, capsys):
    assert main(["verify", str(runs["a"]), str(runs["b"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("identical:") and "4 provenance records and 4 logged samples" in out


def test_verify_fails_naming_the_one_sample_whose_plan_changed(runs, capsys):
    assert main(["verify", str(runs["a"]), str(runs["c"])]) == 1
    out = capsys.readouterr().out
    assert "in 1 samples" in out
    assert "omni_demo/doc_id=3: media[0].frames: A=10  B=8" in out
    assert "omni_demo/doc_id=3: input_hash" in out
    assert "doc_id=0" not in out and "doc_id=1" not in out and "doc_id=2" not in out
    assert "note: model arg max_frames: A=768  B=8" in out


def test_verify_names_an_edited_input_hash_and_score(runs, tmp_path, capsys):
    run = _copy(runs["b"], tmp_path / "b")
    _rewrite_records(run, lambda records: [dict(r, input_hash="0" * 64) if r["doc_id"] == 1 else r for r in records])
    samples_file = next(run.glob("*/*_samples_omni_demo.jsonl"))
    samples = logged_samples(run)
    samples[2]["accuracy"] = 1.0 - samples[2]["accuracy"]
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert main(["verify", str(runs["a"]), str(run)]) == 1
    out = capsys.readouterr().out
    assert "omni_demo/doc_id=1: input_hash: A=" in out and "B='0000" in out
    assert "omni_demo/doc_id=2: score accuracy" in out
    assert len(provenance(run)) == 4


def test_verify_names_a_changed_dataset_commit_and_media_file(runs, tmp_path, capsys):
    """The manifest lists the media files each task read, with fingerprints, and the dataset's commit; verify reports
    a difference in either. Catches verify ignoring them (the dataset loop of ``compare.compare_runs`` removed: then
    this verify reported the runs identical)."""
    manifest = json.loads((runs["a"] / "omni_provenance" / "manifest_rank0.json").read_text())
    demo = manifest["datasets"]["omni_demo"]
    assert set(demo["media_files"]["files"]) == {"a.mp4", "b.mkv", "c.webm", "d.mp4"}
    assert demo["commit"] is None, "a local JSON task has no Hub commit"
    assert manifest["weight_sha256"] and manifest["weight_sha256_source"] in ("computed", "cache", "cache+computed")
    run = _copy(runs["b"], tmp_path / "b")
    path = run / "omni_provenance" / "manifest_rank0.json"
    edited = json.loads(path.read_text())
    edited["datasets"]["omni_demo"].update(repo="org/data", commit="f" * 40)
    edited["datasets"]["omni_demo"]["media_files"]["files"]["c.webm"] = "0" * 64
    path.write_text(json.dumps(edited))
    assert main(["verify", str(runs["a"]), str(run)]) == 1
    out = capsys.readouterr().out
    assert 'omni_demo: dataset: A=[null, null]  B=["org/data", "ffff' in out
    assert "omni_demo: media file c.webm: A=" in out and "B='0000" in out


# ---------------------------------------------------------------------------------------------------------------------
# preflight
# ---------------------------------------------------------------------------------------------------------------------


def test_preflight_plans_every_sample_as_the_run_did_and_lists_an_unreadable_file(runs, tiny_7b, tmp_path, capsys):
    task = write_demo_task(
        tmp_path / "task", extra_docs=[{"video": "broken.mp4", "question": "Q? A. yes B. no", "answer": "A"}]
    )
    (task / "broken.mp4").write_text("this is a text file, not a video\n")
    output = tmp_path / "out" / "preflight.json"
    code = main(
        ["preflight", "--tasks", "omni_demo", "--include-path", str(task), "--model_args", f"pretrained={tiny_7b}",
         "--gpu-mem", "0.5,24", "--output", str(output)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "unreadable: 1" in out and "broken.mp4" in out

    report = json.loads(output.read_text())
    (summary,) = report["tasks"]
    assert summary["requests"] == 5 and summary["planned"] == 4
    assert [u["doc_id"] for u in summary["unreadable"]] == [4]
    assert "not a media file" in summary["unreadable"][0]["error"]

    # Preflight's plan of every sample is the one the real run executed (one planner, the same processor): the same
    # input tokens, and per video the same frame indices, size, audio span and rule.
    def video_view(entry: dict) -> tuple:
        return (entry["frame_indices"], entry["width"], entry["height"], entry["audio_seconds"], entry["rule"])

    executed = {
        r["doc_id"]: (r["tokens"]["input"], [video_view(m) for m in r["media"] if m["kind"] == "video"])
        for r in provenance(runs["a"])
    }
    predicted = {
        row["doc_id"]: (row["input_tokens"], [video_view(v) for v in row["videos"]])
        for row in report["samples"]
        if row["status"] == "planned"
    }
    assert predicted == executed
    assert summary["clipped"]["samples"] == 0 and summary["plan_rules"] == {"reference": 4}
    assert summary["memory"]["24"]["do_not_fit"] == 0
    assert summary["memory"]["0.5"]["do_not_fit"] == 4 and summary["memory"]["0.5"]["never_fit"] == 4
    assert {p["path"].rsplit("/", 1)[-1] for p in report["slowest_probes"]} >= {"a.mp4", "b.mkv", "c.webm", "d.mp4"}
    for suffix in ("_tokens.png", "_memory.png"):
        with Image.open(output.with_name("preflight" + suffix)) as image:
            assert image.format == "PNG" and image.size == (800, 450)


def test_preflight_reports_what_the_budget_clipped(tiny_7b, task_dir, tmp_path):
    from omni_lmms_plugin.preflight import run_preflight

    report = run_preflight(
        ["omni_demo"], model_args=f"pretrained={tiny_7b},max_video_tokens=300", include_paths=[str(task_dir)],
        output=tmp_path / "p.json", plots=False, progress=False, gpu_gib=[24],
    )  # fmt: skip
    (summary,) = report["tasks"]
    clipped = summary["clipped"]
    assert clipped["samples"] == 4 and clipped["tokens_planned"] < clipped["tokens_wanted"]
    worst = clipped["worst"][0]
    assert worst["planned_tokens"] < worst["wanted_tokens"] and "budget binds" in worst["reason"]
    assert all(row["input_tokens"] - row["prompt_tokens"] <= 300 for row in report["samples"])
