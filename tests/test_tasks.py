"""The shipped task YAMLs (``tasks/``): they load, lmms-eval lists them, their scoring counts failures, and every task
runs end to end through the real ``lmms-eval`` CLI on offline mini-datasets (see ``tests/minidatasets.py``)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import minidatasets  # tests/ is on sys.path under pytest
import pytest
from omni_lmms_plugin.tasks import _shared as shared

from omni_lmms_plugin.config import split_generation_kwargs
from omni_lmms_plugin.provenance import failure_answer

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "tasks"
LMMS_EVAL = [sys.executable, "-m", "lmms_eval"]  # the console script is not on a venv-over-shared-deps PATH

MVBENCH = [f"omni_mvbench_{name}" for name in minidatasets.MVBENCH_SUBTASKS]
TRACKS = ["perception", "comprehension", "adaptation"]
VIDEOMMMU = [f"omni_videommmu_{track}" for track in TRACKS]
VIDEOMMMU_AV = [f"omni_videommmu_{track}_av" for track in TRACKS]
QUESTION_ONLY = "omni_videommmu_adaptation_question_only"
SINGLE_TASKS = {
    # task: its accuracy metric prefix
    "omni_vinoground": "vinoground",
    "omni_videomme": "videomme",
    "omni_videomme_av": "videomme",
    "omni_videomme_w_subtitle": "videomme",
    "omni_worldsense": "worldsense",
    "omni_longvideobench_val_v": "longvideobench",
    "omni_longvideobench_val_v_av": "longvideobench",
    "omni_longvideobench_val_sub": "longvideobench",
    "omni_egoschema_subset": "egoschema",
    QUESTION_ONLY: "videommmu_question_only",
    **{name: "videommmu" for name in VIDEOMMMU + VIDEOMMMU_AV},
    **{name: "mvbench" for name in MVBENCH},
}
SUBMISSION_TASKS = {"omni_egoschema"}
GROUPS = {
    "omni_videommmu": ("videommmu", [*VIDEOMMMU, QUESTION_ONLY]),
    "omni_videommmu_av": ("videommmu", [*VIDEOMMMU_AV, QUESTION_ONLY]),
    "omni_mvbench": ("mvbench", MVBENCH),
}
ALL_NAMES = set(SINGLE_TASKS) | SUBMISSION_TASKS | set(GROUPS)
TASK_YAMLS = sorted(p for p in TASKS_DIR.rglob("*.yaml") if not p.name.startswith("_"))
# The modality of each task: frames-only where the leaderboard's protocol is, `_av` variants beside them.
MODALITY = {
    "omni_videomme": "frames",
    "omni_videomme_av": "frames+audio",
    "omni_videomme_w_subtitle": "frames+subtitles",
    "omni_videommmu_perception": "frames",
    "omni_videommmu_perception_av": "frames+audio",
    "omni_videommmu_adaptation_av": "frames+audio",
    "omni_longvideobench_val_v": "frames",
    "omni_longvideobench_val_v_av": "frames+audio",
    "omni_longvideobench_val_sub": "frames+subtitles",
    "omni_worldsense": "frames+audio",
    "omni_egoschema": "frames",
    "omni_mvbench_action_count": "frames",
    "omni_vinoground": "frames",
}


def _load(path: Path) -> dict:
    from lmms_eval.utils import load_yaml_config

    return load_yaml_config(str(path))


def _config_of(task: str) -> dict:
    return next(cfg for p in TASK_YAMLS if (cfg := _load(p)).get("task") == task)


# ----------------------------------------------------------------------------------------------------------------------
# The YAMLs
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TASK_YAMLS, ids=lambda p: p.stem)
def test_every_yaml_loads_with_its_functions(path):
    config = _load(path)
    if isinstance(config.get("task"), list):  # a group
        assert config["group"] in GROUPS
        prefix, members = GROUPS[config["group"]]
        metrics = {entry["metric"] for entry in config["aggregate_metric_list"]}
        assert {prefix + "_acc", "omni_failed"} <= metrics
        assert sorted(config["task"]) == sorted(members)
        return
    name = config["task"]
    assert name in SINGLE_TASKS or name in SUBMISSION_TASKS, f"{path} defines an unexpected task {name}"
    assert config["dataset_kwargs"]["video"] is True and config["dataset_kwargs"]["cache_dir"]
    revision = config["dataset_kwargs"]["revision"]
    assert re.fullmatch(r"[0-9a-f]{40}", revision) or config["metadata"]["dataset_revision"] == "floating", (
        f"{name}: revision {revision!r} is neither a commit nor documented as floating"
    )
    for key in ("doc_to_visual", "doc_to_text", "process_results"):
        assert callable(config[key]), f"{name}: {key} is not a function"
    metrics = {entry["metric"]: entry for entry in config["metric_list"]}
    assert metrics["omni_failed"]["aggregation"] is shared.failed_count
    assert metrics["omni_failed"]["higher_is_better"] is False
    if name in SINGLE_TASKS:
        prefix = SINGLE_TASKS[name]
        assert {f"{prefix}_acc", f"{prefix}_answered_acc"} <= set(metrics)
        assert metrics[f"{prefix}_acc"]["aggregation"] is shared.accuracy
    generation, overrides = split_generation_kwargs(config["generation_kwargs"])
    assert generation["do_sample"] is False and generation["temperature"] == 0 and generation["until"]
    assert overrides.fps and overrides.max_frames and overrides.use_audio_in_video in ("true", "false")
    expected_audio = "true" if config["metadata"]["modality"] == "frames+audio" else "false"
    assert overrides.use_audio_in_video == expected_audio, f"{name}: modality and audio flag disagree"


def test_the_modality_is_part_of_each_task_identity():
    """Frames only where the leaderboard is, an `_av` variant beside Video-MME, VideoMMMU and LongVideoBench, and
    WorldSense audio-visual; the audio flag travels in generation_kwargs, so the results' task config shows it."""
    modality = {name: _config_of(name)["metadata"]["modality"] for name in MODALITY}
    assert modality == MODALITY
    assert all(
        name.endswith("_av") for name, value in modality.items() if value == "frames+audio" and "world" not in name
    )


def test_answer_lengths_follow_the_references():
    lengths = {
        name: _config_of(name)["generation_kwargs"]["max_new_tokens"]
        for name in ("omni_videommmu_adaptation", "omni_videommmu_perception", "omni_videomme", "omni_vinoground")
    }
    assert lengths == {
        "omni_videommmu_adaptation": 1024,
        "omni_videommmu_perception": 1024,
        "omni_videomme": 16,
        "omni_vinoground": 16,
    }


def test_the_task_index_finds_every_task_and_group():
    from lmms_eval.tasks import TaskManager

    index = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).all_tasks
    assert set(index) == ALL_NAMES


def test_no_builtin_task_shadows_ours():
    import lmms_eval

    builtin = Path(lmms_eval.__file__).parent / "tasks"
    names = set()
    for path in builtin.rglob("*.yaml"):
        names |= set(re.findall(r"^(?:task|group):\s*[\"']?([\w\-]+)", path.read_text(errors="replace"), re.M))
    assert not ALL_NAMES & names


def test_each_benchmark_keeps_its_functions_in_a_utils_py_beside_its_yamls():
    """No dotted paths into a shared task module: each YAML names `utils.<f>`, lmms-eval's built-ins or `_shared`."""
    for path in TASKS_DIR.rglob("*.yaml"):
        for target in re.findall(r"!function\s+(\S+)", path.read_text()):
            assert target.startswith(("utils.", "lmms_eval.tasks.", "omni_lmms_plugin.tasks._shared.")), (path, target)
            if target.startswith("utils."):
                assert (path.parent / "utils.py").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------------

FAILED = failure_answer("MediaError: /x.mp4: file not found")


def test_accuracies_are_percent_count_failures_as_wrong_and_report_them():
    items = [shared.score_item("B", True), shared.score_item("C", False)]
    items.append(shared.score_item(FAILED, True, doc_id=3))
    assert items[2] == {"score": 0.0, "failed": True, "doc_id": 3}
    assert shared.accuracy(items) == pytest.approx(100 / 3)
    assert shared.answered_accuracy(items) == pytest.approx(50.0)
    assert shared.failed_count([0, 0, 1]) == 1
    assert shared.sum_subtask_counts([1, 0, 2], [3, 3, 3], True) == 3


def test_a_repeated_question_counts_once():
    """WorldSense's reference keys scores by question `index`: a duplicated row must not weigh twice; items without
    a `uid` (the other benchmarks, whose references do not deduplicate) all count. Catches an accuracy that averages
    every item, or one that merges items without an id."""
    items = [shared.score_item("A", True, uid="q1"), shared.score_item("A", True, uid="q1")]
    items.append(shared.score_item("B", False, uid="q2"))
    assert shared.accuracy(items) == 50.0
    assert shared.answered_accuracy(items) == 50.0
    assert shared.accuracy([shared.score_item("A", True), shared.score_item("A", False)]) == 50.0


def test_aggregations_accept_empty_and_all_failed_runs():
    assert math.isnan(shared.accuracy([]))
    assert math.isnan(shared.answered_accuracy([shared.score_item(FAILED, False)]))
    assert shared.failed_count([]) == 0


def test_the_answered_item_of_a_failed_sample_has_no_score():
    """lmms-eval computes the CLT standard error from items' ``score``: the answered accuracy's excludes failures."""
    from omni_lmms_plugin.tasks.worldsense import utils

    doc = {"index": "ws_0", "candidates": ["A. a", "B. b"], "answer": "B", "task_domain": "Music"}
    result = utils.worldsense_process_results(doc, [FAILED])
    assert result["omni_failed"] == 1 and result["worldsense_acc"]["score"] == 0.0
    assert "score" not in result["worldsense_answered_acc"]
    assert result["worldsense_acc_domain_music"] is result["worldsense_acc"]


def _vino(index: str, score: float, failed: bool = False) -> dict:
    pair, side, question_type = index.split("_")
    return {"score": score, "failed": failed, "pair": pair, "side": side, "question_type": question_type}


def test_vinoground_pair_scores_on_subsets():
    from omni_lmms_plugin.tasks.vinoground import utils

    items = [_vino("0_pos_text", 100), _vino("0_neg_text", 100), _vino("1_pos_text", 100), _vino("1_neg_text", 0)]
    items += [_vino("0_pos_video", 100)]  # half a video pair: left out of the video and group scores
    assert utils.vinoground_text_score(items) == 50.0
    assert math.isnan(utils.vinoground_video_score(items))
    assert math.isnan(utils.vinoground_group_score(items))
    items += [_vino("0_neg_video", 0.0, failed=True)]
    assert utils.vinoground_video_score(items) == 0.0
    assert utils.vinoground_group_score(items) == 0.0


def test_a_missing_video_is_returned_for_the_adapter_to_fail(tmp_path, monkeypatch):
    """No sys.exit, no exception, no [] (which would make a video question text-only)."""
    from omni_lmms_plugin.tasks.videomme import utils as videomme
    from omni_lmms_plugin.tasks.videommmu import utils as videommmu

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert videommmu.videommmu_doc_to_visual({"id": "test_Art_Theory_7"}) == [
        str(tmp_path / "video_mmmu" / "Art" / "test_Art_Theory_7.mp4")
    ]
    assert videomme.videomme_doc_to_visual({"videoID": "abc"}) == [str(tmp_path / "videomme" / "data" / "abc.mp4")]
    (tmp_path / "videomme" / "data").mkdir(parents=True)
    (tmp_path / "videomme" / "data" / "abc.mkv").write_bytes(b"x")
    assert videomme.videomme_doc_to_visual({"videoID": "abc"}) == [str(tmp_path / "videomme" / "data" / "abc.mkv")]


def test_videommmu_paths_do_not_need_hf_home(monkeypatch):
    from omni_lmms_plugin.tasks.videommmu import utils

    monkeypatch.delenv("HF_HOME", raising=False)
    (path,) = utils.videommmu_doc_to_visual({"id": "test_Math_3"})
    assert path == os.path.expanduser("~/.cache/huggingface/video_mmmu/Science/test_Math_3.mp4")


def test_videommmu_delta_knowledge():
    """(acc - acc_question_only) / (100 - acc_question_only) * 100, from the group's two values in task order."""
    from omni_lmms_plugin.tasks.videommmu import utils

    assert utils.delta_knowledge(60.0, 50.0) == pytest.approx(20.0)
    assert utils.group_delta_knowledge([60.0, 50.0], [3, 3]) == pytest.approx(20.0)
    assert math.isnan(utils.group_delta_knowledge([60.0], [3]))
    assert math.isnan(utils.delta_knowledge(60.0, 100.0))


@pytest.fixture(scope="module")
def scoring_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home_scoring")
    minidatasets.build_hf_home(home, ["omni_vinoground"])
    return home


# One fixture doc per benchmark, a right answer and a wrong one, through the functions the YAML names.
SCORING_CASES = [
    ("omni_videommmu_perception", ("omni_videommmu", 0, 0), "C", "A"),
    ("omni_videommmu_adaptation", ("omni_videommmu", 2, 2), "The answer is 2", "It uses 3"),  # open-ended
    ("omni_vinoground", ("omni_vinoground", 0, 0), "A", "B"),
    ("omni_videomme", ("omni_videomme", 0, 0), "B. Two.", "D"),
    ("omni_worldsense", ("omni_worldsense", 0, 0), "B", "A"),
    ("omni_mvbench_action_antonym", ("omni_mvbench", 0, 0), "(B) Walks out.", "(A) Sits down."),
    ("omni_longvideobench_val_v", ("omni_longvideobench_val_v", 0, 0), "B", "C"),
    ("omni_egoschema_subset", ("omni_egoschema_subset", 0, 0), "B", "E"),
]


@pytest.mark.parametrize(("task", "source", "right", "wrong"), SCORING_CASES, ids=[c[0] for c in SCORING_CASES])
def test_fixture_docs_score_through_the_yaml_functions(task, source, right, wrong, scoring_home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(scoring_home))
    name, bench_index, row = source
    bench = minidatasets.BENCHMARKS[name][bench_index]
    doc = bench.features.decode_example(bench.features.encode_example(bench.rows[row]))
    config = _config_of(task)
    prefix = SINGLE_TASKS[task]
    assert config["process_results"](doc, [right])[f"{prefix}_acc"]["score"] == 100.0
    assert config["process_results"](doc, [wrong])[f"{prefix}_acc"]["score"] == 0.0
    failed = config["process_results"](doc, [FAILED])
    assert failed["omni_failed"] == 1 and failed[f"{prefix}_acc"]["score"] == 0.0 and failed[f"{prefix}_acc"]["failed"]
    kwargs = config.get("lmms_eval_specific_kwargs", {}).get("default")
    text = config["doc_to_text"](doc, kwargs) if kwargs else config["doc_to_text"](doc)
    assert (doc["question"] if "question" in doc else "Which caption matches the video?") in text
    metric_names = {entry["metric"] for entry in config["metric_list"]}
    assert set(config["process_results"](doc, [right])) <= metric_names, "every key process_results returns is a metric"


# ----------------------------------------------------------------------------------------------------------------------
# End to end: the real CLI, the tiny model, every task in one process
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory):
    return minidatasets.build_hf_home(tmp_path_factory.mktemp("hf_home"))


@pytest.mark.slow
def test_every_task_runs_end_to_end(e2e_home, task_listing, tmp_path):
    """Every task and group (the `_av` VideoMMMU group aside: it shares the question-only run) in one CLI run:
    percent headline scores, the leaderboard breakdowns, failures counted, the modality in the results' task config,
    delta-knowledge in the VideoMMMU group, and the EgoSchema submission file beside the results."""
    from omni_lmms_plugin.tiny_model import tiny_checkpoint

    checkpoint = tiny_checkpoint()
    members = {task for _, names in GROUPS.values() for task in names}
    groups = [group for group in GROUPS if group != "omni_videommmu_av"]
    tasks = [*groups, *(task for task in [*SINGLE_TASKS, *SUBMISSION_TASKS] if task not in members)]
    command = [
        *LMMS_EVAL,
        "--model",
        "qwen2_5_omni_safe",
        "--model_args",
        f"pretrained={checkpoint},device=cpu,max_new_tokens=8",
        "--tasks",
        ",".join(tasks),
        "--include_path",
        str(TASKS_DIR),
        "--log_samples",
        "--output_path",
        str(tmp_path / "out"),
        "--limit",
        "3",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=540, env=minidatasets.offline_env(e2e_home))
    assert run.returncode == 0 and "Error during evaluation" not in run.stderr + run.stdout, run.stderr[-6000:]
    (results_path,) = (tmp_path / "out").rglob("*_results.json")
    report = json.loads(results_path.read_text())
    results = report["results"]

    ran = [task for task in SINGLE_TASKS if task not in VIDEOMMMU_AV]
    for task in ran:
        prefix, metrics = SINGLE_TASKS[task], results[task]
        assert f"{prefix}_acc,none" in metrics and f"{prefix}_answered_acc,none" in metrics, task
        expected_failed = minidatasets.MISSING_VIDEOS.get(task, 0)
        assert metrics["omni_failed,none"] == expected_failed, (task, metrics)
        assert 0.0 <= metrics[f"{prefix}_acc,none"] <= 100.0
        config = report["configs"][task]
        assert config["dataset_kwargs"]["revision"] == _config_of(task)["dataset_kwargs"]["revision"]
        audio = config["generation_kwargs"]["omni_use_audio_in_video"]
        assert audio is (config["metadata"]["modality"] == "frames+audio"), task
        samples = next((tmp_path / "out").rglob(f"*_samples_{task}.jsonl")).read_text().splitlines()
        assert samples and all("omni_failed" in json.loads(line) for line in samples)
    for group in groups:
        prefix = GROUPS[group][0]
        assert results[group]["omni_failed,none"] == 0 and f"{prefix}_acc,none" in results[group]
    assert {f"vinoground_{k}_score,none" for k in ("text", "video", "group")} <= set(results["omni_vinoground"])

    # The leaderboard breakdowns, as metrics of their own.
    assert {f"videomme_acc_duration_{d},none" for d in ("short", "medium", "long")} <= set(results["omni_videomme"])
    assert "videomme_acc_task_counting_problem,none" in results["omni_videomme"]
    assert "worldsense_acc_domain_tech_science,none" in results["omni_worldsense"]
    assert "longvideobench_acc_duration_15,none" in results["omni_longvideobench_val_v"]

    # Delta-knowledge from the Adaptation track and the question-only run, in the group's results.
    from omni_lmms_plugin.tasks.videommmu.utils import delta_knowledge

    expected = delta_knowledge(
        results["omni_videommmu_adaptation"]["videommmu_acc,none"],
        results[QUESTION_ONLY]["videommmu_question_only_acc,none"],
    )
    group_value = results["omni_videommmu"]["videommmu_delta_knowledge,none"]
    assert group_value == expected or (math.isnan(group_value) and math.isnan(expected))

    # The EgoSchema submission: {video_idx: answer index}, one entry per question, beside the results.
    (submission_path,) = (tmp_path / "out" / "submissions").glob("omni_egoschema_*.json")
    submission = json.loads(submission_path.read_text())
    assert set(submission) == {row["video_idx"] for row in minidatasets.EGOSCHEMA_TEST_ROWS}
    assert all(isinstance(index, int) and -1 <= index <= 4 for index in submission.values())
    assert results["omni_egoschema"]["egoschema_submission,none"] == len(submission)

    # The failed WorldSense sample is logged with the adapter's reason, and scored as failed, not silently wrong.
    worldsense = [json.loads(line) for line in next((tmp_path / "out").rglob("*_samples_omni_worldsense.jsonl")).open()]
    failed = [s for s in worldsense if s["omni_failed"]]
    assert len(failed) == 1 and "file not found" in str(failed[0]["filtered_resps"])
    assert failed[0]["worldsense_acc"]["failed"] is True

    # Video-MME with subtitles: provenance shows the lines of the frames the planner sampled, and their tokens inside
    # the budget (the prompt, lines included, plus media and the answer fit the context).
    from omni_lmms_plugin.subtitles import SubtitleTrack, render_subtitles

    provenance = [
        json.loads(line)
        for path in (tmp_path / "out" / "omni_provenance").glob("samples_rank*.jsonl")
        for line in path.read_text().splitlines()
    ]
    with_lines = [
        r
        for r in provenance
        if r["task"] == "omni_videomme_w_subtitle" and any(m["kind"] == "subtitles" for m in r["media"])
    ]
    assert with_lines and all(r["status"] == "answered" for r in with_lines)
    for record in with_lines:
        video, subtitles = (next(m for m in record["media"] if m["kind"] == kind) for kind in ("video", "subtitles"))
        _, chosen = render_subtitles(
            SubtitleTrack(subtitles["path"]), video["frame_times"], video["duration"], frame_rate=video["source_fps"]
        )
        assert [line["text"] for line in subtitles["lines"]] == [cue.text for cue in chosen] and chosen
        assert subtitles["tokens"] > 0 and record["tokens"]["prompt"] >= subtitles["tokens"]
        assert record["tokens"]["input"] + 8 <= 32_768

    # Preflight predicts, for every sample of every mini dataset, the plan the adapter then executed: the same input
    # tokens and, per video, the same frame indices, size, audio span and rule (one Planner serves both).
    output = tmp_path / "preflight.json"
    preflight = subprocess.run(
        [sys.executable, "-m", "omni_lmms_plugin.cli", "preflight", "--tasks", ",".join(tasks), "--model_args",
         f"pretrained={checkpoint},max_new_tokens=8", "--include-path", str(TASKS_DIR), "--limit", "3",
         "--output", str(output), "--no-plots"],
        capture_output=True, text=True, timeout=300, env=minidatasets.offline_env(e2e_home),
    )  # fmt: skip
    assert preflight.returncode == 0, preflight.stderr[-3000:]

    def video_view(entry: dict) -> tuple:
        return (entry["frame_indices"], entry["width"], entry["height"], entry["audio_seconds"], entry["rule"])

    executed = {
        (r["task"], r["doc_id"]): (r["tokens"]["input"], [video_view(m) for m in r["media"] if m["kind"] == "video"])
        for r in provenance
        if r["status"] == "answered"
    }
    predicted = {
        (row["task"], row["doc_id"]): (row["input_tokens"], [video_view(v) for v in row["videos"]])
        for row in json.loads(output.read_text())["samples"]
        if row["status"] == "planned"
    }
    assert executed and {key: predicted.get(key) for key in executed} == executed
    # Questions on one video share its plan and prefix (share_video_prefix): preflight groups them as the run did.
    shared = {(r["task"], r["doc_id"]) for r in provenance if r["tokens"].get("shared_prefix")}
    members = {
        (row["task"], row["doc_id"]) for row in json.loads(output.read_text())["samples"] if row.get("shared_with")
    }
    assert members and members <= shared

    # MVBench episodic_reasoning stores each video as a folder of 3 fps frames: planned like a file, first and last in.
    (episodic,) = [r for r in provenance if r["task"] == "omni_mvbench_episodic_reasoning"]
    folder_video = episodic["media"][0]
    assert episodic["status"] == "answered" and folder_video["total_frames"] == 18
    assert folder_video["source_fps"] == 3.0 and folder_video["frame_indices"][-1] == 17


@pytest.fixture(scope="module")
def task_listing(tmp_path_factory):
    """``lmms-eval --tasks list --include_path tasks/``, started in the background (it indexes every built-in task,
    about a minute) so that it overlaps the end-to-end run."""
    process = subprocess.Popen(
        [*LMMS_EVAL, "--tasks", "list", "--include_path", str(TASKS_DIR)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=minidatasets.offline_env(tmp_path_factory.mktemp("hf_home_listing")),
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.mark.slow
def test_lmms_eval_lists_our_tasks_beside_the_builtins(task_listing):
    output, _ = task_listing.communicate(timeout=300)
    listed = set(re.findall(r"^ - (\S+)$", output, re.M))
    assert ALL_NAMES <= listed, f"missing: {sorted(ALL_NAMES - listed)}"
