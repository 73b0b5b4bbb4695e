"""Subtitles as budgeted media: the subtitle lines of the frames a plan actually samples.

A subtitle task's ``doc_to_visual`` returns a :class:`SubtitleTrack` beside the video path, and its ``doc_to_text``
puts :data:`SUBTITLE_PLACEHOLDER` where the subtitle text goes. Once the planner has chosen the frame times, the model
adapter calls :func:`render_subtitles` with them, counts the returned text's tokens in the budget and substitutes the
text for the placeholder.

The selection follows each benchmark's reference:

* ``"videomme"`` (lmms-eval's ``videomme_doc_to_text_subtitle``, the official Video-MME protocol): a cue is chosen
  when a sampled frame falls in it, ``start <= t < end``; with ``frame_rate`` given, cue bounds and frame times are
  first turned into frame numbers as the reference does (``int(seconds * fps)`` for cue bounds), so the choice is the
  reference's to the frame. Chosen cues are listed once each, in time order, one per line.
* ``"longvideobench"`` (lmms-eval's ``insert_subtitles_into_frames``, the LongVideoBench paper's interleaving): cue
  times are shifted by the track's ``offset`` (``starting_timestamp_for_subtitles``); a cue shorter than 1 s is
  widened to 1 s around its midpoint; a cue is chosen when a sampled frame lies strictly inside it. The reference
  interleaves the lines with the frame images; the frames here are one video item, so the chosen lines are listed in
  time order, one per line.

Pure Python: no torch, no media decoding. Times are float seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "SUBTITLE_PLACEHOLDER",
    "SubtitleCue",
    "SubtitleTrack",
    "SubtitleStyle",
    "read_cues",
    "render_subtitles",
]

SUBTITLE_PLACEHOLDER = "<|omni_subtitles|>"
"""Where ``doc_to_text`` leaves room for the subtitle text that :func:`render_subtitles` returns after planning."""

SubtitleStyle = Literal["videomme", "longvideobench"]
_STYLES = ("videomme", "longvideobench")
_SRT_TIME = re.compile(r"^\s*(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class SubtitleTrack:
    """A subtitle file that goes with a request's video, returned by ``doc_to_visual`` beside the video path.

    Args:
        path: the ``.srt`` (Video-MME) or ``.json`` (LongVideoBench) file.
        style: which reference's selection rule applies (see the module docstring).
        offset: seconds subtracted from every cue time (LongVideoBench's ``starting_timestamp_for_subtitles``).
    """

    path: str
    style: SubtitleStyle = "videomme"
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.style not in _STYLES:
            raise ValueError(f"Invalid subtitle style ({self.style!r}). Supported values are {', '.join(_STYLES)}.")
        if not self.path:
            raise ValueError("SubtitleTrack.path is empty; give the subtitle file's path")


@dataclass(frozen=True)
class SubtitleCue:
    """One subtitle line: shown from ``start`` to ``end`` seconds (``end`` None: to the end of the video)."""

    start: float
    end: float | None
    text: str


def _srt_seconds(hours: str, minutes: str, seconds: str, millis: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def _read_srt(path: str) -> list[SubtitleCue]:
    """An ``.srt`` file's cues in file order; markup such as ``<font ...>`` removed, lines of a cue joined by a
    space."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        blocks = handle.read().replace("\r\n", "\n").split("\n\n")
    cues = []
    for block in blocks:
        rows = [row for row in block.strip().split("\n") if row.strip()]
        timing = next((i for i, row in enumerate(rows) if _SRT_TIME.match(row)), None)
        if timing is None:
            continue
        parts = _SRT_TIME.match(rows[timing]).groups()  # type: ignore[union-attr]
        text = " ".join(_TAG.sub("", row).strip() for row in rows[timing + 1 :]).strip()
        if text:
            cues.append(SubtitleCue(_srt_seconds(*parts[:4]), _srt_seconds(*parts[4:]), text))
    return cues


def _clock_seconds(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _read_longvideobench(path: str) -> list[SubtitleCue]:
    """LongVideoBench's subtitle JSON: ``{"timestamp": [start, end], "text"}`` or ``{"start": "h:m:s", "end",
    "line"}`` entries. An end that is not a float (``null``, or an integer as the reference reads it) means "to the
    end of the video"."""
    with open(path, encoding="utf-8") as handle:
        entries = json.load(handle)
    cues = []
    for entry in entries:
        if "timestamp" in entry:
            start, end = entry["timestamp"]
            cues.append(SubtitleCue(float(start), end if isinstance(end, float) else None, str(entry["text"])))
        else:
            cues.append(SubtitleCue(_clock_seconds(entry["start"]), _clock_seconds(entry["end"]), str(entry["line"])))
    return cues


def read_cues(track: SubtitleTrack) -> list[SubtitleCue]:
    """The track's cues in file order, times as written in the file (``offset`` not applied)."""
    return _read_longvideobench(track.path) if track.style == "longvideobench" else _read_srt(track.path)


def _videomme_chosen(
    cues: list[SubtitleCue], frame_times: Sequence[float], duration: float, frame_rate: float | None
) -> list[int]:
    chosen = set()
    for i, cue in enumerate(cues):
        end = duration if cue.end is None else cue.end
        if frame_rate:
            first, stop = int(cue.start * frame_rate), int(end * frame_rate)
            hit = any(first <= round(t * frame_rate) < stop for t in frame_times)
        else:
            hit = any(cue.start <= t < end for t in frame_times)
        if hit:
            chosen.add(i)
    return sorted(chosen)


def _longvideobench_chosen(
    cues: list[SubtitleCue], frame_times: Sequence[float], duration: float, offset: float
) -> list[int]:
    chosen = []
    for i, cue in enumerate(cues):
        start = cue.start - offset
        end = (duration if cue.end is None else cue.end) - offset
        if end - start < 1:
            middle = (start + end) / 2
            start, end = middle - 0.5, middle + 0.5
        if any(start < t < end for t in frame_times):
            chosen.append(i)
    return chosen


def render_subtitles(
    track: SubtitleTrack,
    frame_times: Sequence[float],
    video_duration: float,
    *,
    frame_rate: float | None = None,
) -> tuple[str, list[SubtitleCue]]:
    """The subtitle text for the frames sampled at ``frame_times`` and the cues it holds.

    Args:
        track: the subtitle file and its reference rule.
        frame_times: the sampled frames' times in seconds from the start of the video (any order).
        video_duration: the video's duration in seconds (a cue without an end lasts until it).
        frame_rate: the video's frame rate in frames per second. Given, the ``"videomme"`` rule compares frame
            numbers as the reference does (exact parity); omitted, it compares times.

    Returns:
        The text to put in place of :data:`SUBTITLE_PLACEHOLDER` (chosen lines, one per line, in time order; ``""``
        when no cue is under a sampled frame) and the chosen cues, times as in the file.
    """
    if video_duration < 0:
        raise ValueError(f"video_duration={video_duration} s is negative; give the video's duration in seconds")
    if frame_rate is not None and frame_rate <= 0:
        raise ValueError(f"frame_rate={frame_rate} is not positive; give the video's frames per second or None")
    cues = read_cues(track)
    if track.style == "longvideobench":
        indices = _longvideobench_chosen(cues, frame_times, video_duration, track.offset)
    else:
        indices = _videomme_chosen(cues, frame_times, video_duration, frame_rate)
    chosen = [cues[i] for i in indices]
    return "\n".join(cue.text for cue in chosen), chosen
