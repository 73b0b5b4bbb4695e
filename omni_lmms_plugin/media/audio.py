"""Audio decoding with PyAV: any audio stream (an audio file's or a video's own track) to mono float32 at 16 kHz, as
the reference makes it.

The reference is qwen-omni-utils' ``process_audio_info`` (and lmms-eval's built-in Qwen2.5-Omni adapter, which resamples
a task's waveform with librosa before handing it over). librosa reads a video's track, and any file libsndfile cannot
read, through FFmpeg as interleaved 16-bit samples (audioread, ``-f s16le``) scaled by 1/32768; a file libsndfile
reads (WAV, FLAC, Ogg, MP3, AIFF, ...) as floats (soundfile). It averages the channels (``librosa.to_mono``) and
resamples to 16 kHz with soxr's high quality (``librosa.resample``'s default ``soxr_hq``). Here each decoded frame is
converted by FFmpeg's own converter to the same sample format (16-bit for a video's track, floats for a file of a
format libsndfile reads), averaged over its channels the same way and fed to a soxr stream of the same quality, whose
output equals the one-shot resampling bit for bit. PCM files get the reference's values exactly; an MP3 file is decoded
by FFmpeg here and by libsndfile's mpg123 there, which differ by about 1e-5.
"""

from __future__ import annotations

import os
import time
from typing import Literal

import av
import numpy as np
import soxr

from ..budget import AUDIO_SAMPLE_RATE
from ..errors import ConfigError, DecodeTimeoutError, MediaError
from ._container import DEADLINE_EVERY, check_file, open_container

__all__ = ["load_audio", "decode_audio", "mono_16k"]

# librosa.resample's default res_type, "soxr_hq".
_SOXR_QUALITY = "HQ"
# librosa's buf_to_float for 16-bit samples.
_S16_SCALE = 1.0 / 32768
# FFmpeg's names of the container formats libsndfile reads, which librosa reads as floats (soundfile); librosa reads
# every other file, and a video's track, through FFmpeg as 16-bit samples.
_SOUNDFILE_FORMATS = frozenset({"wav", "w64", "flac", "ogg", "mp3", "aiff", "au", "caf", "voc", "rf64"})
# Silence before a late track is fed to the resampler this many native samples at a time.
_SILENCE_CHUNK = 1 << 16

SampleFormat = Literal["s16", "flt"]


def _channel_mean(interleaved: np.ndarray, channels: int) -> np.ndarray:
    """Mono float32 from interleaved samples: the channels added in order, then divided by their count. That is what
    ``librosa.to_mono`` (``np.mean`` over its (channels, samples) view) computes, bit for bit, at a fifth of the time
    of a reduction over such a short axis."""
    if channels == 1:
        return interleaved
    mono = interleaved[0::channels].copy()
    for channel in range(1, channels):
        mono += interleaved[channel::channels]
    mono /= channels
    return mono


def mono_16k(waveform: np.ndarray, rate: int) -> np.ndarray:
    """An in-memory waveform as mono float32 at 16 kHz: channels averaged (the shorter axis is channels), resampled as
    lmms-eval's built-in adapter resamples a task's waveform (``librosa.resample``, soxr high quality), without
    librosa's final trim or pad to ``ceil(n * ratio)`` samples: the caller cuts to its planned length."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim > 1:
        waveform = waveform.mean(axis=0 if waveform.shape[0] < waveform.shape[-1] else -1)
    if rate == AUDIO_SAMPLE_RATE:
        return waveform
    return soxr.resample(waveform, rate, AUDIO_SAMPLE_RATE, quality=_SOXR_QUALITY)


def decode_audio(
    container,
    stream,
    name: str,
    *,
    origin: float,
    start: float,
    samples: int,
    pad: bool,
    deadline: float,
    sample_format: SampleFormat = "s16",
) -> np.ndarray:
    """Mono float32 16 kHz samples of ``[start, start + samples / 16000)`` seconds, times measured from ``origin``
    (seconds on the stream's clock). Exactly ``samples`` samples (zero-padded) with ``pad``; else at most that many,
    ending where the track ends. ``sample_format`` is the format the decoded samples pass through before they are
    averaged: ``s16`` as the reference reads a video's track, ``flt`` as it reads a file libsndfile reads.

    The track is placed by its first frame's timestamp: samples before ``origin`` (encoder priming) are dropped and a
    track that starts after ``origin`` is preceded by silence, both at the track's own rate, before resampling. The
    resampler runs from ``origin`` (for a track that starts there, from its first sample, as the reference reads it)
    and decoding stops once the planned span is out: the samples a stream resampler gives out are final. A track whose
    layout or rate changes midway (a broadcast switching between 5.1 and stereo) is converted to its first frame's,
    as FFmpeg's tool converts it for the reference.

    ``container`` must be freshly opened, at its start, as the reference's reader reads it: a seek to the start skips
    the packet before the first one shown (AAC's priming in MP4), and the decoder then gets the first frames wrong
    (by up to half the full scale on the first, for about 70 ms). A seek anywhere else would lose the samples' count
    that places them (MP3 decoders label samples after a seek ignoring the encoder delay)."""
    first = int(round(start * AUDIO_SAMPLE_RATE))  # index of the first planned sample, at 16 kHz from origin
    end = first + samples
    chunks: list[tuple[int, np.ndarray]] = []
    produced = 0  # 16 kHz samples the resampler has given out, from origin
    resampler: soxr.ResampleStream | None = None
    converter: av.AudioResampler | None = None
    converts_from = None  # (format, layout, rate) of the frames the converter was made for
    layout, rate, channels = None, 0, 1  # the track's output layout and rate: its first frame's
    scale = _S16_SCALE if sample_format == "s16" else 1.0
    skip = 0  # native samples still to drop (before origin)

    def feed(mono: np.ndarray, last: bool) -> bool:
        """Resample ``mono`` (native rate), keep what falls in the planned span; True once the span is complete."""
        nonlocal produced
        out = resampler.resample_chunk(mono, last=last)
        lo, hi = max(first - produced, 0), min(end - produced, len(out))
        if hi > lo:
            chunks.append((produced + lo - first, out[lo:hi]))
        produced += len(out)
        return produced >= end

    def converted(frame) -> list:
        """``frame`` (None: the end) in ``sample_format``, interleaved, at the track's first layout and rate."""
        nonlocal converter, converts_from
        if frame is None:
            return converter.resample(None)
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if source == converts_from:
            return converter.resample(frame)
        pending = converter.resample(None) if converter is not None else []
        converter = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        converts_from = source
        return pending + converter.resample(frame)

    def take(frames) -> bool:
        nonlocal skip
        for out in frames:
            mono = _channel_mean(out.to_ndarray().reshape(-1).astype(np.float32) * scale, channels)
            if skip:
                dropped = min(skip, len(mono))
                mono, skip = mono[dropped:], skip - dropped
            if len(mono) and feed(mono, last=False):
                return True
        return False

    def silence(count: int) -> bool:
        """``count`` native samples of silence before a late track, fed in bounded chunks; stops once the span is
        complete (a track stamped far past the span costs no memory)."""
        while count > 0:
            chunk = min(count, _SILENCE_CHUNK)
            if feed(np.zeros(chunk, dtype=np.float32), last=False):
                return True
            count -= chunk
        return False

    done = False
    count = 0
    try:
        for packet in container.demux(stream):
            count += 1
            if count % DEADLINE_EVERY == 0 and time.monotonic() > deadline:
                raise DecodeTimeoutError(name, "decoding the audio took longer than decode_timeout")
            for frame in packet.decode():
                if resampler is None:
                    layout, rate, channels = frame.layout, frame.sample_rate, len(frame.layout.channels)
                    resampler = soxr.ResampleStream(rate, AUDIO_SAMPLE_RATE, 1, dtype="float32", quality=_SOXR_QUALITY)
                    lead = 0 if frame.pts is None else float(frame.pts * frame.time_base) - origin
                    lead_samples = int(round(lead * rate))
                    skip = max(-lead_samples, 0)
                    done = silence(lead_samples)
                if done or take(converted(frame)):
                    done = True
                    break
            if done:
                break
        if not done and resampler is not None:
            take(converted(None))
            feed(np.zeros(0, dtype=np.float32), last=True)  # the track's end: the resampler's last samples
    except (av.FFmpegError, ValueError) as exc:  # PyAV raises ValueError for frames its converter cannot take
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
    """Mono float32 16 kHz waveform of ``[start, start + seconds)`` of the first audio stream of a file (read as the
    reference reads an audio file: floats from a format libsndfile reads, else 16-bit samples), at most
    ``max_seconds`` long. With ``seconds`` given the result has exactly
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
        readable_by_libsndfile = not _SOUNDFILE_FORMATS.isdisjoint(container.format.name.split(","))
        waveform = decode_audio(
            container,
            stream,
            name,
            origin=origin,
            start=start,
            samples=int(round(limit * AUDIO_SAMPLE_RATE)),
            pad=seconds is not None,
            deadline=deadline,
            sample_format="flt" if readable_by_libsndfile else "s16",
        )
    return waveform
