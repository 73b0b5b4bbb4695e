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
from omni_lmms_plugin.tasks import _common as common

from omni_lmms_plugin.config import split_generation_kwargs
from omni_lmms_plugin.provenance import failure_answer

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "tasks"
LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")

MVBENCH = [f"omni_mvbench_{name}" for name in minidatasets.MVBENCH_SUBTASKS]
VIDEOMMMU = ["omni_videommmu_perception", "omni_videommmu_comprehension", "omni_videommmu_adaptation"]
SINGLE_TASKS = {
    # task: its accuracy metric prefix
    "omni_vinoground": "vinoground",
    "omni_videomme": "videomme",
    "omni_videomme_w_subtitle": "videomme",
    "omni_worldsense": "worldsense",
    "omni_longvideobench_val_v": "longvideobench",
    "omni_egoschema_subset": "egoschema",
    **{name: "videommmu" for name in VIDEOMMMU},
    **{name: "mvbench" for name in MVBENCH},
}
GROUPS = {"omni_videommmu": ("videommmu", VIDEOMMMU), "omni_mvbench": ("mvbench", MVBENCH)}
ALL_NAMES = set(SINGLE_TASKS) | set(GROUPS)
TASK_YAMLS = sorted(p for p in TASKS_DIR.rglob("*.yaml") if not p.name.startswith("_"))


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
        metrics = {entry["metric"] for entry in config["aggregate_metric_list"]}
        assert metrics == {GROUPS[config["group"]][0] + "_acc", "omni_failed"}
        assert sorted(config["task"]) == sorted(GROUPS[config["group"]][1])
        return
    name = config["task"]
    assert name in SINGLE_TASKS, f"{path} defines an unexpected task {name}"
    prefix = SINGLE_TASKS[name]
    assert config["dataset_kwargs"]["video"] is True and config["dataset_kwargs"]["cache_dir"]
    assert config["dataset_kwargs"]["revision"], "every task pins a dataset revision (shown in the results JSON)"
    for key in ("doc_to_visual", "doc_to_text", "process_results"):
        assert callable(config[key]), f"{name}: {key} is not a function"
    metrics = {entry["metric"]: entry for entry in config["metric_list"]}
    assert {f"{prefix}_acc", f"{prefix}_answered_acc", "omni_failed"} <= set(metrics)
    assert metrics["omni_failed"]["aggregation"] is common.failed_count
    assert metrics["omni_failed"]["higher_is_better"] is False
    generation, overrides = split_generation_kwargs(config["generation_kwargs"])
    assert generation["do_sample"] is False and generation["temperature"] == 0
    assert generation["max_new_tokens"] <= 64 and generation["until"]
    assert overrides.fps and overrides.max_frames and overrides.use_audio_in_video in ("true", "false")


def test_audio_goes_in_where_the_benchmark_is_about_sound():
    audio = {
        name: split_generation_kwargs(_config_of(name)["generation_kwargs"])[1].use_audio_in_video
        for name in ("omni_worldsense", "omni_videomme", "omni_videomme_w_subtitle", "omni_mvbench_action_count")
    }
    assert audio == {
        "omni_worldsense": "true",
        "omni_videomme": "true",
        "omni_videomme_w_subtitle": "true",
        "omni_mvbench_action_count": "false",
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


# ----------------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------------

FAILED = failure_answer("MediaError: /x.mp4: file not found")


@pytest.mark.parametrize(
    ("response", "options", "expected"),
    [
        ("B", ["x", "y", "z"], "B"),
        ("(C) the third", ["x", "y", "z"], "C"),
        ("The answer is A.", ["x", "y", "z"], "A"),
        ("walks out", ["Sits down.", "Walks out.", "Closes the door."], "B"),  # the option's text
        ("Breaks a box.", ["Opens a box.", "Closes a box.", "Breaks a box."], "C"),  # not the B of "Breaks"
        ("B. Two.", ["A. One.", "B. Two.", "C. Three."], "B"),
        ("I think it shows two people: Two.", ["A. One.", "B. Two.", "C. Three."], "B"),
        ("", ["x", "y"], ""),
        (FAILED, ["x", "y"], ""),
    ],
)
def test_parse_choice(response, options, expected):
    assert common.parse_choice(response, options) == expected


def test_accuracies_count_failures_as_wrong_and_report_them():
    items = [common.score_item("B", True), common.score_item("C", False), common.score_item(FAILED, True)]
    assert items[2] == {"score": 0.0, "failed": True}
    assert common.accuracy(items) == pytest.approx(1 / 3)
    assert common.answered_accuracy(items) == pytest.approx(1 / 2)
    assert common.failed_count([0, 0, 1]) == 1
    assert common.sum_subtask_counts([1, 0, 2], [3, 3, 3], True) == 3


def test_aggregations_accept_empty_and_all_failed_runs():
    assert math.isnan(common.accuracy([]))
    assert math.isnan(common.answered_accuracy([common.score_item(FAILED, False)]))
    assert common.failed_count([]) == 0


def test_the_answered_item_of_a_failed_sample_has_no_score():
    """lmms-eval computes the CLT standard error from items' ``score``: the answered accuracy's excludes failures."""
    doc = {"index": "ws_0", "candidates": ["A. a", "B. b"], "answer": "B"}
    doc |= {"task_type": "t", "task_domain": "d", "duration": "<1min", "audio_class": ["Event"]}
    result = common.worldsense_process_results(doc, [FAILED])
    assert result["omni_failed"] == 1 and result["worldsense_acc"]["score"] == 0.0
    assert "score" not in result["worldsense_answered_acc"]


def _vino(index: str, score: float, failed: bool = False) -> dict:
    pair, side, question_type = index.split("_")
    return {"score": score, "failed": failed, "pair": pair, "side": side, "question_type": question_type}


def test_vinoground_pair_scores_on_subsets():
    items = [_vino("0_pos_text", 1), _vino("0_neg_text", 1), _vino("1_pos_text", 1), _vino("1_neg_text", 0)]
    items += [_vino("0_pos_video", 1)]  # half a video pair: left out of the video and group scores
    assert common.vinoground_text_score(items) == 0.5
    assert math.isnan(common.vinoground_video_score(items))
    assert math.isnan(common.vinoground_group_score(items))
    items += [_vino("0_neg_video", 0.0, failed=True)]
    assert common.vinoground_video_score(items) == 0.0
    assert common.vinoground_group_score(items) == 0.0


def test_srt_lines_drop_numbers_times_and_markup(tmp_path):
    path = tmp_path / "a.srt"
    path.write_text(minidatasets._SRT + "\n3\n00:00:02,000 --> 00:00:03,000\nTwo people will join us.\n")
    assert common.srt_lines(str(path)) == ["Welcome to the history lesson.", "Two people will join us."]


def test_a_missing_video_is_returned_for_the_adapter_to_fail(tmp_path, monkeypatch):
    """No sys.exit, no exception, no [] (which would make a video question text-only)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert common.videommmu_doc_to_visual({"id": "test_Art_Theory_7"}) == [
        str(tmp_path / "video_mmmu" / "Art" / "test_Art_Theory_7.mp4")
    ]
    assert common.videomme_doc_to_visual({"videoID": "abc"}) == [str(tmp_path / "videomme" / "data" / "abc.mp4")]
    (tmp_path / "videomme" / "data").mkdir(parents=True)
    (tmp_path / "videomme" / "data" / "abc.mkv").write_bytes(b"x")
    assert common.videomme_doc_to_visual({"videoID": "abc"}) == [str(tmp_path / "videomme" / "data" / "abc.mkv")]


def test_videommmu_paths_do_not_need_hf_home(monkeypatch):
    monkeypatch.delenv("HF_HOME", raising=False)
    (path,) = common.videommmu_doc_to_visual({"id": "test_Math_3"})
    assert path == os.path.expanduser("~/.cache/huggingface/video_mmmu/Science/test_Math_3.mp4")


@pytest.fixture(scope="module")
def scoring_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home_scoring")
    minidatasets.build_hf_home(home, ["omni_vinoground"])
    return home


# One fixture doc per benchmark, a right answer and a wrong one, through the functions the YAML names.
SCORING_CASES = [
    ("omni_videommmu_perception", ("omni_videommmu", 0), "C", "A"),
    ("omni_videommmu_adaptation", ("omni_videommmu", 2), "The answer is 2", "It uses 3"),  # open-ended
    ("omni_vinoground", ("omni_vinoground", 0), "A", "B"),
    ("omni_videomme", ("omni_videomme", 0), "B. Two.", "D"),
    ("omni_worldsense", ("omni_worldsense", 0), "B", "A"),
    ("omni_mvbench_action_antonym", ("omni_mvbench", 0), "Walks out.", "(A) Sits down."),
    ("omni_longvideobench_val_v", ("omni_longvideobench_val_v", 0), "B", "C"),
    ("omni_egoschema_subset", ("omni_egoschema_subset", 0), "B", "E"),
]


@pytest.mark.parametrize(("task", "source", "right", "wrong"), SCORING_CASES, ids=[c[0] for c in SCORING_CASES])
def test_fixture_docs_score_through_the_yaml_functions(task, source, right, wrong, scoring_home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(scoring_home))
    name, row = source
    benches = minidatasets.BENCHMARKS[name]
    bench = benches[-1] if task == "omni_videommmu_adaptation" else benches[0]
    doc = bench.features.decode_example(bench.features.encode_example(bench.rows[row]))
    config = _config_of(task)
    prefix = SINGLE_TASKS[task]
    assert config["process_results"](doc, [right])[f"{prefix}_acc"]["score"] == 1.0
    assert config["process_results"](doc, [wrong])[f"{prefix}_acc"]["score"] == 0.0
    failed = config["process_results"](doc, [FAILED])
    assert failed["omni_failed"] == 1 and failed[f"{prefix}_acc"]["score"] == 0.0 and failed[f"{prefix}_acc"]["failed"]
    kwargs = config.get("lmms_eval_specific_kwargs", {}).get("default")
    text = config["doc_to_text"](doc, kwargs) if kwargs else config["doc_to_text"](doc)
    assert (doc["question"] if "question" in doc else "Which caption matches the video?") in text


# ----------------------------------------------------------------------------------------------------------------------
# End to end: the real CLI, the tiny model, every task in one process
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory):
    return minidatasets.build_hf_home(tmp_path_factory.mktemp("hf_home"))


@pytest.mark.slow
def test_every_task_runs_end_to_end(e2e_home, task_listing, tmp_path):
    from omni_lmms_plugin.tiny_model import tiny_checkpoint

    checkpoint = tiny_checkpoint()
    tasks = [*GROUPS, *(task for task in SINGLE_TASKS if task not in VIDEOMMMU and task not in MVBENCH)]
    command = [
        str(LMMS_EVAL),
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
    run = subprocess.run(command, capture_output=True, text=True, timeout=420, env=minidatasets.offline_env(e2e_home))
    assert run.returncode == 0, run.stderr[-6000:]
    (results_path,) = (tmp_path / "out").rglob("*_results.json")
    report = json.loads(results_path.read_text())
    results = report["results"]

    for task, prefix in SINGLE_TASKS.items():
        metrics = results[task]
        assert f"{prefix}_acc,none" in metrics and f"{prefix}_answered_acc,none" in metrics, task
        expected_failed = minidatasets.MISSING_VIDEOS.get(task, 0)
        assert metrics["omni_failed,none"] == expected_failed, (task, metrics)
        assert 0.0 <= metrics[f"{prefix}_acc,none"] <= 1.0
        config = report["configs"][task]
        assert config["dataset_kwargs"]["revision"] == _config_of(task)["dataset_kwargs"]["revision"]
        samples = next((tmp_path / "out").rglob(f"*_samples_{task}.jsonl")).read_text().splitlines()
        assert samples and all("omni_failed" in json.loads(line) for line in samples)
    for group, (prefix, _) in GROUPS.items():
        assert results[group]["omni_failed,none"] == 0 and f"{prefix}_acc,none" in results[group]
    assert {f"vinoground_{k}_score,none" for k in ("text", "video", "group")} <= set(results["omni_vinoground"])

    # The failed WorldSense sample is logged with the adapter's reason, and scored as failed, not silently wrong.
    worldsense = [json.loads(line) for line in next((tmp_path / "out").rglob("*_samples_omni_worldsense.jsonl")).open()]
    failed = [s for s in worldsense if s["omni_failed"]]
    assert len(failed) == 1 and "file not found" in str(failed[0]["filtered_resps"])
    assert failed[0]["worldsense_acc"]["failed"] is True


@pytest.fixture(scope="module")
def task_listing(tmp_path_factory):
    """``lmms-eval --tasks list --include_path tasks/``, started in the background (it indexes every built-in task,
    about a minute) so that it overlaps the end-to-end run."""
    process = subprocess.Popen(
        [str(LMMS_EVAL), "--tasks", "list", "--include_path", str(TASKS_DIR)],
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
