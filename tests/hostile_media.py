"""Broken, unusual and hostile media files for the tests (``omni-lmms demo`` needs none of them, so they live here).

The ordinary writers (:func:`~omni_lmms_plugin.synthetic_media.write_video`, ``write_audio``) stay in the package;
these build on them or on raw bytes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np

from omni_lmms_plugin.synthetic_media import AudioSignal, write_audio, write_video


def write_text_as_video(path: str | os.PathLike, text: str = "this is a text file, not a video\n") -> Path:
    """A plain text file under a video name (e.g. ``notes.mp4``)."""
    path = Path(path)
    path.write_text(text * 64)
    return path


def write_zero_byte_file(path: str | os.PathLike) -> Path:
    """An empty file under a media name."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def truncate_file(source: str | os.PathLike, target: str | os.PathLike, *, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``source``'s bytes to ``target`` (a download cut short)."""
    data = Path(source).read_bytes()
    target = Path(target)
    target.write_bytes(data[: max(1, int(len(data) * keep))])
    return target


def corrupt_file(
    source: str | os.PathLike, target: str | os.PathLike, *, start: float = 0.1, end: float = 1.0, seed: int = 0
) -> Path:
    """Copy ``source`` to ``target`` with the bytes between fractions ``start`` and ``end`` replaced by noise."""
    data = bytearray(Path(source).read_bytes())
    lo, hi = int(len(data) * start), int(len(data) * end)
    data[lo:hi] = np.random.default_rng(seed).integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    target = Path(target)
    target.write_bytes(bytes(data))
    return target


def write_one_frame_video(path: str | os.PathLike, *, width: int = 320, height: int = 240, fps: float = 30.0) -> Path:
    """A video holding a single frame (and no audio)."""
    return write_video(path, width=width, height=height, fps=fps, duration=1.0 / fps, audio=False)


def write_extreme_aspect_video(
    path: str | os.PathLike, *, width: int = 1000, height: int = 24, duration: float = 1.0
) -> Path:
    """A very elongated video, unmarked (the markers need room). 1000x24 (41.7:1) is still accepted by Qwen's resize
    rule; pass e.g. 5000x24 (208:1) for one beyond its 200:1 limit."""
    return write_video(path, width=width, height=height, duration=duration, audio=False, frame_marker=None)


def write_long_audio(path: str | os.PathLike, *, minutes: float = 10.0, signal: AudioSignal = "chirp") -> Path:
    """A long audio-only track (default ten minutes of chirp)."""
    return write_audio(path, duration=60.0 * minutes, signal=signal)


def write_video_without_audio(path: str | os.PathLike, **options) -> Path:
    """A marked video with no audio stream (same options as :func:`write_video`)."""
    return write_video(path, audio=False, **options)


# --------------------------------------------------------------------------------------------------------------------
# Hostile to host memory: small on disk, huge when decoded or as claimed
# --------------------------------------------------------------------------------------------------------------------


def write_static_video(
    path: str | os.PathLike, *, width: int, height: int, frames: int, fps: float = 30.0, gop: int | None = None
) -> Path:
    """``frames`` identical H.264 frames (x264 ultrafast, no B-frames): a static picture codes to a few bytes per
    frame, so a 4K or 8K video of hundreds of frames is kilobytes on disk. ``gop`` frames between keyframes (default:
    x264's); ``gop=frames`` gives one keyframe for the whole video."""
    path = Path(path)
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    picture[: height // 2] = 200
    picture[:, : width // 3, 1] = 90
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        if gop is not None:
            stream.codec_context.gop_size = gop
        for index in range(frames):
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_size_claim(path: str | os.PathLike, *, width: int = 60000, height: int = 60000) -> Path:
    """A 4 KB YUV4MPEG2 file whose header claims ``width x height`` frames (60000x60000 is 5.4 GB per frame)."""
    path = Path(path)
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + bytes(4096))
    return path


def write_duration_claim(path: str | os.PathLike, *, seconds: float = 1e9) -> Path:
    """A 2-second 30 fps Matroska video whose segment header claims ``seconds`` (1e9 s: 3e10 frames at its rate).

    The Segment Info ``Duration`` float (EBML id 0x4489, milliseconds) is rewritten and the per-track ``DURATION``
    tags renamed so readers fall back to the claimed container duration."""
    path = Path(path)
    write_video(path, width=320, height=240, duration=2.0, audio=False)
    data = bytearray(path.read_bytes())
    at = data.find(bytes([0x44, 0x89, 0x88]))  # Duration, 8-byte float
    if at < 0:
        raise RuntimeError(f"{path}: no 8-byte Segment Info Duration to rewrite")
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000.0)
    path.write_bytes(bytes(data).replace(b"DURATION", b"XURATION"))
    return path
