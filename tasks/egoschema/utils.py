"""EgoSchema (``lmms-eval/egoschema``): ``omni_egoschema`` (the full 5,031-question test, config ``GENERATION``,
answers hidden: writes the benchmark's submission file) and ``omni_egoschema_subset`` (config ``Subset``, the 500
questions whose answers are public).

Reference: lmms-eval's built-in ``egoschema`` utils, whose prompt and answer reader are used as they are. The
submission is the built-in's ``{video_idx: answer_index}`` JSON (``video_idx`` is EgoSchema's ``q_uid``), written to
``<output_path>/submissions/`` as the built-in does; it is not posted to the benchmark's server (no network here).
Differences are listed in ``tasks/PROTOCOLS.md``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import (
    FAILED_METRIC,
    resolve_cache_dir,
    response_text,
    sample_results,
    score_item,
    video_with_suffixes,
)

from omni_lmms_plugin.provenance import is_failure_answer

logger = logging.getLogger("omni_lmms_plugin.tasks")

CACHE_DIR = "egoschema"
UNANSWERED = -1  # the answer index of a failed or unreadable answer (the server counts it as invalid)


def egoschema_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/egoschema/videos/<video_idx>.{mp4,MP4}``."""
    return [video_with_suffixes(os.path.join(resolve_cache_dir(CACHE_DIR), "videos", doc["video_idx"]))]


def answer_index(response: str, options: Sequence[str]) -> int:
    """The chosen option's index (0-4) as the built-in reads it; :data:`UNANSWERED` for a failed sample or where
    the built-in would pick a random letter."""
    if is_failure_answer(response):
        return UNANSWERED
    from lmms_eval.tasks.egoschema.utils import parse_multi_choice_response

    letters = ["A", "B", "C", "D", "E"]
    letter, matched = parse_multi_choice_response(
        response, letters, {letter: option.strip() for letter, option in zip(letters, options, strict=True)}
    )
    return letters.index(letter) if matched and letter in letters else UNANSWERED


def egoschema_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """The Subset's accuracy (the built-in's ``str(answer) == str(index)``), answered accuracy and failures."""
    response = response_text(results)
    index = answer_index(response, doc["option"])
    item = score_item(
        response, str(doc["answer"]) == str(index), video_idx=doc["video_idx"], answer=doc["answer"], pred=index
    )
    return sample_results("egoschema", item)


def egoschema_process_results_submission(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """The full test's per-question submission entry ``{video_idx: answer_index}`` and whether the sample failed."""
    response = response_text(results)
    return {
        "egoschema_submission": {doc["video_idx"]: answer_index(response, doc["option"])},
        FAILED_METRIC: int(is_failure_answer(response)),
    }


def submission_path(args: Any, now: datetime.datetime | None = None) -> str:
    """``<output_path>/submissions/omni_egoschema_<date-time>.json``, the built-in's folder for submission files
    (``./submissions`` without an output path)."""
    from lmms_eval.tasks._task_utils.file_utils import generate_submission_file

    stamp = (now or datetime.datetime.now()).strftime("%Y-%m-%d-%H-%M-%S")
    return generate_submission_file(f"omni_egoschema_{stamp}.json", args)


def egoschema_write_submission(items: list[dict[str, int]], args: Any = None) -> int:
    """Write the submission file, one ``"<video_idx>": <answer index>`` per question (-1: no answer), and return
    how many questions it holds."""
    submission: dict[str, int] = {}
    for entry in items:
        submission.update(entry)
    path = submission_path(args)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(submission, handle, indent=1)
    unanswered = sum(1 for index in submission.values() if index == UNANSWERED)
    logger.info(
        "EgoSchema submission with %d answers (%d unanswered) written to %s; score it with the benchmark's server",
        len(submission),
        unanswered,
        path,
    )
    return len(submission)
