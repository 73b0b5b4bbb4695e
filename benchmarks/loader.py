"""Time our video loader against the loaders lmms-eval and qwen-omni-utils use, on long synthetic videos.

    python benchmarks/loader.py [--cache DIR] [--frames 16 64 256] [--quick] [--loaders NAME ...] [--workers 1 2 ...]
                                [--encodings fast realistic] [--repeat N] [--resize reference|fast]
    python benchmarks/loader.py --scaling [--frames 256] [--quick] [--encodings fast realistic] [--repeat N]
                                [--resize reference|fast]

Generates (once, into ``--cache``) 10-minute 1280x720 30 fps H.264 + AAC videos, with a 2 s GOP and with a 10 s GOP, in
two encodings (``omni_lmms_plugin.synthetic_media``): ``fast`` (flat grey content, x264 ultrafast, no B-frames; about
0.2 ms a frame to decode) and ``realistic`` (a panning colour texture with grain, x264 veryfast with CABAC, deblocking
and 3 B-frames, about 1.5 Mbit/s; about 1.5 ms a frame, as streamed 720p H.264 files). Then runs every loader for every
frame count, each in a fresh subprocess so that its peak RSS (from ``os.wait4``) is its own. Wall time is the load
call alone (imports excluded); ``base`` is the process RSS just before the call, so ``peak - base`` is what the load
itself needed, to compare with ``kept``, the size of the returned frames. ``÷ lmms`` is lmms-eval's time divided by
the row's (how many times faster than lmms-eval's reader the row is). ``--repeat N`` runs every row (every loader
alike) N times, each in a fresh process, and keeps the fastest.

Loaders:

* ``ours-exact`` / ``ours-keyframe``: :func:`omni_lmms_plugin.media.load_video` with a plan of exactly N frames at the
  ``smart_resize`` size (560x1008 for 720p), seek_mode exact / keyframe, video only like the other loaders, resized at
  ``--resize`` precision (``reference``, the default: qwen-omni-utils' float arithmetic, its pixels bit for bit;
  ``fast``: torch's uint8 kernel); ``ours-exact+audio`` also decodes the first 300 s of audio to 16 kHz mono (what
  audio-in-video adds).
* ``pyav-seek``: the naive sketch exact mode must beat: for each target, seek to the keyframe before it and decode
  forward to it (no reuse between targets), resized by the same function at the same precision on its own thread (as
  each of our segments resizes), so that the two differ only in what they decode.
* ``pyav-sequential``: the reference for exact mode: plain PyAV decoding of every frame, keeping (and resizing the same
  way) the frame on screen at each planned time; exact mode must not be more than 10% slower.
* ``lmms-eval``: ``lmms_eval.models.model_utils.load_video.read_video(path, num_frm=N, backend="pyav")`` (native size).
* ``qwen-torchcodec`` / ``qwen-decord``: ``qwen_omni_utils.v2_5.vision_process.fetch_video({"video": path,
  "nframes": N})`` with that backend forced through ``FORCE_QWENVL_VIDEO_READER`` (skipped when not installed).

``--workers`` (default: 1 and all cores) runs our loaders once per worker count (``load_video(workers=N)``: the targets
split into N segments decoded in threads, each with its own container); the ``workers`` column says which. After each
table the issue's targets are checked and printed as met or not: at 64 frames, exact mode (all cores, as lmms-eval's
reader uses them) >= 10x lmms-eval on 2 s GOPs and >= 3.5x on 10 s GOPs, keyframe mode >= 15x on 10 s GOPs, exact mode faster than
``pyav-seek`` (at one worker and at all cores) and never more than 10% slower than ``pyav-sequential`` (when it
looks slower, both are timed twice more and each one's fastest run counts; past that, the benchmark exits 1;
``--slower-margin`` sets the 10%). ``--scaling`` prints the per-core
scaling table instead: ``ours-exact`` and ``ours-keyframe`` at 1, 2, ... up to the machine's cores (and all of them),
frames per second, speed-up over one worker, and the speed-up per worker (1.0 is perfect scaling); then, for 2 to 16
segments (a GPU host's cores), the packets exact mode's costliest segment decodes when the targets are split into
equal counts and when the split evens out the packets, as ``load_video`` does (from the packet index, not timed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

from omni_lmms_plugin.config import ResizeChoice

LOADERS = (
    "ours-exact",
    "ours-keyframe",
    "ours-exact+audio",
    "pyav-seek",
    "pyav-sequential",
    "lmms-eval",
    "qwen-torchcodec",
    "qwen-decord",
)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "omni_lmms_plugin" / "bench"


# --------------------------------------------------------------------------------------------------------------------
# Worker side: one load in this process, result as one JSON line
# --------------------------------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _plan(path: str, frames: int, audio: bool = False):
    from omni_lmms_plugin.media import plan_probed_video, probe
    from omni_lmms_plugin.video_plan import VideoPolicy

    info = probe(path)
    policy = VideoPolicy(
        fps=frames / info.duration, min_frames=frames, max_frames=frames, frame_floor=frames, use_audio=audio
    )
    return plan_probed_video(info, 10**9, policy)


def _sequential(path: str, plan, resize: str) -> tuple:
    """Decode every frame in order; keep the frame on screen at each planned time (exact mode's frames on these
    constant-rate clips)."""
    import av
    import numpy as np

    from omni_lmms_plugin.media.resize import resize_frame, resizing_on_this_thread

    out = np.empty((plan.frames, plan.height, plan.width, 3), dtype=np.uint8)
    targets = plan.frame_times
    index, previous = 0, None
    with av.open(path) as container, resizing_on_this_thread():
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin, time_base = stream.start_time or 0, stream.time_base
        for frame in container.decode(stream):
            seconds = float((frame.pts - origin) * time_base)
            while index < len(targets) and seconds > targets[index] + 1e-6:
                resize_frame(previous if previous is not None else frame, out[index], 0, resize)
                index += 1
            if index == len(targets):
                break
            previous = frame
        while index < len(targets):
            resize_frame(previous, out[index], 0, resize)
            index += 1
    return out.shape, out.nbytes


def _seek_per_target(path: str, plan, resize: str) -> tuple:
    """For each planned time: seek to the keyframe at or before it, decode forward to the frame on screen then."""
    import av
    import numpy as np

    from omni_lmms_plugin.media.resize import resize_frame, resizing_on_this_thread

    out = np.empty((plan.frames, plan.height, plan.width, 3), dtype=np.uint8)
    with av.open(path) as container, resizing_on_this_thread():
        stream = container.streams.video[0]
        origin, time_base = stream.start_time or 0, stream.time_base
        for index, target in enumerate(plan.frame_times):
            container.seek(origin + int(target / time_base), backward=True, any_frame=False, stream=stream)
            previous = None
            for frame in container.decode(stream):
                if previous is not None and float((frame.pts - origin) * time_base) > target + 1e-6:
                    break
                previous = frame
            resize_frame(previous, out[index], 0, resize)
    return out.shape, out.nbytes


def worker(loader: str, path: str, frames: int, workers: int = 1, resize: str = "reference") -> dict:
    """Import what ``loader`` needs, then time one load of ``frames`` frames (ours with ``workers`` threads; ours and
    the PyAV sketches resized at ``resize`` precision)."""
    if loader.startswith("qwen-"):
        os.environ["FORCE_QWENVL_VIDEO_READER"] = loader.split("-", 1)[1]
        from qwen_omni_utils.v2_5.vision_process import fetch_video

        def call():
            video = fetch_video({"video": path, "nframes": frames})
            return tuple(video.shape), video.element_size() * video.nelement()
    elif loader == "lmms-eval":
        from lmms_eval.models.model_utils.load_video import read_video

        def call():
            video = read_video(path, num_frm=frames, backend="pyav")
            return video.shape, video.nbytes
    elif loader.startswith("ours-"):
        from omni_lmms_plugin.media import load_video

        mode = loader.split("-", 1)[1].removesuffix("+audio")
        plan = _plan(path, frames, audio=loader.endswith("+audio"))

        def call():
            video = load_video(path, plan, seek_mode=mode, decode_timeout=3600, workers=workers, resize=resize)
            return video.frames.shape, video.frames.nbytes
    elif loader == "pyav-sequential":
        plan = _plan(path, frames)

        def call():
            return _sequential(path, plan, resize)
    elif loader == "pyav-seek":
        plan = _plan(path, frames)

        def call():
            return _seek_per_target(path, plan, resize)
    else:
        raise SystemExit(f"Invalid loader ({loader}). Supported values are {', '.join(LOADERS)}.")
    if loader.startswith(("ours-", "pyav-")):
        import torch  # noqa: F401  (the resize's import, excluded like every loader's imports)
    base = _rss_bytes()
    started = time.perf_counter()
    shape, nbytes = call()
    return {"seconds": time.perf_counter() - started, "shape": list(shape), "kept": nbytes, "base": base}


# --------------------------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------------------------


ENCODINGS = ("fast", "realistic")
TARGET_FRAMES = 64
# Extra timings of exact mode and sequential decoding before a "more than --slower-margin slower" verdict.
REMEASURE = 2
# Exact mode (one worker) may be at most this fraction slower than sequential decoding (the default --slower-margin).
SLOWER_MARGIN = 0.10


def ensure_videos(cache: Path, quick: bool, encodings: tuple[str, ...] = ENCODINGS) -> list[Path]:
    """The benchmark videos, generated once (written to a temporary name, then renamed)."""
    from omni_lmms_plugin.synthetic_media import write_video

    cache.mkdir(parents=True, exist_ok=True)
    duration, width, height = (60.0, 640, 360) if quick else (600.0, 1280, 720)
    tag = "quick_360p30" if quick else "long_720p30"
    paths = []
    for encoding in encodings:
        for gop_seconds in (2, 10):
            name = f"{tag}_gop{gop_seconds}s.mp4" if encoding == "fast" else f"{tag}_{encoding}_gop{gop_seconds}s.mp4"
            path = cache / name
            if not path.exists():
                started = time.perf_counter()
                part = path.with_suffix(".part.mp4")
                write_video(
                    part,
                    width=width,
                    height=height,
                    fps=30.0,
                    duration=duration,
                    gop=30 * gop_seconds,
                    audio_signal="chirp",
                    bframes=3 if encoding == "realistic" else 0,
                    encoding=encoding,
                )
                os.replace(part, path)
                print(f"generated {path} in {time.perf_counter() - started:.1f} s", flush=True)
            paths.append(path)
    return paths


def run_one(loader: str, path: Path, frames: int, workers: int = 1, resize: str = "reference") -> dict:
    """Run one load in a fresh subprocess; its own peak RSS comes from ``os.wait4``."""
    arguments = [loader, str(path), str(frames), str(workers), resize]
    command = [sys.executable, os.path.abspath(__file__), "--worker", *arguments]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # reap it ourselves to get this child's own rusage
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:100]}
    result = json.loads(lines[-1])
    result["peak"] = usage.ru_maxrss * 1024
    return result


def fastest_of(runs: int, loader: str, path: Path, frames: int, workers: int = 1, resize: str = "reference") -> dict:
    """The fastest of ``runs`` fresh-process loads (with its own peak RSS), or the first failure: a sub-second load
    varies by 20% and more from one process to the next on a shared VM."""
    best: dict = {}
    for _ in range(runs):
        result = run_one(loader, path, frames, workers, resize)
        if "error" in result:
            return result
        if not best or result["seconds"] < best["seconds"]:
            best = result
    return best


def available(loader: str) -> bool:
    if loader == "qwen-torchcodec":
        return importlib.util.find_spec("torchcodec") is not None
    if loader == "qwen-decord":
        return importlib.util.find_spec("decord") is not None
    return True


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder for the generated videos")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--quick", action="store_true", help="1-minute 360p videos (a smoke run)")
    parser.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS)
    parser.add_argument("--encodings", nargs="+", default=list(ENCODINGS), choices=ENCODINGS)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=sorted({1, cores}), help="decoding segments of our loaders"
    )
    parser.add_argument(
        "--repeat",
        type=_at_least_one,
        default=1,
        help="fresh-process runs per row (every loader alike); the fastest counts",
    )
    parser.add_argument(
        "--resize",
        default="reference",
        choices=get_args(ResizeChoice),
        help="resize precision of our loaders and the PyAV sketches (the resize model arg)",
    )
    parser.add_argument(
        "--slower-margin",
        type=float,
        default=SLOWER_MARGIN,
        help="how much slower than sequential decoding exact mode (one worker) may be, as a fraction, before the "
        "benchmark exits 1",
    )
    parser.add_argument("--scaling", action="store_true", help="the per-core scaling table of our loaders")
    parser.add_argument(
        "--worker", nargs=5, metavar=("LOADER", "PATH", "FRAMES", "WORKERS", "RESIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        loader, path, frames, workers, resize = args.worker
        print(json.dumps(worker(loader, path, int(frames), int(workers), resize)), flush=True)
        return 0

    videos = ensure_videos(args.cache, args.quick, tuple(args.encodings))
    if args.scaling:
        return scaling(videos, args.frames, args.repeat, args.resize)
    loaders = [loader for loader in args.loaders if available(loader)]
    skipped = sorted(set(args.loaders) - set(loaders))
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    print(f"{cores} cores; each load in a fresh process; resize={args.resize} (ours and the PyAV sketches)")
    header = f"{'video':<34} {'frames':>6} {'loader':<16} {'workers':>7} {'wall s':>8} {'÷ lmms':>7} {'peak MB':>8} {'base MB':>8} {'kept MB':>8}  shape"
    print(header)
    print("-" * len(header))
    ok = True
    for video in videos:
        for frames in args.frames:
            results = {
                (loader, workers): fastest_of(args.repeat, loader, video, frames, workers, args.resize)
                for loader in loaders
                for workers in (args.workers if loader.startswith("ours-") else [1])
            }
            lmms = results.get(("lmms-eval", 1), {}).get("seconds")
            for (loader, workers), result in results.items():
                if "error" in result:
                    print(
                        f"{video.name:<34} {frames:>6} {loader:<16} {workers:>7} failed: {result['error']}", flush=True
                    )
                    continue
                ratio = f"{lmms / result['seconds']:7.2f}" if lmms else "      -"
                print(
                    f"{video.name:<34} {frames:>6} {loader:<16} {workers:>7} {result['seconds']:8.2f} {ratio} "
                    f"{result['peak'] / 2**20:8.0f} {result['base'] / 2**20:8.0f} {result['kept'] / 2**20:8.0f}  "
                    f"{'x'.join(map(str, result['shape']))}",
                    flush=True,
                )
            keep_fastest_when_slower(video, frames, results, args.resize, args.slower_margin)
            ok = check_targets(video, frames, results, max(args.workers), args.slower_margin) and ok
            print(flush=True)
    return 0 if ok else 1


def keep_fastest_when_slower(video: Path, frames: int, results: dict, resize: str, margin: float) -> None:
    """When exact mode (one worker) looks more than ``margin`` slower than sequential decoding, time both
    ``REMEASURE`` more times and keep each one's fastest run: one fresh-process timing of a sub-second load varies by
    20% and more."""
    exact, sequential = results.get(("ours-exact", 1), {}), results.get(("pyav-sequential", 1), {})
    if (
        "seconds" not in exact
        or "seconds" not in sequential
        or exact["seconds"] <= (1 + margin) * sequential["seconds"]
    ):
        return
    for loader, result in (("ours-exact", exact), ("pyav-sequential", sequential)):
        again = fastest_of(REMEASURE, loader, video, frames, resize=resize)
        before = result["seconds"]
        result["seconds"] = min(before, again.get("seconds", before))
        print(f"  remeasured {loader}: {before:.2f} s, then {REMEASURE} more: keeping {result['seconds']:.2f} s")


def check_targets(video: Path, frames: int, results: dict, most_workers: int, margin: float = SLOWER_MARGIN) -> bool:
    """Print the issue's targets (set at 64 frames) for one table as met or not; False when exact mode (one worker)
    is more than ``margin`` slower than sequential decoding (a regression, not a target)."""

    def seconds(loader: str, workers: int = 1) -> float | None:
        return results.get((loader, workers), {}).get("seconds")

    lmms = seconds("lmms-eval") if frames == TARGET_FRAMES else None  # the speed-up targets are set at 64 frames
    seek, sequential = seconds("pyav-seek"), seconds("pyav-sequential")
    exact_one, exact_all = seconds("ours-exact"), seconds("ours-exact", most_workers)
    keyframe_all = seconds("ours-keyframe", most_workers)
    long_gop = "gop10s" in video.name
    checks = []
    if lmms and exact_all:
        want = 3.5 if long_gop else 10.0
        checks.append((f"exact ({most_workers} workers) >= {want}x lmms-eval", lmms / exact_all, want))
    if lmms and keyframe_all and long_gop:
        checks.append((f"keyframe ({most_workers} workers) >= 15x lmms-eval", lmms / keyframe_all, 15.0))
    if seek and exact_one:
        checks.append(("exact (1 worker) faster than pyav-seek", seek / exact_one, 1.0))
    if seek and exact_all:
        checks.append((f"exact ({most_workers} workers) faster than pyav-seek", seek / exact_all, 1.0))
    for name, ratio, want in checks:
        print(f"  target: {name}: {ratio:.2f}x, {'met' if ratio >= want else 'NOT MET'}")
    if exact_one and sequential and exact_one > (1 + margin) * sequential:
        print(f"  !! exact mode {exact_one:.2f} s is more than {margin:.0%} slower than sequential {sequential:.2f} s")
        return False
    return True


def scaling(videos: list[Path], frame_counts: list[int], repeat: int = 1, resize: str = "reference") -> int:
    """Frames per second of our loaders at 1, 2, 4, ... workers and at every core; returns 0."""
    cores = os.cpu_count() or 1
    counts = sorted({1, cores, *(2**i for i in range(1, cores.bit_length()) if 2**i <= cores)})
    print(f"per-core scaling on {cores} cores (each load in a fresh process; resize={resize})")
    print("| video | frames | loader | workers | wall s | frames/s | speed-up | per worker |")
    print("|---|---|---|---|---|---|---|---|")
    for video in videos:
        for frames in frame_counts:
            for loader in ("ours-exact", "ours-keyframe"):
                single = None
                for workers in counts:
                    result = fastest_of(repeat, loader, video, frames, workers, resize)
                    if "error" in result:
                        print(f"| {video.name} | {frames} | {loader} | {workers} | failed: {result['error']} |||")
                        continue
                    seconds = result["seconds"]
                    single = single or seconds
                    speedup = single / seconds
                    print(
                        f"| {video.name} | {frames} | {loader} | {workers} | {seconds:.2f} | {frames / seconds:.1f} | "
                        f"{speedup:.2f}x | {speedup / workers:.2f} |",
                        flush=True,
                    )
    balance(videos, frame_counts)
    return 0


def _costliest(segments: list[tuple[int, int]], start, step) -> int:
    """Packets the costliest segment decodes (``start``/``step``: exact mode's per-target costs)."""
    return max(int(start[first] + step[first + 1 : stop].sum()) for first, stop in segments)


def balance(videos: list[Path], frame_counts: list[int], segment_counts: tuple[int, ...] = (2, 4, 8, 16)) -> None:
    """Exact mode's decoding critical path when one video is split into segments (up to a 16-core host's, computed
    from the packet index, nothing decoded): the packets the costliest segment decodes when the targets are split
    into equal counts, and when the split evens out the packets (what ``load_video`` does)."""
    import av

    from omni_lmms_plugin.media import targets as targeting
    from omni_lmms_plugin.media._container import scan_packets

    print("\nexact mode's costliest segment, in packets to decode: equal target counts vs the packet-balanced split")
    print("| video | frames | segments | equal counts | balanced | ideal (total / segments) | critical path shorter |")
    print("|---|---|---|---|---|---|---|")
    for video in videos:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            index = scan_packets(container, stream, str(video))
            frame_seconds = 1 / float(stream.average_rate)
        for frames in frame_counts:
            targets = targeting.exact_targets(_plan(str(video), frames), index)
            _, shown_times = targeting.shown_frames(index, targets)
            start, step = targeting.exact_costs(index.times, index.keys, shown_times, frame_seconds)
            for count in segment_counts:
                equal = _costliest(targeting.split_into_segments(frames, count), start, step)
                balanced = _costliest(targeting.split_into_segments(frames, count, (start, step)), start, step)
                ideal = (start[0] + step[1:].sum()) / count
                print(
                    f"| {video.name} | {frames} | {count} | {equal} | {balanced} | {ideal:.0f} | "
                    f"{equal / balanced:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
