"""Probing a media file: its metadata without decoding more than one frame, and the plan for a token budget.

Numbers read from headers are kept apart from numbers computed from the packets; each planning number says where it
came from. Times are float seconds from the start of the video stream.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av

from ..budget import MAX_ASPECT_RATIO, QWEN25_OMNI, Geometry, TokenBudget
from ..errors import MediaError
from ..video_plan import VideoPlan, VideoPolicy, linspace_indices, plan_video
from ._container import MAX_CODED_PIXELS, check_file, open_container, scan_packets, seconds_of

__all__ = ["MediaInfo", "probe", "plan_probed_video", "display_rotation"]


@dataclass(frozen=True)
class MediaInfo:
    """Metadata of one media file, read without decoding frames.

    ``*_header`` fields are what the container says (None when it says nothing: Matroska/WebM carry no frame count);
    ``duration`` and ``frame_rate`` are the numbers to plan with, and ``duration_source`` / ``frame_rate_source`` say
    where each came from (``"video_stream"``, ``"stream_tag"``, ``"container"``, ``"audio_stream"`` or ``"packets"``,
    the last meaning computed by demuxing packet timestamps). ``width`` x ``height`` is the display size, after the
    stream's rotation (display matrix or legacy tag); ``coded_width`` x ``coded_height`` the size the decoder outputs.
    ``total_frames`` is the frame count to sample from, with ``total_frames_source``: ``"header"`` (the container's
    count, as decord and torchcodec read it), ``"packets"`` (the packets shown, counted by demuxing: AVI, whose header
    also counts the encoder's B-frame delay; a file whose header count disagrees with its duration, as in an MP4 cut by
    an edit list; a file without a duration) or ``"duration_x_rate"`` (Matroska and WebM carry no count:
    ``round(duration * frame_rate)``); frame times are then ``index / frame_rate``.
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
    total_frames: int = 0
    total_frames_source: str = ""
    start_time: float = 0.0
    video_codec: str | None = None
    frame_count_header: int | None = None
    duration_header: float | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration_header: float | None = None


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


def _tag_rotation(metadata: dict[str, str]) -> int:
    """The legacy ``rotate`` stream tag (clockwise degrees), which FFmpeg 7 no longer sets when it reads a file."""
    try:
        return int(round(float(metadata.get("rotate", "0")))) % 360
    except ValueError:
        return 0


def display_rotation(frame: av.VideoFrame | None, metadata: dict[str, str]) -> int:
    """Clockwise degrees (0, 90, 180, 270) to turn a decoded frame upright: the display matrix FFmpeg attaches to each
    frame (``frame.rotation`` is counter-clockwise), else the legacy ``rotate`` tag."""
    if frame is not None and frame.rotation:
        return int(round(-frame.rotation)) % 360
    return _tag_rotation(metadata)


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    """The first decodable frame of ``stream`` (its side data carries the display matrix), or None."""
    container.seek(0, backward=True, any_frame=False, stream=stream)
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                return frame
    except av.FFmpegError:
        return None
    return None


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read the metadata of a media file, decoding at most its first frame (for the display matrix).

    Duration comes from the video stream header, then Matroska's track ``DURATION`` tag, then the container header,
    and only when all are missing from demuxing the packets' timestamps. Raises :class:`MediaError` for a missing,
    empty or unreadable file, and for a coded frame larger than ``MAX_CODED_PIXELS`` (checked before decoding).
    """
    name, size = check_file(path)
    with open_container(name) as container:
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
                audio_duration_header=seconds_of(audio.duration, audio.time_base) or _duration_tag(audio.metadata),
            )
        if not videos:
            duration = fields["audio_duration_header"] or container_duration
            source = "audio_stream" if fields["audio_duration_header"] else "container"
            if not duration:
                scan = scan_packets(container, audios[0], name)
                duration, source = (scan.end - scan.first if scan.end is not None else 0.0), "packets"
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
        header = seconds_of(video.duration, video.time_base)
        tag = _duration_tag(video.metadata)
        # The packet index, demuxed at most once (a second scan would start at the end of the stream).
        packets = functools.cache(functools.partial(scan_packets, container, video, name))

        frame_count = video.frames or None
        count_source = "header"
        trimmed = bool(frame_count and header and video.average_rate) and (
            abs(frame_count - header * float(video.average_rate)) > 1
        )
        if frame_count and (container.format.name == "avi" or trimmed):
            # The header counts frames the decoder does not show: an AVI's also counts the encoder's B-frame delay
            # (151 frames for the 150 an MPEG-4 file with B-frames shows), and an MP4 cut by an edit list keeps its
            # cut samples (240 frames in 7 s at 30 fps: 210 shown). decord counts the frames shown: count the
            # packets shown.
            frame_count, count_source = packets().count or frame_count, "packets"
        if header:
            duration, source = header, "video_stream"
        elif tag:
            duration, source = tag, "stream_tag"
        elif container_duration:
            duration, source = container_duration, "container"
        else:
            scan = packets()
            duration, source = (scan.end - scan.first if scan.end is not None else 0.0), "packets"
            if not frame_count:
                frame_count, count_source = scan.count, "packets"
        if video.average_rate:
            frame_rate, rate_source = float(video.average_rate), "video_stream"
        elif frame_count and duration:
            frame_rate, rate_source = frame_count / duration, "video_stream"
        elif video.guessed_rate:
            frame_rate, rate_source = float(video.guessed_rate), "container"
        else:
            scan = packets()
            span = (scan.end - scan.first) if scan.end is not None else 0.0
            frame_rate, rate_source = (scan.count / span if span > 0 else 0.0), "packets"
        if frame_count:
            total_frames, total_source = frame_count, count_source
        else:
            total_frames, total_source = max(1, round(duration * frame_rate)), "duration_x_rate"
        if context.width * context.height > MAX_CODED_PIXELS:
            raise MediaError(
                name,
                f"coded frame size {context.width}x{context.height} exceeds {MAX_CODED_PIXELS} pixels, the most the "
                "loader decodes (each decoded frame is held at this size before resizing); downscale the file first",
            )
        rotation = display_rotation(_first_frame(container, video), video.metadata)
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
            total_frames=total_frames,
            total_frames_source=total_source,
            start_time=seconds_of(video.start_time, video.time_base) or 0.0,
            video_codec=context.name,
            frame_count_header=video.frames or None,
            duration_header=header or tag or container_duration,
            **fields,
        )


def plan_probed_video(
    info: MediaInfo,
    budget: TokenBudget | int,
    policy: VideoPolicy | None = None,
    *,
    frame_indices: Callable[[int, int], Sequence[int]] = linspace_indices,
    geometry: Geometry = QWEN25_OMNI,
) -> VideoPlan:
    """The :func:`~omni_lmms_plugin.video_plan.plan_video` plan for a probed file.

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
        total_frames=info.total_frames or None,
        frame_indices=frame_indices,
        geometry=geometry,
    )
