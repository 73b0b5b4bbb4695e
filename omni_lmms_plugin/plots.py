"""The PNG plots of ``omni-lmms report`` (peak memory and time per sample) and of ``omni-lmms preflight`` (planned
tokens, predicted peak memory against the GPU sizes), with their matplotlib helpers: :func:`load_pyplot` (the Agg
backend, or an error naming the extra to install) and :func:`save_figure`."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import OmniPluginError
from .memory import GIB

__all__ = ["PLOTS_EXTRA", "load_pyplot", "save_figure", "write_plots", "write_preflight_plots"]

PLOTS_EXTRA = "pip install 'matplotlib>=3.7'"


def load_pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; :class:`OmniPluginError` naming the install command
    when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise OmniPluginError(f"plots need matplotlib, which is not installed: {PLOTS_EXTRA}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """``peak_memory.png`` (measured peak per sample, or the estimate when nothing was measured, said in the title)
    and ``sample_time.png`` (wall seconds per sample) in ``folder``."""
    plt = load_pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = report["per_sample"]
    labels = [f"{r['task']}/{r['doc_id']}" for r in rows]
    positions = list(range(len(rows)))
    written = []

    figure, axes = plt.subplots(figsize=(max(7.0, min(18.0, 0.25 * len(rows) + 4)), 4.5), dpi=100)
    measured = [r["peak_memory_bytes"] for r in rows]
    estimated = [r["estimated_peak_bytes"] for r in rows]
    if report["memory"]["measured"]:
        axes.bar(positions, [(v or 0) / GIB for v in measured], color="tab:blue", label="measured peak")
        if any(v is not None for v in estimated):
            axes.plot(
                positions,
                [(v or math.nan) / GIB if v else math.nan for v in estimated],
                "o",
                color="tab:orange",
                label="estimate",
            )
        axes.set_title("Peak device memory per sample (measured)", fontsize=10)
    else:
        axes.bar(positions, [(v or 0) / GIB for v in estimated], color="tab:orange", label="estimated peak")
        axes.set_title("ESTIMATED peak memory per sample (nothing measured: a CPU run)", fontsize=10)
    for index, row in enumerate(rows):
        if row["status"] != "answered":
            axes.axvline(index, color="tab:red", alpha=0.3)
    axes.set_ylabel("GiB")
    axes.set_xlabel("sample (task/doc_id); red lines: failed")
    written.append(_save_sample_plot(plt, figure, axes, positions, labels, folder / "peak_memory.png"))

    figure, axes = plt.subplots(figsize=(max(7.0, min(18.0, 0.25 * len(rows) + 4)), 4.5), dpi=100)
    wall = [r["wall_seconds"] or 0.0 for r in rows]
    wait = [min(r["media_wait_seconds"] or 0.0, w) for r, w in zip(rows, wall, strict=True)]
    axes.bar(positions, [w - m for w, m in zip(wall, wait, strict=True)], color="tab:green", label="model")
    axes.bar(
        positions,
        wait,
        bottom=[w - m for w, m in zip(wall, wait, strict=True)],
        color="tab:gray",
        label="waiting for media",
    )
    axes.set_title("Wall time per sample")
    axes.set_ylabel("seconds")
    axes.set_xlabel("sample (task/doc_id)")
    written.append(_save_sample_plot(plt, figure, axes, positions, labels, folder / "sample_time.png"))
    return written


def _save_sample_plot(plt: Any, figure: Any, axes: Any, positions: list[int], labels: list[str], path: Path) -> Path:
    """Label the per-sample axis, add the legend, write the PNG and free the figure."""
    _sample_ticks(axes, positions, labels)
    axes.legend(loc="upper right")
    return save_figure(plt, figure, path)


def save_figure(plt: Any, figure: Any, path: Path) -> Path:
    """Lay out, write the PNG and free the figure."""
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _sample_ticks(axes: Any, positions: list[int], labels: list[str]) -> None:
    if len(positions) <= 40:
        axes.set_xticks(positions)
        axes.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    else:
        axes.set_xlabel(f"sample index (of {len(positions)}, ordered by task and doc_id)")


def write_preflight_plots(report: dict[str, Any], output: Path) -> list[Path]:
    """``<stem>_tokens.png`` (planned input tokens per sample, per task) and ``<stem>_memory.png`` (predicted peak
    per sample, sorted, against each GPU size) beside ``output``."""
    plt = load_pyplot()
    planned: dict[str, list[dict]] = defaultdict(list)
    for row in report["samples"]:
        if row["status"] == "planned":
            planned[row["task"]].append(row)
    written = []

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for task, rows in planned.items():
        axes.hist([r["input_tokens"] for r in rows], bins=min(50, max(5, len(rows) // 4)), alpha=0.6, label=task)
    axes.axvline(report["model"]["max_model_len"], color="black", linestyle="--", label="max_model_len")
    axes.set_title("Planned input tokens per sample", fontsize=10)
    axes.set_xlabel("input tokens (prompt + media)")
    axes.set_ylabel("samples")
    if planned:
        axes.legend(fontsize=8)
    written.append(save_figure(plt, figure, output.with_name(output.stem + "_tokens.png")))

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for task, rows in planned.items():
        peaks = sorted(r["peak_bytes"] / GIB for r in rows)
        axes.plot(
            [100 * (i + 0.5) / len(peaks) for i in range(len(peaks))],
            peaks,
            marker="." if len(peaks) < 50 else None,
            label=task,
        )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, gib in enumerate(report["gpu_gib"]):
        over = sum(t["memory"][f"{gib:g}"]["do_not_fit"] for t in report["tasks"])
        axes.axhline(
            gib, linestyle="--", color=colors[(index + 3) % len(colors)], label=f"{gib:g} GiB GPU: {over} do not fit"
        )
    axes.set_yscale("log")
    axes.set_title(
        f"Predicted peak memory per sample ({report['model']['dtype']}, {report['model']['attention']}) vs GPU sizes",
        fontsize=10,
    )
    axes.set_xlabel("samples, sorted by predicted peak (%)")
    axes.set_ylabel("GiB (log scale)")
    axes.legend(fontsize=8)
    written.append(save_figure(plt, figure, output.with_name(output.stem + "_memory.png")))
    return written
