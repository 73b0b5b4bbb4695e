"""Vinoground (``HanSolo9682/Vinoground``, split ``lmmseval``): ``omni_vinoground``.

Reference: lmms-eval's built-in ``vinoground`` utils (question text from the score tables, a response is right when
its first character is the ground-truth letter; text, video and group scores in percent). Its aggregation indexes a
500-row matrix by every pair and crashes on subsets and on empty answers; the scores here are over the pairs whose
questions are all in the run (equal to the built-in's on the full set). Differences are listed in
``tasks/PROTOCOLS.md``.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import first_existing, resolve_cache_dir, response_text, sample_results, score_item

CACHE_DIR = "vinoground"
_SCORE_FILES = {
    "text": os.path.join("vinoground_videos", "vinoground_textscore.json"),
    "video": os.path.join("vinoground_videos_concated", "vinoground_videoscore.json"),
}
_tables: dict[str, dict[str, dict[str, Any]]] = {}


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    """``"12_pos_text"`` -> (``"12_pos"``, ``"text"``)."""
    parts = doc["index"].split("_")
    return "_".join(parts[:2]), parts[2]


def _table(question_type: str) -> dict[str, dict[str, Any]]:
    path = os.path.join(resolve_cache_dir(CACHE_DIR), _SCORE_FILES[question_type])
    if path not in _tables:
        with open(path, encoding="utf-8") as handle:
            _tables[path] = {entry["idx"]: entry for entry in json.load(handle)}
    return _tables[path]


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    idx, question_type = _key(doc)
    return _table(question_type)[idx]


def vinoground_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """The video the score table names, under ``$HF_HOME/vinoground/``."""
    return [first_existing([os.path.join(resolve_cache_dir(CACHE_DIR), _entry(doc)["video_name"])], "video")]


def vinoground_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The built-in's text: the table's question, then ``post_prompt``."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{_entry(doc)['question']}{kwargs.get('post_prompt', '')}"


def vinoground_doc_to_target(doc: dict[str, Any]) -> str:
    """The ground-truth letter from the score table."""
    return str(_entry(doc)["GT"])


def vinoground_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Per-question correctness (the built-in's first-character rule; an empty answer is wrong) and failures."""
    response = response_text(results)
    idx, question_type = _key(doc)
    truth = str(_entry(doc)["GT"])
    item = score_item(
        response,
        bool(response) and response[0].lower() == truth.lower(),
        index=doc["index"],
        pair=idx.split("_")[0],
        side=idx.split("_")[1],
        question_type=question_type,
        answer=truth,
    )
    return sample_results(
        "vinoground", item, vinoground_text_score=item, vinoground_video_score=item, vinoground_group_score=item
    )


def _pair_score(items: list[dict[str, Any]], needed: list[tuple[str, str]]) -> float:
    """Percent of pairs, among those whose needed questions are all in this run, that got every one right."""
    pairs: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for item in items:
        pairs[item["pair"]][(item["question_type"], item["side"])] = item.get("score", 0.0)
    complete = [scores for scores in pairs.values() if all(key in scores for key in needed)]
    if not complete:
        return math.nan
    return 100.0 * sum(all(scores[key] > 0 for key in needed) for scores in complete) / len(complete)


def vinoground_text_score(items: list[dict[str, Any]]) -> float:
    """Text score (%): both captions matched to the video (pos and neg text questions right)."""
    return _pair_score(items, [("text", "pos"), ("text", "neg")])


def vinoground_video_score(items: list[dict[str, Any]]) -> float:
    """Video score (%): both videos matched to the caption."""
    return _pair_score(items, [("video", "pos"), ("video", "neg")])


def vinoground_group_score(items: list[dict[str, Any]]) -> float:
    """Group score (%): all four questions of a pair right."""
    return _pair_score(items, [("text", "pos"), ("text", "neg"), ("video", "pos"), ("video", "neg")])
