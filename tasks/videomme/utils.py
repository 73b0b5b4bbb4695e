"""Video-MME (``lmms-eval/Video-MME``, split ``test``): ``omni_videomme`` (frames), ``omni_videomme_av`` (frames and
the soundtrack) and ``omni_videomme_w_subtitle`` (frames and the subtitle lines of the sampled frames).

Reference: the official Video-MME protocol and lmms-eval's built-in ``videomme`` utils. Same answer extraction
(lmms-eval's ``extract_mcq_answer`` over A-D), same per-sample score, same overall accuracy in percent; differences
(prompt wording, a missing video, subtitle selection details) are listed in ``tasks/PROTOCOLS.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import (
    resolve_cache_dir,
    response_text,
    sample_results,
    score_item,
    video_with_suffixes,
)

from omni_lmms_plugin.subtitles import SUBTITLE_PLACEHOLDER, SubtitleTrack, render_subtitles

CACHE_DIR = "videomme"
DURATIONS = ("short", "medium", "long")
TASK_TYPES = (
    "Temporal Perception",
    "Spatial Perception",
    "Attribute Perception",
    "Action Recognition",
    "Object Recognition",
    "OCR Problems",
    "Counting Problem",
    "Temporal Reasoning",
    "Spatial Reasoning",
    "Action Reasoning",
    "Object Reasoning",
    "Information Synopsis",
)
NO_SUBTITLES = "No subtitles available"
_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video{}. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
_REFERENCE_FRAME_NUM = 32  # the built-in's default `frame_num` for choosing subtitle lines


def _video(doc: dict[str, Any]) -> str:
    return video_with_suffixes(os.path.join(resolve_cache_dir(CACHE_DIR), "data", doc["videoID"]))


def _subtitle_path(doc: dict[str, Any]) -> str:
    return os.path.join(resolve_cache_dir(CACHE_DIR), "subtitle", doc["videoID"] + ".srt")


def _after_planning(kwargs: dict[str, Any] | None) -> bool:
    return bool((kwargs or {}).get("subtitles_after_planning"))


def videomme_doc_to_visual(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> list[Any]:
    """``$HF_HOME/videomme/data/<videoID>.{mp4,MP4,mkv}``; for a subtitle task with ``subtitles_after_planning``, the
    video's :class:`SubtitleTrack` after it (when the video has subtitles)."""
    visuals: list[Any] = [_video(doc)]
    if _after_planning(lmms_eval_specific_kwargs) and os.path.exists(_subtitle_path(doc)):
        visuals.append(SubtitleTrack(_subtitle_path(doc), style="videomme"))
    return visuals


def _question(doc: dict[str, Any]) -> str:
    return doc["question"] + "\n" + "\n".join(doc["options"])


def videomme_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The official Video-MME "frames" prompt: instruction, question, options, ``post_prompt``."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{_INSTRUCTION.format('')}\n{_question(doc)}{kwargs.get('post_prompt', '')}"


def reference_frame_times(video_path: str, frame_num: int) -> tuple[list[float], float, float]:
    """The built-in's subtitle frames: ``frame_num`` frame numbers ``linspace(0, total - 1, frame_num)`` truncated,
    as times in seconds; also the video's duration (s) and frame rate (frames/s), read from the container header."""
    import av
    import numpy as np

    with av.open(video_path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        total = stream.frames or int(float(container.duration or 0) / 1_000_000 * fps)
    indices = np.linspace(0, total - 1, frame_num if frame_num != -1 else total, dtype=int).tolist()
    return [index / fps for index in indices], total / fps, fps


def subtitle_text(doc: dict[str, Any], frame_num: int = _REFERENCE_FRAME_NUM) -> str:
    """The subtitle lines under the reference's ``frame_num`` uniformly sampled frames (what the prompt holds when
    the model does not choose them after planning)."""
    path = _subtitle_path(doc)
    if not os.path.exists(path):
        return NO_SUBTITLES
    times, duration, fps = reference_frame_times(_video(doc), frame_num)
    return render_subtitles(SubtitleTrack(path, style="videomme"), times, duration, frame_rate=fps)[0]


def videomme_doc_to_text_subtitle(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The built-in's "frames + subtitles" prompt. Where the subtitles go: :data:`SUBTITLE_PLACEHOLDER` when the
    model fills in the lines of the frames it samples (``subtitles_after_planning``), else the lines under
    ``frame_num`` uniformly sampled frames, as the built-in does; "No subtitles available" for a video without."""
    kwargs = lmms_eval_specific_kwargs or {}
    if not os.path.exists(_subtitle_path(doc)):
        subtitles = NO_SUBTITLES
    elif _after_planning(kwargs):
        subtitles = SUBTITLE_PLACEHOLDER
    else:
        subtitles = subtitle_text(doc, int(kwargs.get("frame_num", _REFERENCE_FRAME_NUM)))
    instruction = _INSTRUCTION.format(" and the subtitles")
    return (
        f"This video's subtitles are listed below: \n{subtitles}\n{instruction}\n{_question(doc)}\nThe best answer is:"
    )


def parse_answer(response: str) -> str:
    """The option letter as the built-in reads it (lmms-eval's ``extract_mcq_answer`` over A-D), ``""`` for none."""
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    return extract_mcq_answer(response, choices=["A", "B", "C", "D"])


def videomme_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, answered accuracy, failures, and accuracy per duration and per task type."""
    response = response_text(results)
    parsed = parse_answer(response)
    item = score_item(
        response,
        parsed.lower() == str(doc["answer"]).lower(),
        question_id=doc["question_id"],
        videoID=doc["videoID"],
        answer=doc["answer"],
        parsed_pred=parsed,
    )
    return sample_results("videomme", item, {"duration": doc["duration"], "task": doc["task_type"]})
