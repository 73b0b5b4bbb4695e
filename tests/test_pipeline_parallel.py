"""Segment-parallel decoding: one video's targets split over several threads, each with its own container, give the
same frames and times as one decoder."""

from __future__ import annotations

import numpy as np
import pytest

from omni_lmms_plugin import media
from omni_lmms_plugin import synthetic_media as sm
from omni_lmms_plugin.budget import VideoPolicy
from omni_lmms_plugin.errors import ConfigError


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 12 s at 30 fps with a 1 s GOP: segments start mid-stream and must seek to the keyframe before their targets.
    return str(sm.write_video(tmp_path_factory.mktemp("par") / "v.mp4", width=192, height=144, duration=12.0, gop=30))


def plan_of(path: str, frames: int):
    info = media.probe(path)
    policy = VideoPolicy(fps=frames / info.duration, min_frames=frames, max_frames=frames, frame_floor=frames)
    return media.plan_for(info, 10**9, policy)


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


def test_workers_must_be_positive(video):
    with pytest.raises(ConfigError, match=r"workers=0 must be at least 1"):
        media.load_video(video, plan_of(video, 8), workers=0)
