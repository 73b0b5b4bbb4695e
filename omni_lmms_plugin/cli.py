"""The ``omni-lmms`` command. Each subcommand imports what it needs when it runs, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import BudgetError, ConfigError, MediaError, OmniPluginError

__all__ = ["main"]


def _cmd_plan(args: argparse.Namespace) -> int:
    from .budget import TokenBudget, VideoPolicy
    from .media import plan_for, probe

    info = probe(args.video)
    try:
        budget = TokenBudget(
            max_model_len=args.max_model_len,
            prompt_tokens=args.prompt_tokens,
            max_new_tokens=args.max_new_tokens,
            max_video_tokens=args.max_video_tokens,
        )
        policy = VideoPolicy(fps=args.fps, max_frames=args.max_frames, use_audio=not args.no_audio)
        plan = plan_for(info, budget, policy)
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
            "has_audio": info.has_audio,
        },
    }
    if args.json:
        print(json.dumps(data))
        return 0
    print(
        f"{args.video}: {info.duration:.2f} s, {info.width}x{info.height} @ {info.frame_rate:.3f} fps, audio={'yes' if info.has_audio else 'no'}"
    )
    print(f"  case {plan.case}: {plan.reason}")
    print(f"  frames      {plan.frames} at {plan.width}x{plan.height}, sample fps {plan.sample_fps:.4f}")
    first, last = (plan.frame_times[0], plan.frame_times[-1]) if plan.frame_times else (0.0, 0.0)
    print(f"  frame times {first:.3f} s .. {last:.3f} s")
    print(f"  audio       {plan.audio_seconds:g} s ({plan.audio_tokens} tokens)")
    print(
        f"  tokens      video {plan.video_tokens} + audio {plan.audio_tokens} + special = {plan.total_tokens} of budget {plan.budget}"
    )
    for note in plan.notes:
        print(f"  note: {note}")
    return 0


def _cmd_tasks_dir(args: argparse.Namespace) -> int:
    import omni_lmms_plugin.tasks as tasks

    print(Path(next(iter(tasks.__path__))).resolve())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import collect, render

    findings = collect()
    print(render(findings))
    return 1 if any(finding.level == "error" for finding in findings) else 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-lmms", description="Qwen2.5-Omni video evaluation for lmms-eval, within an exact token budget."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="plan one video within a token budget (reads metadata only)")
    plan.add_argument("video", help="video file")
    plan.add_argument("--max-model-len", type=int, default=32768, help="model context length (default 32768)")
    plan.add_argument("--max-new-tokens", type=int, default=512, help="tokens reserved for the answer (default 512)")
    plan.add_argument("--prompt-tokens", type=int, default=0, help="text tokens of the templated prompt (default 0)")
    plan.add_argument(
        "--max-video-tokens", type=int, default=None, help="cap on the video block's tokens (default none)"
    )
    plan.add_argument("--fps", type=float, default=2.0, help="target sampling rate (default 2.0)")
    plan.add_argument("--max-frames", type=int, default=768, help="most frames to sample (default 768)")
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
