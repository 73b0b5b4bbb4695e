"""The ``omni-lmms`` command. Each subcommand imports what it needs when it runs, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .config import AdapterConfig
from .errors import BudgetError, ConfigError, MediaError, OmniPluginError
from .video_plan import FRAME_POLICIES

__all__ = ["main"]


def _cmd_plan(args: argparse.Namespace) -> int:
    from .budget import TokenBudget
    from .media import is_frame_sequence, plan_probed_video, probe, probe_frames
    from .video_plan import VideoPolicy

    info = probe_frames(args.video, args.frames_fps) if is_frame_sequence(args.video) else probe(args.video)
    try:
        budget = TokenBudget(
            max_model_len=args.max_model_len,
            prompt_tokens=args.prompt_tokens,
            max_new_tokens=args.max_new_tokens,
            max_video_tokens=args.max_video_tokens,
        )
        policy = VideoPolicy(
            fps=args.fps, max_frames=args.max_frames, use_audio=not args.no_audio, frame_policy=args.frame_policy
        )
        plan = plan_probed_video(info, budget, policy)
    except (ConfigError, BudgetError) as error:
        raise MediaError(args.video, str(error)) from None
    data = {
        **plan.to_dict(),
        "max_model_len": budget.max_model_len,
        "prompt_tokens": budget.prompt_tokens,
        "max_new_tokens": budget.max_new_tokens,
        "source": {
            "path": str(args.video),
            "duration": info.duration,
            "frame_rate": info.frame_rate,
            "width": info.width,
            "height": info.height,
            "coded_width": info.coded_width,
            "coded_height": info.coded_height,
            "has_audio": info.has_audio,
            "rotation": info.rotation,
            "total_frames": info.total_frames,
            "total_frames_source": info.total_frames_source,
        },
    }
    if args.json:
        print(json.dumps(data))
        return 0
    size = f"{info.width}x{info.height}"
    if info.format_name == "image_sequence":
        size = (
            f"{info.coded_width}x{info.coded_height} images stacked at {size} (as qwen-omni-utils stacks a frame list)"
        )
    print(
        f"{args.video}: {info.duration:.2f} s, {size} @ {info.frame_rate:.3f} fps, audio={'yes' if info.has_audio else 'no'}"
    )
    print(f"  {plan.frame_policy} policy, {plan.rule}: {plan.reason}")
    print(
        f"  reference   {plan.reference_frames} frames at {plan.reference_width}x{plan.reference_height}, "
        f"{plan.reference_tokens} tokens ({'fits' if plan.reference_fits else 'does not fit'})"
    )
    print(f"  frames      {plan.frames} at {plan.width}x{plan.height}, sample fps {plan.sample_fps:.4f}")
    print(
        f"  frames of   {plan.total_frames}: indices {plan.frame_indices[0]} .. {plan.frame_indices[-1]}, "
        f"times {plan.frame_times[0]:.3f} s .. {plan.frame_times[-1]:.3f} s"
    )
    print(f"  audio       {plan.audio_seconds:g} s ({plan.audio_tokens} tokens)")
    print(
        f"  tokens      video {plan.video_tokens} + audio {plan.audio_tokens} + special = {plan.total_tokens} of budget {plan.budget}"
    )
    for note in plan.notes:
        print(f"  note: {note}")
    return 0


def _cmd_tasks_dir(args: argparse.Namespace) -> int:
    from .tasks import folder

    print(folder())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import collect, render

    findings = collect()
    print(render(findings))
    return 1 if any(finding.level == "error" for finding in findings) else 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    from .preflight import render_preflight, run_preflight

    try:
        gpu_gib = [float(part) for part in args.gpu_mem.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpu-mem={args.gpu_mem!r} must be comma-separated GiB sizes, e.g. 24,48,80") from None
    report = run_preflight(
        [name.strip() for name in args.tasks.split(",") if name.strip()],
        model_args=args.model_args,
        gpu_gib=gpu_gib,
        include_paths=args.include_path,
        output=args.output,
        limit=args.limit,
        gen_kwargs=args.gen_kwargs,
        plots=not args.no_plots,
    )
    print(render_preflight(report))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .bundle import write_bundle
    from .plots import write_plots
    from .report import build_report, render_report
    from .runs import load_run

    run = load_run(args.run_dir)
    report = build_report(run)
    folder = Path(args.output) if args.output else run.path / "omni_report"
    folder.mkdir(parents=True, exist_ok=True)
    written = [] if args.no_plots else write_plots(report, folder)
    report_path = folder / "report.json"
    report_path.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(render_report(report))
    print(f"report: {report_path}" + (f"; plots: {', '.join(map(str, written))}" if written else ""))
    if args.bundle:
        bundle = write_bundle(run, args.bundle, [report_path, *written])
        print(
            f"bundle: {bundle} (check with: tar -xzf {bundle.name} && cd {bundle.name.split('.')[0]} && sha256sum -c SHA256SUMS)"
        )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .compare import compare_runs, render_differences
    from .runs import load_run

    run_a, run_b = load_run(args.run_a), load_run(args.run_b)
    differences = compare_runs(run_a, run_b)
    print(render_differences(run_a, run_b, differences, limit=args.max_lines))
    return 1 if differences else 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-lmms", description="Qwen2.5-Omni video evaluation for lmms-eval, within an exact token budget."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="plan one video within a token budget (reads metadata only)")
    defaults = AdapterConfig()
    plan.add_argument("video", help="video file, or a folder of frame images")
    plan.add_argument("--max-model-len", type=int, default=32768, help="model context length (default 32768)")
    plan.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults.max_new_tokens,
        help=f"tokens reserved for the answer (default {defaults.max_new_tokens})",
    )
    plan.add_argument("--prompt-tokens", type=int, default=0, help="text tokens of the templated prompt (default 0)")
    plan.add_argument(
        "--max-video-tokens", type=int, default=None, help="cap on the video block's tokens (default none)"
    )
    plan.add_argument("--fps", type=float, default=defaults.fps, help=f"target sampling rate (default {defaults.fps})")
    plan.add_argument(
        "--max-frames", type=int, default=defaults.max_frames, help=f"most frames (default {defaults.max_frames})"
    )
    plan.add_argument(
        "--frame-policy",
        choices=FRAME_POLICIES,
        default=defaults.frame_policy,
        help=f"what gives way when the reference plan does not fit (default {defaults.frame_policy})",
    )
    plan.add_argument(
        "--frames-fps",
        type=float,
        default=defaults.frames_fps,
        help=f"rate of a frame-folder video (default {defaults.frames_fps})",
    )
    plan.add_argument("--no-audio", action="store_true", help="leave the audio track out")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.set_defaults(run=_cmd_plan)

    tasks_dir = commands.add_parser("tasks-dir", help="print the folder to pass to lmms-eval as --include_path")
    tasks_dir.set_defaults(run=_cmd_tasks_dir)

    demo = commands.add_parser(
        "demo", help="run the real lmms-eval CLI on a tiny random model and generated videos (CPU)"
    )
    demo.add_argument("--output", default=None, help="run folder (default: a new temporary folder)")
    demo.set_defaults(run=_cmd_demo)

    doctor = commands.add_parser("doctor", help="check versions, GPUs, the allocator setting and the registration")
    doctor.set_defaults(run=_cmd_doctor)

    preflight = commands.add_parser(
        "preflight",
        help="walk every sample of tasks without weights or GPU: tokens, frames, clipping, predicted memory, bad files",
    )
    preflight.add_argument("--tasks", required=True, help="comma-separated lmms-eval task names")
    preflight.add_argument("--model_args", default="", help="qwen2_5_omni_safe model args, as for lmms-eval")
    preflight.add_argument("--gpu-mem", default="24,48,80", help="GPU sizes in GiB to check (default 24,48,80)")
    preflight.add_argument(
        "--include-path", action="append", default=[], help="extra task folder (repeatable); ours are always included"
    )
    preflight.add_argument("--output", default="preflight.json", help="JSON report; PNGs are written beside it")
    preflight.add_argument("--limit", type=float, default=None, help="first N samples per task (or a fraction < 1)")
    preflight.add_argument("--gen_kwargs", default=None, help="generation kwargs override, as lmms-eval's --gen_kwargs")
    preflight.add_argument("--no-plots", action="store_true", help="write the JSON report only")
    preflight.set_defaults(run=_cmd_preflight)

    report = commands.add_parser("report", help="summarise a finished run; optionally pack a submission bundle")
    report.add_argument("run_dir", help="the run's lmms-eval --output_path")
    report.add_argument("--bundle", default=None, help="write a .tar.gz with results, samples, provenance, SHA256SUMS")
    report.add_argument("--output", default=None, help="folder for report.json and plots (default RUN_DIR/omni_report)")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    report.set_defaults(run=_cmd_report)

    verify = commands.add_parser("verify", help="compare two runs sample by sample; exit 1 when anything differs")
    verify.add_argument("run_a", help="first run's --output_path")
    verify.add_argument("run_b", help="second run's --output_path")
    verify.add_argument("--max-lines", type=int, default=50, help="differences to print (default 50)")
    verify.set_defaults(run=_cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except OmniPluginError as error:
        print(f"omni-lmms {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
