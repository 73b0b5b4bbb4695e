"""``omni-lmms report``: what a finished run did, as one JSON-able dict and its printable text.

:func:`build_report` makes the dict (scores, failures, retries and degradations, memory, time) from a
:class:`~omni_lmms_plugin.runs.RunFolder`; :func:`render_report` prints it and :func:`summarize` does both for a folder
(what ``omni-lmms demo`` prints). Plots are in :mod:`omni_lmms_plugin.plots`, the bundle in
:mod:`omni_lmms_plugin.bundle`, run comparison in :mod:`omni_lmms_plugin.compare`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .memory import GIB
from .provenance import SampleRecord, is_failure_answer
from .runs import RunFolder, answer_of, doc_key, load_run, score_rows, sortable_doc_id

__all__ = [
    "distribution",
    "build_report",
    "render_report",
    "summarize",
]


def distribution(values: Sequence[float]) -> dict[str, float] | None:
    """Count, quantiles (nearest rank), mean and total of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "count": len(ordered),
        "min": ordered[0],
        "p10": quantile(0.1),
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 3),
        "p90": quantile(0.9),
        "p99": quantile(0.99),
        "max": ordered[-1],
        "total": sum(ordered),
    }


def _degradations(record: SampleRecord) -> list[str]:
    """What made this sample's input smaller than the policy asked for, or retried, in words."""
    found: list[str] = []
    for attempt in record.attempts:
        if attempt.get("outcome") == "out_of_memory":
            found.append(
                f"attempt {attempt.get('index')} ran out of memory at budget scale {attempt.get('budget_scale')}"
            )
        found.extend(f"attempt {attempt.get('index')}: {note}" for note in attempt.get("notes") or [])
    final_scale = record.attempts[-1].get("budget_scale", 1.0) if record.attempts else 1.0
    if final_scale < 1.0 and record.status == "answered":
        found.append(f"answered at budget scale {final_scale}")
    for index, entry in enumerate(record.media):
        if entry.get("rule", "reference") != "reference":
            found.append(f"media {index} plan {entry['rule']}: {entry.get('reason')}")
        found.extend(f"media {index}: {note}" for note in entry.get("notes") or [])
    return found


def build_report(run: RunFolder) -> dict[str, Any]:
    """The run as one JSON-able dict: scores, failures, retries and degradations, memory and time per sample."""
    manifest = run.manifests[0] if run.manifests else {}
    config = run.results.get("config") or {}
    records = sorted(run.records, key=lambda r: (r.task, sortable_doc_id(r.doc_id)))

    failures = []
    for record in records:
        if record.status != "answered":
            failures.append({"task": record.task, "doc_id": record.doc_id, "reason": record.failure})
    # Failed answers lmms-eval logged with no provenance record (another model, or a lost journal).
    known = {(r.task, doc_key(r.doc_id)) for r in records}
    for task, by_doc in run.samples.items():
        for key, sample in by_doc.items():
            answer = answer_of(sample)
            if (task, key) not in known and is_failure_answer(answer):
                failures.append({"task": task, "doc_id": sample.get("doc_id"), "reason": answer})

    degraded = []
    retries = 0
    for record in records:
        retries += sum(1 for a in record.attempts if a.get("outcome") == "out_of_memory")
        what = _degradations(record)
        if what:
            degraded.append({"task": record.task, "doc_id": record.doc_id, "status": record.status, "what": what})

    measured = [r.peak_memory_bytes for r in records if r.peak_memory_bytes is not None]
    estimated = [r.estimated_peak_bytes for r in records if r.estimated_peak_bytes is not None]
    per_sample = [
        {
            "task": r.task,
            "doc_id": r.doc_id,
            "status": r.status,
            "input_tokens": r.tokens.get("input"),
            "generated_tokens": r.tokens.get("generated"),
            "peak_memory_bytes": r.peak_memory_bytes,
            "estimated_peak_bytes": r.estimated_peak_bytes,
            "wall_seconds": r.wall_seconds,
            "media_wait_seconds": r.media_wait_seconds,
            "attempts": len(r.attempts),
        }
        for r in records
    ]
    slowest = sorted(records, key=lambda r: r.wall_seconds, reverse=True)[:5]
    logged = sum(len(by_doc) for by_doc in run.samples.values())
    return {
        "run_dir": str(run.path),
        "results_file": str(run.results_path.relative_to(run.path)),
        "model": config.get("model"),
        "model_args": config.get("model_args"),
        "lmms_eval_version": manifest.get("lmms_eval") or run.results.get("lmms_eval_version"),
        "plugin_version": manifest.get("plugin"),
        "device": manifest.get("device"),
        "devices": manifest.get("devices") or [],
        "world_size": manifest.get("world_size", len(run.manifests) or None),
        "dtype": manifest.get("dtype"),
        "attention": manifest.get("attention"),
        "max_model_len": manifest.get("max_model_len"),
        "total_evaluation_seconds": _float(run.results.get("total_evaluation_time_seconds")),
        "scores": score_rows(run.results),
        "samples": {
            "logged_by_lmms_eval": logged,
            "with_provenance": len(records),
            "provenance_records": run.raw_record_count,
            "duplicates_dropped": run.raw_record_count - run.foreign_record_count - len(records),
            "other_configuration_records_ignored": run.foreign_record_count,
        },
        "failures": failures,
        "retries": retries,
        "degradations": degraded,
        "memory": {
            "measured": bool(measured),
            "peak_bytes": distribution([float(v) for v in measured]),
            "estimated_peak_bytes": distribution([float(v) for v in estimated]),
            "note": None if measured else "no measured peak (a CPU run): the figures are the adapter's estimate",
        },
        "time": {
            "wall_seconds": distribution([r.wall_seconds for r in records]),
            "media_wait_seconds": distribution([r.media_wait_seconds for r in records]),
            "slowest": [{"task": r.task, "doc_id": r.doc_id, "wall_seconds": r.wall_seconds} for r in slowest],
        },
        "per_sample": per_sample,
    }


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.2f} GiB"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def render_report(report: dict[str, Any], *, limit: int = 20) -> str:
    """The printable summary of :func:`build_report`'s dict; long lists are cut at ``limit`` lines."""
    lines = [f"Run {report['run_dir']}  ({report['results_file']})"]
    lines.append(
        f"  model {report['model']}  device {report['device'] or '?'}  dtype {report['dtype'] or '?'}  "
        f"attention {report['attention'] or '?'}  max_model_len {report['max_model_len'] or '?'}  "
        f"ranks {report['world_size'] or '?'}"
    )
    lines.append(f"  lmms-eval {report['lmms_eval_version']}  omni-lmms-plugin {report['plugin_version']}")
    counts = report["samples"]
    lines.append(
        f"  samples: {counts['logged_by_lmms_eval']} logged by lmms-eval, {counts['with_provenance']} with provenance "
        f"({counts['duplicates_dropped']} duplicate records dropped"
        + (
            f", {counts['other_configuration_records_ignored']} of other configurations ignored"
            if counts["other_configuration_records_ignored"]
            else ""
        )
        + ")"
    )

    lines.append("Scores")
    for row in report["scores"]:
        parts = []
        for name, metric in row["metrics"].items():
            text = f"{name} {_format_value(metric['value'])}"
            if metric["stderr"] is not None and not (
                isinstance(metric["stderr"], float) and math.isnan(metric["stderr"])
            ):
                text += f" ± {_format_value(metric['stderr'])}"
            parts.append(text)
        lines.append(f"  {row['alias']:<28} n={row['n']}  " + "   ".join(parts))

    failures = report["failures"]
    lines.append(f"Failures: {len(failures)}" if failures else "Failures: none")
    for failure in failures[:limit]:
        lines.append(f"  {failure['task']}/{failure['doc_id']}: {failure['reason']}")
    if len(failures) > limit:
        lines.append(f"  ... {len(failures) - limit} more in the JSON report")

    degraded = report["degradations"]
    lines.append(
        f"Retries and degradations: {report['retries']} out-of-memory retries, {len(degraded)} samples degraded or noted"
        if degraded or report["retries"]
        else "Retries and degradations: none (every sample planned as the policy asked, first attempt)"
    )
    for entry in degraded[:limit]:
        lines.append(f"  {entry['task']}/{entry['doc_id']} ({entry['status']}): " + "; ".join(entry["what"]))
    if len(degraded) > limit:
        lines.append(f"  ... {len(degraded) - limit} more in the JSON report")

    memory = report["memory"]
    if memory["measured"]:
        peak = memory["peak_bytes"]
        lines.append(f"Peak memory per sample (measured): median {_gib(peak['median'])}, max {_gib(peak['max'])}")
        if memory["estimated_peak_bytes"]:
            lines.append(
                f"  estimated: median {_gib(memory['estimated_peak_bytes']['median'])}, max {_gib(memory['estimated_peak_bytes']['max'])}"
            )
    elif memory["estimated_peak_bytes"]:
        est = memory["estimated_peak_bytes"]
        lines.append(f"Peak memory per sample: {memory['note']}")
        lines.append(f"  estimated: median {_gib(est['median'])}, max {_gib(est['max'])}")
    else:
        lines.append("Peak memory per sample: no data")

    wall = report["time"]["wall_seconds"]
    if wall:
        wait = report["time"]["media_wait_seconds"]
        lines.append(
            f"Time per sample: median {wall['median']:.2f} s, mean {wall['mean']:.2f} s, max {wall['max']:.2f} s, "
            f"total {wall['total']:.1f} s" + (f"; waiting for media {wait['total']:.1f} s in all" if wait else "")
        )
        slowest = ", ".join(
            f"{s['task']}/{s['doc_id']} {s['wall_seconds']:.2f} s" for s in report["time"]["slowest"][:3]
        )
        lines.append(f"  slowest: {slowest}")
    if report["total_evaluation_seconds"] is not None:
        lines.append(f"lmms-eval evaluation time: {report['total_evaluation_seconds']:.1f} s")
    return "\n".join(lines)


def summarize(run_dir: str | Path) -> str:
    """The printable summary of a finished run (scores, failures, retries, memory, time)."""
    return render_report(build_report(load_run(run_dir)))
