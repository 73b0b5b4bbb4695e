"""Real media files for tests, the demo and the benchmarks, written with PyAV.

Every video frame can carry its own index as a binary code of large solid blocks (``frame_marker="index"``), so a
frame's identity survives lossy compression and resizing; :func:`read_frame_index` reads it back from an RGB array.
Layout of a marked frame (sizes relative to the frame):

* top two thirds: ``MARKER_ROWS x MARKER_COLS`` cells, one bit each, most significant bit first (row-major); a set bit
  is white (luma 235), a clear bit black (luma 16);
* bottom third: a moving band pattern that gives the encoder something realistic to code (it carries no data).

``encoding="realistic"`` lays a panning colour texture with film grain over the whole frame and encodes with x264's
``veryfast`` preset (CABAC, deblocking, one slice per frame, B-frames when ``bframes`` asks for them): the bitrate and decoding cost of a
streamed 720p H.264 file, where the default (``"fast"``: flat grey, ``ultrafast``, no B-frames) decodes about ten
times cheaper than real videos do.

Audio signals are functions of time in seconds (``"tone"``, ``"chirp"``, ``"silence"`` or any callable
``f(t: np.ndarray) -> np.ndarray``), so a test can tell which part of the track it got back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

__all__ = [
    "MARKER_ROWS",
    "MARKER_COLS",
    "MAX_MARKED_FRAMES",
    "AudioSignal",
    "Encoding",
    "write_video",
    "write_audio",
    "read_frame_index",
    "frame_schedule",
    "chirp_frequency",
]

MARKER_ROWS = 2
MARKER_COLS = 8
MAX_MARKED_FRAMES = 2 ** (MARKER_ROWS * MARKER_COLS)  # 65,536: 36 minutes at 30 fps

# Chirp defaults: a linear sweep across the whole track, below the 8 kHz Nyquist limit of 16 kHz audio.
CHIRP_START_HZ = 200.0
CHIRP_END_HZ = 3800.0

AudioSignal = Literal["tone", "chirp", "silence"] | Callable[[np.ndarray], np.ndarray]
Encoding = Literal["fast", "realistic"]

# x264 preset per encoding.
_X264_PRESETS: dict[str, str] = {"fast": "ultrafast", "realistic": "veryfast"}
# One slice per frame, as x264's own defaults (frame threads) write it: slices would let one decoder use several cores.
_X264_EXTRA: dict[str, str] = {"fast": "", "realistic": ":sliced-threads=0"}
# The realistic texture: its horizontal period (pixels) and pan speed (pixels per frame), and the number of grain
# frames cycled through (a prime, so the grain never lines up with a GOP).
_TEXTURE_PERIOD = 512
_TEXTURE_PAN = 3
_GRAIN_FRAMES = 7
_CONTAINERS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "aac"),
    ".m4v": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "aac"),
    ".webm": ("libvpx", "libopus"),
    ".avi": ("mpeg4", "libmp3lame"),
    ".ts": ("libx264", "aac"),
}
_AUDIO_CODECS: dict[str, str] = {
    ".wav": "pcm_s16le",
    ".m4a": "aac",
    ".mp3": "libmp3lame",
    ".flac": "flac",
    ".ogg": "libvorbis",
    ".opus": "libopus",
    ".mka": "aac",
    ".aac": "aac",  # raw ADTS: such streams can be joined end to end
}
# VFR frame durations cycle through these multiples of 1/fps (mean 1.0), so pts are irregular but the average rate holds.
_VFR_PATTERN = (0.5, 1.5, 1.0, 0.25, 1.75, 1.0)
# Time base used for VFR pts (containers may rescale it, e.g. Matroska to milliseconds).
_VFR_TIME_BASE = Fraction(1, 90_000)


# --------------------------------------------------------------------------------------------------------------------
# Frame markers
# --------------------------------------------------------------------------------------------------------------------


def _cell_bounds(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every marker cell, most significant bit first."""
    code_height = (2 * height) // 3
    bounds = []
    for row in range(MARKER_ROWS):
        y0, y1 = row * code_height // MARKER_ROWS, (row + 1) * code_height // MARKER_ROWS
        for col in range(MARKER_COLS):
            x0, x1 = col * width // MARKER_COLS, (col + 1) * width // MARKER_COLS
            bounds.append((y0, y1, x0, x1))
    return bounds


def read_frame_index(rgb: np.ndarray) -> int:
    """The index a marked frame carries, read from an RGB (or grey) array of any size (``H x W`` at least 6 x 16).

    Each cell's bit is the mean brightness of its central half compared with mid-grey, which survives compression,
    scaling and colour conversion.
    """
    array = np.asarray(rgb)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2)
    if array.ndim != 2 or array.shape[0] < 6 or array.shape[1] < 2 * MARKER_COLS:
        raise ValueError(f"expected an H x W (x 3) frame at least 6 x {2 * MARKER_COLS}, got shape {np.shape(rgb)}")
    value = 0
    for y0, y1, x0, x1 in _cell_bounds(*array.shape):
        dy, dx = max((y1 - y0) // 4, 0), max((x1 - x0) // 4, 0)
        cell = array[y0 + dy : max(y1 - dy, y0 + dy + 1), x0 + dx : max(x1 - dx, x0 + dx + 1)]
        value = (value << 1) | int(cell.mean() > 128)
    return value


def marked_frame(index: int, *, width: int, height: int) -> np.ndarray:
    """An ``H x W x 3`` grey RGB frame carrying ``index`` (as :func:`read_frame_index` reads it), e.g. for a folder of
    frame images."""
    luma = _FramePainter(width, height, marker=True).paint(index)[:height]
    return np.repeat(luma[:, :, None], 3, axis=2)


class _FramePainter:
    """Paints yuv420p frames into one reused buffer: marker cells on top, a moving band pattern below; with
    ``texture``, a panning colour texture with film grain over everything (the marker cells stay readable)."""

    def __init__(self, width: int, height: int, marker: bool, texture: bool = False) -> None:
        self.width, self.height, self.marker = width, height, marker
        self.buffer = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        self.cells = _cell_bounds(height, width) if marker else []
        self.band_top = (2 * height) // 3 if marker else 0
        band_height = height - self.band_top
        period = 64
        x = np.arange(width + period)
        y = np.arange(band_height)[:, None]
        self.band = (128 + 90 * np.sin(2 * np.pi * (x[None, :] / period + y / (3.0 * period)))).astype(np.uint8)
        self.period = period
        self.last_bits: int | None = None
        self.texture = _Texture(width, height) if texture else None

    def paint(self, index: int) -> np.ndarray:
        luma = self.buffer[: self.height]
        if self.texture is not None and index != self.last_bits:
            self.buffer[:] = 128
            self.last_bits = None  # the texture overwrote the marker cells: repaint them
        if self.marker and index != self.last_bits:
            for bit, (y0, y1, x0, x1) in enumerate(self.cells):
                on = (index >> (len(self.cells) - 1 - bit)) & 1
                luma[y0:y1, x0:x1] = 235 if on else 16
            self.last_bits = index
        offset = (4 * index) % self.period
        luma[self.band_top :] = self.band[:, offset : offset + self.width]
        if self.texture is not None:
            self.texture.add_to(self.buffer, index)
        return self.buffer


class _Texture:
    """A smooth random colour texture, periodic horizontally, that pans by ``_TEXTURE_PAN`` pixels a frame, plus a
    cycle of grain frames: added to a yuv420p buffer it moves the way camera footage does (motion the encoder predicts,
    residual it cannot). Luma varies by at most +-40 and grain +-3, so marker cells (16 or 235) keep their bit."""

    def __init__(self, width: int, height: int) -> None:
        rng = np.random.default_rng(0)
        rows = height * 3 // 2  # the yuv420p buffer: luma rows, then the U and V rows
        noise = rng.standard_normal((rows, _TEXTURE_PERIOD))
        # Low-pass in the frequency domain: periodic along x by construction, features a few dozen pixels wide.
        fy = np.fft.fftfreq(rows)[:, None]
        fx = np.fft.fftfreq(_TEXTURE_PERIOD)[None, :]
        smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-((fy**2 + fx**2) / 0.0004))))
        smooth *= 40 / max(np.abs(smooth).max(), 1e-9)
        repeats = -(-(width + _TEXTURE_PERIOD) // _TEXTURE_PERIOD)
        self.tile = np.tile(smooth, (1, repeats)).astype(np.int16)
        self.grain = rng.integers(-3, 4, size=(_GRAIN_FRAMES, rows, width), dtype=np.int16)
        self.width = width

    def add_to(self, buffer: np.ndarray, index: int) -> None:
        shift = (_TEXTURE_PAN * index) % _TEXTURE_PERIOD
        layer = self.tile[:, shift : shift + self.width] + self.grain[index % _GRAIN_FRAMES]
        np.clip(buffer.astype(np.int16) + layer, 0, 255, out=layer)
        buffer[:] = layer


# --------------------------------------------------------------------------------------------------------------------
# Signals and schedules
# --------------------------------------------------------------------------------------------------------------------


def chirp_frequency(t: float | np.ndarray, duration: float) -> float | np.ndarray:
    """Instantaneous frequency (Hz) at time ``t`` of the ``"chirp"`` signal of a track ``duration`` seconds long."""
    return CHIRP_START_HZ + (CHIRP_END_HZ - CHIRP_START_HZ) * np.asarray(t) / duration


def _signal_function(signal: AudioSignal, *, duration: float, tone_hz: float) -> Callable[[np.ndarray], np.ndarray]:
    if callable(signal):
        return signal
    if signal == "tone":
        return lambda t: 0.5 * np.sin(2 * np.pi * tone_hz * t)
    if signal == "chirp":
        slope = (CHIRP_END_HZ - CHIRP_START_HZ) / duration
        return lambda t: 0.5 * np.sin(2 * np.pi * (CHIRP_START_HZ * t + 0.5 * slope * t * t))
    if signal == "silence":
        return lambda t: np.zeros_like(t)
    raise ValueError(
        f"Invalid audio signal ({signal!r}). Supported values are 'tone', 'chirp', 'silence' or a callable."
    )


def frame_schedule(frames: int, fps: float, *, vfr: bool = False) -> list[float]:
    """Presentation times (seconds) :func:`write_video` gives its frames (before any container rounding)."""
    if not vfr:
        return [index / fps for index in range(frames)]
    times, now = [], 0.0
    for index in range(frames):
        times.append(now)
        now += _VFR_PATTERN[index % len(_VFR_PATTERN)] / fps
    return times


class _AudioWriter:
    """Feeds an audio encoder in fixed-size frames, in step with the video so the muxer interleaves the streams."""

    def __init__(self, container, codec: str, *, rate: int, channels: int, function, total_seconds: float) -> None:
        layout = "mono" if channels == 1 else "stereo"
        self.stream = container.add_stream(codec, rate=rate, layout=layout)
        self.container, self.rate, self.channels, self.function = container, rate, channels, function
        self.total = int(round(total_seconds * rate))
        self.written = 0
        self.chunk = 1024

    def write_until(self, seconds: float) -> None:
        target = min(self.total, int(round(seconds * self.rate)))
        while self.written < target:
            count = min(self.chunk, self.total - self.written)
            t = (self.written + np.arange(count)) / self.rate
            mono = np.asarray(self.function(t), dtype=np.float32).reshape(count)
            data = np.repeat(mono[None, :], self.channels, axis=0)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format="fltp", layout="mono" if self.channels == 1 else "stereo"
            )
            frame.sample_rate = self.rate
            frame.pts = self.written
            frame.time_base = Fraction(1, self.rate)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.written += count

    def finish(self) -> None:
        self.write_until(self.total / self.rate)
        for packet in self.stream.encode(None):
            self.container.mux(packet)


# --------------------------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------------------------


def write_video(
    path: str | os.PathLike,
    *,
    width: int = 320,
    height: int = 240,
    fps: float = 30.0,
    duration: float = 4.0,
    gop: int | None = None,
    audio: bool = True,
    audio_sample_rate: int = 16_000,
    audio_channels: int = 1,
    audio_signal: AudioSignal = "tone",
    tone_hz: float = 440.0,
    vfr: bool = False,
    frame_marker: Literal["index"] | None = "index",
    bframes: int = 0,
    encoding: Encoding = "fast",
    video_codec: str | None = None,
    audio_codec: str | None = None,
) -> Path:
    """Write a ``duration``-second video of ``round(duration * fps)`` frames (at least one) and return its path.

    The container follows the suffix: ``.mp4``/``.m4v``/``.mov``, ``.mkv`` and ``.ts`` (MPEG-TS) hold H.264 + AAC, ``.webm`` VP8 + Opus,
    ``.avi`` MPEG-4 Part 2 + MP3 (``video_codec``/``audio_codec`` override). ``gop`` is the keyframe interval in frames (default ``2 * fps``, fixed:
    no scene-cut keyframes). ``vfr`` gives frames irregular durations (see :func:`frame_schedule`). ``bframes`` > 0
    makes H.264 (and MPEG-4 Part 2) reorder frames (decode order differs from presentation order). ``encoding`` is ``"fast"`` (flat
    content, x264 ``ultrafast``) or ``"realistic"`` (textured content, x264 ``veryfast``; see the module docstring).
    Audio covers the whole duration.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CONTAINERS:
        raise ValueError(f"Unsupported video suffix ({suffix!r}). Supported values are {', '.join(_CONTAINERS)}.")
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and at least 2, got {width}x{height}")
    default_video, default_audio = _CONTAINERS[suffix]
    vcodec, acodec = video_codec or default_video, audio_codec or default_audio
    if encoding not in _X264_PRESETS:
        raise ValueError(f"Invalid encoding ({encoding!r}). Supported values are {', '.join(_X264_PRESETS)}.")
    frames = max(1, round(duration * fps))
    if frame_marker == "index" and frames > MAX_MARKED_FRAMES:
        raise ValueError(f"{frames} frames exceed the {MAX_MARKED_FRAMES} a frame marker can number")
    gop = max(1, int(gop if gop is not None else round(2 * fps)))
    times = frame_schedule(frames, fps, vfr=vfr)

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(vcodec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if vcodec == "libx264":
            stream.options = {
                "preset": _X264_PRESETS[encoding],
                "crf": "23",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:b-adapt=0"
                + _X264_EXTRA[encoding],
            }
        elif vcodec in ("libvpx", "libvpx-vp9"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "g": str(gop), "keyint_min": str(gop), "b": "1M"}
        else:
            stream.codec_context.gop_size = gop
            stream.codec_context.max_b_frames = bframes
        time_base = _VFR_TIME_BASE if vfr else Fraction(1) / rate
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        writer = None
        if audio:
            writer = _AudioWriter(
                container,
                acodec,
                rate=audio_sample_rate,
                channels=audio_channels,
                function=_signal_function(audio_signal, duration=duration, tone_hz=tone_hz),
                total_seconds=duration,
            )
        painter = _FramePainter(width, height, frame_marker == "index", texture=encoding == "realistic")
        for index, seconds in enumerate(times):
            frame = av.VideoFrame.from_ndarray(painter.paint(index), format="yuv420p")
            frame.pts = int(round(seconds / time_base)) if vfr else index
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
            if writer is not None:
                writer.write_until(seconds + 1.0 / fps)
        for packet in stream.encode(None):
            container.mux(packet)
        if writer is not None:
            writer.finish()
    return path


def write_audio(
    path: str | os.PathLike,
    *,
    duration: float,
    sample_rate: int = 16_000,
    channels: int = 1,
    signal: AudioSignal = "tone",
    tone_hz: float = 440.0,
) -> Path:
    """Write an audio-only file (``.wav``, ``.m4a``, ``.mp3``, ``.flac``, ``.ogg``, ``.opus``, ``.mka`` or ``.aac``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _AUDIO_CODECS:
        raise ValueError(f"Unsupported audio suffix ({suffix!r}). Supported values are {', '.join(_AUDIO_CODECS)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        writer = _AudioWriter(
            container,
            _AUDIO_CODECS[suffix],
            rate=sample_rate,
            channels=channels,
            function=_signal_function(signal, duration=duration, tone_hz=tone_hz),
            total_seconds=duration,
        )
        writer.chunk = 4096 if suffix in (".wav", ".flac") else 1024
        writer.finish()
    return path
