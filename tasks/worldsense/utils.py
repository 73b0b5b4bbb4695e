"""WorldSense (``lmms-lab/worldsense``, split ``test``), audio-visual by design: ``omni_worldsense``.

Reference: lmms-eval's built-in ``worldsense`` utils, whose prompt and answer reader are used as they are (one score
per question ``index``, overall accuracy in percent). Differences are listed in ``tasks/PROTOCOLS.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import first_existing, resolve_cache_dir, response_text, sample_results, score_item

CACHE_DIR = "WorldSense"
DOMAINS = (
    "Tech & Science",
    "Culture & Politics",
    "Daily Life",
    "Film & TV",
    "Performance",
    "Games",
    "Sports",
    "Music",
)


def worldsense_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """``$HF_HOME/WorldSense/<video_path>`` (returned even when missing, so the sample fails instead of running
    without its video)."""
    return [first_existing([os.path.join(resolve_cache_dir(CACHE_DIR), doc["video_path"])], "video")]


def parse_answer(response: str, candidates: Sequence[str]) -> str:
    """The option letter as the built-in's ``parse_multi_choice_response`` reads it, ``""`` where it finds no
    candidate and falls back to "A": no choice letter anywhere in the response (after stripping ``,.!?;:'`` at its
    ends), and no option text in a response of more than five words."""
    from lmms_eval.tasks.worldsense.utils import parse_multi_choice_response

    choices = ["A", "B", "C"] if len(candidates) == 3 else ["A", "B", "C", "D"]
    texts = {letter: option[3:] for letter, option in zip(choices, candidates, strict=False)}
    stripped = response
    for char in ",.!?;:'":
        stripped = stripped.strip(char)
    named = len(stripped.split()) > 5 and any(text.lower() in stripped.lower() for text in texts.values())
    if not named and not any(letter in stripped for letter in choices):
        return ""
    return parse_multi_choice_response(response, choices, texts)


def worldsense_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Accuracy (one score per question ``index``), answered accuracy, failures, and accuracy per domain."""
    response = response_text(results)
    parsed = parse_answer(response, doc["candidates"])
    item = score_item(response, parsed == doc["answer"], uid=doc["index"], answer=doc["answer"], parsed_pred=parsed)
    return sample_results("worldsense", item, {"domain": doc["task_domain"]})
