"""Shared functions of the ``omni_*`` task YAMLs, imported as ``omni_lmms_plugin.tasks._common``.

The YAMLs name these with dotted ``!function omni_lmms_plugin.tasks._common.<name>`` paths, so every task loads this
one module (``!function utils.f`` would load a fresh copy per YAML). Built-in lmms-eval task functions are reused by
their dotted paths where they are right (WorldSense's and EgoSchema's prompts, MVBench's visual and prompt); the
ones here replace built-ins that are wrong for us:

* **Paths are resolved at call time** from ``$HF_HOME`` (default ``~/.cache/huggingface``) and the YAML's
  ``dataset_kwargs.cache_dir``, the way lmms-eval's downloader places the videos. Nothing is read at import.
* **A missing video is not fatal.** ``doc_to_visual`` never calls ``sys.exit``, never raises and never returns ``[]``
  (which would turn a video question into a text-only one): it logs the problem and returns the path where the video
  should be, so the adapter records the sample as failed ("file not found") and the run goes on.
* **Failed samples are counted, not hidden.** The adapter answers a sample it could not run with
  ``"[omni-lmms failed] <reason>"`` (see :mod:`omni_lmms_plugin.provenance`). Every ``process_results`` here returns,
  besides the benchmark's accuracy over all samples (a failed sample counts as wrong), an ``*_answered_acc`` over the
  answered samples only and ``omni_failed``, the number of failed samples.
* **Aggregations work on any subset** (``--limit``, data-parallel shards) and on an empty one.
* **No random guesses.** Where a built-in picks a random (or fixed) letter for an unparsable answer, an unparsable
  answer here is wrong.

Accuracies are fractions in [0, 1] (lmms-eval's CLT standard errors, computed from each item's ``score``, are then in
the same unit). An ``*_answered_acc`` with no answered sample, or a pair score with no complete pair, is NaN.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from omni_lmms_plugin.provenance import is_failure_answer

__all__ = [
    "accuracy",
    "answered_accuracy",
    "failed_count",
    "sum_subtask_counts",
    "parse_choice",
    "resolve_cache_dir",
    "score_item",
]

logger = logging.getLogger("omni_lmms_plugin.tasks")

FAILED_METRIC = "omni_failed"
LETTERS = string.ascii_uppercase


# ---------------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------------


def hf_home() -> str:
    """``$HF_HOME`` as lmms-eval reads it when it places the videos (``~/.cache/huggingface`` when unset)."""
    return os.path.expanduser(os.getenv("HF_HOME", "~/.cache/huggingface"))


def resolve_cache_dir(cache_dir: str) -> str:
    """The folder a task's ``dataset_kwargs.cache_dir`` names: relative to ``$HF_HOME``, ``$VAR`` and ``~`` expanded
    (mirrors ``lmms_eval.utils.resolve_cache_dir(cache_dir, base_dir=HF_HOME)``)."""
    resolved = os.path.expanduser(os.path.expandvars(cache_dir))
    return resolved if os.path.isabs(resolved) else os.path.join(hf_home(), resolved)


def _first_existing(candidates: Sequence[str], what: str) -> str:
    """The first candidate path that exists; else the first one, logged, so the adapter records the failure."""
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    logger.warning("%s not found (tried %s); the sample will be recorded as failed", what, ", ".join(candidates))
    return candidates[0]


def _video_with_suffixes(stem: str, suffixes: Sequence[str] = (".mp4", ".MP4", ".mkv", ".webm", ".mov")) -> str:
    return _first_existing([stem + suffix for suffix in suffixes], "video")


# ---------------------------------------------------------------------------------------------------------------------
# Answers and scores
# ---------------------------------------------------------------------------------------------------------------------


def _response(results: Sequence[Any]) -> str:
    """The model's text for a doc: lmms-eval passes ``[answer]`` to ``process_results``."""
    value = results[0] if results else ""
    return value if isinstance(value, str) else str(value)


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_choice(response: str, options: Sequence[str] | None = None, *, letters: Sequence[str] | None = None) -> str:
    """The option letter a response picks, or ``""`` when it picks none (a failed sample picks none).

    In order: a response that is exactly one option's text (``"Walks out."``) picks that option; then lmms-eval's
    shared letter extractor (``B``, ``(B)``, ``B.``, ``The answer is B`` ...); then a response that contains exactly
    one option's text. ``options`` are the option texts in letter order, with or without an ``"A. "`` prefix;
    ``letters`` defaults to as many letters as there are options (A-E without options).
    """
    if is_failure_answer(response) or not response or not response.strip():
        return ""
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    choices = list(letters) if letters is not None else list(LETTERS[: len(options)] if options else "ABCDE")
    texts = [_normalise(_strip_letter(option, letter)) for option, letter in zip(options or [], choices, strict=False)]
    said = _normalise(response)
    exact = [letter for letter, text in zip(choices, texts, strict=False) if text and text == said]
    if len(exact) == 1:
        return exact[0]
    letter = extract_mcq_answer(response, choices=choices)
    if letter:
        return letter
    named = [letter for letter, text in zip(choices, texts, strict=False) if text and f" {text} " in f" {said} "]
    return named[0] if len(named) == 1 else ""


def _strip_letter(option: str, letter: str) -> str:
    """``"A. a red ball"`` / ``"(A) a red ball"`` -> ``"a red ball"``."""
    match = re.match(rf"^\s*\(?{re.escape(letter)}[.):]\s*(.*)$", option, flags=re.DOTALL)
    return match.group(1) if match else option


def score_item(response: str, correct: bool, **extra: Any) -> dict[str, Any]:
    """The per-sample record every accuracy metric aggregates: ``score`` 1.0/0.0 (a failed sample scores 0.0) and
    ``failed``; ``extra`` carries ids and categories for the logged breakdown."""
    failed = is_failure_answer(response)
    return {"score": 0.0 if failed else float(bool(correct)), "failed": failed, **extra}


def _results(prefix: str, item: dict[str, Any], **more: Any) -> dict[str, Any]:
    """``process_results``' return value: ``<prefix>_acc``, ``<prefix>_answered_acc`` and ``omni_failed``.

    The answered-accuracy item of a failed sample has no ``score`` key, so lmms-eval's CLT standard error for that
    metric is computed over the answered samples only.
    """
    answered_item = dict(item) if not item["failed"] else {k: v for k, v in item.items() if k != "score"}
    return {
        f"{prefix}_acc": item,
        f"{prefix}_answered_acc": answered_item,
        FAILED_METRIC: int(item["failed"]),
        **more,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _log_breakdown(items: list[dict[str, Any]]) -> None:
    """Log accuracy per category (items may carry ``"groups": {"duration": "short", ...}``)."""
    buckets: dict[tuple[str, str], list[float]] = defaultdict(list)
    for item in items:
        for key, value in (item.get("groups") or {}).items():
            for label in value if isinstance(value, list) else [value]:
                buckets[(key, str(label))].append(item.get("score", 0.0))
    for (key, label), scores in sorted(buckets.items()):
        logger.info("%s=%s: %.4f over %d samples", key, label, _mean(scores), len(scores))


def accuracy(items: list[dict[str, Any]]) -> float:
    """Accuracy over every sample: a failed sample counts as wrong (its failure is counted in ``omni_failed``)."""
    items = list(items)
    _log_breakdown(items)
    failed = sum(1 for item in items if item.get("failed"))
    value = _mean([item.get("score", 0.0) for item in items])
    logger.info("accuracy %.4f over %d samples (%d failed, scored as wrong)", value, len(items), failed)
    return value


def answered_accuracy(items: list[dict[str, Any]]) -> float:
    """Accuracy over the samples the model answered; NaN when it answered none."""
    return _mean([item["score"] for item in items if not item.get("failed") and "score" in item])


def failed_count(items: Iterable[int]) -> int:
    """How many samples failed (each item is 1 for a failed sample, 0 otherwise)."""
    return int(sum(int(item) for item in items))


def sum_subtask_counts(metrics: list[float], sizes: list[int], weight_by_size: bool = False) -> int:
    """Group aggregation of ``omni_failed``: the subtasks' counts added up (lmms-eval's ``mean`` would average them)."""
    return int(sum(metrics))


# ---------------------------------------------------------------------------------------------------------------------
# VideoMMMU (lmms-eval/VideoMMMU; the built-in utils read os.environ["HF_HOME"] at import and sys.exit on a missing
# video, so nothing of theirs is imported here)
# ---------------------------------------------------------------------------------------------------------------------

VIDEOMMMU_CACHE_DIR = "video_mmmu"
_VIDEOMMMU_FOLDERS = {
    "Art": ["Art", "Art_Theory", "Design", "Music"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Humanities": ["History", "Literature", "Sociology", "Psychology"],
    "Engineering": [
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ],
    "Medicine": [
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
}
_VIDEOMMMU_FOLDER_OF = {subject: folder for folder, subjects in _VIDEOMMMU_FOLDERS.items() for subject in subjects}


def videommmu_subject(doc_id: str) -> str:
    """``"validation_Art_Theory_12"`` -> ``"Art_Theory"`` (the words between the first and the last underscore)."""
    return "_".join(doc_id.split("_")[1:-1])


def videommmu_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/video_mmmu/<discipline folder>/<id>.mp4``, as the built-in lays the videos out."""
    root = resolve_cache_dir(VIDEOMMMU_CACHE_DIR)
    subject = videommmu_subject(doc["id"])
    folder = _VIDEOMMMU_FOLDER_OF.get(subject)
    if folder is None:
        logger.warning("VideoMMMU id %r names an unknown subject %r", doc["id"], subject)
        return [os.path.join(root, doc["id"] + ".mp4")]
    return [_first_existing([os.path.join(root, folder, doc["id"] + ".mp4")], "video")]


def _videommmu_options(options: Sequence[str]) -> str:
    """Options one per line, lettered ``A. ...`` unless they already are (as the built-in ``parse_options``)."""
    letters = LETTERS[: len(options)]
    if all(option.startswith(f"{letter}.") for option, letter in zip(options, letters, strict=False)):
        return "\n".join(options)
    return "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=False))


def _is_videommmu_mcq(doc: dict[str, Any]) -> bool:
    return doc.get("question_type") != "open" and bool(doc.get("options"))


def videommmu_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """Perception and Comprehension: the question, its options, the built-in's reminder to ignore the quiz shown in
    the last frame, then ``mcq_post_prompt``."""
    kwargs = lmms_eval_specific_kwargs or {}
    question = doc["question"] + "\n" + _videommmu_options(doc.get("options") or [])
    return f"{question}{kwargs.get('perception_and_comprehension_prompt', '')}{kwargs.get('mcq_post_prompt', '')}"


def videommmu_doc_to_text_adaptation(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> str:
    """Adaptation: the built-in's "watch and learn, then apply" preamble; options and ``mcq_post_prompt`` for
    multiple-choice questions, ``open_ended_post_prompt`` for open ones."""
    kwargs = lmms_eval_specific_kwargs or {}
    pre_prompt = kwargs.get("pre_prompt", "")
    if _is_videommmu_mcq(doc):
        question = doc["question"] + "\n" + _videommmu_options(doc["options"])
        return f"{pre_prompt}{kwargs.get('mcq_prompt', '')}{question}{kwargs.get('mcq_post_prompt', '')}"
    return (
        f"{pre_prompt}{kwargs.get('open_ended_prompt', '')}{doc['question']}{kwargs.get('open_ended_post_prompt', '')}"
    )


def videommmu_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    subject = videommmu_subject(doc["id"])
    if _is_videommmu_mcq(doc):
        parsed: Any = parse_choice(response, doc["options"])
        correct = bool(parsed) and parsed == str(doc["answer"]).strip()
    elif is_failure_answer(response) or not response.strip():
        parsed, correct = [], False
    else:
        from lmms_eval.tasks.mmmu.utils import eval_open, parse_open_response

        parsed = parse_open_response(response)
        correct = eval_open(doc["answer"], parsed)
    item = score_item(
        response,
        correct,
        id=doc["id"],
        answer=doc["answer"],
        parsed_pred=parsed if isinstance(parsed, str) else [str(p) for p in parsed],
        groups={"subject": subject, "question_type": doc.get("question_type", "")},
    )
    return _results("videommmu", item)


# ---------------------------------------------------------------------------------------------------------------------
# Vinoground (HanSolo9682/Vinoground; the built-in aggregation indexes a 500-row matrix by every id and crashes on
# subsets and on empty answers; its utils read $HF_HOME at import).
# ---------------------------------------------------------------------------------------------------------------------

VINOGROUND_CACHE_DIR = "vinoground"
_VINOGROUND_SCORE_FILES = {
    "text": os.path.join("vinoground_videos", "vinoground_textscore.json"),
    "video": os.path.join("vinoground_videos_concated", "vinoground_videoscore.json"),
}
_vinoground_tables: dict[str, dict[str, dict[str, Any]]] = {}


def _vinoground_key(doc: dict[str, Any]) -> tuple[str, str]:
    """``"12_pos_text"`` -> (``"12_pos"``, ``"text"``)."""
    parts = doc["index"].split("_")
    return "_".join(parts[:2]), parts[2]


def _vinoground_table(question_type: str) -> dict[str, dict[str, Any]]:
    path = os.path.join(resolve_cache_dir(VINOGROUND_CACHE_DIR), _VINOGROUND_SCORE_FILES[question_type])
    if path not in _vinoground_tables:
        with open(path, encoding="utf-8") as handle:
            _vinoground_tables[path] = {entry["idx"]: entry for entry in json.load(handle)}
    return _vinoground_tables[path]


def vinoground_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    idx, question_type = _vinoground_key(doc)
    entry = _vinoground_table(question_type)[idx]
    return [_first_existing([os.path.join(resolve_cache_dir(VINOGROUND_CACHE_DIR), entry["video_name"])], "video")]


def vinoground_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question from the score table, then ``post_prompt`` (the built-in's text; it reads ``$HF_HOME`` at import)."""
    idx, question_type = _vinoground_key(doc)
    kwargs = lmms_eval_specific_kwargs or {}
    question = _vinoground_table(question_type)[idx]["question"]
    return f"{kwargs.get('pre_prompt', '')}{question}{kwargs.get('post_prompt', '')}"


def vinoground_doc_to_target(doc: dict[str, Any]) -> str:
    idx, question_type = _vinoground_key(doc)
    return str(_vinoground_table(question_type)[idx]["GT"]).strip()


def vinoground_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    idx, question_type = _vinoground_key(doc)
    truth = str(_vinoground_table(question_type)[idx]["GT"]).strip().upper()
    parsed = parse_choice(response, letters=["A", "B"])
    categories = [doc["major"], *(doc["minor"].split(";") if doc.get("minor") else [])]
    item = score_item(
        response,
        parsed == truth,
        index=doc["index"],
        pair=idx.split("_")[0],
        side=idx.split("_")[1],
        question_type=question_type,
        answer=truth,
        parsed_pred=parsed,
        groups={"category": categories, "question_type": question_type},
    )
    return _results(
        "vinoground", item, vinoground_text_score=item, vinoground_video_score=item, vinoground_group_score=item
    )


def _vinoground_pairs(items: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str], float]]:
    pairs: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for item in items:
        pairs[item["pair"]][(item["question_type"], item["side"])] = item.get("score", 0.0)
    return pairs


def _pair_score(items: list[dict[str, Any]], needed: list[tuple[str, str]]) -> float:
    """Fraction of pairs, among those whose needed questions are all in this run, that got every one right."""
    complete = [scores for scores in _vinoground_pairs(items).values() if all(key in scores for key in needed)]
    return _mean([float(all(scores[key] == 1.0 for key in needed)) for scores in complete])


def vinoground_text_score(items: list[dict[str, Any]]) -> float:
    """Text score: both captions matched to the video (pos and neg text questions right)."""
    return _pair_score(items, [("text", "pos"), ("text", "neg")])


def vinoground_video_score(items: list[dict[str, Any]]) -> float:
    """Video score: both videos matched to the caption."""
    return _pair_score(items, [("video", "pos"), ("video", "neg")])


def vinoground_group_score(items: list[dict[str, Any]]) -> float:
    """Group score: all four questions of a pair right."""
    return _pair_score(items, [("text", "pos"), ("text", "neg"), ("video", "pos"), ("video", "neg")])


# ---------------------------------------------------------------------------------------------------------------------
# Video-MME (lmms-eval/Video-MME): the built-in sys.exits on a missing video, reads subtitles by OpenCV frame index
# for a fixed 32-frame sampling our budget does not use, and its no-subtitle prompt mentions subtitles.
# ---------------------------------------------------------------------------------------------------------------------

VIDEOMME_CACHE_DIR = "videomme"
_VIDEOMME_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video{}. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)


def videomme_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/videomme/data/<videoID>.mp4`` (or ``.MP4``/``.mkv``, as some of the archive's files are)."""
    return [_video_with_suffixes(os.path.join(resolve_cache_dir(VIDEOMME_CACHE_DIR), "data", doc["videoID"]))]


def _videomme_question(doc: dict[str, Any], with_subtitles: bool, kwargs: dict[str, Any]) -> str:
    instruction = _VIDEOMME_INSTRUCTION.format(" and the subtitles" if with_subtitles else "")
    options = "\n".join(doc["options"])
    return f"{kwargs.get('pre_prompt', '')}{instruction}\n{doc['question']}\n{options}{kwargs.get('post_prompt', '')}"


def videomme_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    return _videomme_question(doc, False, lmms_eval_specific_kwargs or {})


_SRT_TIME = re.compile(r"\d+:\d+:\d+[,.]\d+\s*-->\s*\d+:\d+:\d+[,.]\d+")
_TAG = re.compile(r"<[^>]+>")


def srt_lines(path: str) -> list[str]:
    """The spoken lines of an ``.srt`` file in order, markup (``<font ...>``) removed, repeats of the previous line
    dropped."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        blocks = handle.read().replace("\r\n", "\n").split("\n\n")
    lines: list[str] = []
    for block in blocks:
        rows = [row.strip() for row in block.strip().split("\n") if row.strip()]
        rows = [row for row in rows if not row.isdigit() and not _SRT_TIME.fullmatch(row)]
        text = " ".join(_TAG.sub("", row).strip() for row in rows).strip()
        if text and (not lines or lines[-1] != text):
            lines.append(text)
    return lines


def videomme_doc_to_text_subtitle(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The video's whole subtitle track (``$HF_HOME/videomme/subtitle/<videoID>.srt``), then the question.

    The built-in keeps only the lines under 32 uniformly sampled frames; our frame count is chosen per request by the
    token budget, so the whole track is given (it is text, counted in the prompt's budget)."""
    kwargs = lmms_eval_specific_kwargs or {}
    path = os.path.join(resolve_cache_dir(VIDEOMME_CACHE_DIR), "subtitle", doc["videoID"] + ".srt")
    lines = srt_lines(path) if os.path.exists(path) else []
    subtitles = "\n".join(lines) if lines else "No subtitles available"
    return f"This video's subtitles are listed below:\n{subtitles}\n" + _videomme_question(doc, True, kwargs)


def videomme_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    parsed = parse_choice(response, doc["options"], letters=["A", "B", "C", "D"])
    item = score_item(
        response,
        parsed == str(doc["answer"]).strip().upper(),
        question_id=doc["question_id"],
        videoID=doc["videoID"],
        answer=doc["answer"],
        parsed_pred=parsed,
        groups={
            "duration": doc["duration"],
            "domain": doc["domain"],
            "sub_category": doc["sub_category"],
            "task_type": doc["task_type"],
        },
    )
    return _results("videomme", item)


# ---------------------------------------------------------------------------------------------------------------------
# WorldSense (lmms-lab/worldsense): the built-in returns [] for a missing video (the question then runs text-only) and
# scores an unparsable answer as "A". The prompt is the built-in's audio-visual ``worldsense_doc_to_text``.
# ---------------------------------------------------------------------------------------------------------------------

WORLDSENSE_CACHE_DIR = "WorldSense"


def worldsense_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [_first_existing([os.path.join(resolve_cache_dir(WORLDSENSE_CACHE_DIR), doc["video_path"])], "video")]


def worldsense_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    options = list(doc["candidates"])
    parsed = parse_choice(response, options)
    item = score_item(
        response,
        parsed == str(doc["answer"]).strip().upper(),
        question_id=doc["index"],
        answer=doc["answer"],
        parsed_pred=parsed,
        groups={
            "task_type": doc["task_type"],
            "domain": doc["task_domain"],
            "duration": doc["duration"],
            "audio_class": list(doc.get("audio_class") or []),
        },
    )
    return _results("worldsense", item)


# ---------------------------------------------------------------------------------------------------------------------
# MVBench (OpenGVLab/MVBench, revision "video"): visual and prompt are the built-in's; its aggregation drops empty
# answers from the denominator, which would hide failures.
# ---------------------------------------------------------------------------------------------------------------------


def mvbench_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    candidates = list(doc["candidates"])
    truth = next((LETTERS[i] for i, c in enumerate(candidates) if c == doc["answer"]), "")
    parsed = parse_choice(response, candidates)
    item = score_item(response, bool(truth) and parsed == truth, answer=truth, parsed_pred=parsed)
    return _results("mvbench", item)


# ---------------------------------------------------------------------------------------------------------------------
# LongVideoBench (longvideobench/LongVideoBench): the built-in utils import decord (not a dependency) and pick a random
# letter for an unparsable answer.
# ---------------------------------------------------------------------------------------------------------------------

LONGVIDEOBENCH_CACHE_DIR = os.path.join("datasets", "longvideobench")


def _longvideobench_options(doc: dict[str, Any]) -> list[str]:
    options = []
    for i in range(5):
        option = doc.get(f"option{i}")
        if option is None or option == "N/A":
            break
        options.append(option)
    return options


def longvideobench_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/datasets/longvideobench/videos/<video_path>``, the built-in ``_v`` (video) layout."""
    path = os.path.join(resolve_cache_dir(LONGVIDEOBENCH_CACHE_DIR), "videos", doc["video_path"])
    return [_first_existing([path], "video")]


def longvideobench_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """As the built-in ``_v`` task: the question, lettered options, then the post prompt."""
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(_longvideobench_options(doc)))
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}\n{options}\n{kwargs.get('post_prompt', '')}"


def longvideobench_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    options = _longvideobench_options(doc)
    truth = LETTERS[int(doc["correct_choice"])]
    parsed = parse_choice(response, options)
    item = score_item(
        response,
        parsed == truth,
        id=doc["id"],
        answer=truth,
        parsed_pred=parsed,
        groups={"duration_group": doc["duration_group"], "question_category": doc["question_category"]},
    )
    return _results("longvideobench", item)


# ---------------------------------------------------------------------------------------------------------------------
# EgoSchema, Subset config (lmms-eval/egoschema, the 500 questions with public answers): the built-in sys.exits on a
# missing video and picks a random letter for an unparsable answer. The prompt is the built-in's.
# ---------------------------------------------------------------------------------------------------------------------

EGOSCHEMA_CACHE_DIR = "egoschema"


def egoschema_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [_video_with_suffixes(os.path.join(resolve_cache_dir(EGOSCHEMA_CACHE_DIR), "videos", doc["video_idx"]))]


def egoschema_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    response = _response(results)
    options = list(doc["option"])
    parsed = parse_choice(response, options)
    truth = LETTERS[int(doc["answer"])] if str(doc["answer"]).strip().isdigit() else ""
    item = score_item(
        response, bool(truth) and parsed == truth, video_idx=doc["video_idx"], answer=truth, parsed_pred=parsed
    )
    return _results("egoschema", item)
