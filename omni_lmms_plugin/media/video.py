"""Decoding the planned frames of a video file with PyAV, turned upright and resized to the planned size
(:mod:`.resize`).

Times are float seconds from the start of the video stream; ``time_base`` integers stay inside this module.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import get_args

import av
import numpy as np

from ..budget import TokenBudget
from ..config import ResizeChoice, SeekChoice
from ..errors import ConfigError, DecodeTimeoutError, MediaError
from ..video_plan import VideoPlan, VideoPolicy
from ._container import DEADLINE_EVERY, PacketIndex, check_file, open_container, scan_packets
from .audio import decode_audio
from .probe import display_rotation, plan_probed_video, probe
from .resize import resize_frame, resizing_on_this_thread
from .targets import (
    SEEK_MIN_SKIP_FRAMES,
    exact_costs,
    exact_targets,
    planned_seeks,
    seeks_before,
    shown_frames,
    split_into_segments,
)

__all__ = ["DECODER_THREADS", "SEEK_MODES", "SeekMode", "LoadedVideo", "load_video"]

logger = logging.getLogger("omni_lmms_plugin")

# The seek modes are the model arg's (one definition, in config).
SeekMode = SeekChoice
SEEK_MODES: tuple[str, ...] = get_args(SeekMode)

# Decoding threads of one video's decoder: the host-memory bound of a decode scales with them.
DECODER_THREADS = min(4, os.cpu_count() or 1)

# A target past the last decoded frame still maps to it if it lies within this many seconds after the frame ends
# (container and stream durations differ slightly); beyond it the file is short of what it claims (truncated).
_END_TOLERANCE_SECONDS = 0.5
# Codecs whose decoder may skip non-reference frames, switched per packet. Only H.264: there a non-reference frame
# (nal_ref_idc 0) is never predicted from and FFmpeg reads skip_frame for every packet. HEVC's NONREF also drops
# sub-layer non-reference pictures, which higher temporal layers may predict from; libdav1d (AV1) reads skip_frame
# only when the decoder opens.
_SKIPPING_CODECS = frozenset({"h264"})


@dataclass(frozen=True)
class LoadedVideo:
    """The decoded content of one planned video.

    * ``frames``: ``uint8`` array of shape ``(T, H, W, 3)``, RGB, ``T = plan.frames`` and ``(H, W) = (plan.height,
      plan.width)``; frame ``i`` is the one shown at ``frame_times[i]``.
    * ``audio``: ``float32`` mono 16 kHz waveform of exactly ``plan.audio_samples`` samples covering
      ``[plan.audio_start, plan.audio_start + plan.audio_seconds)`` (zero-padded where the track is shorter), or None
      when the plan asks for no audio or the file has none (then ``notes`` says so).
    * ``frame_times``: presentation time (seconds from the start of the video stream, from ``pts * time_base``) of
      each returned frame; in exact mode the planned frame's own time (for a variable-rate file it may differ from the
      planned time), in keyframe mode the time of the keyframe nearest to the planned time.
    * ``sample_fps``: the plan's sampling rate (the reference's ``frames / total_frames * source_fps``). Pass it to the
      processor as ``fps``.
    * ``decoded_frames``: frames the decoder produced (a cost measure); ``decode_seconds``: wall time of this call.
    """

    path: str
    frames: np.ndarray
    audio: np.ndarray | None
    sample_fps: float
    plan: VideoPlan
    frame_times: tuple[float, ...]
    decode_seconds: float
    seek_mode: str = "exact"
    decoded_frames: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        expected = (self.plan.frames, self.plan.height, self.plan.width, 3)
        if self.frames.shape != expected or self.frames.dtype != np.uint8:
            raise ValueError(f"frames {self.frames.shape} {self.frames.dtype} do not match the plan's {expected} uint8")
        if len(self.frame_times) != self.plan.frames:
            raise ValueError(f"{len(self.frame_times)} frame times for {self.plan.frames} frames")
        if self.audio is not None and self.audio.shape != (self.plan.audio_samples,):
            raise ValueError(f"audio {self.audio.shape} does not match the plan's {self.plan.audio_samples} samples")


class _IndexMispredicted(Exception):
    """The frames did not come as the packet index predicted where the decoder was to be drained: it was drained
    without showing the frame predicted, or asked for more frames without a seek after a drain."""


class _Decoder:
    """Frames of one video stream with their times (seconds from the stream start), decoding forward from wherever
    the container was last positioned. Checks the deadline as it goes and counts the packets it decodes and the frames
    they give.

    With ``keep`` set (packet timestamps), the decoder discards the non-reference frames of all packets not in it:
    H.264 frames with ``nal_ref_idc == 0`` (typically most B-frames), which no other frame predicts from, so skipping
    them changes no returned pixel. Only for codecs in ``_SKIPPING_CODECS``.

    ``last_before_seek`` (packet timestamps) names the packets after which the caller seeks (or stops): after such a
    packet the decoder is drained, so the frames it holds back for reordering (B-frames delay the output by a frame or
    two) come out at once instead of after more packets are decoded, and the frames end there (``drained`` is set until
    the next seek: a drained decoder takes no more packets)."""

    def __init__(self, container, stream, name: str, deadline: float, origin: int) -> None:
        self.container, self.stream, self.name, self.deadline = container, stream, name, deadline
        self.keep: frozenset[int] | None = None
        self.last_before_seek: frozenset[int] = frozenset()
        self.drained = False
        self.time_base = stream.time_base
        self.seconds_per_tick = float(stream.time_base)  # float arithmetic per frame; Fractions are slow
        self.origin = origin  # time zero, in ticks (PacketIndex.origin)
        rate = stream.average_rate or stream.guessed_rate or 30
        self.frame_seconds = 1.0 / float(rate)
        self.decoded = 0
        self.packets = 0

    def ticks(self, seconds: float) -> int:
        """The timestamp (``time_base`` ticks) of ``seconds`` from time zero."""
        return self.origin + int(round(seconds / self.time_base))

    def seek(self, seconds: float) -> None:
        """Position the demuxer on the keyframe at or before ``seconds`` (the decoder is flushed)."""
        try:
            self.container.seek(
                max(self.ticks(seconds), self.origin), backward=True, any_frame=False, stream=self.stream
            )
        except av.FFmpegError as exc:
            raise MediaError(self.name, f"cannot seek to {seconds:.3f} s: {exc}") from exc
        self.drained = False  # the seek flushed the decoder

    def rewind(self) -> None:
        """Position the demuxer at the start of the file. Not a seek to time zero: formats without a seek index (such
        as MPEG-TS) are sought by searching timestamps, and a seek to the first keyframe's time lands a keyframe late
        there; a seek to a time before every packet does not."""
        try:
            self.container.seek(0, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise MediaError(self.name, f"cannot seek to the start: {exc}") from exc
        self.drained = False

    def frames(self):
        """Yield ``(frame, seconds)`` in presentation order until the end of the stream, or until the decoder is
        drained after a packet in ``last_before_seek``."""
        if self.drained:
            raise _IndexMispredicted  # the caller did not seek where the index said it would
        previous = None
        context = self.stream.codec_context
        skipping = context.skip_frame
        try:
            for packet in self.container.demux(self.stream):
                self.packets += bool(packet.size)  # not the empty packet that ends the stream
                if self.packets % DEADLINE_EVERY == 0:
                    self.check_deadline()
                if self.keep is not None and packet.size:
                    wanted = "DEFAULT" if packet.pts in self.keep else "NONREF"
                    if wanted != skipping:  # H.264 reads it per packet (each frame thread on submit)
                        context.skip_frame = skipping = wanted
                frames = packet.decode()
                last = bool(packet.size) and packet.pts in self.last_before_seek
                if last:
                    frames += context.decode(None)  # drain: the frames held back for reordering
                    self.drained = True
                for frame in frames:
                    self.decoded += 1
                    if frame.pts is not None:
                        seconds = (frame.pts - self.origin) * self.seconds_per_tick
                    else:
                        seconds = (previous if previous is not None else 0.0) + self.frame_seconds
                    previous = seconds
                    yield frame, seconds
                if last:
                    return
        except av.FFmpegError as exc:
            raise MediaError(self.name, f"undecodable video data after {self.decoded} frames: {exc}") from exc

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeoutError(
                self.name, f"decoding took longer than decode_timeout (after {self.decoded} decoded frames)"
            )


def _decode_exact(
    decoder: _Decoder, targets: tuple[float, ...], keys: list[float], store, shown_pts: list[int | None] | None = None
) -> list[float]:
    """For each target time (ascending), the last frame whose time is <= target (the frame on screen at that time).

    Decodes forward while the next target's keyframe is not ahead of the decoder; seeks to that keyframe when it is
    (and skips at least ``SEEK_MIN_SKIP_FRAMES`` frames). Without keyframe times it decodes sequentially. With
    ``shown_pts`` (the timestamp of the frame each target shows, by the packet index; None for a target left to the
    rule), a frame with that timestamp is taken as soon as it comes out, instead of when the next frame shows it was
    the last one <= target. Raises :class:`_IndexMispredicted` when the decoder was drained (``last_before_seek``)
    before the frames reached a target.
    """
    eps = 1e-6
    margin = SEEK_MIN_SKIP_FRAMES * decoder.frame_seconds
    times: list[float] = []
    index = 0
    position = -math.inf  # time of the last decoded frame
    at_start = True
    fallback_keys = 0  # extra keyframes to step back when a seek lands past its target
    stepped_back_for = -1  # the target being reached from an earlier keyframe: decode forward to it, do not seek
    sought_key = -math.inf  # keyframe of the latest seek: never seek to it (or before it) again, except to step back
    last_end = None
    while index < len(targets):
        decoder.check_deadline()
        target = targets[index]
        if keys:
            slot = max(bisect.bisect_right(keys, target + eps) - 1 - fallback_keys, 0)
            key = keys[slot]
            if (fallback_keys or key > sought_key + eps) and key > position + margin and (not at_start or slot > 0):
                decoder.seek(key) if slot > 0 else decoder.rewind()
                sought_key = key
                at_start = slot == 0 and fallback_keys > 0
                position = -math.inf
        sought = position == -math.inf and not at_start
        previous = None
        restart = False
        for frame, seconds in decoder.frames():
            if previous is None and sought and seconds > targets[index] + eps:
                # The seek landed after the target (inexact index): step back one more keyframe and retry.
                fallback_keys += 1
                stepped_back_for = index
                _stop_only_at_targets_from(decoder, shown_pts, index)
                restart = True
                break
            position = seconds
            while index < len(targets) and seconds > targets[index] + eps:
                chosen = previous if previous is not None else (frame, seconds)
                store(index, chosen[0])
                times.append(chosen[1])
                index += 1
            if index >= len(targets):
                break
            previous = (frame, seconds)
            last_end = seconds + ((frame.duration or 0) * decoder.seconds_per_tick or decoder.frame_seconds)
            while shown_pts and index < len(targets) and frame.pts is not None and frame.pts == shown_pts[index]:
                store(index, frame)
                times.append(seconds)
                index += 1
            if index >= len(targets):
                break
            if keys and index != stepped_back_for:
                slot = max(bisect.bisect_right(keys, targets[index] + eps) - 1, 0)
                if keys[slot] > seconds + margin and keys[slot] > sought_key + eps:
                    break  # a keyframe lies ahead of us before the next target: seek to it
        else:
            if sought and previous is None and fallback_keys < len(keys):
                # The seek found no frame: it landed past the stream's end (formats without a seek index, such as
                # MPEG-TS, are sought by searching timestamps). Step back one more keyframe and retry.
                fallback_keys += 1
                stepped_back_for = index
                _stop_only_at_targets_from(decoder, shown_pts, index)
                continue
            if decoder.drained:
                raise _IndexMispredicted
            # End of stream: the last frame stands for the targets within its display interval (plus tolerance).
            while previous is not None and index < len(targets):
                if targets[index] > (last_end or previous[1]) + _END_TOLERANCE_SECONDS:
                    break
                store(index, previous[0])
                times.append(previous[1])
                index += 1
            if index < len(targets):
                end_text = f"{last_end:.3f} s" if last_end is not None else "its start"
                raise MediaError(
                    decoder.name,
                    f"decoded {index} of {len(targets)} planned frames: the video stream ends at {end_text} but the "
                    f"plan needs a frame at {targets[index]:.3f} s (truncated or corrupt file?)",
                )
            break
        if restart:
            if fallback_keys > len(keys):
                raise MediaError(decoder.name, f"cannot reach the frame at {target:.3f} s by seeking")
            continue
        fallback_keys = 0
    return times


def _stop_only_at_targets_from(decoder: _Decoder, shown_pts: list[int | None] | None, index: int) -> None:
    """Before decoding forward from an earlier keyframe: the decoder stops only after the packets of targets ``index``
    on, not after an earlier target's packet on the way."""
    if shown_pts:
        decoder.last_before_seek = decoder.last_before_seek.intersection(shown_pts[index:])


def _decode_keyframes(
    decoder: _Decoder, targets: tuple[float, ...], keys: list[float], store, end: float | None
) -> list[float]:
    """For each target, the keyframe nearest to it (ties go to the earlier one), one seek and one frame per keyframe.
    ``end`` is where the stream's packets end: a target past it means the file is shorter than planned. Raises
    :class:`_IndexMispredicted` when the decoder was drained (``last_before_seek``) without showing the keyframe."""
    if not keys or end is None:
        raise MediaError(decoder.name, "no keyframes found in the video stream")
    reachable = sum(target <= end + _END_TOLERANCE_SECONDS for target in targets)
    if reachable < len(targets):
        raise MediaError(
            decoder.name,
            f"decoded {reachable} of {len(targets)} planned frames: the video stream ends at {end:.3f} s but the plan "
            f"needs a frame at {targets[reachable]:.3f} s (truncated or corrupt file?)",
        )
    chosen: list[float] = []
    for target in targets:
        slot = bisect.bisect_left(keys, target)
        candidates = [keys[i] for i in (slot - 1, slot) if 0 <= i < len(keys)]
        chosen.append(min(candidates, key=lambda key: (abs(key - target), key)))
    times: list[float] = []
    cache: dict[float, tuple[int, float]] = {}
    for index, key in enumerate(chosen):
        if key in cache:
            first, seconds = cache[key]
            store(index, None, copy_from=first)
            times.append(seconds)
            continue
        decoder.check_deadline()
        frame, seconds = _frame_at_keyframe(decoder, keys, key)
        store(index, frame)
        cache[key] = (index, seconds)
        times.append(seconds)
    return times


def _frame_at_keyframe(decoder: _Decoder, keys: list[float], key: float):
    """The frame shown at keyframe ``key`` and its time: a seek to it, then one frame. Where the seek lands after it,
    or past the stream's end (formats without a seek index, such as MPEG-TS, are sought by searching timestamps), it
    seeks one keyframe earlier at a time and decodes forward to it."""
    slot = bisect.bisect_left(keys, key - 1e-6)
    for start in range(slot, -1, -1):
        if start < slot:  # stepping back: stop after the wanted keyframe's packet, not after the one on the way
            decoder.last_before_seek = decoder.last_before_seek - {decoder.ticks(keys[start])}
        decoder.seek(keys[start]) if start > 0 else decoder.rewind()
        for count, (frame, seconds) in enumerate(decoder.frames()):
            if count == 0 and start > 0 and seconds > keys[start] + 1e-6:
                break  # landed late: step back
            if seconds + 1e-6 >= key:
                return frame, seconds
        else:
            if decoder.drained:
                raise _IndexMispredicted
            if start == 0:
                break
    raise MediaError(decoder.name, f"no frame decoded at the keyframe at {key:.3f} s")


@dataclass(frozen=True)
class _Span:
    """What decoding any range of a plan's targets needs: the output array (each range fills its own rows), the
    target times (:func:`exact_targets` in exact mode, the planned times in keyframe mode), the packet index (time
    zero, keyframe times, the stream's end), the mode, the resize precision and the deadline; in exact mode, the
    timestamp and time of the frame each target shows by the packet index (``shown_pts``/``shown_times``, None when the
    index is incomplete), which lets the decoder skip the non-reference frames no target shows and stop at each
    target's packet."""

    name: str
    frames: np.ndarray
    targets: tuple[float, ...]
    index: PacketIndex
    seek_mode: str
    resize: ResizeChoice
    deadline: float
    shown_pts: np.ndarray | None = None
    shown_times: np.ndarray | None = None

    def decode(self, decoder: _Decoder, start: int, stop: int, *, predicted: bool = True) -> list[float]:
        """Decode targets ``[start, stop)`` into ``frames[start:stop]`` with ``decoder``; returns their times.
        ``predicted=False`` decodes without the packet index's predictions of the frames shown: every frame on the way
        (no frame skipping), and past each target until the decoder shows a later frame."""
        with resizing_on_this_thread():  # one core's work, as the decoder's (see .resize)
            return self._decode(decoder, start, stop, predicted=predicted)

    def _decode(self, decoder: _Decoder, start: int, stop: int, *, predicted: bool) -> list[float]:
        stream, frames = decoder.stream, self.frames
        targets, keys = self.targets[start:stop], self.index.keys

        def store(index: int, frame, copy_from: int | None = None) -> None:
            if copy_from is not None:
                frames[start + index] = frames[start + copy_from]
                return
            resize_frame(frame, frames[start + index], display_rotation(frame, stream.metadata), self.resize)

        # Frame threading pays off on long forward runs, but every seek flushes its pipeline (measured on 2 cores:
        # 30% to 40% slower when seeking per target), so it is used only when no seek is planned.
        seeks = len(targets) if self.seek_mode == "keyframe" else planned_seeks(targets, keys, decoder.frame_seconds)
        stream.thread_type = "SLICE" if seeks else "AUTO"
        try:
            if self.seek_mode == "keyframe":
                if predicted:  # each keyframe's packet is the last before the next seek
                    decoder.last_before_seek = frozenset(decoder.ticks(key) for key in keys)
                return _decode_keyframes(decoder, targets, keys, store, self.index.end)
            if not predicted or self.shown_pts is None:
                return _decode_exact(decoder, targets, keys, store)
            shown_pts = self.shown_pts[start:stop]
            if stream.codec_context.name in _SKIPPING_CODECS:
                decoder.keep = frozenset(shown_pts.tolist())
            # Stop at a target's packet where the next target seeks, and at the last target. Not at the stream's last
            # packet: a target there may lie past the end of a truncated file, which the end of the stream tells.
            inside = shown_pts != self.index.pts[-1]
            seeks_next = np.append(seeks_before(keys, self.shown_times[start:stop], decoder.frame_seconds)[1:], True)
            decoder.last_before_seek = frozenset(shown_pts[seeks_next & inside].tolist())
            predicted_pts = [pts if within else None for pts, within in zip(shown_pts.tolist(), inside, strict=True)]
            times = _decode_exact(decoder, targets, keys, store, predicted_pts)
            if np.allclose(times, self.shown_times[start:stop], rtol=0, atol=1e-9):
                return times
        except _IndexMispredicted:
            pass
        # The decoder showed other frames than the packet index predicted (it dropped or re-timed a kept packet's
        # frame), so a skipped frame may have been the one on screen, or a frame past a drained packet: decode again,
        # without predictions, in a fresh container (the skipping decoder is not trusted again).
        logger.debug("%s: frames differ from the packet index; decoding again without its predictions", self.name)
        again, decoded = self.decode_apart(start, stop, threads=stream.thread_count, predicted=False)
        decoder.decoded += decoded
        return again

    def decode_apart(self, start: int, stop: int, *, threads: int, predicted: bool = True) -> tuple[list[float], int]:
        """:meth:`decode` in a container of its own, its decoder limited to ``threads`` threads; returns the times
        and the number of frames decoded."""
        with open_container(self.name) as container:
            stream = container.streams.video[0]
            stream.thread_count = threads
            decoder = _Decoder(container, stream, self.name, self.deadline, self.index.origin)
            return self.decode(decoder, start, stop, predicted=predicted), decoder.decoded


def load_video(
    path: str | os.PathLike,
    plan: VideoPlan | None = None,
    *,
    budget: TokenBudget | int | None = None,
    policy: VideoPolicy | None = None,
    decode_timeout: float = 120.0,
    seek_mode: SeekMode = "exact",
    resize: ResizeChoice = "reference",
    workers: int = 1,
) -> LoadedVideo:
    """Decode the frames (and audio span) of ``plan`` from a video file; without a plan, probe the file and plan it
    for ``budget`` (and ``policy``) first.

    ``seek_mode="exact"``: frame ``plan.frame_indices[i]`` itself, counted in frames shown as the reference's readers
    count them (also in variable-rate files and where timestamps have gaps): the packet index (demuxed first, never
    decoded) gives its time, and the decoder returns the frame on screen then (without a complete index, the frame on
    screen half a frame after the planned time: the same frame for a constant-rate file, even where the container
    rounded its timestamps). It decodes forward for dense targets and seeks to the keyframe before a target when that
    skips frames, so it never decodes more than plain sequential decoding. The packet index says which packet each
    target shows: the decoder takes that frame as soon as it comes out, and where a seek follows, it decodes no packet
    past the target's own (it is drained of the frames it holds back for reordering instead); for H.264 it discards
    the non-reference frames of all other packets (most B-frames: no frame predicts from them, so no returned pixel
    changes). If the frames shown still differ from the index's prediction, the targets are decoded again, in a fresh
    container, without its predictions. ``seek_mode="keyframe"``: for each planned time, the nearest keyframe (from
    the packet index, no decoding), one packet and one frame per keyframe; faster, deterministic, and the real times
    are returned. Kept frames are turned upright (the display matrix, or the legacy
    ``rotate`` tag), converted to RGB at full size and resized to exactly ``plan.height x plan.width`` with the
    reference's antialiased bicubic (:mod:`.resize`): ``resize="reference"`` gives ``fetch_video``'s pixels bit for
    bit, ``resize="fast"`` torch's uint8 kernel of the same filter.

    ``workers > 1`` splits the targets into up to that many contiguous segments (at most one per
    ``MIN_SEGMENT_TARGETS`` targets), decoded concurrently in threads, each with its own container and decoder seeking
    to the keyframe before its first target; the frames and times are the same as with one worker. In exact mode the
    split evens out the packets each segment decodes (by the packet index), not the number of targets. Each segment's
    decoder has ``DECODER_THREADS // segments`` threads, at least one. Memory: the kept frames (one array,
    ``frames x height x width x 3`` bytes) plus, per segment, one decoder's working set (its reference frames and
    frame-threading queue, a few frames at the source resolution) and the frame it is resizing (11 bytes a source
    pixel: RGB, one float32 channel and the filter's first pass), and the packet index (about 40 bytes a packet while
    scanning, 8 after).

    Raises :class:`MediaError` (naming the file) for missing, empty, truncated, unreadable or undecodable files, a file
    without a video stream, or fewer frames than planned (beyond half a second past its last frame; within it, the last
    frame stands for the missing ones and ``notes`` says how many); :class:`DecodeTimeoutError` when decoding runs past
    ``decode_timeout`` seconds.
    """
    if seek_mode not in SEEK_MODES:
        raise ConfigError(f"Invalid seek mode ({seek_mode!r}). Supported values are {', '.join(SEEK_MODES)}.")
    if resize not in get_args(ResizeChoice):
        raise ConfigError(f"Invalid resize ({resize!r}). Supported values are {', '.join(get_args(ResizeChoice))}.")
    if workers < 1:
        raise ConfigError(f"workers={workers} must be at least 1 (segments of one video decoded at once)")
    if not decode_timeout > 0:
        raise ConfigError(f"decode_timeout={decode_timeout} must be a positive number of seconds")
    started = time.monotonic()
    deadline = started + decode_timeout
    name, _ = check_file(path)
    if plan is None:
        if budget is None:
            raise ConfigError("load_video needs a plan, or a budget to plan with (budget=TokenBudget(...) or an int)")
        plan = plan_probed_video(probe(name), budget, policy)
    elif budget is not None or policy is not None:
        raise ConfigError("pass either a plan or budget/policy to load_video, not both")
    targets = tuple(plan.frame_times)
    if list(targets) != sorted(targets):
        raise ConfigError("plan.frame_times must be in ascending order")
    notes: list[str] = []

    with open_container(name) as container:
        if not container.streams.video:
            raise MediaError(name, "no video stream (audio-only file?): load it with load_audio")
        stream = container.streams.video[0]
        # Each decoder thread holds pictures at the coded size (about 3 in flight each): FFmpeg's automatic count
        # (CPUs + 1, up to 16) would hold ~2.4 GB for one 8K video on a 16-core GPU host.
        stream.thread_count = DECODER_THREADS
        frames = np.empty((plan.frames, plan.height, plan.width, 3), dtype=np.uint8)
        # The packet index (demuxing only, about 3 microseconds a packet) says where time zero is, where to seek and
        # which frames to skip.
        index = scan_packets(container, stream, name, deadline)
        decoder = _Decoder(container, stream, name, deadline, index.origin)
        decoder.rewind()
        shown = None
        if seek_mode == "exact":
            targets = exact_targets(plan, index)
            shown = shown_frames(index, targets)
        span = _Span(
            name,
            frames,
            targets,
            index,
            seek_mode,
            resize,
            deadline,
            shown_pts=None if shown is None else shown[0],
            shown_times=None if shown is None else shown[1],
        )
        costs = None
        if shown is not None and index.keys and workers > 1:
            costs = exact_costs(index.times, index.keys, shown[1], decoder.frame_seconds)
        segments = split_into_segments(len(targets), workers, costs)
        if len(segments) == 1:
            times = span.decode(decoder, 0, len(targets))
            decoded = decoder.decoded
        else:
            # One container and decoder per segment, each in a thread: PyAV releases the GIL while FFmpeg decodes and
            # converts, and torch while it resizes, so the segments decode in parallel. DECODER_THREADS bounds their
            # threads together.
            threads = max(1, DECODER_THREADS // len(segments))
            with ThreadPoolExecutor(max_workers=len(segments), thread_name_prefix="omni-decode") as pool:
                parts = list(pool.map(lambda bounds: span.decode_apart(*bounds, threads=threads), segments))
            times = [seconds for part, _ in parts for seconds in part]
            decoded = sum(count for _, count in parts)
        if len(times) != plan.frames:
            raise MediaError(name, f"decoded {len(times)} of {plan.frames} planned frames")
        # Planned frames past the last one the packet index lists (exact mode stood the last frame in for them).
        counted = seek_mode == "exact" and index.pts is not None
        past_end = [frame for frame in plan.frame_indices if frame >= len(index.pts)] if counted else []
        if past_end:
            notes.append(
                f"the file shows {len(index.pts)} frames but the plan counts {plan.total_frames}: planned frames "
                f"{past_end[0]} to {past_end[-1]} ({len(past_end)}) are its last frame (a truncated file, or a header "
                "that overstates its length)"
            )

        audio = None
        if plan.audio_samples > 0:
            if not container.streams.audio:
                notes.append("the plan asked for audio but the file has no audio track: audio is None")
            else:
                with open_container(name) as audio_container:  # fresh, at its start: see decode_audio
                    audio = decode_audio(
                        audio_container,
                        audio_container.streams.audio[0],
                        name,
                        origin=float(index.origin * stream.time_base),
                        start=plan.audio_start,
                        samples=plan.audio_samples,
                        pad=True,
                        deadline=deadline,
                    )

    return LoadedVideo(
        path=name,
        frames=frames,
        audio=audio,
        sample_fps=plan.sample_fps,
        plan=plan,
        frame_times=tuple(times),
        decode_seconds=time.monotonic() - started,
        seek_mode=seek_mode,
        decoded_frames=decoded,
        notes=tuple(notes),
    )
