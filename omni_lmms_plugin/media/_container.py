"""Opening media files with PyAV: the checks and helpers the probe, video and audio modules share."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..errors import DecodeTimeoutError, MediaError

logger = logging.getLogger("omni_lmms_plugin")

# How often (in packets) the decode loops check the deadline.
DEADLINE_EVERY = 16
# Decoded frames are allocated at the coded size before they are resized: a header claiming a larger frame than this
# (an 8192 x 8192 frame is 64 Mpx; 8K UHD is 33 Mpx) is refused before anything is decoded.
MAX_CODED_PIXELS = 8192 * 8192


def check_file(path: str | os.PathLike) -> tuple[str, int]:
    name = os.fspath(path)
    if not os.path.exists(name):
        raise MediaError(name, "file not found")
    if not os.path.isfile(name):
        raise MediaError(name, "not a regular file")
    size = os.path.getsize(name)
    if size == 0:
        raise MediaError(name, "file is empty (0 bytes)")
    return name, size


def open_container(name: str) -> av.container.InputContainer:
    try:
        return av.open(name, "r")
    except av.FFmpegError as exc:
        raise MediaError(name, f"not a media file FFmpeg can read (truncated or not a video?): {exc}") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MediaError(name, f"cannot open: {exc}") from exc


def seconds_of(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


@dataclass(frozen=True)
class PacketIndex:
    """What demuxing (never decoding) every packet of a stream tells.

    * ``origin``: time zero of the video (``time_base`` ticks): the stream's start time, or the first shown frame's
      timestamp where that lies later (AVI stores the decoder's B-frame delay in its timestamps: its first frame is
      at one tick while the stream starts at zero);
    * ``keys``: keyframe times, ascending (seconds from ``origin``);
    * ``pts``: the presentation timestamps (ticks) of the packets the decoder shows (all but those marked discard, as
      edit lists mark), ascending: ``pts[i]`` is frame ``i``'s. None when some packet has none (then which packet
      shows which frame is unknown);
    * ``times``: the same packets' times (seconds from ``origin``), or None with ``pts``;
    * ``first`` / ``end``: where the packets start and end (seconds from ``origin``; None without packets);
    * ``count``: the packets shown that have a timestamp (the frames shown, for a complete index).
    """

    origin: int
    keys: list[float]
    pts: np.ndarray | None
    times: np.ndarray | None
    first: float | None
    end: float | None
    count: int


def scan_packets(container, stream, name: str, deadline: float | None = None) -> PacketIndex:
    """Demux (never decode) every packet of ``stream`` and index them."""
    seconds_per_tick = float(stream.time_base)
    keys: list[int] = []
    stamps: list[int] = []
    shown: list[int] = []  # timestamps of the packets the decoder shows (not marked discard, as edit lists mark)
    complete = True
    end = None
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                complete = complete and packet.size == 0  # the empty packet that ends the stream has no timestamp
                continue
            stamps.append(packet.pts)
            if deadline is not None and len(stamps) % (DEADLINE_EVERY * 16) == 0 and time.monotonic() > deadline:
                raise DecodeTimeoutError(name, "scanning packets took longer than decode_timeout")
            stop = packet.pts + (packet.duration or 0)
            end = stop if end is None else max(end, stop)
            if not packet.is_discard:
                shown.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    except av.FFmpegError as exc:
        if not stamps:
            raise MediaError(name, f"cannot demux packets: {exc}") from exc
        logger.debug("%s: packet scan stopped early: %s", name, exc)
        complete = False
    origin = max(stream.start_time or 0, min(shown)) if shown else stream.start_time or 0

    def seconds(ticks: int) -> float:
        return (ticks - origin) * seconds_per_tick

    pts = np.sort(np.asarray(shown, dtype=np.int64)) if complete else None
    return PacketIndex(
        origin=origin,
        keys=sorted(seconds(key) for key in keys),
        pts=pts,
        times=(pts - origin) * seconds_per_tick if pts is not None else None,
        first=seconds(min(stamps)) if stamps else None,
        end=seconds(end) if end is not None else None,
        count=len(shown),
    )
