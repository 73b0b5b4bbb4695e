"""Audio decoding with PyAV: any audio stream (an audio file's or a video's own track) to mono float32 at 16 kHz."""

from __future__ import annotations

import os
import time

import av
import numpy as np

from ..budget import AUDIO_SAMPLE_RATE
from ..errors import ConfigError, DecodeTimeoutError, MediaError
from ._container import DEADLINE_EVERY, check_file, open_container

__all__ = ["load_audio", "decode_audio"]


def decode_audio(
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
            if count % DEADLINE_EVERY == 0 and time.monotonic() > deadline:
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
    name, _ = check_file(path)
    with open_container(name) as container:
        if not container.streams.audio:
            raise MediaError(name, "no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        # Time zero is the stream's start, except that encoder priming (a negative start) stays before zero.
        origin = max(float(stream.start_time * stream.time_base), 0.0) if stream.start_time is not None else 0.0
        limit = max_seconds if seconds is None else min(seconds, max_seconds)
        waveform = decode_audio(
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
