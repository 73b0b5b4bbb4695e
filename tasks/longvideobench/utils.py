"""LongVideoBench (``longvideobench/LongVideoBench``, split ``validation``): ``omni_longvideobench_val_v`` (frames),
``omni_longvideobench_val_v_av`` (frames and the soundtrack) and ``omni_longvideobench_val_sub`` (frames and the
subtitle lines of the sampled frames, the reference's ``val_i`` protocol with the frames as one video).

Reference: lmms-eval's built-in ``longvideobench`` utils (the LongVideoBench authors' protocol). It imports decord at
load, so its rules are restated here and checked against it in ``tests/test_protocols.py``. Differences are listed in
``tasks/PROTOCOLS.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import first_existing, resolve_cache_dir, response_text, sample_results, score_item

from omni_lmms_plugin.subtitles import SUBTITLE_PLACEHOLDER, SubtitleTrack, render_subtitles

CACHE_DIR = os.path.join("datasets", "longvideobench")
DURATION_GROUPS = (15, 60, 600, 3600)  # seconds: the leaderboard's (8-15 s], (15-60 s], (3-10 min], (15-60 min]
_REFERENCE_MAX_FRAMES = 16  # the built-in's `max_num_frames` for interleaving subtitles
_ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)


def _options(doc: dict[str, Any]) -> list[str]:
    """The options as the built-in prompt lists them: every ``option0..4`` that is not ``"N/A"``."""
    return [doc.get(f"option{i}") for i in range(5) if doc.get(f"option{i}") != "N/A"]


def _subtitle_track(doc: dict[str, Any]) -> SubtitleTrack:
    path = os.path.join(resolve_cache_dir(CACHE_DIR), "subtitles", doc["subtitle_path"])
    return SubtitleTrack(path, style="longvideobench", offset=float(doc["starting_timestamp_for_subtitles"]))


def _after_planning(kwargs: dict[str, Any] | None) -> bool:
    return bool((kwargs or {}).get("subtitles_after_planning"))


def longvideobench_doc_to_visual(
    doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None
) -> list[Any]:
    """``$HF_HOME/datasets/longvideobench/videos/<video_path>``; for the subtitle task with
    ``subtitles_after_planning``, the video's :class:`SubtitleTrack` after it."""
    visuals: list[Any] = [
        first_existing([os.path.join(resolve_cache_dir(CACHE_DIR), "videos", doc["video_path"])], "video")
    ]
    if _after_planning(lmms_eval_specific_kwargs) and (lmms_eval_specific_kwargs or {}).get("subtitles"):
        visuals.append(_subtitle_track(doc))
    return visuals


def reference_frame_times(duration: float, max_num_frames: int = _REFERENCE_MAX_FRAMES) -> list[float]:
    """The built-in's frame times for interleaving (s): ``max_num_frames`` evenly from 0, or one per whole second
    of a video shorter than that."""
    if duration > max_num_frames:
        return [duration / max_num_frames * i for i in range(max_num_frames)]
    return [float(i) for i in range(int(duration))]


def longvideobench_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The built-in prompt: question, lettered options, ``post_prompt``. With ``subtitles: true``, the subtitle lines
    first: :data:`SUBTITLE_PLACEHOLDER` when the model fills in the lines of the frames it samples
    (``subtitles_after_planning``), else the lines of the built-in's ``max_num_frames`` frames."""
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(f"{letter}. {option}" for letter, option in zip("ABCDE", _options(doc), strict=False))
    question = f"{doc['question']}\n{options}"
    pre_prompt, post_prompt = kwargs.get("pre_prompt", ""), kwargs.get("post_prompt", "")
    if not kwargs.get("subtitles"):
        return f"{pre_prompt}{question}\n{post_prompt}"
    if _after_planning(kwargs):
        subtitles = SUBTITLE_PLACEHOLDER
    else:
        times = reference_frame_times(doc["duration"], int(kwargs.get("max_num_frames", _REFERENCE_MAX_FRAMES)))
        subtitles = render_subtitles(_subtitle_track(doc), times, doc["duration"])[0]
    return f"{pre_prompt}{subtitles}\n{question}\n{post_prompt}"


def parse_answer(response: str) -> str:
    """The option letter as the built-in reads it: answer phrases removed, the first capital A-E; ``""`` where the
    built-in would pick a random letter (no A-E at all)."""
    text = response.strip()
    for prefix in _ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search(r"[ABCDE]", text)
    return match[0] if match else ""


def longvideobench_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, answered accuracy, failures, and accuracy per duration group."""
    response = response_text(results)
    parsed = parse_answer(response)
    truth = "ABCDE"[int(doc["correct_choice"])]
    item = score_item(response, parsed == truth, id=doc["id"], answer=truth, parsed_pred=parsed)
    return sample_results("longvideobench", item, {"duration": doc["duration_group"]})
