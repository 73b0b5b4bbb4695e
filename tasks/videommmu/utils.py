"""VideoMMMU (``lmms-eval/VideoMMMU``): the Perception, Comprehension and Adaptation tracks with the lecture video,
frames only (``omni_videommmu_*``, group ``omni_videommmu``) or with its narration (``omni_videommmu_*_av``, group
``omni_videommmu_av``), and the Adaptation questions with the question image only
(``omni_videommmu_adaptation_question_only``), from which the groups report the benchmark's delta-knowledge.

Reference: lmms-eval's built-in ``videommmu`` utils, written with the benchmark's authors (prompts, 1,024-token
answers, answer reading, instance-level accuracy). The built-in module reads ``os.environ["HF_HOME"]`` at import and
exits on a missing video, so its prompts and answer reading are restated here (open answers go through lmms-eval's
MMMU ``parse_open_response``/``eval_open``) and checked against it in ``tests/test_protocols.py``. Differences are
listed in ``tasks/PROTOCOLS.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import (
    LETTERS,
    first_existing,
    resolve_cache_dir,
    response_text,
    sample_results,
    score_item,
)

CACHE_DIR = "video_mmmu"
DELTA_KNOWLEDGE = "videommmu_delta_knowledge"
_FOLDERS = {
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
_FOLDER_OF = {subject: folder for folder, subjects in _FOLDERS.items() for subject in subjects}


def subject(doc_id: str) -> str:
    """``"validation_Art_Theory_12"`` -> ``"Art_Theory"`` (the words between the first and the last underscore)."""
    return "_".join(doc_id.split("_")[1:-1])


def videommmu_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/video_mmmu/<discipline folder>/<id>.mp4``, as the built-in lays the lecture videos out."""
    root = resolve_cache_dir(CACHE_DIR)
    folder = _FOLDER_OF.get(subject(doc["id"]), "unknown_subject")
    return [first_existing([os.path.join(root, folder, doc["id"] + ".mp4")], "video")]


def videommmu_doc_to_visual_question_only(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/video_mmmu/question_only/<id>_image.mp4``: the question image alone, as the built-in's
    ``adaptation_question_only`` reads it."""
    return [
        first_existing([os.path.join(resolve_cache_dir(CACHE_DIR), "question_only", doc["id"] + "_image.mp4")], "video")
    ]


def _options(options: Sequence[str]) -> str:
    """Options one per line, lettered ``A. ...`` unless they already are (the built-in's ``parse_options``)."""
    letters = LETTERS[: len(options)]
    if all(option.startswith(f"{letter}.") for option, letter in zip(options, letters, strict=False)):
        return "\n".join(options)
    return "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=False))


def videommmu_doc_to_text_perception_comprehension(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> str:
    """Perception and Comprehension: question, options, the reminder to ignore the quiz in the last frame, then
    ``mcq_post_prompt`` (empty in the reference)."""
    kwargs = lmms_eval_specific_kwargs or {}
    question = doc["question"] + "\n" + _options(doc["options"])
    return f"{question}{kwargs.get('perception_and_comprehension_prompt', '')}{kwargs.get('mcq_post_prompt', '')}"


def videommmu_doc_to_text_adaptation(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> str:
    """Adaptation: the "watch and learn, then apply" preamble; options and ``mcq_post_prompt`` for a
    multiple-choice question, nothing after an open one (as the reference)."""
    kwargs = lmms_eval_specific_kwargs or {}
    pre_prompt = kwargs.get("pre_prompt", "")
    if doc["question_type"] == "multiple-choice":
        question = doc["question"] + "\n" + _options(doc["options"])
        return f"{pre_prompt}{kwargs.get('mcq_prompt', '')}{question}{kwargs.get('mcq_post_prompt', '')}"
    return f"{pre_prompt}{kwargs.get('open_ended_prompt', '')}{doc['question']}"


def videommmu_doc_to_text_question_only(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> str:
    """Question-only adaptation: the question and its options, no preamble (the reference's
    ``videommmu_doc_to_text_no_preprompt``)."""
    return doc["question"] + "\n" + _options(doc["options"])


def _correct(doc: dict[str, Any], response: str) -> tuple[bool, Any]:
    """The reference's reading: a multiple-choice answer through ``extract_mcq_answer`` (else "No Answer Found."),
    compared with the letter; an open answer through MMMU's ``parse_open_response``/``eval_open``."""
    if doc["question_type"] == "multiple-choice":
        from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

        parsed = extract_mcq_answer(response, choices=list(LETTERS[: len(doc["options"])])) or "No Answer Found."
        return parsed == doc["answer"], parsed
    if not response:
        return False, []
    from lmms_eval.tasks.mmmu.utils import eval_open, parse_open_response

    parsed = parse_open_response(response)
    return bool(eval_open(doc["answer"], parsed)), [str(p) for p in parsed]


def _item(doc: dict[str, Any], response: str) -> dict[str, Any]:
    correct, parsed = _correct(doc, response)
    return score_item(
        response, correct, id=doc["id"], answer=doc["answer"], question_type=doc["question_type"], parsed_pred=parsed
    )


def videommmu_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """A track's accuracy, answered accuracy and failures."""
    return sample_results("videommmu", _item(doc, response_text(results)))


def videommmu_process_results_adaptation(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """The Adaptation track's metrics, and its accuracy again as the with-video input of delta-knowledge."""
    item = _item(doc, response_text(results))
    return sample_results("videommmu", item, **{DELTA_KNOWLEDGE: item})


def videommmu_process_results_question_only(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """The question-only run's metrics (``videommmu_question_only_*``, kept out of the groups' ``videommmu_acc``),
    and its accuracy as the question-only input of delta-knowledge."""
    item = _item(doc, response_text(results))
    return sample_results("videommmu_question_only", item, **{DELTA_KNOWLEDGE: item})


def delta_knowledge(with_video: float, question_only: float) -> float:
    """VideoMMMU's delta-knowledge in percent: the share of the questions missed without the lecture that the
    lecture turns right, ``(with_video - question_only) / (100 - question_only) * 100`` (accuracies in percent)."""
    if question_only >= 100 or math.isnan(with_video) or math.isnan(question_only):
        return math.nan
    return (with_video - question_only) / (100.0 - question_only) * 100.0


def group_delta_knowledge(metrics: list[float], sizes: list[int], weight_by_size: bool = False) -> float:
    """Group aggregation of ``videommmu_delta_knowledge``: lmms-eval passes the value of each subtask that reports
    it, in the group's task order, which lists the Adaptation track before the question-only run. NaN unless both
    ran."""
    if len(metrics) != 2:
        return math.nan
    return delta_knowledge(metrics[0], metrics[1])
