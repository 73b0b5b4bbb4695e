"""Parity with each benchmark's reference: lmms-eval's built-in task utils, imported here, fed the same documents (the
real dataset schema, from ``tests/minidatasets.py``) and the same model responses as our tasks. Per-sample scores,
aggregates, prompts, subtitle lines and submission entries must be equal, except for the differences listed in
``tasks/PROTOCOLS.md``, each pinned by its own test here.

The built-in modules are loaded from their files under a private name, after ``$HF_HOME`` points at the mini
datasets (several read it at import), so each test sees a fresh copy.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import sys
from pathlib import Path
from types import ModuleType

import minidatasets  # tests/ is on sys.path under pytest
import pytest
from omni_lmms_plugin.tasks import _shared as shared
from omni_lmms_plugin.tasks.egoschema import utils as egoschema
from omni_lmms_plugin.tasks.longvideobench import utils as longvideobench
from omni_lmms_plugin.tasks.mvbench import utils as mvbench
from omni_lmms_plugin.tasks.videomme import utils as videomme
from omni_lmms_plugin.tasks.videommmu import utils as videommmu
from omni_lmms_plugin.tasks.vinoground import utils as vinoground
from omni_lmms_plugin.tasks.worldsense import utils as worldsense

from omni_lmms_plugin.provenance import failure_answer
from omni_lmms_plugin.subtitles import SUBTITLE_PLACEHOLDER, SubtitleTrack, render_subtitles

FAILED = failure_answer("MediaError: /x.mp4: file not found")
# Letter answers in the forms models give, option texts, sentences, lower case, and nothing readable.
LETTER_RESPONSES = ["A", "B", "(C)", "D.", "b", "The answer is B.", "B. Two.", "Answer: (D)", "I would say C", ""]

# A Video-MME subtitle track with many short cues over the 2 s mini video (16 frames at 8 fps), some starting or
# ending between frames, all in the official files' markup.
_CUES = [(0.0, 0.3), (0.3, 0.35), (0.4, 0.9), (0.93, 1.0), (1.0, 1.26), (1.3, 1.5), (1.5, 1.87), (1.9, 2.4)]


def _srt(cues: list[tuple[float, float]], markup: bool = True) -> str:
    def clock(t: float) -> str:
        return f"00:00:{int(t):02d},{round((t - int(t)) * 1000):03d}"

    blocks = []
    for i, (start, end) in enumerate(cues):
        text = f"Line {i} is spoken."
        text = f'<font color="white" size=".72c">{text}</font>' if markup else text
        blocks.append(f"{i + 1}\n{clock(start)} --> {clock(end)}\n{text}\n")
    return "\n".join(blocks)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The mini datasets as ``$HF_HOME`` for this module (the built-ins read it at import, ours at call time)."""
    path = minidatasets.build_hf_home(tmp_path_factory.mktemp("hf_home_protocols"))
    (path / "videomme" / "subtitle" / "fFjv93ACGo8.srt").write_text(_srt(_CUES), encoding="utf-8")
    before = os.environ.get("HF_HOME")
    os.environ["HF_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("HF_HOME")
    else:
        os.environ["HF_HOME"] = before


def builtin(name: str) -> ModuleType:
    """A fresh copy of ``lmms_eval/tasks/<name>/utils.py``."""
    import lmms_eval

    path = Path(lmms_eval.__file__).parent / "tasks" / name / "utils.py"
    spec = importlib.util.spec_from_file_location(f"_builtin_{name}_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builtin_kwargs(path: str) -> dict:
    """The ``default`` ``lmms_eval_specific_kwargs`` of a built-in task YAML."""
    import lmms_eval
    from lmms_eval.utils import load_yaml_config

    return load_yaml_config(str(Path(lmms_eval.__file__).parent / "tasks" / path))["lmms_eval_specific_kwargs"][
        "default"
    ]


def our_kwargs(task: str) -> dict:
    from lmms_eval.utils import load_yaml_config

    path = next(p for p in (Path(__file__).parents[1] / "tasks").rglob(f"{task}.yaml"))
    return load_yaml_config(str(path))["lmms_eval_specific_kwargs"]["default"]


def docs(name: str, bench: int = 0) -> list[dict]:
    """The mini dataset's rows as ``datasets`` returns them."""
    benchmark = minidatasets.BENCHMARKS[name][bench]
    return [benchmark.features.decode_example(benchmark.features.encode_example(row)) for row in benchmark.rows]


def fraction(item: dict) -> float:
    return item["score"] / 100.0


# ----------------------------------------------------------------------------------------------------------------------
# Video-MME
# ----------------------------------------------------------------------------------------------------------------------


def _videomme_docs() -> list[dict]:
    """The mini rows, with every answer letter and the three durations."""
    rows = docs("omni_videomme")
    return [
        {**row, "answer": letter, "question_id": f"{row['question_id']}{letter}"} for row in rows for letter in "ABCD"
    ]


def test_videomme_scores_equal_the_builtin(home):
    """Catches a different answer reader (e.g. option-text matching) or a fraction headline."""

    reference = builtin("videomme")
    ours, theirs = [], []
    for doc in _videomme_docs():
        for response in LETTER_RESPONSES:
            mine = videomme.videomme_process_results(doc, [response])["videomme_acc"]
            their = reference.videomme_process_results(doc, [response])["videomme_perception_score"]
            assert fraction(mine) == their["score"], (doc["answer"], response)
            ours.append(mine)
            theirs.append(their)
    assert shared.accuracy(ours) == pytest.approx(reference.videomme_aggregate_results(theirs))


def test_videomme_subtitle_prompt_equals_the_builtin(home):
    """The subtitle lines of the built-in's uniformly sampled frames, chosen by :func:`render_subtitles` from frame
    times, and the whole "frames + subtitles" prompt, for several frame counts. Catches a selection that compares
    times instead of the reference's frame numbers, or lists a cue twice or out of order."""
    reference = builtin("videomme")
    doc = docs("omni_videomme")[0]
    for frame_num in (3, 5, 8, 16, 32):
        kwargs = {"frame_num": frame_num, "pre_prompt": "", "post_prompt": ""}
        theirs = reference.videomme_doc_to_text_subtitle(doc, kwargs)
        assert videomme.videomme_doc_to_text_subtitle(doc, {"frame_num": frame_num}) == theirs, frame_num
        assert "Line" in theirs


def test_videomme_subtitle_lines_of_planned_frames(home):
    """After planning, the adapter substitutes the lines of the frames it sampled for the placeholder: for the
    built-in's frames that is the built-in's prompt."""
    reference = builtin("videomme")
    doc = docs("omni_videomme")[0]
    kwargs = {"subtitles_after_planning": True}
    video, track = videomme.videomme_doc_to_visual(doc, kwargs)
    assert isinstance(track, SubtitleTrack) and track.path.endswith("fFjv93ACGo8.srt")
    text = videomme.videomme_doc_to_text_subtitle(doc, kwargs)
    assert text.count(SUBTITLE_PLACEHOLDER) == 1
    times, duration, fps = videomme.reference_frame_times(video, 8)
    lines, cues = render_subtitles(track, times, duration, frame_rate=fps)
    assert [cue.text for cue in cues] == lines.split("\n")
    expected = reference.videomme_doc_to_text_subtitle(doc, {"frame_num": 8, "pre_prompt": "", "post_prompt": ""})
    assert text.replace(SUBTITLE_PLACEHOLDER, lines) == expected
    # Without subtitles (the request then carries no track) the prompt says so, as the built-in's.
    other = docs("omni_videomme")[1]
    assert videomme.videomme_doc_to_visual(other, kwargs) == [videomme.videomme_doc_to_visual(other)[0]]
    no_subtitles = reference.videomme_doc_to_text_subtitle(other, {"frame_num": 8})
    assert videomme.videomme_doc_to_text_subtitle(other, kwargs) == no_subtitles


def test_difference_videomme_keeps_subtitle_lines_without_markup(home, tmp_path):
    """Listed difference: the built-in keeps only cues wrapped in the official files' ``<font>`` markup; any cue's
    text is kept here."""
    path = tmp_path / "plain.srt"
    path.write_text(_srt([(0.0, 1.0), (1.0, 2.0)], markup=False), encoding="utf-8")
    text, cues = render_subtitles(SubtitleTrack(str(path)), [0.5, 1.5], 2.0)
    assert text == "Line 0 is spoken.\nLine 1 is spoken." and len(cues) == 2


def test_difference_videomme_frames_prompt_does_not_mention_subtitles(home):
    """Listed difference: the built-in's no-subtitle prompt asks for an answer "based on the video and the
    subtitles"; ours is the official frames prompt."""
    reference = builtin("videomme")
    doc = docs("omni_videomme")[0]
    ours = videomme.videomme_doc_to_text(doc, our_kwargs("_omni_videomme_template"))
    theirs = reference.videomme_doc_to_text(doc, {"post_prompt": "The best answer is:"})
    assert ours == theirs.replace(" and the subtitles", "")


def test_difference_a_failed_sample_is_counted_not_parsed(home):
    """Listed difference (every task): the adapter's failure answer scores 0 and counts in ``omni_failed``; a
    built-in would parse the message (here it even finds a letter)."""
    reference = builtin("videomme")
    doc = {**_videomme_docs()[0], "answer": "A"}
    assert reference.videomme_process_results(doc, [failure_answer("A MediaError")])["videomme_perception_score"][
        "score"
    ]
    ours = videomme.videomme_process_results(doc, [failure_answer("A MediaError")])
    assert ours["videomme_acc"]["score"] == 0.0 and ours["omni_failed"] == 1


# ----------------------------------------------------------------------------------------------------------------------
# VideoMMMU
# ----------------------------------------------------------------------------------------------------------------------

OPEN_RESPONSES = ["2", "The answer is 2", "It uses 3 points.", "two", "There are 2 vanishing points.", "2.0"]


def _videommmu_docs() -> list[dict]:
    return [doc for track in range(3) for doc in docs("omni_videommmu", track)]


def test_videommmu_prompts_equal_the_builtin(home):
    """Catches the old one-letter post-prompt, a changed preamble, or wrong question-only clip paths."""

    reference = builtin("videommmu")
    kwargs = builtin_kwargs("videommmu/_default_template_yaml")
    assert our_kwargs("_omni_videommmu_template") == kwargs
    for doc in _videommmu_docs():
        if doc["question_type"] == "multiple-choice":
            assert videommmu.videommmu_doc_to_text_perception_comprehension(
                doc, kwargs
            ) == reference.videommmu_doc_to_text_perception_comprehension(doc, kwargs)
        assert videommmu.videommmu_doc_to_text_adaptation(doc, kwargs) == reference.videommmu_doc_to_text_adaptation(
            doc, kwargs
        )
        assert videommmu.videommmu_doc_to_text_question_only(doc) == reference.videommmu_doc_to_text_no_preprompt(doc)
    adaptation = docs("omni_videommmu", 2)[0]
    assert videommmu.videommmu_doc_to_visual(adaptation) == reference.videommmu_doc_to_visual(adaptation)
    assert videommmu.videommmu_doc_to_visual_question_only(
        adaptation
    ) == reference.videommmu_doc_to_visual_question_only(adaptation)


def test_videommmu_scores_equal_the_builtin(home):
    """Catches a reader that differs on multiple-choice or open answers (e.g. text matching, no 'No Answer Found.')."""

    reference = builtin("videommmu")
    ours, theirs = [], []
    for doc in _videommmu_docs():
        responses = LETTER_RESPONSES[:-1] if doc["question_type"] == "multiple-choice" else OPEN_RESPONSES
        for response in responses:
            mine = videommmu.videommmu_process_results(doc, [response])["videommmu_acc"]
            their = reference.videommmu_process_results(doc, [response])["mmmu_acc"]
            assert fraction(mine) == reference.evaluate_videommmu([their])[1]["acc"], (doc["id"], response)
            ours.append(mine)
            theirs.append(their)
    assert shared.accuracy(ours) / 100 == pytest.approx(reference.videommmu_aggregate_results(theirs), abs=1e-5)


def test_difference_videommmu_counts_an_empty_open_answer_as_wrong(home):
    """Listed difference: the built-in drops an empty open-ended answer ("API Error") from the denominator; here it
    is a wrong answer."""
    reference = builtin("videommmu")
    doc = docs("omni_videommmu", 2)[2]
    right = reference.videommmu_process_results(doc, ["2"])["mmmu_acc"]
    empty = reference.videommmu_process_results(doc, [""])["mmmu_acc"]
    assert reference.videommmu_aggregate_results([right, empty]) == 1.0
    ours = [videommmu.videommmu_process_results(doc, [r])["videommmu_acc"] for r in ("2", "")]
    assert shared.accuracy(ours) == 50.0


# ----------------------------------------------------------------------------------------------------------------------
# WorldSense
# ----------------------------------------------------------------------------------------------------------------------


def _worldsense_docs() -> list[dict]:
    rows = docs("omni_worldsense")
    three = {**rows[0], "index": "ws_three", "candidates": rows[0]["candidates"][:3], "answer": "C"}
    return [{**row, "answer": letter, "index": f"{row['index']}{letter}"} for row in rows for letter in "ABCD"] + [
        three
    ]


WORLDSENSE_RESPONSES = [
    "A",
    "B",
    "(C)",
    "D.",
    "The answer is B.",
    "(B) A steady tone.",
    "i think a steady tone. is heard",
]


def test_worldsense_scores_and_prompt_equal_the_builtin(home):
    """Catches a different reader and an accuracy that counts a repeated question index twice."""

    reference = builtin("worldsense")
    ours, theirs = [], []
    for doc in _worldsense_docs():
        assert worldsense.worldsense_doc_to_visual(doc)[0] == os.path.join(str(home), "WorldSense", doc["video_path"])
        for response in WORLDSENSE_RESPONSES:
            mine = worldsense.worldsense_process_results(doc, [response])["worldsense_acc"]
            their = reference.worldsense_process_results(doc, [response])["worldsense_score"]
            assert fraction(mine) == their["score"], (doc["answer"], response)
            ours.append({**mine, "uid": (doc["index"], response)})
            theirs.append({**their, "question_id": (doc["index"], response)})
    # One score per question index: a repeated index counts once, as in the built-in.
    ours.append({**ours[0], "score": 100.0 - ours[0]["score"]})
    theirs.append({**theirs[0], "score": 1.0 - theirs[0]["score"]})
    assert shared.accuracy(ours) == pytest.approx(reference.worldsense_aggregate_results(theirs))


def test_difference_worldsense_unreadable_answer_is_wrong_not_a(home):
    """Listed difference: the built-in reads an answer with no option letter as "A"; here it is wrong."""
    reference = builtin("worldsense")
    doc = {**_worldsense_docs()[0], "answer": "A"}
    assert reference.worldsense_process_results(doc, ["no idea"])["worldsense_score"]["score"] == 1.0
    assert worldsense.worldsense_process_results(doc, ["no idea"])["worldsense_acc"]["score"] == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# MVBench
# ----------------------------------------------------------------------------------------------------------------------

MVBENCH_RESPONSES = ["A", "(B) Walks out.", "B. Walks out.", "c", "Walks out.", "The answer is (C)", "a man walks"]


def test_mvbench_scores_equal_the_builtin(home):
    """Catches any scorer other than the built-in's ``mcq_acc`` (option texts and articles read as it does)."""

    reference = builtin("mvbench")
    ours, theirs = [], []
    for doc in docs("omni_mvbench"):
        for answer in doc["candidates"]:
            question = {**doc, "answer": answer}
            for response in MVBENCH_RESPONSES:
                mine = mvbench.mvbench_process_results(question, [response])["mvbench_acc"]
                their = reference.mvbench_process_results(question, [response])["mvbench_accuracy"]
                assert fraction(mine) == their["score"], (answer, response)
                ours.append(mine)
                theirs.append(their)
    assert shared.accuracy(ours) == pytest.approx(reference.mvbench_aggregate_results(theirs))


def test_difference_mvbench_counts_an_empty_answer(home):
    """Listed difference: the built-in leaves empty answers out of the denominator; here they are wrong."""
    reference = builtin("mvbench")
    doc = docs("omni_mvbench")[0]
    theirs = [reference.mvbench_process_results(doc, [r])["mvbench_accuracy"] for r in ("B", "")]
    assert reference.mvbench_aggregate_results(theirs) == 100.0
    ours = [mvbench.mvbench_process_results(doc, [r])["mvbench_acc"] for r in ("B", "")]
    assert shared.accuracy(ours) == 50.0


# ----------------------------------------------------------------------------------------------------------------------
# LongVideoBench
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lvb_reference(home):
    if importlib.util.find_spec("decord") is None:  # the built-in imports decord at load; only load_video uses it
        sys.modules.setdefault("decord", ModuleType("decord"))
        sys.modules["decord"].VideoReader, sys.modules["decord"].cpu = None, None
    return builtin("longvideobench")


LVB_RESPONSES = ["A", "B", "(C)", "The best answer is D.", "D. A book", "Best option: B", "the answer: c or B"]


def test_longvideobench_scores_and_prompt_equal_the_builtin(home, lvb_reference):
    """Catches a changed prompt, option list or reader (the first capital A-E after answer phrases)."""

    kwargs = builtin_kwargs("longvideobench/longvideobench_val_v.yaml")
    assert our_kwargs("omni_longvideobench_val_v") == kwargs
    ours, theirs = [], []
    for doc in docs("omni_longvideobench_val_v"):
        assert longvideobench.longvideobench_doc_to_text(doc, kwargs) == lvb_reference.longvideobench_doc_to_text(
            doc, kwargs
        )
        assert longvideobench.longvideobench_doc_to_visual(doc) == lvb_reference.longvideobench_doc_to_visual_v(doc)
        for correct in range(3):
            question = {**doc, "correct_choice": correct, "id": f"{doc['id']}_{correct}"}
            for response in LVB_RESPONSES:
                mine = longvideobench.longvideobench_process_results(question, [response])["longvideobench_acc"]
                their = lvb_reference.longvideobench_process_results(question, [response])["lvb_acc"]
                assert fraction(mine) == float(their["parsed_pred"] == their["answer"]), (correct, response)
                ours.append(mine)
                theirs.append({**their, "id": (question["id"], response)})
    assert shared.accuracy(ours) / 100 == pytest.approx(
        lvb_reference.longvideobench_aggregate_results(theirs), abs=1e-5
    )


def test_longvideobench_subtitle_lines_equal_the_builtin(home, lvb_reference):
    """The lines the built-in interleaves with its frames, for its frame times (both JSON forms, a cue without an end,
    cues shorter than a second, the subtitle offset), are the lines listed here."""
    kwargs = {"pre_prompt": "", "post_prompt": "P", "insert_interleave_subtitles": True}
    for doc in docs("omni_longvideobench_val_v"):
        for offset in (0.0, 0.4):
            for duration in (2.0, 20.0):
                question = {**doc, "starting_timestamp_for_subtitles": offset, "duration": duration}
                theirs = lvb_reference.longvideobench_doc_to_text(question, kwargs)
                lines = [line for line in theirs.split("\n") if line != "<image>"]
                ours = longvideobench.longvideobench_doc_to_text(question, {**kwargs, "subtitles": True})
                assert ours.split("\n") == lines, (doc["id"], offset, duration)


def test_difference_longvideobench_unreadable_answer_is_wrong_not_random(home, lvb_reference):
    """Listed difference: the built-in draws a random letter for an answer without A-E; here it is wrong."""
    doc = {**docs("omni_longvideobench_val_v")[1], "correct_choice": 0}
    random.seed(0)
    drawn = {
        lvb_reference.longvideobench_process_results(doc, ["no idea"])["lvb_acc"]["parsed_pred"] for _ in range(40)
    }
    assert drawn == {"A", "B", "C", "D"}
    assert longvideobench.longvideobench_process_results(doc, ["no idea"])["longvideobench_acc"]["score"] == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# EgoSchema
# ----------------------------------------------------------------------------------------------------------------------

EGOSCHEMA_RESPONSES = [
    "A",
    "B.",
    "(C)",
    "The answer is D",
    "E",
    "c is cleaning. B",
    "I pick (B) c is cleaning",
]


def test_egoschema_scores_and_submission_equal_the_builtin(home):
    """Catches a different reader or submission entry (key, index) for readable answers."""

    reference = builtin("egoschema")
    ours, theirs = [], []
    for doc in docs("omni_egoschema_subset"):
        for answer in "01234":
            question = {**doc, "answer": answer, "video_idx": f"{doc['video_idx']}{answer}"}
            for response in EGOSCHEMA_RESPONSES:
                mine = egoschema.egoschema_process_results(question, [response])["egoschema_acc"]
                their = reference.egoschema_process_results_generation(question, [response])
                assert fraction(mine) == float(str(their["score"]["ground_truth"]) == str(their["score"]["pred"]))
                submission = egoschema.egoschema_process_results_submission(question, [response])
                assert submission["egoschema_submission"] == their["submission"], response
                ours.append(mine)
                theirs.append(their["score"])
    assert shared.accuracy(ours) / 100 == pytest.approx(reference.egoschema_aggregate_score(theirs, None))


def test_egoschema_submission_file_is_the_builtin_format(home, tmp_path):
    """``{video_idx: answer index}`` in ``<output_path>/submissions/``, as the built-in writes before posting it."""
    args = type("Args", (), {"output_path": str(tmp_path)})()
    entries = [
        egoschema.egoschema_process_results_submission(doc, [response])["egoschema_submission"]
        for doc, response in zip(docs("omni_egoschema"), ["B", FAILED], strict=True)
    ]
    assert egoschema.egoschema_write_submission(entries, args=args) == 2
    (path,) = (tmp_path / "submissions").glob("omni_egoschema_*.json")
    rows = minidatasets.EGOSCHEMA_TEST_ROWS
    assert json.loads(path.read_text()) == {rows[0]["video_idx"]: 1, rows[1]["video_idx"]: -1}


def test_difference_egoschema_unreadable_answer_is_unanswered_not_random(home):
    """Listed difference: the built-in draws a random letter for an answer it cannot read; here the question is
    unanswered (-1 in the submission, wrong in the Subset)."""
    doc = docs("omni_egoschema_subset")[0]
    assert egoschema.answer_index("no idea", doc["option"]) == egoschema.UNANSWERED
    assert egoschema.egoschema_process_results(doc, ["no idea"])["egoschema_acc"]["score"] == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# Vinoground
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vinoground_full(tmp_path_factory):
    """All 500 pairs (the built-in's aggregation needs every one): score tables and docs, in a home of their own."""
    root = tmp_path_factory.mktemp("hf_home_vinoground")
    rng = random.Random(3)
    docs_ = []
    for folder, name, question_type in (
        ("vinoground_videos", "vinoground_textscore.json", "text"),
        ("vinoground_videos_concated", "vinoground_videoscore.json", "video"),
    ):
        entries = []
        for pair in range(500):
            for side in ("pos", "neg"):
                idx = f"{pair}_{side}"
                entries.append(
                    {"idx": idx, "video_name": f"{folder}/{idx}.mp4", "question": "Q?", "GT": rng.choice("AB")}
                )
                docs_.append(
                    {"index": f"{idx}_{question_type}", "major": "action", "minor": "cyclical" if pair % 2 else None}
                )
        (root / "vinoground" / folder).mkdir(parents=True)
        (root / "vinoground" / folder / name).write_text(json.dumps(entries), encoding="utf-8")
    return root, docs_


def test_vinoground_scores_equal_the_builtin(vinoground_full, monkeypatch):
    """Catches a reader other than the first character, and pair scores that differ on the full set."""

    root, all_docs = vinoground_full
    monkeypatch.setenv("HF_HOME", str(root))
    reference = builtin("vinoground")
    rng = random.Random(5)
    ours, theirs = [], []
    for doc in all_docs:
        response = rng.choice(["A", "B", "a", "B.", "A caption", " B"])
        ours.append(vinoground.vinoground_process_results(doc, [response])["vinoground_text_score"])
        theirs.append(reference.vinoground_process_results(doc, [response])["vinoground_score"])
    text, video, group = reference.vinoground_aggregate_results(theirs)
    assert vinoground.vinoground_text_score(ours) == pytest.approx(text)
    assert vinoground.vinoground_video_score(ours) == pytest.approx(video)
    assert vinoground.vinoground_group_score(ours) == pytest.approx(group)
    assert vinoground.vinoground_doc_to_text(
        all_docs[0], our_kwargs("omni_vinoground")
    ) == reference.vinoground_doc_to_text(all_docs[0])


def test_difference_vinoground_scores_subsets_and_empty_answers(vinoground_full, monkeypatch):
    """Listed difference: the built-in crashes on an empty answer and on a run without all 500 pairs; here an empty
    answer is wrong and the scores are over the complete pairs in the run."""
    root, all_docs = vinoground_full
    monkeypatch.setenv("HF_HOME", str(root))
    reference = builtin("vinoground")
    with pytest.raises(IndexError):
        reference.vinoground_aggregate_results(
            [reference.vinoground_process_results(all_docs[0], [""])["vinoground_score"]]
        )
    items = [vinoground.vinoground_process_results(doc, [""])["vinoground_text_score"] for doc in all_docs[:2]]
    assert vinoground.vinoground_text_score(items) == 0.0
    assert math.isnan(vinoground.vinoground_video_score(items))


# ----------------------------------------------------------------------------------------------------------------------
# The subtitles module itself
# ----------------------------------------------------------------------------------------------------------------------


def test_subtitles_module_is_pure():
    """The planner imports it: no torch, no media decoding."""
    import subprocess

    code = (
        "import sys, omni_lmms_plugin.subtitles; assert not {'torch', 'av', 'cv2'} & set(sys.modules), 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subtitle_inputs_are_checked(tmp_path):
    with pytest.raises(
        ValueError, match=r"Invalid subtitle style \('vtt'\)\. Supported values are videomme, longvideobench"
    ):
        SubtitleTrack("a.vtt", style="vtt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SubtitleTrack.path is empty"):
        SubtitleTrack("")
    path = tmp_path / "a.srt"
    path.write_text(_srt([(0.0, 1.0)]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"video_duration=-1 s is negative"):
        render_subtitles(SubtitleTrack(str(path)), [0.0], -1)
    with pytest.raises(ValueError, match=r"frame_rate=0 is not positive"):
        render_subtitles(SubtitleTrack(str(path)), [0.0], 1.0, frame_rate=0)


def test_no_sampled_frame_under_a_cue_gives_no_text(tmp_path):
    """A cue is half-open, [start, end): a frame at its end belongs to the next one."""
    path = tmp_path / "a.srt"
    path.write_text(_srt([(0.0, 1.0), (1.5, 2.0)]), encoding="utf-8")
    assert render_subtitles(SubtitleTrack(str(path)), [1.0, 1.2], 2.0) == ("", [])
    text, (cue,) = render_subtitles(SubtitleTrack(str(path)), [0.0, 1.0], 2.0)
    assert text == "Line 0 is spoken." and (cue.start, cue.end) == (0.0, 1.0)
