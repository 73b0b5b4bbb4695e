"""Host memory under hostile video files: the loader's peak RSS, measured in a fresh subprocess (libav allocates
outside Python, where tracemalloc cannot see), stays within the planned frames plus a stated decoder overhead."""

from __future__ import annotations

import json
import subprocess
import sys

import hostile_media as hm
import pytest

from omni_lmms_plugin.media.video import DECODER_THREADS

MIB = 2**20
# The decoder's own working set: each of its DECODER_THREADS threads holds its picture in flight and the references it
# reads; measured on 2 CPUs: about 3 pictures per thread at the file's coded size in YUV 4:2:0. The bound allows 3 per
# thread plus 2 per decoder (a run decodes a video in segments, each with its own decoder, the threads shared out among
# them), and a fixed 96 MiB for libav's contexts, swscale, torch's first resizes (its threads and allocator) and Python
# objects: with 64 MiB, the 4K bomb's peak varied from 254 to 285 MB in six fresh processes against a 279 MB bound.
FRAME_THREADS = DECODER_THREADS


def decoder_pictures(segments: int) -> int:
    return 3 * FRAME_THREADS + 2 * segments


# Each segment resizes one kept frame at a time (media/resize.py): the frame in RGB at its coded size (3 bytes a
# pixel), one channel of it as float32 (4) and the first pass of the separable filter (at most 4 more).
RESIZE_BYTES_PER_CODED_PIXEL = 3 + 4 + 4
FIXED_OVERHEAD = 96 * MIB
BUDGET_TOKENS = 30_000  # a video's share of a 32k context

# Runs in a fresh interpreter: plan the file (metadata only), reset the peak-RSS mark, then probe, plan and decode it
# as the adapter does; report the planned frame bytes, the coded picture size and how far RSS rose above its start.
# torch is imported before the mark: the adapter's process holds it already, and the resize runs on it.
_CHILD = r"""
import json, sys
import torch
from omni_lmms_plugin import media
from omni_lmms_plugin.errors import MediaError

def status_kib(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))

path, budget, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
planned = coded = pixels = 0
try:
    info = media.probe(path)
    pixels = info.coded_width * info.coded_height
    coded = pixels * 3 // 2
    plan = media.plan_probed_video(info, budget)
    planned = plan.frames * plan.height * plan.width * 3
except MediaError:
    pass
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset VmHWM to the current RSS
start = status_kib("VmRSS")
try:
    loaded = media.load_video(path, budget=budget, workers=workers)
    outcome = f"{loaded.frames.shape[0]} frames, {loaded.decoded_frames} decoded"
except MediaError as error:
    outcome = f"MediaError: {error}"
rise = (status_kib("VmHWM") - start) * 1024
print(json.dumps({"planned": planned, "coded_picture": coded, "coded_pixels": pixels, "rise": rise, "outcome": outcome}))
"""


def peak_rss_rise(path, workers: int = 1) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(BUDGET_TOKENS), str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")
    return {
        # 8K frames: each decoded picture is 50 MB (YUV) or 100 MB (RGB).
        "8k": hm.write_static_video(folder / "8k.mp4", width=7680, height=4320, frames=24),
        # A decompression bomb with the longest GOP: 300 4K frames, one keyframe, about 40 KB on disk and 3.7 GB
        # decoded; every frame must be decoded to reach the planned ones.
        "bomb": hm.write_static_video(folder / "bomb.mp4", width=3840, height=2160, frames=300, gop=300),
        # A header claiming 60000x60000 frames (5.4 GB each) in a 4 KB file.
        "size_claim": hm.write_size_claim(folder / "claim.y4m"),
        # A stream claiming 1e9 seconds at 30 fps: 3e10 frames.
        "duration_claim": hm.write_duration_claim(folder / "forever.mkv"),
    }


@pytest.mark.parametrize(
    ("name", "workers"),
    [("8k", 1), ("8k", 2), ("bomb", 1), ("bomb", 2), ("size_claim", 1), ("duration_claim", 1)],
)
def test_a_hostile_file_cannot_exhaust_host_memory(hostile, name, workers):
    """Peak RSS while loading stays under planned frames + ``decoder_pictures`` coded pictures + one frame being
    resized per segment (``RESIZE_BYTES_PER_CODED_PIXEL``) + 96 MiB, whatever the file claims or decodes to, with one
    decoder and with two segments (as runs decode by default on 2 cores).

    Catches a loader that holds decoded frames: with ``media._Decoder.frames`` changed by hand to keep every frame it
    yields (appended to a list on the decoder), the 8k case rose by 1671 MB (bound 830 MB) and the bomb by 3803 MB
    (bound 310 MB) on 2 CPUs, and both failed; with two segments, both failed again. The two claim cases end in
    MediaError before decoding; they guard against buffers sized from what a header claims (not shown by a hand-made
    breakage).
    """
    measured = peak_rss_rise(hostile[name], workers)
    bound = (
        measured["planned"]
        + decoder_pictures(workers) * measured["coded_picture"]
        + workers * RESIZE_BYTES_PER_CODED_PIXEL * measured["coded_pixels"]
        + FIXED_OVERHEAD
    )
    assert measured["rise"] < bound, (measured, bound)


# Runs in a fresh interpreter: the adapter on the tiny checkpoint answers many requests whose doc_to_visual builds a
# large in-memory image each time it is called (as image tasks decode them from the dataset); reports how far RSS rose
# during generate_until and the bytes of one image and of its processor output.
_IMAGES_CHILD = r"""
import json, sys
import numpy as np
from lmms_eval.api.instance import Instance
from PIL import Image
from omni_lmms_plugin.adapter import Qwen25OmniSafe

def status_kib(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))

checkpoint, folder, count, side = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = Qwen25OmniSafe(pretrained=checkpoint, device="cpu", provenance_dir=folder, resume=False, max_new_tokens=2)
docs = [{"seed": i} for i in range(count)]
model.task_dict = {"images": {"test": docs}}

def doc_to_visual(doc):
    noise = np.random.default_rng(doc["seed"]).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return [Image.fromarray(noise)]

requests = [
    Instance("generate_until", ("What is shown?", {"max_new_tokens": 2}, doc_to_visual, i, "images", "test"), i,
             {"task": "images", "doc_id": i, "repeats": 1})
    for i in range(count)
]
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
start = status_kib("VmRSS")
answers = model.generate_until(requests)
rise = (status_kib("VmHWM") - start) * 1024
failed = sum(answer.text.startswith("[omni-lmms failed]") for answer in answers)
print(json.dumps({"rise": rise, "image": side * side * 3, "failed": failed}))
"""


def _image_run_rise(checkpoint, folder, count: int, side: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _IMAGES_CHILD, str(checkpoint), str(folder), str(count), str(side)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    assert measured["failed"] == 0
    return measured


def test_an_image_task_holds_a_few_requests_media_not_the_benchmarks(tiny_7b, tmp_path):
    """Requests whose doc_to_visual makes a 1000x1000 RGB image (3 MB) each time it is called: the run's peak RSS does
    not grow with the number of requests (20 vs 100: the 80 more images would be 240 MB), because a request's media
    are resolved when it is prepared and released once the processor has run. The bound on the growth is 80 MiB.
    Catches media resolved eagerly: with ``generate_until`` keeping every request's ``visuals()`` in a list (the old
    unpacking, which called doc_to_visual for every request first), the growth was about the 80 images and this test
    failed."""
    few = _image_run_rise(tiny_7b, tmp_path / "few", 20, 1000)
    many = _image_run_rise(tiny_7b, tmp_path / "many", 100, 1000)
    growth = many["rise"] - few["rise"]
    assert growth < 80 * MIB, (few, many)
    assert 80 * many["image"] > 80 * MIB * 2, "the bound must be far below what holding every image would take"
