"""Parallel preparation: one video's targets split over several threads, each with its own container, give the same
frames and times as one decoder; several requests prepared at once, in order, with a bounded look-ahead."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from omni_lmms_plugin import media
from omni_lmms_plugin import synthetic_media as sm
from omni_lmms_plugin.config import AdapterConfig
from omni_lmms_plugin.errors import ConfigError
from omni_lmms_plugin.prefetch import prefetched
from omni_lmms_plugin.video_plan import VideoPolicy


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 12 s at 30 fps with a 1 s GOP: segments start mid-stream and must seek to the keyframe before their targets.
    return str(sm.write_video(tmp_path_factory.mktemp("par") / "v.mp4", width=192, height=144, duration=12.0, gop=30))


def plan_of(path: str, frames: int):
    info = media.probe(path)
    policy = VideoPolicy(fps=frames / info.duration, min_frames=frames, max_frames=frames, frame_floor=frames)
    return media.plan_probed_video(info, 10**9, policy)


@pytest.mark.parametrize("frames", [24, 200])  # sparse targets (seeks) and dense ones (forward runs)
@pytest.mark.parametrize("seek_mode", ["exact", "keyframe"])
def test_segments_decode_the_same_frames_as_one_decoder(video, frames, seek_mode):
    """Catches: a segment writing into another's rows (rows offset wrong), a segment that starts at the wrong
    keyframe or skips its first target (checked by hand: storing at ``index`` instead of ``start + index`` fails),
    times out of order."""
    plan = plan_of(video, frames)
    one = media.load_video(video, plan, seek_mode=seek_mode)
    three = media.load_video(video, plan, seek_mode=seek_mode, workers=3)
    assert three.frame_times == one.frame_times
    assert np.array_equal(three.frames, one.frames)
    assert three.decoded_frames >= len(set(three.frame_times))


@pytest.mark.parametrize("workers", [1, 2])
def test_each_segment_resizes_on_its_own_thread_and_the_caller_keeps_its_thread_count(video, monkeypatch, workers):
    """A decoding segment is one core's work: torch must resize on the segment's thread alone, not on a team as large
    as the machine beside segments that already fill the cores, and the caller's thread count must be left as it was.
    Catches (checked by hand): decoding without ``resizing_on_this_thread`` (every resize then sees torch's 2
    threads), and a limit that is not restored (the caller's thread is left at 1, with one segment)."""
    import torch

    from omni_lmms_plugin.media import video as video_module

    seen: list[tuple[str, int]] = []
    real_resize = video_module.resize_frame

    def watched_resize(*args):
        seen.append((threading.current_thread().name, torch.get_num_threads()))  # what torch's kernels will use
        real_resize(*args)

    monkeypatch.setattr(video_module, "resize_frame", watched_resize)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a team to hold back, on any machine
    try:
        media.load_video(video, plan_of(video, 24), workers=workers)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert len(seen) == 24
    assert {count for _, count in seen} == {1}
    if workers > 1:
        assert {name.split("_")[0] for name, _ in seen} == {"omni-decode"}
    assert after == 2


def test_workers_must_be_positive(video):
    with pytest.raises(ConfigError, match=r"workers=0 must be at least 1"):
        media.load_video(video, plan_of(video, 8), workers=0)


def test_prefetch_workers_prepare_at_once_in_order_and_bounded():
    """Catches: one preparation thread whatever ``workers`` says (the first two preparations wait for each other at a
    barrier: checked by hand with ``max_workers=1``, the barrier times out), results out of order, a look-ahead past
    ``max(depth, workers)``."""
    barrier = threading.Barrier(2, timeout=10)
    started: list[int] = []

    def prepare(index: int) -> int:
        started.append(index)
        if index < 2:
            barrier.wait()
        return index * 10

    seen = []
    for index, prepared in prefetched(list(range(8)), prepare, depth=1, workers=2):
        assert len(started) <= index + 1 + 2
        seen.append(prepared.get())
    assert seen == [index * 10 for index in range(8)]


def test_every_core_decodes_by_default(monkeypatch):
    """The cores are shared out among the requests prepared at once: each video is decoded in that many segments.
    Catches: a default that leaves cores idle (one segment per video) or oversubscribes them: more threads than the
    process may run on, or every rank of a machine counting all its cores (found in review; checked by hand: with
    ``LOCAL_WORLD_SIZE`` ignored, 16 segments instead of 2)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert AdapterConfig().preparing_at_once() == 8  # half the cores
    assert AdapterConfig().video_decode_workers() == 2
    assert AdapterConfig(prefetch_workers=3).video_decode_workers() == 5
    assert AdapterConfig(prefetch=0).video_decode_workers() == 16  # one request at a time: all cores on its video
    assert AdapterConfig(decode_workers=4).video_decode_workers() == 4
    with pytest.raises(ConfigError, match=r"decode_workers=0 must be at least 1"):
        AdapterConfig(decode_workers=0)
    # 8 ranks on a 128-core machine: 16 cores each, as above.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(128)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert AdapterConfig().preparing_at_once() == 8 and AdapterConfig().video_decode_workers() == 2


def test_parallel_preparation_feeds_the_model_what_the_sequential_path_does(tiny_7b, tmp_path, monkeypatch):
    """Catches: preparation threads or decoding segments sharing state (another request's frames or tokens: the
    input hashes differ), ``decode_workers`` not reaching the decoder."""
    from test_adapter import make_model, records, requests

    from omni_lmms_plugin import inputs

    segments_used: list[int] = []

    def recording_load_video(path, plan, *, workers: int = 1, **kwargs):
        segments_used.append(len(media.targets.split_into_segments(plan.frames, workers)))
        return media.load_video(path, plan, workers=workers, **kwargs)

    monkeypatch.setattr(inputs, "load_video", recording_load_video)

    folder = tmp_path / "media"
    folder.mkdir()
    docs = [
        {"question": f"Q{i}", "visuals": [str(sm.write_video(folder / f"{i}.mp4", width=w, height=h, duration=6.0))]}
        for i, (w, h) in enumerate([(160, 120), (320, 240), (256, 144), (192, 192)])
    ]
    runs = {}
    settings = {
        "sequential": {"prefetch": 0, "decode_workers": 1},
        "parallel": {"prefetch": 2, "prefetch_workers": 3, "decode_workers": 1},
        "segments": {"prefetch": 0, "decode_workers": 3},
    }
    for name, args in settings.items():
        model = make_model(tiny_7b, tmp_path / name, **args)
        answers = [result.text for result in model.generate_until(requests(model, docs))]
        runs[name] = (answers, [record["input_hash"] for record in records(tmp_path / name)])
    assert runs["sequential"] == runs["parallel"] == runs["segments"]
    assert segments_used == [1] * 8 + [3] * 4  # 12 frames a video: three segments of four


class _BarrierProcessor:
    """Stands in for the processor: each call waits until two calls are inside at once (a module-level barrier, which
    the per-thread copies share)."""

    barrier = threading.Barrier(2, timeout=10)

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> str:
        self.calls += 1
        self.barrier.wait()
        return text


def test_preparation_threads_run_the_processor_at_once_each_on_its_own_copy():
    """Catches: the processor called one thread at a time (checked by hand: holding the lock around the call makes
    the barrier time out), threads sharing one copy (the tokenizer is not made for concurrent calls), or the shared
    processor itself being called."""
    from omni_lmms_plugin.answering import _ProcessorPerThread

    shared = _BarrierProcessor()
    per_thread = _ProcessorPerThread(shared, threading.RLock())
    copies: dict[str, int] = {}

    def prepare(index: int) -> str:
        result = per_thread(f"request {index}")
        copies[threading.current_thread().name] = id(per_thread._own())
        return result

    assert [prepared.get() for _, prepared in prefetched(list(range(4)), prepare, depth=1, workers=2)] == [
        f"request {index}" for index in range(4)
    ]
    assert len(set(copies.values())) == 2 and id(shared) not in copies.values()
    assert shared.calls == 0
