"""The synthetic media writers produce real files that FFmpeg reads back, with frames that carry their own index."""

from __future__ import annotations

import av
import hostile_media as hm
import numpy as np
import pytest
from test_media import reference

from omni_lmms_plugin import synthetic_media as sm


@pytest.mark.parametrize(
    ("name", "video_codec", "audio_codec"),
    [("v.mp4", "h264", "aac"), ("v.mkv", "h264", "aac"), ("v.webm", "vp8", "opus")],
)
def test_containers_are_real_and_frames_carry_their_index(tmp_path, name, video_codec, audio_codec):
    path = sm.write_video(tmp_path / name, duration=2.0, fps=30.0)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == video_codec
        assert container.streams.audio[0].codec_context.name == audio_codec
        assert container.streams.video[0].width == 320
    frames = reference(path)
    assert [index for _, index in frames] == list(range(60))
    assert [round(seconds, 3) for seconds, _ in frames] == [round(i / 30, 3) for i in range(60)]


def test_markers_survive_scaling_to_small_sizes(tmp_path):
    path = sm.write_video(tmp_path / "v.mp4", duration=1.0, audio=False)
    with av.open(str(path)) as container:
        for expected, frame in enumerate(container.decode(video=0)):
            small = frame.to_ndarray(width=56, height=56, format="rgb24", interpolation="BICUBIC")
            assert sm.read_frame_index(small) == expected


def test_gop_sets_the_keyframe_interval(tmp_path):
    path = sm.write_video(tmp_path / "v.mp4", duration=3.0, gop=15, audio=False, bframes=2)
    with av.open(str(path)) as container:
        keys = [packet.pts for packet in container.demux(video=0) if packet.pts is not None and packet.is_keyframe]
        time_base = container.streams.video[0].time_base
    assert [round(float(pts * time_base), 3) for pts in sorted(keys)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_realistic_encoding_has_b_frames_texture_and_readable_markers(tmp_path):
    """The benchmark's realistic clip: B-frames (some not references), a bitrate over twice the flat clip's, and
    every frame's marker still readable under the texture and grain."""
    fast = sm.write_video(tmp_path / "fast.mp4", width=320, height=240, duration=2.0, audio=False, bframes=3)
    real = sm.write_video(
        tmp_path / "real.mp4", width=320, height=240, duration=2.0, audio=False, bframes=3, encoding="realistic"
    )
    with av.open(str(real)) as container:
        kinds = [int(frame.pict_type) for frame in container.decode(video=0)]
    assert kinds.count(3) >= len(kinds) // 2  # AV_PICTURE_TYPE_B
    assert [index for _, index in reference(real)] == list(range(60))
    assert real.stat().st_size > 2 * fast.stat().st_size
    with pytest.raises(ValueError, match="Invalid encoding"):
        sm.write_video(tmp_path / "x.mp4", encoding="slow")


def test_vfr_has_irregular_timestamps_matching_the_schedule(tmp_path):
    path = sm.write_video(tmp_path / "v.mkv", duration=2.0, vfr=True)
    frames = reference(path)
    expected = sm.frame_schedule(60, 30.0, vfr=True)
    assert [index for _, index in frames] == list(range(60))
    assert np.allclose([seconds for seconds, _ in frames], expected, atol=1e-3)
    gaps = np.diff(expected)
    assert gaps.min() < 0.5 / 30 + 1e-9 and gaps.max() > 1.5 / 30


@pytest.mark.parametrize("name", ["a.wav", "a.m4a", "a.mp3", "a.ogg", "a.flac"])
def test_write_audio_formats(tmp_path, name):
    path = sm.write_audio(tmp_path / name, duration=1.5, signal="chirp")
    with av.open(str(path)) as container:
        assert not container.streams.video
        stream = container.streams.audio[0]
        assert stream.sample_rate == 16000
        samples = sum(frame.samples for frame in container.decode(stream))
    assert abs(samples - 24000) < 2500  # encoder padding differs by format


def test_audio_signal_callable_and_stereo(tmp_path):
    path = sm.write_video(
        tmp_path / "v.mp4", duration=1.0, audio_sample_rate=44100, audio_channels=2, audio_signal=lambda t: 0.2 * t
    )
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.sample_rate, stream.codec_context.channels) == (44100, 2)


def test_odd_and_bad_files(tmp_path):
    one = hm.write_one_frame_video(tmp_path / "one.mp4")
    assert len(reference(one)) == 1
    wide = hm.write_extreme_aspect_video(tmp_path / "wide.mp4")
    wider = hm.write_extreme_aspect_video(tmp_path / "wider.mp4", width=5000)
    with av.open(str(wide)) as a, av.open(str(wider)) as b:
        assert (a.streams.video[0].width, a.streams.video[0].height) == (1000, 24)
        assert b.streams.video[0].width / b.streams.video[0].height > 200
    silent = hm.write_video_without_audio(tmp_path / "silent.mp4", duration=0.5)
    with av.open(str(silent)) as container:
        assert not container.streams.audio
    assert hm.write_zero_byte_file(tmp_path / "empty.mp4").stat().st_size == 0
    text = hm.write_text_as_video(tmp_path / "text.mp4")
    assert text.read_text().startswith("this is a text file")
    cut = hm.truncate_file(silent, tmp_path / "cut.mp4", keep=0.5)
    assert cut.stat().st_size == silent.stat().st_size // 2
    noisy = hm.corrupt_file(silent, tmp_path / "noisy.mp4", start=0.2, end=0.8)
    assert noisy.stat().st_size == silent.stat().st_size and noisy.read_bytes() != silent.read_bytes()


def test_bad_arguments_say_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match="Supported values are"):
        sm.write_video(tmp_path / "v.flv")
    with pytest.raises(ValueError, match="Invalid audio signal"):
        sm.write_video(tmp_path / "v.mp4", audio_signal="noise")
    with pytest.raises(ValueError, match="even"):
        sm.write_video(tmp_path / "v.mp4", width=321)
    with pytest.raises(ValueError, match="at least"):
        sm.read_frame_index(np.zeros((4, 4, 3), np.uint8))
