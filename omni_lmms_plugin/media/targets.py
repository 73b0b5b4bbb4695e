"""Which frames exact mode decodes, worked out from the packet index alone (no decoding): each planned frame's target
time, the packet each target shows, when a seek pays, and how a video's targets split into segments decoded at once.

Times are float seconds from the video's time zero (``PacketIndex.origin``).
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from ..video_plan import VideoPlan
from ._container import PacketIndex

__all__ = [
    "SEEK_MIN_SKIP_FRAMES",
    "MIN_SEGMENT_TARGETS",
    "planned_seeks",
    "split_into_segments",
    "exact_costs",
    "seeks_before",
    "exact_targets",
    "shown_frames",
]

# Exact mode seeks only when it skips at least this many frames: a seek flushes the (frame-threaded) decoder, which
# costs about as much as decoding a few frames.
SEEK_MIN_SKIP_FRAMES = 8
# A video is decoded in at most one segment per this many targets: each segment opens the file again and may decode
# up to a GOP before its first target.
MIN_SEGMENT_TARGETS = 4


def planned_seeks(targets: tuple[float, ...], keys: list[float], frame_seconds: float) -> int:
    """How many seeks :func:`.video._decode_exact` will make (the same rule, ignoring recovery from inexact seeks)."""
    if not keys:
        return 0
    margin = SEEK_MIN_SKIP_FRAMES * frame_seconds
    seeks, position = 0, keys[0]
    for target in targets:
        key = keys[max(bisect.bisect_right(keys, target + 1e-6) - 1, 0)]
        if key > position + margin:
            seeks += 1
        position = max(position, target)
    return seeks


def split_into_segments(
    count: int, workers: int, costs: tuple[np.ndarray, np.ndarray] | None = None
) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the targets, one per worker (at most one per ``MIN_SEGMENT_TARGETS`` targets), with
    the costliest segment as cheap as it can be. ``costs`` is ``(start, step)`` (:func:`exact_costs`): what target
    ``j`` costs when a segment begins at it and when it follows target ``j - 1`` in a segment; without it, one unit a
    target (equal counts)."""
    parts = max(1, min(workers, count // MIN_SEGMENT_TARGETS))
    if parts == 1:
        return [(0, count)]
    start, step = costs if costs is not None else (np.ones(count, dtype=np.int64), np.ones(count, dtype=np.int64))
    start, step = start.tolist(), step.tolist()

    def packed(bound: int) -> list[tuple[int, int]] | None:
        """Greedy packing under ``bound`` (each segment as long as it stays within it), None past ``parts``.
        Greedy is optimal here: a segment never costs more for starting later (a later start's keyframe is no
        earlier), so the least feasible bound is the least largest segment."""
        ranges, first = [], 0
        while first < count:
            cost, stop = start[first], first + 1
            if cost > bound:
                return None
            while stop < count and cost + step[stop] <= bound:
                cost += step[stop]
                stop += 1
            ranges.append((first, stop))
            if len(ranges) > parts:
                return None
            first = stop
        return ranges

    low, high = 1, start[0] + sum(step[1:])  # one segment always fits the whole cost
    while low < high:
        middle = (low + high) // 2
        if packed(middle) is None:
            low = middle + 1
        else:
            high = middle
    return packed(low)


def exact_costs(
    packet_times: np.ndarray, keys: list[float], shown_times: np.ndarray, frame_seconds: float
) -> tuple[np.ndarray, np.ndarray]:
    """Packets exact mode decodes for each target, by the packet index (``packet_times``: the time of every packet
    shown, ascending): ``start``, from the keyframe at or before the frame it shows, when a segment begins at it;
    ``step``, from the previous target's frame, or from its keyframe where :func:`.video._decode_exact` seeks, when it
    follows the previous target. Splitting by these (:func:`split_into_segments`) makes the costliest segment as cheap
    as a contiguous split can; splitting by target count gave the costliest of 2 segments 9% more packets than an even
    share on a 10 s GOP clip, and the costliest of 16, 67% more. (Packets an edit list discards are decoded but not
    counted: they lie before the first frame shown.)"""
    shown = np.searchsorted(packet_times, shown_times - 1e-9)
    key_of = _keyframe_before(keys, shown_times)
    start = np.maximum(shown - np.searchsorted(packet_times, key_of - 1e-9) + 1, 1)
    step = np.where(_seeks(key_of, shown_times, frame_seconds), start, np.diff(shown, prepend=shown[0]))
    return start.astype(np.int64), step.astype(np.int64)


def seeks_before(keys: list[float], shown_times: np.ndarray, frame_seconds: float) -> np.ndarray:
    """Whether :func:`.video._decode_exact` seeks before each target (``shown_times``: the time of the frame each
    shows, ascending): when the keyframe before its frame lies more than ``SEEK_MIN_SKIP_FRAMES`` frames past the
    previous target's frame. True for the first target (a segment starts with a seek, or at the video's start)."""
    return _seeks(_keyframe_before(keys, shown_times), shown_times, frame_seconds)


def _keyframe_before(keys: list[float], shown_times: np.ndarray) -> np.ndarray:
    key_times = np.asarray(keys)
    return key_times[np.maximum(np.searchsorted(key_times, shown_times + 1e-9, side="right") - 1, 0)]


def _seeks(key_of: np.ndarray, shown_times: np.ndarray, frame_seconds: float) -> np.ndarray:
    previous_times = np.concatenate(([-math.inf], shown_times[:-1]))
    return key_of > previous_times + SEEK_MIN_SKIP_FRAMES * frame_seconds


def exact_targets(plan: VideoPlan, index: PacketIndex) -> tuple[float, ...]:
    """Exact mode's target times. Planned frame ``i`` is the ``i``-th frame shown, as the reference's readers count
    (decord, torchcodec and torchvision index frames, not seconds), so its target is that frame's own time from the
    packet index: the frame on screen then is frame ``i``, whatever the timestamps (variable rate, gaps). Without a
    complete index, or for an index past the frames it lists, the planned time plus half a frame: frame ``i`` of a
    constant-rate file, even where the container rounded its timestamps up (Matroska stores milliseconds: 2/30 s
    becomes 0.067 s)."""
    nominal = [seconds + 0.5 / plan.source_fps for seconds in plan.frame_times]
    if index.times is None:
        return tuple(nominal)
    targets = [
        float(index.times[frame]) if frame < len(index.times) else later
        for frame, later in zip(plan.frame_indices, nominal, strict=True)
    ]
    return tuple(np.maximum.accumulate(targets).tolist()) if targets else ()


def shown_frames(index: PacketIndex, targets: tuple[float, ...]):
    """The timestamp and time of the frame on screen at each target by the packet index (the last packet whose time is
    <= the target; the first packet for a target before it), the rule :func:`.video._decode_exact` applies to the
    decoded frames. None without a complete index."""
    if index.pts is None or not len(index.pts):
        return None
    slots = np.clip(np.searchsorted(index.times, np.asarray(targets) + 1e-6, side="right") - 1, 0, len(index.pts) - 1)
    return index.pts[slots], index.times[slots]
