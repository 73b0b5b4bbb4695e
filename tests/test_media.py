"""probe / plan_probed_video / load_video / load_audio against real files whose frames carry their own index."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import re
import subprocess
import sys
import time
from fractions import Fraction

import av
import hostile_media as hm
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_lmms_plugin import media
from omni_lmms_plugin import synthetic_media as sm
from omni_lmms_plugin.budget import TokenBudget
from omni_lmms_plugin.errors import BudgetError, ConfigError, DecodeTimeoutError, MediaError
from omni_lmms_plugin.video_plan import VideoPolicy

BIG = TokenBudget(max_model_len=200_000)


# --------------------------------------------------------------------------------------------------------------------
# Fixtures and the reference decoder
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        "mp4": sm.write_video(root / "v.mp4", duration=4.0, gop=20, bframes=2),
        "mkv": sm.write_video(root / "v.mkv", duration=4.0, gop=25),
        "webm": sm.write_video(root / "v.webm", duration=4.0, gop=30),
        "vfr": sm.write_video(root / "vfr.mp4", duration=4.0, gop=20, vfr=True),
        "vfr_mkv": sm.write_video(root / "vfr.mkv", duration=4.0, gop=20, vfr=True, bframes=2),
        "long": sm.write_video(root / "long.mp4", duration=20.0, gop=15, width=160, height=120, audio_signal="chirp"),
        "one": hm.write_one_frame_video(root / "one.mp4"),
        # Three B-frames between references: x264's pyramid makes the middle one a reference, the other two are not.
        "bframes": sm.write_video(root / "b.mp4", duration=8.0, gop=30, bframes=3, audio=False),
    }


def reference(path) -> list[tuple[float, int]]:
    """(seconds from the stream start, marker index) of every frame, by plain sequential PyAV decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        return [
            (float((frame.pts - origin) * stream.time_base), sm.read_frame_index(frame.to_ndarray(format="rgb24")))
            for frame in container.decode(stream)
        ]


def keyframe_times(path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        return sorted(
            float((p.pts - origin) * stream.time_base)
            for p in container.demux(stream)
            if p.pts is not None and p.is_keyframe
        )


def with_times(plan, times, path):
    """``plan`` at the given times: each planned frame the one on screen half a frame later (by the reference)."""
    ref_times = [seconds for seconds, _ in reference(path)]
    half_frame = 0.5 / plan.source_fps
    indices = [max(bisect.bisect_right(ref_times, t + half_frame + 1e-6) - 1, 0) for t in times]
    return dataclasses.replace(plan, frames=len(times), frame_times=tuple(times), frame_indices=tuple(indices))


def check_exact(path, loaded):
    """Returned frame i is frame ``plan.frame_indices[i]`` counted in frames shown, as the reference's readers count
    (the last frame for an index past it), with that frame's own time."""
    ref = reference(path)
    assert loaded.frames.shape == (loaded.plan.frames, loaded.plan.height, loaded.plan.width, 3)
    for planned, frame, seconds in zip(loaded.plan.frame_indices, loaded.frames, loaded.frame_times, strict=True):
        expected_time, expected_index = ref[min(planned, len(ref) - 1)]
        assert sm.read_frame_index(frame) == expected_index, f"planned frame {planned}"
        assert seconds == pytest.approx(expected_time, abs=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# probe and plan_probed_video
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm", "vfr"])
def test_probe_reads_headers(files, kind):
    info = media.probe(files[kind])
    assert (info.width, info.height, info.has_video, info.has_audio) == (320, 240, True, True)
    assert info.duration == pytest.approx(4.0, abs=0.05)
    assert info.frame_rate == pytest.approx(30.0, rel=0.02)
    assert info.audio_sample_rate in (16000, 48000) and info.audio_channels == 1
    if kind in ("mkv", "webm"):
        assert info.frame_count_header is None  # Matroska carries no frame count; the duration tag is used
        assert info.duration_source == "stream_tag"
    else:
        assert info.frame_count_header == 120 and info.duration_source == "video_stream"


class _NoDecodeContainer:
    """Wraps an input container and fails on any decode call."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name == "decode":
            raise AssertionError("probe decoded frames")
        return getattr(self._inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._inner.close()


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm"])
def test_probe_never_decodes(files, kind, monkeypatch):
    real_open = av.open
    monkeypatch.setattr(media._container.av, "open", lambda *a, **k: _NoDecodeContainer(real_open(*a, **k)))
    started = time.perf_counter()
    info = media.probe(files[kind])
    assert time.perf_counter() - started < 0.5
    assert info.has_video


def test_probe_audio_only(tmp_path):
    info = media.probe(sm.write_audio(tmp_path / "a.m4a", duration=2.0))
    assert (info.has_video, info.has_audio, info.audio_sample_rate) == (False, True, 16000)
    assert info.duration == pytest.approx(2.0, abs=0.1)


def test_plan_for_uses_the_probe(files):
    info = media.probe(files["mp4"])
    plan = media.plan_probed_video(info, BIG, VideoPolicy(fps=2.0))
    assert plan.frames == 8 and plan.duration == pytest.approx(4.0)
    assert plan.audio_samples == 64000
    with pytest.raises(BudgetError):
        media.plan_probed_video(info, 10)


# --------------------------------------------------------------------------------------------------------------------
# Exact mode: frame identity and timestamps
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm", "vfr", "vfr_mkv"])
@pytest.mark.parametrize("fps", [0.5, 2.0, 30.0])  # sparse (the 4-frame minimum), default, every frame
def test_exact_mode_returns_the_frame_on_screen(files, kind, fps):
    """Planned frame i is the i-th frame shown (:func:`check_exact`), on constant- and variable-rate clips. Catches:
    frames picked by time instead of by index (checked by hand: the variable-rate MP4 and Matroska clips failed)."""
    loaded = media.load_video(files[kind], budget=BIG, policy=VideoPolicy(fps=fps))
    check_exact(files[kind], loaded)
    assert loaded.audio is not None and loaded.audio.shape == (loaded.plan.audio_samples,)
    if fps == 30.0 and kind in ("mp4", "mkv", "webm"):
        assert [sm.read_frame_index(f) for f in loaded.frames] == list(range(120))


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm", "vfr_mkv"])
def test_exact_mode_at_awkward_times(files, kind):
    plan = media.plan_probed_video(media.probe(files[kind]), BIG)
    ref_times = [seconds for seconds, _ in reference(files[kind])]
    # On frame boundaries, just before them, before the first frame's end, within the last frame, repeated times.
    times = sorted(
        {0.0, 0.001, 3.99, 1.0, 1.0 - 1e-4, 2.5}
        | {ref_times[i] for i in (1, 17, 60, 99)}
        | {ref_times[i] - 1e-3 for i in (40, 80)}
    ) + [3.99]
    loaded = media.load_video(files[kind], with_times(plan, times, files[kind]))
    check_exact(files[kind], loaded)


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm"])
def test_without_a_complete_packet_index_exact_mode_aims_half_a_frame_past_the_planned_time(files, kind, monkeypatch):
    """When some packet has no timestamp, frames cannot be counted from the packet index: exact mode then takes the
    frame on screen half a frame after each planned time, which is frame i of a constant-rate file even where the
    container rounded its timestamps (Matroska and WebM store milliseconds). Catches: aiming at the planned time
    itself (checked by hand: the Matroska and WebM clips returned frame i - 1 for some i)."""
    scan = media.video.scan_packets

    def incomplete(*args, **kwargs):
        return dataclasses.replace(scan(*args, **kwargs), pts=None, times=None)

    monkeypatch.setattr(media.video, "scan_packets", incomplete)
    plan = media.plan_probed_video(media.probe(files[kind]), BIG, VideoPolicy(fps=7.5))
    loaded = media.load_video(files[kind], plan)
    check_exact(files[kind], loaded)


def test_exact_mode_sparse_seeks_instead_of_decoding_everything(files):
    plan = media.plan_probed_video(
        media.probe(files["long"]), BIG, VideoPolicy(fps=0.2)
    )  # 4 frames of a 600-frame video
    loaded = media.load_video(files["long"], plan)
    check_exact(files["long"], loaded)
    assert plan.frames == 4
    assert loaded.decoded_frames <= 4 * 15 + 8  # at most one GOP per target (plus decoder look-ahead)
    dense = media.load_video(files["long"], budget=BIG, policy=VideoPolicy(fps=5.0))
    check_exact(files["long"], dense)
    assert dense.decoded_frames <= 600


def _without_frame_skipping(monkeypatch) -> None:
    monkeypatch.setattr(media.video, "shown_frames", lambda *args: None)


# Sparse targets (seeks, slice threads), the default rate, dense targets (no seeks: frame threads).
@pytest.mark.parametrize("fps", [0.5, 2.0, 7.5])
def test_exact_mode_skips_the_frames_no_target_shows_and_returns_the_same_pixels(files, fps, monkeypatch):
    """Non-reference frames that no target shows are not decoded, and nothing else changes. Catches: skipping off
    (checked by hand: the decoded counts are equal), a wrong packet-index prediction (the second, unskipped decode
    makes the count larger), skipping a frame a target shows (its marker index and pixels differ)."""
    path = files["bframes"]
    skipped = media.load_video(path, budget=BIG, policy=VideoPolicy(fps=fps))
    _without_frame_skipping(monkeypatch)
    full = media.load_video(path, skipped.plan)
    check_exact(path, skipped)
    assert [sm.read_frame_index(frame) for frame in skipped.frames] == list(skipped.plan.frame_indices)
    assert skipped.frame_times == full.frame_times
    assert np.array_equal(skipped.frames, full.frames)
    assert skipped.decoded_frames <= 0.8 * full.decoded_frames, (skipped.decoded_frames, full.decoded_frames)


@pytest.mark.parametrize("workers", [1, 2])
def test_exact_mode_decodes_again_when_the_packet_index_mispredicts_the_frames_shown(files, workers, monkeypatch):
    """The safety net: when the frames the decoder shows are not the ones the packet index predicted (here the
    prediction for one target in the middle names the packet after the one it shows), the targets are decoded again,
    in a fresh container, without skipping, so every frame is still exact. Catches: removing the check (checked by
    hand: the mispredicted target, a non-reference B-frame, came back as another frame), and a second pass on the
    skipping decoder, whose skip setting outlives the first pass (checked by hand: frame 40 came back for 41)."""
    path = files["bframes"]
    predict = media.targets.shown_frames
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=7.5))
    victim = next(i for i, frame in enumerate(plan.frame_indices) if frame % 2 and i > len(plan.frame_indices) // 3)

    def one_target_mispredicted(index, targets):
        pts, times = predict(index, targets)
        pts = pts.copy()
        pts[victim] = index.pts[np.searchsorted(index.pts, pts[victim]) + 1]
        return pts, times

    monkeypatch.setattr(media.video, "shown_frames", one_target_mispredicted)
    loaded = media.load_video(path, plan, workers=workers)
    check_exact(path, loaded)
    assert [sm.read_frame_index(frame) for frame in loaded.frames] == list(plan.frame_indices)


def _recording_decoders(monkeypatch, *, never_skip: bool = False) -> list:
    """Every decoder ``load_video`` makes from now on, to read its counts after the load; with ``never_skip``, decoders
    that ignore every request to skip frames."""
    made = []

    class Recorded(media.video._Decoder):
        if never_skip:
            keep = property(lambda self: None, lambda self, value: None)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(media.video, "_Decoder", Recorded)
    return made


def test_frames_are_skipped_only_where_the_codec_allows_it(tmp_path, monkeypatch):
    """Only H.264 skips: other decoders decode every frame on the way (HEVC's NONREF also drops pictures that higher
    temporal layers predict from; libdav1d reads the skip setting only when it opens), as many as decoders that never
    skip. Catches: skipping enabled for every codec (checked by hand: this HEVC clip's non-reference B-frames were
    skipped, 87 frames instead of 100)."""
    path = sm.write_video(tmp_path / "hevc.mp4", duration=4.0, gop=30, audio=False, video_codec="libx265", bframes=3)
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=2.0))
    loaded = media.load_video(path, plan)
    check_exact(path, loaded)
    _recording_decoders(monkeypatch, never_skip=True)
    assert loaded.decoded_frames == media.load_video(path, plan).decoded_frames


def _packets_in_decoding_order(path) -> list[tuple[int, bool]]:
    """(timestamp, is keyframe) of every packet of the video stream, in the order the decoder takes them."""
    with av.open(str(path)) as container:
        return [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]


def test_exact_mode_stops_at_each_targets_packet(files, monkeypatch):
    """Where exact mode seeks after a target, the decoder takes the packets from the target's keyframe to the
    target's own packet and no more (to the end of the stream for the last frame): the frames B-frames hold back for reordering are drained out at once, and the
    target's frame is taken when it comes out, not when a later frame shows it was the last one on screen. Catches
    (checked by hand): no drain (69 packets instead of 61: the decoder kept going until the reorder delay gave the
    frame out), the frame taken only when the next one comes (the drain then ends the frames before the target is
    taken, and the targets were decoded a second time, in a second decoder, without predictions)."""
    path = files["bframes"]
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=0.5))
    order = _packets_in_decoding_order(path)
    shown = sorted(pts for pts, _ in order)
    expected = 0
    for frame in plan.frame_indices:
        position = next(i for i, (pts, _) in enumerate(order) if pts == shown[frame])
        if frame >= len(shown) - 1:  # the last frame: to the end of the stream, which tells a truncated file
            position = len(order) - 1
        key = max(i for i, (pts, keyframe) in enumerate(order[: position + 1]) if keyframe and pts <= shown[frame])
        expected += position - key + 1
    decoders = _recording_decoders(monkeypatch)
    loaded = media.load_video(path, plan)
    check_exact(path, loaded)
    assert plan.frames >= 4 and len(decoders) == 1
    assert decoders[0].packets == expected, (decoders[0].packets, expected)


def test_exact_mode_decodes_again_when_a_drained_decoder_did_not_show_the_predicted_frame(files, monkeypatch):
    """The safety net of the stop at each target: when the decoder is drained after a target's packet (a seek follows)
    without showing the frame the packet index predicted (here the first decoder drops that frame, as a decoder may
    drop a frame it cannot decode), the targets are decoded again in a fresh decoder without predictions, and every
    frame is still exact. Catches (checked by hand): the drained decoder's end taken for the end of the stream
    (`decoder.drained` not checked in `_decode_exact`): the frame before the dropped one stood for the second target,
    and the load failed at the third ("the video stream ends at 2.567 s")."""
    path = files["bframes"]
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=0.5))
    shown = sorted(pts for pts, _ in _packets_in_decoding_order(path))
    dropped = shown[plan.frame_indices[1]]
    made = []

    class FirstDropsOneFrame(media.video._Decoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def frames(self):
            for frame, seconds in super().frames():
                if not (self is made[0] and frame.pts == dropped):
                    yield frame, seconds

    monkeypatch.setattr(media.video, "_Decoder", FirstDropsOneFrame)
    loaded = media.load_video(path, plan)
    check_exact(path, loaded)
    assert len(made) == 2


@pytest.mark.parametrize("seek_mode", ["exact", "keyframe"])
def test_an_mpeg_ts_file_gets_the_right_frames_though_its_seeks_land_late(tmp_path, seek_mode, monkeypatch):
    """MPEG-TS has no seek index: FFmpeg seeks it by searching timestamps, and here a seek to a keyframe's time lands
    on the next keyframe (past the stream's end for the last one). Exact mode still returns frame i for planned frame
    i, and keyframe mode the keyframe nearest each planned time, with one segment and with two, each decoded once
    (the packet index's predictions hold). Catches (checked by hand): a seek that finds no frame taken for the end of the stream (exact: "the video stream ends at 5.367 s"),
    the keyframe-mode seek that lands late taken as it lands (the keyframe after the nearest one returned), a seek to
    the first keyframe's time instead of to the start of the file (keyframe mode: frame 30 for frame 0), and the step
    back undone by a seek to the target's own keyframe (exact: it sought back and forth until decode_timeout), and a
    step back that still stops after the packets on the way (an earlier target's, an earlier keyframe's: the frames
    ended before the target, and a second decode without predictions followed)."""
    path = sm.write_video(tmp_path / "b.ts", duration=8.0, gop=30, bframes=3, audio=False)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = sorted(packet.pts for packet in container.demux(stream) if packet.size and packet.is_keyframe)
        key_times = [float((pts - stream.start_time) * stream.time_base) for pts in keyframes]
    decode_apart = media.video._Span.decode_apart
    second_decodes = []

    def recording(span, *args, predicted=True, **kwargs):
        second_decodes.extend([] if predicted else [args])
        return decode_apart(span, *args, predicted=predicted, **kwargs)

    monkeypatch.setattr(media.video._Span, "decode_apart", recording)
    for fps, workers in [(0.5, 1), (2.0, 1), (2.0, 2)]:
        plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=fps))
        loaded = media.load_video(path, plan, seek_mode=seek_mode, workers=workers)
        assert not second_decodes, (fps, workers)
        markers = [sm.read_frame_index(frame) for frame in loaded.frames]
        if seek_mode == "exact":
            check_exact(path, loaded)
            continue
        nearest = [min(key_times, key=lambda key: (abs(key - planned), key)) for planned in plan.frame_times]
        assert loaded.frame_times == pytest.approx(nearest, abs=1e-6)
        assert markers == [round(key * 30) for key in nearest], (fps, workers)


def test_keyframe_mode_takes_one_packet_per_keyframe(files, monkeypatch):
    """Keyframe mode gives the decoder each chosen keyframe's packet alone: it is drained at once, instead of taking
    the packets after it until the B-frames' reorder delay lets the keyframe out. Catches (checked by hand): no drain
    (12 packets for 4 keyframes)."""
    path = files["bframes"]
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=0.5))
    decoders = _recording_decoders(monkeypatch)
    loaded = media.load_video(path, plan, seek_mode="keyframe")
    assert decoders[0].packets == len(set(loaded.frame_times)) == plan.frames
    keyframes = {pts for pts, keyframe in _packets_in_decoding_order(path) if keyframe}
    assert len(keyframes) > plan.frames


def test_segments_split_the_decoding_work_evenly_not_the_target_count(tmp_path, monkeypatch):
    """With two workers, each segment's decoder gets about half of the frames to decode, whatever the targets' count.
    Here four targets sit at the ends of 2 s GOPs (59 frames each to decode) and four on keyframes (one each).
    Catches: splitting by target count (checked by hand: the segments then decoded 240 and 8 frames)."""
    path = sm.write_video(tmp_path / "gops.mp4", duration=16.0, gop=60, width=160, height=120, audio=False)
    plan = media.plan_probed_video(media.probe(path), BIG)
    times = [(gop * 60 + 58) / 30 for gop in range(4)] + [gop * 60 / 30 for gop in range(4, 8)]
    decoded: list[int] = []
    decode_apart = media.video._Span.decode_apart

    def recording(self, start, stop, **kwargs):
        times_and_count = decode_apart(self, start, stop, **kwargs)
        decoded.append(times_and_count[1])
        return times_and_count

    monkeypatch.setattr(media.video._Span, "decode_apart", recording)
    loaded = media.load_video(path, with_times(plan, times, path), workers=2)
    check_exact(path, loaded)
    assert len(decoded) == 2 and max(decoded) <= 1.1 * min(decoded), decoded


def _packet_costs(gops: list[int], targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact mode's per-target costs on a 30 fps P-only stream whose GOPs have the given lengths (frames)."""
    count = sum(gops)
    packet_times = np.arange(count) / 30
    keys = [start / 30 for start in np.cumsum([0, *gops[:-1]]).tolist()]
    shown_times = packet_times[np.asarray(sorted(target % count for target in targets))]
    return media.targets.exact_costs(packet_times, keys, shown_times, 1 / 30)


@settings(max_examples=150, deadline=None)
@given(
    gops=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    targets=st.lists(st.integers(0, 239), min_size=1, max_size=14),
    workers=st.integers(1, 4),
)
def test_segments_make_the_costliest_segment_as_cheap_as_any_split_can(gops, targets, workers):
    """The split's costliest segment costs no more than that of the best contiguous split into as many segments
    (brute force). Catches: an equal-count split (checked by hand: hypothesis finds a costlier split at once), and
    a greedy packing that lets a segment run one target past its bound."""
    start, step = _packet_costs(gops, targets)
    count = len(start)

    def cost(first: int, stop: int) -> int:
        return int(start[first] + step[first + 1 : stop].sum())

    segments = media.targets.split_into_segments(count, workers, (start, step))
    parts = max(1, min(workers, count // media.targets.MIN_SEGMENT_TARGETS))
    assert segments[0][0] == 0 and segments[-1][1] == count and len(segments) <= parts
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(segments, segments[1:], strict=False))
    best = min(
        max(cost(first, stop) for first, stop in zip((0, *cuts), (*cuts, count), strict=True))
        for segments_count in range(1, parts + 1)
        for cuts in itertools.combinations(range(1, count), segments_count - 1)
    )
    assert max(cost(first, stop) for first, stop in segments) == best


def _cut_by_an_edit_list(source, destination, frames: int):
    """``source`` remuxed with every timestamp moved ``frames`` frames earlier: the MP4 muxer writes an edit list that
    cuts those frames (their packets are marked discard, or carry no timestamp when there are many)."""
    with av.open(str(source)) as reader, av.open(str(destination), "w") as writer:
        stream = reader.streams.video[0]
        output = writer.add_stream_from_template(stream)
        ticks = int(1 / (stream.average_rate * stream.time_base))
        for packet in reader.demux(stream):
            if packet.pts is None:
                continue
            packet.pts -= frames * ticks
            packet.dts -= frames * ticks
            packet.stream = output
            writer.mux(packet)
    return destination


@pytest.mark.parametrize("cut", [10, 30])
def test_an_mp4_cut_by_an_edit_list_is_planned_and_decoded_by_the_frames_it_shows(files, tmp_path, cut):
    """An MP4 whose edit list cuts its first frames keeps every sample in its header count (240) but shows only the
    rest: the probe counts the frames shown (as decord does), and planned frame i is the i-th frame shown. With 10
    frames cut their packets are marked discard (the packet index is complete); with 30, they carry no timestamp (the
    index is incomplete: the planned times decide). Catches: the header count trusted (checked by hand: the plan
    spread over 240 frames and the count assertion failed), and discarded packets counted as frames shown (checked by
    hand: the first planned frames came back as the first frame shown, the marker 10 for 14)."""
    source = sm.write_video(tmp_path / "b.mp4", duration=8.0, gop=30, bframes=3, audio=False)
    path = _cut_by_an_edit_list(source, tmp_path / "cut.mp4", cut)
    shown = reference(path)
    info = media.probe(path)
    assert (info.frame_count_header, info.total_frames) == (240, len(shown)) and len(shown) == 240 - cut
    for workers in (1, 2):
        loaded = media.load_video(path, budget=BIG, policy=VideoPolicy(fps=7.5), workers=workers)
        check_exact(path, loaded)
        assert loaded.frames.shape[0] == loaded.plan.frames and loaded.plan.frame_indices[-1] == len(shown) - 1


def test_time_zero_is_the_first_frame_shown_when_the_timestamps_carry_the_decoder_delay(tmp_path):
    """An AVI of MPEG-4 with B-frames stores the decoder's delay in its timestamps (its first frame is at 3 ticks while
    the stream starts at 0): frame i of the plan is still the i-th frame shown. Catches: time zero taken from the
    stream's start time (found in review; checked by hand: each target came back 3 frames early), and the header's
    frame count trusted (checked by hand: the plan spread over 92 frames, its last index past the last frame)."""
    path = sm.write_video(tmp_path / "delay.avi", duration=3.0, gop=30, bframes=2)
    shown = [index for _, index in reference(path)]
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=2.0))
    loaded = media.load_video(path, plan)
    # The header counts 92 frames for the 90 shown; the probe counts the packets.
    assert plan.total_frames == len(shown) == 90
    assert [sm.read_frame_index(f) for f in loaded.frames] == list(plan.frame_indices)
    assert loaded.audio is not None


def test_one_frame_video(files):
    loaded = media.load_video(files["one"], budget=BIG)
    assert loaded.plan.frames == 1 and loaded.frames.shape[0] == 1
    assert sm.read_frame_index(loaded.frames[0]) == 0 and loaded.frame_times == (0.0,)
    assert loaded.audio is None


def test_resized_to_exactly_the_planned_size(files):
    plan = media.plan_probed_video(media.probe(files["mp4"]), BIG)
    small = dataclasses.replace(plan, height=56, width=84)
    loaded = media.load_video(files["mp4"], small)
    assert loaded.frames.shape == (plan.frames, 56, 84, 3) and loaded.frames.dtype == np.uint8
    check_exact(files["mp4"], loaded)


def test_sample_fps_is_the_reference_rate(files):
    """The processor's fps is the reference's ``frames / total_frames * video_fps``, the plan's rate."""
    loaded = media.load_video(files["mp4"], budget=BIG, policy=VideoPolicy(fps=2.0))
    assert loaded.sample_fps == loaded.plan.sample_fps == pytest.approx(8 / 120 * 30)


# --------------------------------------------------------------------------------------------------------------------
# Keyframe mode
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "webm", "vfr"])
def test_keyframe_mode_snaps_to_nearest_keyframes_deterministically(files, kind):
    path = files[kind]
    keys = keyframe_times(path)
    ref = dict(reference(path))
    plan = media.plan_probed_video(media.probe(path), BIG, VideoPolicy(fps=2.0))
    first = media.load_video(path, plan, seek_mode="keyframe")
    second = media.load_video(path, plan, seek_mode="keyframe")
    assert first.frame_times == second.frame_times and np.array_equal(first.frames, second.frames)
    for target, seconds, frame in zip(plan.frame_times, first.frame_times, first.frames, strict=True):
        nearest = min(keys, key=lambda key: (abs(key - target), key))
        assert seconds == pytest.approx(nearest, abs=1e-6)
        assert sm.read_frame_index(frame) == ref[min(ref, key=lambda t: abs(t - seconds))]
    assert first.decoded_frames < 30
    assert first.sample_fps == plan.sample_fps


# --------------------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------------------


def _dominant_hz(chunk: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk))))
    return float(np.argmax(spectrum) * 16000 / len(chunk))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_audio_is_the_planned_span_of_the_chirp(tmp_path, suffix):
    path = sm.write_video(tmp_path / f"c{suffix}", duration=6.0, audio_signal="chirp", audio_sample_rate=16000)
    plan = media.plan_probed_video(media.probe(path), BIG)
    plan = dataclasses.replace(plan, audio_start=2.0, audio_seconds=3.0, audio_samples=48000)
    loaded = media.load_video(path, plan)
    assert loaded.audio.dtype == np.float32 and loaded.audio.shape == (48000,)
    window = 1600  # 0.1 s
    for offset in (0.2, 1.0, 2.0, 2.8):
        lo = int(offset * 16000)
        measured = _dominant_hz(loaded.audio[lo : lo + window])
        expected = float(sm.chirp_frequency(2.0 + offset + 0.05, 6.0))
        assert measured == pytest.approx(expected, abs=30), f"at {offset} s"


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_onset_lands_at_its_time_and_pads_to_exact_length(tmp_path, suffix):
    onset = 1.5
    path = sm.write_video(
        tmp_path / f"t{suffix}",
        duration=3.0,
        audio_signal=lambda t: np.where(t >= onset, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0),
    )
    plan = media.plan_probed_video(media.probe(path), BIG)
    plan = dataclasses.replace(plan, audio_start=0.5, audio_seconds=4.0, audio_samples=64000)  # runs 1.5 s past the end
    audio = media.load_video(path, plan).audio
    assert audio.shape == (64000,)
    first_loud = int(np.argmax(np.abs(audio) > 0.05))
    assert abs(first_loud - (onset - 0.5) * 16000) < 40  # AAC smears an onset by a few samples
    assert np.abs(audio[int(2.6 * 16000) :]).max() == 0.0  # zero padding after the track ends at 3.0 s


def test_no_audio_track_gives_none_with_a_note(tmp_path):
    path = hm.write_video_without_audio(tmp_path / "silent.mp4", duration=2.0)
    plan = media.plan_probed_video(media.probe(path), BIG)
    asking = dataclasses.replace(plan, audio_seconds=2.0, audio_samples=32000)
    loaded = media.load_video(path, asking)
    assert loaded.audio is None and any("no audio track" in note for note in loaded.notes)
    assert media.load_video(path, plan).audio is None


def test_load_audio(tmp_path):
    path = sm.write_audio(tmp_path / "a.mp3", duration=4.0, signal="chirp")
    whole = media.load_audio(path)
    assert whole.dtype == np.float32 and abs(len(whole) - 64000) < 1200
    part = media.load_audio(path, start=1.0, seconds=2.0)
    assert part.shape == (32000,)
    assert _dominant_hz(part[:1600]) == pytest.approx(float(sm.chirp_frequency(1.05, 4.0)), abs=30)
    capped = media.load_audio(path, max_seconds=1.0)
    assert capped.shape == (16000,)
    padded = media.load_audio(path, start=3.0, seconds=2.0)
    assert padded.shape == (32000,) and np.abs(padded[20000:]).max() == 0.0


@pytest.mark.parametrize("second_rate", [44_100, 22_050])
def test_a_track_whose_layout_and_rate_change_midway_is_read_whole(tmp_path, second_rate):
    """A stereo 44.1 kHz AAC stream followed by a mono one (at 44.1 or 22.05 kHz) loads whole: each part converted to
    the first part's layout and rate, then resampled, each tone in its place. Breaking check (by hand): one converter
    for the whole track: PyAV refused the first mono frame (a MediaError), failed; the old path (also one
    converter, and PyAV's ValueError not wrapped) failed."""
    first, second, joined = tmp_path / "a.aac", tmp_path / "b.aac", tmp_path / "joined.aac"
    # Raw AAC (ADTS) streams can be joined end to end, as a broadcast joins programmes.
    sm.write_audio(first, duration=2.0, sample_rate=44_100, channels=2, tone_hz=440.0)
    sm.write_audio(second, duration=2.0, sample_rate=second_rate, channels=1, tone_hz=1000.0)
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    audio = media.load_audio(joined)
    assert abs(len(audio) - 4 * 16000) < 3000  # each part carries its encoder's priming and padding
    assert _dominant_hz(audio[8000:24000]) == pytest.approx(440, abs=5)
    assert _dominant_hz(audio[40000:56000]) == pytest.approx(1000, abs=5)


def test_a_track_stamped_far_after_the_video_feeds_the_resampler_only_the_span(tmp_path, monkeypatch):
    """An audio track whose first sample is stamped an hour after the video's start gives the planned 2 s as silence,
    and the resampler is fed the span's worth of silence, not an hour's (which would be 660 MB at 48 kHz). Breaking
    check (by hand): the whole lead fed at once: 172,800,000 samples fed, failed."""
    import soxr

    path = tmp_path / "late.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=48_000, layout="mono")
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 10, dtype=np.uint8), format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        samples = np.full((1, 4800), 1000, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, 3600 * 48_000, Fraction(1, 48_000)
        for packet in audio.encode(frame):
            container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)

    fed: list[int] = []

    class Counting(soxr.ResampleStream):
        def resample_chunk(self, x, last=False):
            fed.append(len(x))
            return super().resample_chunk(x, last)

    monkeypatch.setattr(media.audio.soxr, "ResampleStream", Counting)
    plan = media.plan_probed_video(media.probe(path), BIG)
    plan = dataclasses.replace(plan, audio_start=0.0, audio_seconds=2.0, audio_samples=32000)
    loaded = media.load_video(path, plan)
    assert loaded.audio.shape == (32000,) and not loaded.audio.any()
    assert sum(fed) < 2 * 48_000 + (1 << 17), f"{sum(fed)} samples fed to the resampler for a 2 s span"


def test_load_audio_of_a_long_track_stops_at_max_seconds(tmp_path):
    path = hm.write_long_audio(tmp_path / "long.wav", minutes=10.0)
    started = time.perf_counter()
    audio = media.load_audio(path, max_seconds=300)
    assert audio.shape == (300 * 16000,)
    assert time.perf_counter() - started < 10


# --------------------------------------------------------------------------------------------------------------------
# Bad input: every error names the file
# --------------------------------------------------------------------------------------------------------------------


def _raises(path, cause, call=None):
    call = call or (lambda p: media.load_video(p, budget=BIG))
    with pytest.raises(MediaError, match=re.escape(path.name)) as info:
        call(path)
    assert re.search(cause, str(info.value)), str(info.value)
    return info.value


def test_missing_file(tmp_path):
    _raises(tmp_path / "nowhere.mp4", "file not found")
    _raises(tmp_path / "nowhere.mp4", "file not found", media.probe)
    _raises(tmp_path / "nowhere.wav", "file not found", media.load_audio)


def test_zero_byte_file(tmp_path):
    path = hm.write_zero_byte_file(tmp_path / "empty.mp4")
    _raises(path, "empty")
    _raises(path, "empty", media.probe)


def test_text_file_named_mp4(tmp_path):
    path = hm.write_text_as_video(tmp_path / "notes.mp4")
    _raises(path, "not a media file")
    _raises(path, "not a media file", media.probe)


def test_truncated_mp4_without_index(files, tmp_path):
    path = hm.truncate_file(files["mp4"], tmp_path / "cut.mp4", keep=0.6)  # the moov index is at the end
    _raises(path, "not a media file")


def test_truncated_mkv_has_too_few_frames(files, tmp_path):
    path = hm.truncate_file(files["mkv"], tmp_path / "cut.mkv", keep=0.5)
    plan = media.plan_probed_video(media.probe(files["mkv"]), BIG)
    _raises(path, r"decoded \d+ of 8 planned frames", lambda p: media.load_video(p, plan))
    _raises(path, r"decoded \d+ of 8 planned frames", lambda p: media.load_video(p, plan, seek_mode="keyframe"))


def test_a_slightly_truncated_file_loads_and_says_which_planned_frames_it_lacks(tmp_path):
    """Cut at 93% of its bytes, a 120-frame Matroska clip shows 108 frames: within half a second of its end the last
    frame stands for the 12 it lacks, and the load says so (the note reaches the sample's provenance). Catches: the
    note dropped (checked by hand: the 12 repeated frames passed silently)."""
    source = sm.write_video(tmp_path / "whole.mkv", duration=4.0, gop=25)
    path = hm.truncate_file(source, tmp_path / "cut.mkv", keep=0.93)
    plan = media.plan_probed_video(media.probe(source), BIG, VideoPolicy(fps=30.0))
    loaded = media.load_video(path, plan)
    shown = reference(path)
    assert [sm.read_frame_index(f) for f in loaded.frames] == [shown[min(i, len(shown) - 1)][1] for i in range(120)]
    assert any(
        f"shows {len(shown)} frames but the plan counts 120: planned frames {len(shown)} to 119 ({120 - len(shown)})"
        in note
        for note in loaded.notes
    ), loaded.notes


def test_undecodable_data(files, tmp_path):
    path = hm.corrupt_file(files["mkv"], tmp_path / "noise.mkv", start=0.05, end=1.0)
    plan = media.plan_probed_video(media.probe(files["mkv"]), BIG)
    _raises(path, "undecodable|planned frames|cannot|not a media file", lambda p: media.load_video(p, plan))


def test_no_video_stream(tmp_path):
    path = sm.write_audio(tmp_path / "speech.m4a", duration=1.0)
    _raises(path, "no video stream")
    plan = media.plan_probed_video(media.probe(sm.write_video(tmp_path / "v.mp4", duration=1.0)), BIG)
    _raises(path, "no video stream", lambda p: media.load_video(p, plan))


def test_pathological_aspect_ratio(tmp_path):
    wide = hm.write_extreme_aspect_video(tmp_path / "ribbon.mp4", width=5000, height=24)
    _raises(wide, r"aspect ratio .*200:1")
    accepted = media.load_video(hm.write_extreme_aspect_video(tmp_path / "strip.mp4"), budget=BIG)
    assert accepted.frames.shape[1:] == (accepted.plan.height, accepted.plan.width, 3)


def test_decode_timeout_fires(files):
    plan = media.plan_probed_video(media.probe(files["long"]), BIG, VideoPolicy(fps=30.0, max_frames=600))
    with pytest.raises(DecodeTimeoutError, match=re.escape(files["long"].name)) as info:
        media.load_video(files["long"], plan, decode_timeout=0.01)
    assert isinstance(info.value, MediaError) and isinstance(info.value, TimeoutError)
    assert "decode_timeout" in str(info.value)


def test_argument_errors(files):
    with pytest.raises(ConfigError, match="Supported values are exact, keyframe"):
        media.load_video(files["mp4"], budget=BIG, seek_mode="approximate")
    with pytest.raises(ConfigError, match="needs a plan"):
        media.load_video(files["mp4"])
    plan = media.plan_probed_video(media.probe(files["mp4"]), BIG)
    with pytest.raises(ConfigError, match="not both"):
        media.load_video(files["mp4"], plan, budget=BIG)


def test_import_is_torch_free():
    code = "import sys, omni_lmms_plugin.media, omni_lmms_plugin.synthetic_media; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --------------------------------------------------------------------------------------------------------------------
# Rotation, frame counts, image sequences
# --------------------------------------------------------------------------------------------------------------------


def set_display_matrix(path, degrees_clockwise: int):
    """Write a rotation into the MP4 track header's display matrix (as phones record portrait video), in place.
    FFmpeg 7 reads it as the frames' display-matrix side data; no ``rotate`` tag is involved."""
    import struct

    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    version = data[box + 4]
    # size/type, version+flags, times and ids, reserved, layer/group/volume/reserved: then the 3x3 matrix.
    offset = box + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    one, minus_one = 0x10000, (-0x10000) & 0xFFFFFFFF
    a, b, c, d = {90: (0, one, minus_one, 0), 180: (minus_one, 0, 0, minus_one), 270: (0, minus_one, one, 0)}[
        degrees_clockwise
    ]
    data[offset : offset + 36] = struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(data)
    return path


def test_a_portrait_phone_video_is_planned_and_decoded_upright(tmp_path):
    """A 320x240 landscape-coded clip whose display matrix turns it 90 degrees clockwise: probe reports 240x320, the
    plan sizes the portrait frame, and the decoded frames are portrait with the marker readable (upright).
    Breaking check: reading only the legacy ``rotate`` tag (FFmpeg 7 no longer sets it) fails every assertion."""
    path = set_display_matrix(sm.write_video(tmp_path / "phone.mp4", duration=2.0, width=320, height=240), 90)
    info = media.probe(path)
    assert info.rotation == 90 and (info.width, info.height) == (240, 320)
    assert (info.coded_width, info.coded_height) == (320, 240)
    loaded = media.load_video(path, budget=BIG)
    assert loaded.plan.height > loaded.plan.width
    assert loaded.frames.shape[1:3] == (loaded.plan.height, loaded.plan.width)
    # Turned back to the coded orientation, each frame carries its index.
    for frame, index in zip(loaded.frames, loaded.plan.frame_indices, strict=True):
        assert sm.read_frame_index(np.rot90(frame, k=1)) == index


def test_frame_counts_say_where_they_come_from(files, tmp_path):
    """MP4 headers count the frames; Matroska has no count; an AVI's header also counts the encoder's B-frame delay,
    so its packets are counted. Catches: the AVI header trusted (checked by hand: 92 frames for the 90 shown)."""
    assert media.probe(files["mp4"]).total_frames == 120
    assert media.probe(files["mp4"]).total_frames_source == "header"
    mkv = media.probe(files["mkv"])
    assert mkv.total_frames_source == "duration_x_rate" and mkv.total_frames == 120
    avi = media.probe(sm.write_video(tmp_path / "delay.avi", duration=3.0, gop=30, bframes=2))
    assert (avi.frame_count_header, avi.total_frames, avi.total_frames_source) == (92, 90, "packets")


def test_a_header_claiming_a_giant_frame_is_refused_before_decoding(tmp_path):
    """A tiny file whose coded size exceeds MAX_CODED_PIXELS is a MediaError naming the size, and nothing is decoded
    (each decoded frame would be held at that size)."""
    path = sm.write_video(tmp_path / "big.mkv", duration=0.2, width=8208, height=8192, fps=5, audio=False)
    with pytest.raises(MediaError, match=r"coded frame size 8208x8192 exceeds"):
        media.probe(path)


def write_frames(folder, count: int, width: int = 96, height: int = 64):
    from PIL import Image

    folder.mkdir()
    for index in range(count):
        Image.fromarray(sm.marked_frame(index, width=width, height=height)).save(folder / f"frame_{index + 1}.png")
    return folder


def test_a_folder_of_frames_is_a_video_sorted_naturally(tmp_path):
    """``frame_10`` follows ``frame_9`` (natural order), the folder is probed at the stated rate (its size: the one
    the reference stacks the frames at, 168x112 for 96x64 images), planned with the reference rule (first and last
    frame in) and loaded at the planned size. Catches (checked by hand): ``probe_frames`` reporting the images' own
    size (96x64), the size the plan was made from before: failed."""
    folder = write_frames(tmp_path / "clip", 24)
    info = media.probe_frames(folder, fps=3.0)
    assert (info.total_frames, info.frame_rate, info.width, info.height) == (24, 3.0, 168, 112)
    assert (info.coded_width, info.coded_height) == (96, 64)
    assert info.duration == pytest.approx(8.0)
    plan = media.plan_probed_video(info, BIG, VideoPolicy(fps=2.0))
    assert plan.frames == 16 and plan.frame_indices[0] == 0 and plan.frame_indices[-1] == 23
    loaded = media.load_frames(folder, plan)
    assert loaded.frames.shape == (16, plan.height, plan.width, 3)
    assert [sm.read_frame_index(frame) for frame in loaded.frames] == list(plan.frame_indices)
    names = [p.rsplit("/", 1)[-1] for p in media.frames.frame_paths(folder)]
    assert names[:3] == ["frame_1.png", "frame_2.png", "frame_3.png"] and names[9] == "frame_10.png"


def test_an_empty_frame_folder_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no frame images"):
        media.probe_frames(tmp_path / "empty")
