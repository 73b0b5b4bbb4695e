"""Probe and budget-aware decoding of video and audio files, with PyAV only (numpy + av; no torch, no ffmpeg binary).

Three steps, each usable alone:

* :func:`probe` reads metadata (never decodes a frame) into a :class:`MediaInfo`, keeping numbers read from headers
  apart from numbers computed from the packets.
* :func:`plan_for` turns that into a :class:`~omni_lmms_plugin.budget.VideoPlan` for a token budget.
* :func:`load_video` decodes exactly the planned frames (and the planned audio span) into a :class:`LoadedVideo`.

Times at this module's surface are float seconds from the start of the video stream; ``time_base`` integers stay
inside. Time spans are half-open: ``[start, start + seconds)``.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import av
import numpy as np

from .budget import AUDIO_SAMPLE_RATE, MAX_ASPECT_RATIO, TokenBudget, VideoPlan, VideoPolicy, plan_video
from .errors import ConfigError, DecodeTimeoutError, MediaError

__all__ = [
    "SEEK_MODES",
    "RESIZE_INTERPOLATION",
    "MediaInfo",
    "LoadedVideo",
    "probe",
    "plan_for",
    "load_video",
    "load_audio",
]

logger = logging.getLogger("omni_lmms_plugin")

SeekMode = Literal["exact", "keyframe"]
SEEK_MODES: tuple[str, ...] = ("exact", "keyframe")

# swscale's bicubic filter: kept frames are resized once, in C, straight from the decoder's pixel format to RGB.
RESIZE_INTERPOLATION = "BICUBIC"

# Exact mode seeks only when it skips at least this many frames: a seek flushes the (frame-threaded) decoder, which
# costs about as much as decoding a few frames.
_SEEK_MIN_SKIP_FRAMES = 8
# A target past the last decoded frame still maps to it if it lies within this many seconds after the frame ends
# (container and stream durations differ slightly); beyond it the file is short of what it claims (truncated).
_END_TOLERANCE_SECONDS = 0.5
# How often (in packets) the decode loops check the deadline.
_DEADLINE_EVERY = 16


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    """Metadata of one media file, read without decoding frames.

    ``*_header`` fields are what the container says (None when it says nothing: Matroska/WebM carry no frame count);
    ``duration`` and ``frame_rate`` are the numbers to plan with, and ``duration_source`` / ``frame_rate_source`` say
    where each came from (``"video_stream"``, ``"stream_tag"``, ``"container"``, ``"audio_stream"`` or ``"packets"``,
    the last meaning computed by demuxing packet timestamps). ``width`` x ``height`` is the display size, after the
    stream's rotation tag; ``coded_width`` x ``coded_height`` the size the decoder outputs.
    """

    path: str
    format_name: str
    size_bytes: int
    duration: float
    duration_source: str
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    coded_width: int = 0
    coded_height: int = 0
    rotation: int = 0
    frame_rate: float = 0.0
    frame_rate_source: str = ""
    start_time: float = 0.0
    video_codec: str | None = None
    frame_count_header: int | None = None
    duration_header: float | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration_header: float | None = None


@dataclass(frozen=True)
class LoadedVideo:
    """The decoded content of one planned video.

    * ``frames``: ``uint8`` array of shape ``(T, H, W, 3)``, RGB, ``T = plan.frames`` and ``(H, W) = (plan.height,
      plan.width)``; frame ``i`` is the one shown at ``frame_times[i]``.
    * ``audio``: ``float32`` mono 16 kHz waveform of exactly ``plan.audio_samples`` samples covering
      ``[plan.audio_start, plan.audio_start + plan.audio_seconds)`` (zero-padded where the track is shorter), or None
      when the plan asks for no audio or the file has none (then ``notes`` says so).
    * ``frame_times``: presentation time (seconds from the start of the video stream, from ``pts * time_base``) of
      each returned frame; in exact mode the frame whose display interval contains the planned time, in keyframe mode
      the keyframe nearest to it.
    * ``sample_fps``: frames kept per second covered, from the real times (``(T - 1) / (last - first)``; the plan's
      rate when that span is zero). Pass it to the processor as ``fps``.
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


# --------------------------------------------------------------------------------------------------------------------
# Opening and probing
# --------------------------------------------------------------------------------------------------------------------


def _check_file(path: str | os.PathLike) -> tuple[str, int]:
    name = os.fspath(path)
    if not os.path.exists(name):
        raise MediaError(name, "file not found")
    if not os.path.isfile(name):
        raise MediaError(name, "not a regular file")
    size = os.path.getsize(name)
    if size == 0:
        raise MediaError(name, "file is empty (0 bytes)")
    return name, size


def _open(name: str) -> av.container.InputContainer:
    try:
        return av.open(name, "r")
    except av.FFmpegError as exc:
        raise MediaError(name, f"not a media file FFmpeg can read (truncated or not a video?): {exc}") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MediaError(name, f"cannot open: {exc}") from exc


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


_DURATION_TAG = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def _duration_tag(metadata: dict[str, str]) -> float | None:
    """Matroska's per-track ``DURATION`` tag, ``HH:MM:SS.nnnnnnnnn``."""
    for key, value in metadata.items():
        if key.upper() == "DURATION":
            match = _DURATION_TAG.match(value.strip())
            if match:
                hours, minutes, seconds = match.groups()
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _rotation(metadata: dict[str, str]) -> int:
    try:
        return int(round(float(metadata.get("rotate", "0")))) % 360
    except ValueError:
        return 0


def _scan_packets(
    container, stream, name: str, deadline: float | None = None
) -> tuple[list[float], float | None, float | None, int]:
    """Demux (never decode) every packet of ``stream``: keyframe times, first and end time (seconds from the stream's
    start), packet count."""
    seconds_per_tick = float(stream.time_base)
    origin = stream.start_time or 0
    keys: list[float] = []
    first = end = None
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            count += 1
            if deadline is not None and count % (_DEADLINE_EVERY * 16) == 0 and time.monotonic() > deadline:
                raise DecodeTimeoutError(name, "scanning packets took longer than decode_timeout")
            start = (packet.pts - origin) * seconds_per_tick
            stop = start + (packet.duration or 0) * seconds_per_tick
            first = start if first is None else min(first, start)
            end = stop if end is None else max(end, stop)
            if packet.is_keyframe:
                keys.append(start)
    except av.FFmpegError as exc:
        if count == 0:
            raise MediaError(name, f"cannot demux packets: {exc}") from exc
        logger.debug("%s: packet scan stopped early: %s", name, exc)
    keys.sort()
    return keys, first, end, count


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read the metadata of a media file without decoding any frame.

    Duration comes from the video stream header, then Matroska's track ``DURATION`` tag, then the container header,
    and only when all are missing from demuxing the packets' timestamps. Raises :class:`MediaError` for a missing,
    empty or unreadable file.
    """
    name, size = _check_file(path)
    with _open(name) as container:
        videos = container.streams.video
        audios = container.streams.audio
        if not videos and not audios:
            raise MediaError(name, "no video or audio stream")
        container_duration = container.duration / av.time_base if container.duration else None
        fields: dict = {}
        if audios:
            audio = audios[0]
            fields.update(
                audio_codec=audio.codec_context.name,
                audio_sample_rate=audio.codec_context.sample_rate or None,
                audio_channels=audio.codec_context.channels or None,
                audio_duration_header=_seconds(audio.duration, audio.time_base) or _duration_tag(audio.metadata),
            )
        if not videos:
            duration = fields["audio_duration_header"] or container_duration
            source = "audio_stream" if fields["audio_duration_header"] else "container"
            if not duration:
                _, first, end, _ = _scan_packets(container, audios[0], name)
                duration, source = (end - first if end is not None else 0.0), "packets"
            return MediaInfo(
                path=name,
                format_name=container.format.name,
                size_bytes=size,
                duration=float(duration or 0.0),
                duration_source=source,
                has_video=False,
                has_audio=True,
                **fields,
            )

        video = videos[0]
        context = video.codec_context
        header = _seconds(video.duration, video.time_base)
        tag = _duration_tag(video.metadata)
        frame_count = video.frames or None
        if header:
            duration, source = header, "video_stream"
        elif tag:
            duration, source = tag, "stream_tag"
        elif container_duration:
            duration, source = container_duration, "container"
        else:
            _, first, end, scanned = _scan_packets(container, video, name)
            duration, source = (end - first if end is not None else 0.0), "packets"
            frame_count = frame_count or scanned
        if video.average_rate:
            frame_rate, rate_source = float(video.average_rate), "video_stream"
        elif frame_count and duration:
            frame_rate, rate_source = frame_count / duration, "video_stream"
        elif video.guessed_rate:
            frame_rate, rate_source = float(video.guessed_rate), "container"
        else:
            _, first, end, scanned = _scan_packets(container, video, name)
            span = (end - first) if end is not None else 0.0
            frame_rate, rate_source = (scanned / span if span > 0 else 0.0), "packets"
        rotation = _rotation(video.metadata)
        width, height = context.width, context.height
        if rotation in (90, 270):
            width, height = height, width
        return MediaInfo(
            path=name,
            format_name=container.format.name,
            size_bytes=size,
            duration=float(duration),
            duration_source=source,
            has_video=True,
            has_audio=bool(audios),
            width=width,
            height=height,
            coded_width=context.width,
            coded_height=context.height,
            rotation=rotation,
            frame_rate=frame_rate,
            frame_rate_source=rate_source,
            start_time=_seconds(video.start_time, video.time_base) or 0.0,
            video_codec=context.name,
            frame_count_header=video.frames or None,
            duration_header=header or tag or container_duration,
            **fields,
        )


def plan_for(info: MediaInfo, budget: TokenBudget | int, policy: VideoPolicy | None = None) -> VideoPlan:
    """The :func:`~omni_lmms_plugin.budget.plan_video` plan for a probed file.

    Raises :class:`MediaError` when the file has no video stream, no usable duration or frame rate, or an aspect
    ratio beyond the 200:1 the Qwen resize rule accepts; :class:`~omni_lmms_plugin.errors.BudgetError` when nothing
    fits the budget.
    """
    if not info.has_video:
        raise MediaError(info.path, "no video stream (audio-only file?): load it with load_audio")
    if not (info.width > 0 and info.height > 0):
        raise MediaError(info.path, f"invalid frame size {info.width}x{info.height}")
    ratio = max(info.width, info.height) / min(info.width, info.height)
    if ratio > MAX_ASPECT_RATIO:
        raise MediaError(
            info.path,
            f"pathological aspect ratio {info.width}x{info.height} ({ratio:.1f}:1) exceeds the {MAX_ASPECT_RATIO}:1 "
            "the Qwen resize rule accepts; crop or pad the video first",
        )
    if not (info.duration > 0 and math.isfinite(info.duration)):
        raise MediaError(info.path, f"no usable duration (got {info.duration} s from {info.duration_source})")
    if not info.frame_rate > 0:
        raise MediaError(info.path, f"no usable frame rate (got {info.frame_rate})")
    return plan_video(
        duration=info.duration,
        frame_rate=info.frame_rate,
        width=info.width,
        height=info.height,
        has_audio=info.has_audio,
        budget=budget,
        policy=policy,
    )


# --------------------------------------------------------------------------------------------------------------------
# Video decoding
# --------------------------------------------------------------------------------------------------------------------


class _Decoder:
    """Frames of one video stream with their times (seconds from the stream start), decoding forward from wherever
    the container was last positioned. Checks the deadline as it goes and counts decoded frames."""

    def __init__(self, container, stream, name: str, deadline: float) -> None:
        self.container, self.stream, self.name, self.deadline = container, stream, name, deadline
        self.time_base = stream.time_base
        self.seconds_per_tick = float(stream.time_base)  # float arithmetic per frame; Fractions are slow
        self.origin = stream.start_time or 0
        rate = stream.average_rate or stream.guessed_rate or 30
        self.frame_seconds = 1.0 / float(rate)
        self.decoded = 0

    def seek(self, seconds: float) -> None:
        """Position the demuxer on the keyframe at or before ``seconds`` (the decoder is flushed)."""
        offset = self.origin + int(round(seconds / self.time_base))
        try:
            self.container.seek(max(offset, self.origin), backward=True, any_frame=False, stream=self.stream)
        except av.FFmpegError as exc:
            raise MediaError(self.name, f"cannot seek to {seconds:.3f} s: {exc}") from exc

    def frames(self):
        """Yield ``(frame, seconds)`` in presentation order until the end of the stream."""
        previous = None
        count = 0
        try:
            for packet in self.container.demux(self.stream):
                count += 1
                if count % _DEADLINE_EVERY == 0:
                    self.check_deadline()
                for frame in packet.decode():
                    self.decoded += 1
                    if frame.pts is not None:
                        seconds = (frame.pts - self.origin) * self.seconds_per_tick
                    else:
                        seconds = (previous if previous is not None else 0.0) + self.frame_seconds
                    previous = seconds
                    yield frame, seconds
        except av.FFmpegError as exc:
            raise MediaError(self.name, f"undecodable video data after {self.decoded} frames: {exc}") from exc

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeoutError(
                self.name, f"decoding took longer than decode_timeout (after {self.decoded} decoded frames)"
            )


def _to_rgb(frame, height: int, width: int) -> np.ndarray:
    """A view of ``frame`` converted to RGB at ``height x width`` (swscale, one pass); valid until copied."""
    rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation=RESIZE_INTERPOLATION)
    plane = rgb.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(height, plane.line_size)
    return rows[:, : width * 3].reshape(height, width, 3)


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    # The rotate tag is clockwise degrees to apply for display.
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90))) if rotation else image


def _decode_exact(decoder: _Decoder, targets: tuple[float, ...], keys: list[float] | None, store) -> list[float]:
    """For each target time (ascending), the last frame whose time is <= target (the frame on screen at that time).

    Decodes forward while the next target's keyframe is not ahead of the decoder; seeks to that keyframe when it is
    (and skips at least ``_SEEK_MIN_SKIP_FRAMES`` frames). Without keyframe times it decodes sequentially.
    """
    eps = 1e-6
    margin = _SEEK_MIN_SKIP_FRAMES * decoder.frame_seconds
    times: list[float] = []
    index = 0
    position = -math.inf  # time of the last decoded frame
    at_start = True
    fallback_keys = 0  # extra keyframes to step back when a seek lands past its target
    sought_key = -math.inf  # keyframe of the latest seek: never seek to it (or before it) again, except to step back
    last_end = None
    while index < len(targets):
        decoder.check_deadline()
        target = targets[index]
        if keys:
            slot = max(bisect.bisect_right(keys, target + eps) - 1 - fallback_keys, 0)
            key = keys[slot]
            if (fallback_keys or key > sought_key + eps) and key > position + margin and (not at_start or slot > 0):
                decoder.seek(key)
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
            if keys:
                slot = max(bisect.bisect_right(keys, targets[index] + eps) - 1, 0)
                if keys[slot] > seconds + margin and keys[slot] > sought_key + eps:
                    break  # a keyframe lies ahead of us before the next target: seek to it
        else:
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
            if fallback_keys > len(keys or []):
                raise MediaError(decoder.name, f"cannot reach the frame at {target:.3f} s by seeking")
            continue
        fallback_keys = 0
    return times


def _planned_seeks(targets: tuple[float, ...], keys: list[float] | None, frame_seconds: float) -> int:
    """How many seeks :func:`_decode_exact` will make (the same rule, ignoring recovery from inexact seeks)."""
    if not keys:
        return 0
    margin = _SEEK_MIN_SKIP_FRAMES * frame_seconds
    seeks, position = 0, keys[0]
    for target in targets:
        key = keys[max(bisect.bisect_right(keys, target + 1e-6) - 1, 0)]
        if key > position + margin:
            seeks += 1
        position = max(position, target)
    return seeks


def _decode_keyframes(
    decoder: _Decoder, targets: tuple[float, ...], keys: list[float], store, end: float | None
) -> list[float]:
    """For each target, the keyframe nearest to it (ties go to the earlier one), one seek and one frame per keyframe.
    ``end`` is where the stream's packets end: a target past it means the file is shorter than planned."""
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
        decoder.seek(key)
        for frame, seconds in decoder.frames():
            if seconds + 1e-6 >= key:
                store(index, frame)
                cache[key] = (index, seconds)
                times.append(seconds)
                break
        else:
            raise MediaError(decoder.name, f"no frame decoded at the keyframe at {key:.3f} s")
    return times


# --------------------------------------------------------------------------------------------------------------------
# Audio decoding
# --------------------------------------------------------------------------------------------------------------------


def _decode_audio(
    container, stream, name: str, *, origin: float, start: float, samples: int, pad: bool, deadline: float
) -> np.ndarray:
    """Mono float32 16 kHz samples of ``[start, start + samples / 16000)`` seconds, times measured from ``origin``
    (seconds on the stream's clock). Exactly ``samples`` samples (zero-padded) with ``pad``; else at most that many,
    ending where the track ends."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_SAMPLE_RATE)
    chunks: list[tuple[int, np.ndarray]] = []
    position: int | None = None  # output index of the next resampled sample
    # No seek: audio decodes at hundreds of times real time, and after a seek some decoders (MP3) label samples
    # with timestamps that ignore the encoder delay. Decoding from the start and cutting by pts is exact.
    container.seek(0, backward=True, stream=stream)

    def take(frames) -> bool:
        nonlocal position
        for out in frames:
            data = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            lo, hi = max(0, -position), len(data)
            hi = min(hi, samples - position)
            if hi > lo:
                chunks.append((position + lo, data[lo:hi].copy()))
            position += len(data)
            if position >= samples:
                return True
        return False

    done = False
    count = 0
    try:
        for packet in container.demux(stream):
            count += 1
            if count % _DEADLINE_EVERY == 0 and time.monotonic() > deadline:
                raise DecodeTimeoutError(name, "decoding the audio took longer than decode_timeout")
            for frame in packet.decode():
                if position is None:
                    if frame.pts is None:
                        position = 0
                    else:
                        seconds = float(frame.pts * frame.time_base) - origin
                        position = int(round((seconds - start) * AUDIO_SAMPLE_RATE))
                if take(resampler.resample(frame)):
                    done = True
                    break
            if done:
                break
        if not done and position is not None:
            take(resampler.resample(None))
    except av.FFmpegError as exc:
        raise MediaError(name, f"undecodable audio data: {exc}") from exc
    total = samples if pad else max((at + len(chunk) for at, chunk in chunks), default=0)
    waveform = np.zeros(total, dtype=np.float32)
    for at, chunk in chunks:
        waveform[at : at + len(chunk)] = chunk
    return waveform


def load_audio(
    path: str | os.PathLike,
    *,
    start: float = 0.0,
    seconds: float | None = None,
    max_seconds: float = 300.0,
    decode_timeout: float = 120.0,
) -> np.ndarray:
    """Mono float32 16 kHz waveform of ``[start, start + seconds)`` of the first audio stream (of an audio-only file or
    a video's track), at most ``max_seconds`` long. With ``seconds`` given the result has exactly
    ``round(min(seconds, max_seconds) * 16000)`` samples (zero-padded past the end of the track)."""
    if start < 0 or (seconds is not None and seconds <= 0) or max_seconds <= 0:
        raise ConfigError(f"need start >= 0, seconds > 0 and max_seconds > 0; got {start}, {seconds}, {max_seconds}")
    deadline = time.monotonic() + decode_timeout
    name, _ = _check_file(path)
    with _open(name) as container:
        if not container.streams.audio:
            raise MediaError(name, "no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        # Time zero is the stream's start, except that encoder priming (a negative start) stays before zero.
        origin = max(float(stream.start_time * stream.time_base), 0.0) if stream.start_time is not None else 0.0
        limit = max_seconds if seconds is None else min(seconds, max_seconds)
        waveform = _decode_audio(
            container,
            stream,
            name,
            origin=origin,
            start=start,
            samples=int(round(limit * AUDIO_SAMPLE_RATE)),
            pad=seconds is not None,
            deadline=deadline,
        )
    return waveform


# --------------------------------------------------------------------------------------------------------------------
# load_video
# --------------------------------------------------------------------------------------------------------------------


def load_video(
    path: str | os.PathLike,
    plan: VideoPlan | None = None,
    *,
    budget: TokenBudget | int | None = None,
    policy: VideoPolicy | None = None,
    decode_timeout: float = 120.0,
    seek_mode: SeekMode = "exact",
) -> LoadedVideo:
    """Decode the frames (and audio span) of ``plan``; without a plan, probe the file and plan it for ``budget``.

    ``seek_mode="exact"``: for each planned time, the frame on screen at that time (the last frame with
    ``pts <= t``), decoding forward for dense targets and seeking to the keyframe before a target when that skips
    frames, so it never decodes more than plain sequential decoding. ``seek_mode="keyframe"``: for each planned time,
    the nearest keyframe (from the packet index, no decoding), one frame per keyframe; faster, deterministic, and the
    real times are returned. Kept frames are resized once, in C, with swscale's bicubic filter to exactly
    ``plan.height x plan.width``; memory holds only the kept frames.

    Raises :class:`MediaError` (naming the file) for missing, empty, truncated, unreadable or undecodable files, a file
    without a video stream, or fewer frames than planned; :class:`DecodeTimeoutError` when decoding runs past
    ``decode_timeout`` seconds.
    """
    if seek_mode not in SEEK_MODES:
        raise ConfigError(f"Invalid seek mode ({seek_mode!r}). Supported values are {', '.join(SEEK_MODES)}.")
    if not decode_timeout > 0:
        raise ConfigError(f"decode_timeout={decode_timeout} must be a positive number of seconds")
    started = time.monotonic()
    deadline = started + decode_timeout
    name, _ = _check_file(path)
    if plan is None:
        if budget is None:
            raise ConfigError("load_video needs a plan, or a budget to plan with (budget=TokenBudget(...) or an int)")
        info = probe(name)
        plan = plan_for(info, budget, policy)
        rotation = info.rotation
    elif budget is not None or policy is not None:
        raise ConfigError("pass either a plan or budget/policy to load_video, not both")
    else:
        rotation = None
    notes: list[str] = []

    with _open(name) as container:
        if not container.streams.video:
            raise MediaError(name, "no video stream (audio-only file?): load it with load_audio")
        stream = container.streams.video[0]
        if rotation is None:
            rotation = _rotation(stream.metadata)
        decoder = _Decoder(container, stream, name, deadline)
        height, width = plan.height, plan.width
        out_h, out_w = (width, height) if rotation in (90, 270) else (height, width)
        frames = np.empty((plan.frames, height, width, 3), dtype=np.uint8)

        def store(index: int, frame, copy_from: int | None = None) -> None:
            if copy_from is not None:
                frames[index] = frames[copy_from]
            else:
                frames[index] = _rotate(_to_rgb(frame, out_h, out_w), rotation)

        targets = tuple(sorted(plan.frame_times))
        if list(targets) != list(plan.frame_times):
            raise ConfigError("plan.frame_times must be in ascending order")
        keys: list[float] | None = None
        end: float | None = None
        mean_gap = (targets[-1] - targets[0]) / max(len(targets) - 1, 1)
        if seek_mode == "keyframe" or mean_gap > _SEEK_MIN_SKIP_FRAMES * decoder.frame_seconds:
            keys, _, end, _ = _scan_packets(container, stream, name, deadline)
            decoder.seek(0.0)
        # Frame threading pays off on long forward runs, but every seek flushes its pipeline (measured on 2 cores:
        # 30% to 40% slower when seeking per target), so it is used only when no seek is planned.
        seeks = len(targets) if seek_mode == "keyframe" else _planned_seeks(targets, keys, decoder.frame_seconds)
        stream.thread_type = "SLICE" if seeks else "AUTO"
        if seek_mode == "exact":
            times = _decode_exact(decoder, targets, keys, store)
        else:
            times = _decode_keyframes(decoder, targets, keys or [], store, end)
        if len(times) != plan.frames:
            raise MediaError(name, f"decoded {len(times)} of {plan.frames} planned frames")

        audio = None
        if plan.audio_samples > 0:
            if not container.streams.audio:
                notes.append("the plan asked for audio but the file has no audio track: audio is None")
            else:
                audio_stream = container.streams.audio[0]
                audio = _decode_audio(
                    container,
                    audio_stream,
                    name,
                    origin=float((stream.start_time or 0) * stream.time_base),
                    start=plan.audio_start,
                    samples=plan.audio_samples,
                    pad=True,
                    deadline=deadline,
                )
        decoded = decoder.decoded

    span = times[-1] - times[0]
    sample_fps = (len(times) - 1) / span if len(times) > 1 and span > 0 else plan.sample_fps
    return LoadedVideo(
        path=name,
        frames=frames,
        audio=audio,
        sample_fps=sample_fps,
        plan=plan,
        frame_times=tuple(times),
        decode_seconds=time.monotonic() - started,
        seek_mode=seek_mode,
        decoded_frames=decoded,
        notes=tuple(notes),
    )
