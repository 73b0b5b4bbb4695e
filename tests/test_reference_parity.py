"""Parity with Qwen's own preprocessing: qwen-omni-utils 0.0.9 (``smart_nframes``, ``smart_resize``, ``fetch_video``
with its decord backend) and the real processor are the oracles.

When the reference plan fits the budget the plugin must feed the model exactly what ``fetch_video`` + the processor
would: the same frame indices, the same height x width, the same sample fps, hence the same tokens, and with the
default ``resize="reference"`` the same pixels, bit for bit. ``resize="fast"`` (torch's uint8 kernel of the same
filter) is measured and bounded here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
vision_process = pytest.importorskip("qwen_omni_utils.v2_5.vision_process")
needs_decord = pytest.mark.skipif(
    importlib.util.find_spec("decord") is None, reason="decord is the reference's video reader (pip install decord)"
)

# fetch_video runs in a child process: decord ships its own FFmpeg libraries, which break PyAV's encoders (libvpx)
# once both are loaded in one process. The child saves the frames and the metadata for the test to compare.
_FETCH_VIDEO = """
import json, sys
import numpy as np
from qwen_omni_utils.v2_5 import vision_process
(video, metadata), sample_fps = vision_process.fetch_video(
    {"video": sys.argv[1]}, return_video_sample_fps=True, return_video_metadata=True
)
np.save(sys.argv[2], video.numpy())
indices = [int(i) for i in metadata["frames_indices"]]
json.dump({"indices": indices, "total": int(metadata["total_num_frames"]), "sample_fps": sample_fps}, sys.stdout)
"""


def fetch_video(path: str, folder) -> tuple[np.ndarray, dict]:
    """qwen-omni-utils' ``fetch_video`` on ``path`` with its decord reader: the float frames (T, C, H, W) and its
    frame indices, total frame count and sample fps."""
    frames = folder / "reference.npy"
    env = {**os.environ, "FORCE_QWENVL_VIDEO_READER": "decord"}
    result = subprocess.run(
        [sys.executable, "-c", _FETCH_VIDEO, path, str(frames)], capture_output=True, text=True, env=env, check=True
    )
    return np.load(frames), json.loads(result.stdout)


from omni_lmms_plugin import synthetic_media as sm  # noqa: E402
from omni_lmms_plugin.budget import GRID_PIXELS, TokenBudget, smart_grid  # noqa: E402
from omni_lmms_plugin.media import load_video, plan_probed_video, probe  # noqa: E402
from omni_lmms_plugin.request_plan import torch_linspace_indices  # noqa: E402
from omni_lmms_plugin.video_plan import (  # noqa: E402
    VideoPolicy,
    linspace_indices,
    reference_frame_count,
    reference_max_pixels,
)

FACTOR = vision_process.SPATIAL_MERGE_SIZE * 14  # fetch_video's image_factor with the default patch size


@settings(max_examples=400, deadline=None)
@given(
    total_frames=st.integers(2, 200_000),
    video_fps=st.sampled_from([5.0, 12.5, 23.976, 24.0, 25.0, 29.97, 30.0, 59.94, 60.0, 120.0]),
    fps=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    min_frames=st.integers(1, 64),
    max_frames=st.integers(64, 1024),
)
def test_frame_count_equals_smart_nframes(total_frames, video_fps, fps, min_frames, max_frames):
    policy = VideoPolicy(fps=fps, min_frames=min_frames, max_frames=max_frames, frame_floor=max(min_frames, 128))
    ele = {"fps": fps, "min_frames": min_frames, "max_frames": min(max_frames, total_frames)}
    try:
        expected = vision_process.smart_nframes(ele, total_frames=total_frames, video_fps=video_fps)
    except ValueError:  # the reference refuses (fewer than 2 frames wanted of a tiny clip)
        return
    assert reference_frame_count(total_frames, video_fps, policy) == expected


@settings(max_examples=300, deadline=None)
@given(total_frames=st.integers(2, 10_000), pairs=st.integers(1, 384))
def test_pure_index_rule_equals_torch_linspace_up_to_10k_frames(total_frames, pairs):
    """Exact rational rounding equals torch's float32 linspace below 10k frames; past that, float32 ties differ, so
    the adapter and preflight pass :func:`torch_linspace_indices` (the reference's own call) to the planner."""
    count = min(2 * pairs, total_frames - total_frames % 2)
    reference = tuple(torch.linspace(0, total_frames - 1, count).round().long().tolist())
    assert linspace_indices(total_frames, count) == reference == torch_linspace_indices(total_frames, count)


@settings(max_examples=400, deadline=None)
@given(
    height=st.integers(16, 4320),
    width=st.integers(16, 7680),
    frames=st.integers(1, 384).map(lambda pairs: 2 * pairs),
)
def test_frame_size_equals_fetch_video_smart_resize(height, width, frames):
    """The reference size: ``smart_resize`` with fetch_video's per-frame cap ``total_pixels / n * 2`` (its default
    128k-token ``MODEL_SEQ_LEN``), floored at 1.05 x min_pixels."""
    if max(height, width) / min(height, width) > 200:
        return
    policy = VideoPolicy()
    min_pixels = vision_process.VIDEO_MIN_TOKEN_NUM * FACTOR**2
    total_pixels = vision_process.MODEL_SEQ_LEN * FACTOR**2 * 0.9
    cap = max(
        min(vision_process.VIDEO_MAX_TOKEN_NUM * FACTOR**2, total_pixels / frames * vision_process.FRAME_FACTOR),
        int(min_pixels * 1.05),
    )
    expected = vision_process.smart_resize(height, width, factor=FACTOR, min_pixels=min_pixels, max_pixels=cap)
    rows, cols = smart_grid(height, width, policy.min_pixels, reference_max_pixels(frames, policy))
    assert (rows * GRID_PIXELS, cols * GRID_PIXELS) == expected


# Real codecs, each clip short enough that the reference plan fits the 32k context.
CLIPS = {
    "h264_aac.mp4": dict(width=640, height=360, fps=30.0, duration=209 / 30),
    "mpeg4_mp3.mkv": dict(width=480, height=270, fps=25.0, duration=6.0, video_codec="mpeg4", audio_codec="libmp3lame"),
    "h264_1080p.mp4": dict(width=1920, height=1080, fps=30.0, duration=3.0),
    # AVI of MPEG-4 with B-frames: its header counts 151 frames for the 150 shown (which decord counts).
    "mpeg4_bframes.avi": dict(width=480, height=270, fps=25.0, duration=6.0, bframes=2),
    # AVI whose second frame is stamped 3 ticks after the first: frame i >= 1 is shown at (i + 2) / 25 s.
    "mpeg4_gap.avi": dict(width=320, height=240, fps=25.0, duration=5.0),
    # Variable frame rate: frame i is not at i / fps.
    "h264_vfr.mp4": dict(width=320, height=240, fps=30.0, duration=5.0, vfr=True),
}
# Clips on which decord, fetch_video's reader, returns other frames than the indices it names: on this AVI its seeks
# land off (frames 5, 19, 33, 48, 110, 124, 137, 148 for 54, 68, 81, 95, 108, 122, 135, 149). Ours are the named
# frames there too (each carries its index); the pixels are compared where decord's frame is the named one.
DECORD_MISREADS = {"mpeg4_bframes.avi"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity")
    return {name: sm.write_video(folder / name, **spec) for name, spec in CLIPS.items()}


@needs_decord
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_a_fitting_clip_gets_exactly_the_reference_frames_size_rate_and_tokens(clips, processor, name, tmp_path):
    """Frame indices, size and sample fps from our planner equal fetch_video's metadata on the same file; decoding
    them yields the very frames it names (each frame carries its index), with fetch_video's pixels bit for bit; the
    processor counts the same tokens for both. Breaking check: the old resize (swscale's bicubic straight from the
    decoder's YUV) and the uint8 kernel as the default each fail the pixel assertion, and swscale's resize as
    ``resize="fast"`` fails the fast bound (mean 0.74 and 0.94 levels); centring frame times in their
    intervals (the old rule) fails the index and decoded-frame assertions; the AVI's frame count taken from its header (151) fails the count assertion; frames picked by time
    instead of by index (the old rule) fail the decoded-frame assertion on the gapped AVI and the variable-rate MP4."""
    path = str(clips[name])
    video, metadata = fetch_video(path, tmp_path)
    sample_fps = metadata["sample_fps"]
    info = probe(path)
    plan = plan_probed_video(
        info, TokenBudget(max_model_len=32_768), VideoPolicy(use_audio=False), frame_indices=torch_linspace_indices
    )
    assert plan.rule == "reference" and plan.reference_fits
    assert info.total_frames == metadata["total"]
    assert list(plan.frame_indices) == metadata["indices"]
    assert (plan.height, plan.width) == tuple(video.shape[-2:])
    assert plan.sample_fps == pytest.approx(sample_fps, rel=1e-9)

    loaded = load_video(path, plan)
    assert [sm.read_frame_index(frame) for frame in loaded.frames] == list(plan.frame_indices)

    ours = processor(
        text=["<|VIDEO|>"],
        videos=[loaded.frames],
        videos_kwargs={"do_resize": False, "fps": plan.sample_fps},
        return_tensors="pt",
    )
    theirs = processor(
        text=["<|VIDEO|>"], videos=[torch.from_numpy(video)], videos_kwargs={"fps": sample_fps}, return_tensors="pt"
    )
    assert ours["video_grid_thw"].tolist() == theirs["video_grid_thw"].tolist()
    assert ours["input_ids"].shape == theirs["input_ids"].shape
    assert torch.allclose(ours["video_second_per_grid"], theirs["video_second_per_grid"])

    # The same pixels, bit for bit, on every frame decord names right.
    reference = video.astype(np.uint8).transpose(0, 2, 3, 1)
    named = [sm.read_frame_index(frame) == index for frame, index in zip(reference, plan.frame_indices, strict=True)]
    assert all(named) or name in DECORD_MISREADS
    assert sum(named) >= 4
    assert np.array_equal(loaded.frames[named], reference[named]), (
        f"{name}: {np.count_nonzero(loaded.frames[named] != reference[named])} values differ from fetch_video's"
    )

    # The fast resize: torch's uint8 kernel of the same filter. Measured (0..255 levels, mean / p99 / max): H.264 360p
    # 0.07 / 1 / 12, mpeg4 in Matroska 0.06 / 1 / 9, H.264 1080p 0.05 / 1 / 2 (the larger steps at the frame-index
    # marks' hard edges, where the float filter overshoots 0..255 between its passes).
    fast = load_video(path, plan, resize="fast").frames
    difference = np.abs(fast[named].astype(np.int16) - reference[named].astype(np.int16))
    assert difference.mean() < 0.2, f"{name}: mean |fast - fetch_video| = {difference.mean():.2f} levels"
    assert np.percentile(difference, 99) <= 1, f"{name}: p99 = {np.percentile(difference, 99)}"


def write_frame_list(folder, count: int, width: int, height: int) -> list[str]:
    """``count`` frame images, each carrying its index over grain (so that every resize step shows), every third one
    an RGBA PNG with a transparent band (``fetch_image`` lays RGBA over white)."""
    from PIL import Image

    folder.mkdir()
    grain = np.random.default_rng(0).integers(0, 64, (count, height, width, 3), dtype=np.uint8)
    paths = []
    for index in range(count):
        rgb = np.clip(sm.marked_frame(index, width=width, height=height).astype(np.int16) + grain[index] - 32, 0, 255)
        image = Image.fromarray(rgb.astype(np.uint8))
        if index % 3 == 0:
            alpha = np.full((height, width), 255, dtype=np.uint8)
            alpha[: height // 4] = 0
            image.putalpha(Image.fromarray(alpha))
        paths.append(str(folder / f"frame_{index}.png"))
        image.save(paths[-1])
    return paths


@pytest.mark.parametrize(("width", "height"), [(150, 90), (640, 360)])
def test_a_fitting_frame_list_gets_exactly_the_reference_frames_size_rate_and_pixels(tmp_path, width, height):
    """A list of frame images, as ``fetch_video`` takes one (every frame, at ``sample_fps`` 2.0): our plan for the
    folder at ``frames_fps`` 2.0 keeps every frame at the reference's size and rate, and the pixels equal
    ``fetch_video``'s bit for bit (each image read as ``fetch_image`` reads it, RGBA over white; resized by PIL's
    bicubic to its own size in 56-pixel cells, as fetch_video's call makes it; the stack resized by the float resize).
    Breaking checks (by hand): the old path (one PIL bicubic to the planned size): 5,072,433 values differ, failed;
    frames rounded to 28-pixel cells instead of 56: the planned size differs (252 against 280 rows), failed; RGBA
    converted without the white background: 617,826 values differ, failed."""
    from omni_lmms_plugin.media import load_frames, probe_frames

    paths = write_frame_list(tmp_path / "frames", 20, width, height)
    (video, metadata), sample_fps = vision_process.fetch_video(
        {"video": paths}, return_video_sample_fps=True, return_video_metadata=True
    )
    info = probe_frames(tmp_path / "frames", fps=2.0)
    plan = plan_probed_video(info, TokenBudget(max_model_len=32_768), VideoPolicy(use_audio=False))
    assert plan.rule == "reference" and plan.reference_fits
    assert list(plan.frame_indices) == list(range(20)) == [int(i) for i in metadata["frames_indices"]]
    assert (plan.height, plan.width) == tuple(video.shape[-2:])
    assert plan.sample_fps == pytest.approx(sample_fps, rel=1e-9)
    loaded = load_frames(tmp_path / "frames", plan)
    reference = video.numpy().astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(loaded.frames, reference), (
        f"{np.count_nonzero(loaded.frames != reference)} values differ from fetch_video's"
    )


def grained_image(width: int, height: int, *, transparent_band: bool):
    """A PIL image with grain over colour bands (so that every resize step shows); with ``transparent_band`` an RGBA
    image whose top quarter is transparent and whose next quarter is half transparent."""
    from PIL import Image

    rng = np.random.default_rng(width * height)
    rgb = np.clip(
        sm.marked_frame(3, width=width, height=height).astype(np.int16) + rng.integers(-32, 32, (height, width, 3)),
        0,
        255,
    )
    image = Image.fromarray(rgb.astype(np.uint8))
    if transparent_band:
        alpha = np.full((height, width), 255, dtype=np.uint8)
        alpha[: height // 4] = 0
        alpha[height // 4 : height // 2] = 128
        image.putalpha(Image.fromarray(alpha))
    return image


@pytest.mark.parametrize(
    ("kind", "width", "height"),
    [("rgba_png", 333, 217), ("rgba_in_memory", 61, 45), ("rgb_jpeg", 640, 480)],
)
def test_an_image_gets_exactly_the_reference_pixels(processor, tmp_path, kind, width, height):
    """An image request's pixels are those of lmms-eval's built-in Qwen2.5-Omni path (qwen-omni-utils'
    ``process_mm_info``, i.e. ``fetch_image``, then the processor), bit for bit: an RGBA PNG file, a small in-memory
    RGBA image (as task docs hand PIL images; below the minimum pixels, so scaled up) and an RGB JPEG, none at a
    multiple of 28. Breaking checks (by hand): RGBA converted by ``convert("RGB")``, alpha dropped (the old path):
    both RGBA cases failed (226,314 and 9,650 values differ); the original image handed to the processor to resize
    (the old path): all three failed (1,324, 88 and 413,206 values differ)."""
    from qwen_omni_utils import process_mm_info

    from omni_lmms_plugin.config import AdapterConfig
    from omni_lmms_plugin.inputs import prepare_inputs
    from omni_lmms_plugin.request import Request, resolve_settings
    from omni_lmms_plugin.request_plan import plan_request

    image = grained_image(width, height, transparent_band=kind.startswith("rgba"))
    if kind == "rgba_in_memory":
        source = image
    else:
        source = str(tmp_path / ("image.png" if kind == "rgba_png" else "image.jpg"))
        image.save(source)
    config = AdapterConfig()
    request = Request(0, "What is shown?", {"max_new_tokens": 4}, 0, "t", "test", lambda doc: [source], {})
    plan = plan_request(processor, request, config, resolve_settings(request, config), max_model_len=32_768)
    ours = prepare_inputs(processor, request, plan, config).batch

    message = [{"role": "user", "content": [{"type": "image", "image": source}, {"type": "text", "text": "q"}]}]
    _, images, _ = process_mm_info(message, use_audio_in_video=False)
    reference = processor(text=[plan.text], images=images, return_tensors="pt")
    assert isinstance(source, str) or source.mode == "RGBA"  # the in-memory image reached the reference unconverted
    assert ours["image_grid_thw"].tolist() == reference["image_grid_thw"].tolist()
    differ = int((ours["pixel_values"] != reference["pixel_values"]).sum())
    assert differ == 0, f"{differ} of {ours['pixel_values'].numel()} pixel values differ from the reference's"


def test_the_binding_budget_keeps_the_reference_count_and_lowers_pixels(clips):
    """On a real file, a budget below the reference plan keeps fetch_video's frame indices and shrinks the size."""
    path = str(clips["h264_1080p.mp4"])
    info = probe(path)
    reference = plan_probed_video(info, 10**6, VideoPolicy(use_audio=False), frame_indices=torch_linspace_indices)
    budget = reference.total_tokens // 2
    plan = plan_probed_video(info, budget, VideoPolicy(use_audio=False), frame_indices=torch_linspace_indices)
    assert plan.rule == "fewer_pixels" and not plan.reference_fits
    assert plan.frame_indices == reference.frame_indices
    assert plan.height * plan.width < reference.height * reference.width
    assert plan.total_tokens <= budget
    assert math.isclose(plan.sample_fps, reference.sample_fps)


# --------------------------------------------------------------------------------------------------------------------
# Audio: qwen-omni-utils' process_audio_info (librosa: channels averaged, soxr high-quality resampling to 16 kHz) and
# lmms-eval's built-in adapter's resample_audio are the oracles.
# --------------------------------------------------------------------------------------------------------------------


def _distinct_channels(rate: int, seconds: float, channels: int) -> np.ndarray:
    """(samples, channels) float32 in [-1, 1): a different tone per channel, content above 8 kHz (which resampling to
    16 kHz must remove) and noise, so that the channel mix, the scale and the filter all show."""
    t = np.arange(int(round(rate * seconds))) / rate
    noise = np.random.default_rng(channels).standard_normal((len(t), channels)) * 0.05
    tones = [
        0.3 * np.sin(2 * np.pi * (330 + 220 * c) * t) + 0.15 * np.sin(2 * np.pi * 10_500 * t) for c in range(channels)
    ]
    return (np.stack(tones, axis=1) + noise).astype(np.float32) * 0.8


def _reference_audio(path: str) -> np.ndarray:
    """qwen-omni-utils' ``process_audio_info`` on a standalone audio file (librosa, which reads WAV with soundfile)."""
    from qwen_omni_utils.v2_5.audio_process import process_audio_info

    return process_audio_info([{"role": "user", "content": [{"type": "audio", "audio": path}]}], False)[0]


def _assert_same_samples(ours: np.ndarray, reference: np.ndarray) -> None:
    """Equal, bit for bit, over the shorter one's length."""
    n = min(len(ours), len(reference))
    differ = int(np.count_nonzero(ours[:n] != reference[:n]))
    assert differ == 0, (
        f"{differ} of {n} samples differ from the reference's (max {np.abs(ours[:n] - reference[:n]).max():.3g})"
    )


@pytest.mark.parametrize(
    ("rate", "channels", "subtype"),
    [
        (44_100, 2, "PCM_16"),
        (48_000, 6, "PCM_16"),
        (22_050, 1, "PCM_16"),
        (16_000, 2, "PCM_16"),
        (48_000, 2, "PCM_24"),
        (44_100, 2, "FLOAT"),
    ],
)
def test_an_audio_file_gets_exactly_the_reference_samples(tmp_path, rate, channels, subtype):
    """A WAV (16-bit stereo, 5.1 and mono at 44.1, 48, 22.05 and 16 kHz; 24-bit and float stereo) loads as the very
    samples qwen-omni-utils feeds the model (librosa reads WAV as floats, through soundfile): the channels' mean,
    resampled by soxr's high quality, bit for bit (lengths within one sample: ours is the
    planned span, librosa's ``ceil(n * 16000 / rate)``). Breaking checks (by hand): the old path (FFmpeg's float
    downmix, (L+R)/sqrt(2) for stereo, and FFmpeg's resampler): all six failed; FFmpeg's 16-bit downmix in place of
    the mean, soxr kept: the three multichannel cases failed; every file read through 16-bit samples: the 24-bit and
    float cases failed."""
    soundfile = pytest.importorskip("soundfile")
    from omni_lmms_plugin.media import load_audio

    path = str(tmp_path / "a.wav")
    soundfile.write(path, _distinct_channels(rate, 2.5, channels), rate, subtype=subtype)
    ours, reference = load_audio(path, seconds=2.5), _reference_audio(path)
    assert abs(len(ours) - len(reference)) <= 1, (len(ours), len(reference))
    _assert_same_samples(ours, reference)


@pytest.mark.parametrize(("name", "audio_codec"), [("pcm.mkv", "pcm_s16le"), ("aac.mp4", "aac")])
def test_a_videos_own_track_gets_exactly_the_reference_samples(tmp_path, name, audio_codec):
    """A video's stereo 44.1 kHz track (audio-in-video; PCM in Matroska, AAC in MP4) loads as the samples the reference feeds: librosa reads a
    video's track as FFmpeg's interleaved 16-bit output (``-f s16le``), then averages and resamples as for a file.
    The oracle is ``process_audio_info`` on a WAV of those 16-bit samples: for PCM the track's own samples; for AAC,
    FFmpeg's float-to-16-bit conversion through PyAV stands in for the ffmpeg binary the reference calls (none here).
    Breaking checks (by hand): the old path (FFmpeg's float downmix and resampler, after a seek to the start): both
    failed; the decoder's floats without the 16-bit step: AAC failed; a seek to the start before decoding (as the old
    path did, which skips AAC's priming packet): AAC failed, its first frame off by up to 0.49."""
    soundfile = pytest.importorskip("soundfile")
    import av

    path = str(tmp_path / name)
    sm.write_video(
        path,
        width=160,
        height=120,
        duration=3.0,
        audio_codec=audio_codec,
        audio_sample_rate=44_100,
        audio_channels=2,
        audio_signal="chirp",
    )
    converter = av.AudioResampler(format="s16")
    with av.open(path) as container:
        stream = container.streams.audio[0]
        pcm = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in converter.resample(frame)]
        assert stream.start_time in (0, None)  # the track starts with the video: the reference reads it from there
    interleaved = np.concatenate(pcm).reshape(-1, 2)
    wav = str(tmp_path / "track.wav")
    soundfile.write(wav, interleaved, 44_100, subtype="PCM_16")

    plan = plan_probed_video(probe(path), TokenBudget(max_model_len=32_768), VideoPolicy(use_audio=True))
    assert plan.audio_samples > 0
    ours, reference = load_video(path, plan).audio, _reference_audio(wav)
    assert len(ours) == 48_000 and len(reference) >= len(
        ours
    )  # the plan takes the video's 3 s; the reference the track
    _assert_same_samples(ours, reference)


def _builtin_resample_audio():
    """lmms-eval's built-in Qwen2.5-Omni adapter's ``resample_audio``, compiled from its installed source on its own
    (importing the module needs moviepy, which the adapter imports for its audio check)."""
    import ast
    import importlib.util

    import librosa

    spec = importlib.util.find_spec("lmms_eval.models.simple.qwen2_5_omni")
    tree = ast.parse(open(spec.origin).read())
    method = next(
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "resample_audio"
    )
    namespace = {"np": np, "librosa": librosa}
    exec(compile(ast.Module(body=[method], type_ignores=[]), spec.origin, "exec"), namespace)
    return lambda array, rate: namespace["resample_audio"](None, array, rate)


@pytest.mark.parametrize("rate", [44_100, 48_000, 8_000, 16_000])
def test_a_task_waveform_gets_exactly_the_builtin_adapters_samples_and_features(processor, rate):
    """An audio dict from a task's doc (``array``, ``sampling_rate``) reaches the processor as lmms-eval's built-in
    adapter resamples it (``librosa.resample``, soxr high quality): the same samples and the same input features, bit
    for bit, through our planner and ``prepare_inputs``. Breaking check (by hand): the old linear interpolation onto
    the 16 kHz grid: the three resampled rates failed (16 kHz needs no resampling)."""
    pytest.importorskip("librosa")
    from omni_lmms_plugin.config import AdapterConfig
    from omni_lmms_plugin.inputs import prepare_inputs
    from omni_lmms_plugin.request import Request, resolve_settings
    from omni_lmms_plugin.request_plan import plan_request

    array = _distinct_channels(rate, 2.5, 1)[:, 0]
    reference = _builtin_resample_audio()(array, rate)
    config = AdapterConfig()
    source = {"array": array, "sampling_rate": rate}
    request = Request(0, "What is heard?", {"max_new_tokens": 4}, 0, "t", "test", lambda doc: [source], {})
    plan = plan_request(processor, request, config, resolve_settings(request, config), max_model_len=32_768)
    ours = prepare_inputs(processor, request, plan, config).batch
    theirs = processor(text=[plan.text], audio=[reference], return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()
    differ = int((ours["input_features"] != theirs["input_features"]).sum())
    assert differ == 0, f"{differ} input feature values differ from the built-in adapter's"
