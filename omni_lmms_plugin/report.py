"""What a finished run did, read back from its folder: ``omni-lmms report`` and ``omni-lmms verify``.

A run folder is lmms-eval's ``--output_path``. lmms-eval writes ``<model_name_sanitized>/<date>_results.json`` and
``<date>_samples_<task>.jsonl`` (with ``--log_samples``) under it; the adapter writes ``omni_provenance/`` beside them
(:mod:`omni_lmms_plugin.provenance`). This module joins the two by ``(task, doc_id)``:

* :func:`load_run` reads the newest results file, its samples files, the manifests and the provenance journals.
  Provenance can hold several records of one sample (a resumed run appends, data-parallel padding repeats a doc, an
  earlier run with other model args left its own): records of configurations no manifest names are set aside, and of
  the rest the last record of each sample is kept: the latest run's outcome, as lmms-eval's results of that run count
  it (a resumed run only adds records for samples it computed).
* :func:`build_report` makes one JSON-able dict (scores, failures, retries and degradations, memory, time) and
  :func:`summarize` its printable text (what ``omni-lmms demo`` prints).
* :func:`write_plots` draws peak memory and time per sample (matplotlib, Agg); a run with no measured peak (CPU)
  plots the adapter's estimate and says so.
* :func:`write_bundle` packs results, samples, manifests, provenance and the report into one ``.tar.gz`` with a
  ``SHA256SUMS`` file (``sha256sum -c`` format); :func:`check_bundle` verifies one.
* :func:`compare_runs` lists every per-sample difference between two runs (plans, input hashes, answers, scores).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import NOT_IN_RESUME_KEY
from .errors import OmniPluginError
from .memory import GIB
from .provenance import SampleRecord, is_failure_answer, read_records

__all__ = [
    "RunFolder",
    "distribution",
    "save_figure",
    "Difference",
    "load_run",
    "dedupe_records",
    "build_report",
    "render_report",
    "summarize",
    "write_plots",
    "write_bundle",
    "check_bundle",
    "compare_runs",
    "render_differences",
]

PROVENANCE_DIR = "omni_provenance"
CHECKSUMS = "SHA256SUMS"
PLOTS_EXTRA = "pip install 'matplotlib>=3.7'"

# Keys of a logged lmms-eval sample that are not scores.
_SAMPLE_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "token_counts", "doc_hash",
                "prompt_hash", "target_hash", "input", "task_name", "repeats"}  # fmt: skip


class RunFolderError(OmniPluginError, FileNotFoundError):
    """A folder is not a finished lmms-eval run (no results file), or a bundle is malformed."""


# ---------------------------------------------------------------------------------------------------------------------
# Reading a run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunFolder:
    """Everything read from one run folder. ``records`` are deduplicated; ``samples`` maps task -> doc_id -> the
    sample lmms-eval logged."""

    path: Path
    results_path: Path
    results: dict[str, Any]
    sample_paths: list[Path]
    samples: dict[str, dict[Any, dict[str, Any]]]
    manifest_paths: list[Path]
    manifests: list[dict[str, Any]]
    provenance_paths: list[Path]
    records: list[SampleRecord]
    raw_record_count: int = 0
    foreign_record_count: int = 0

    @property
    def model_args(self) -> dict[str, Any]:
        return (self.manifests[0].get("model_args") if self.manifests else None) or {}

    def record(self, task: str, doc_id: Any) -> SampleRecord | None:
        return self._by_key().get((task, _doc_key(doc_id)))

    def _by_key(self) -> dict[tuple[str, str], SampleRecord]:
        return {(r.task, _doc_key(r.doc_id)): r for r in self.records}

    def metric_names(self, task: str) -> list[str]:
        """The per-sample score keys of a task: its metrics as lmms-eval lists them in ``higher_is_better``."""
        names = list((self.results.get("higher_is_better") or {}).get(task, {}))
        if names:
            return names
        first = next(iter(self.samples.get(task, {}).values()), {})
        return [key for key in first if key not in _SAMPLE_KEYS]


def _doc_key(doc_id: Any) -> str:
    return str(doc_id)


def _date_of(results_path: Path) -> str:
    return results_path.name[: -len("_results.json")]


def load_run(run_dir: str | Path) -> RunFolder:
    """Read a finished run (lmms-eval ``--output_path``). The newest ``*_results.json`` is the run; its samples files
    are those with the same date prefix in the same folder."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunFolderError(f"{path}: not a folder; pass the --output_path of a finished lmms-eval run")
    candidates = sorted(path.glob("*_results.json")) + sorted(path.glob("*/*_results.json"))
    if not candidates:
        raise RunFolderError(
            f"{path}: no <model>/<date>_results.json; the run did not finish (lmms-eval writes it last) or this is "
            "not its --output_path"
        )
    results_path = max(candidates, key=lambda p: (_date_of(p), str(p)))
    results = json.loads(results_path.read_text(encoding="utf-8"))
    date = _date_of(results_path)
    sample_paths = sorted(results_path.parent.glob(f"{date}_samples_*.jsonl"))
    samples: dict[str, dict[Any, dict[str, Any]]] = {}
    for sample_path in sample_paths:
        task = sample_path.name[len(f"{date}_samples_") : -len(".jsonl")]
        by_doc: dict[Any, dict[str, Any]] = {}
        for line in sample_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                sample = json.loads(line)
                by_doc[_doc_key(sample.get("doc_id"))] = sample
        samples[task] = by_doc

    provenance = path / PROVENANCE_DIR
    manifest_paths = sorted(provenance.glob("manifest_rank*.json"))
    manifests = [json.loads(p.read_text(encoding="utf-8")) for p in manifest_paths]
    provenance_paths = sorted(provenance.glob("samples_rank*.jsonl"))
    raw = read_records(provenance_paths)
    config_keys = {m.get("config_key") for m in manifests if m.get("config_key")}
    current = [r for r in raw if not config_keys or r.config_key in config_keys]
    return RunFolder(
        path=path,
        results_path=results_path,
        results=results,
        sample_paths=sample_paths,
        samples=samples,
        manifest_paths=manifest_paths,
        manifests=manifests,
        provenance_paths=provenance_paths,
        records=dedupe_records(current),
        raw_record_count=len(raw),
        foreign_record_count=len(raw) - len(current),
    )


def dedupe_records(records: Iterable[SampleRecord]) -> list[SampleRecord]:
    """One record per ``(task, doc_id)``, the last one (journals are appended in time order); in first-seen order."""
    chosen: dict[tuple[str, str], SampleRecord] = {}
    for record in records:
        chosen[(record.task, _doc_key(record.doc_id))] = record
    return list(chosen.values())


# ---------------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------------


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


def _score_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    n_samples = results.get("n-samples") or {}
    for task, metrics in (results.get("results") or {}).items():
        values: dict[str, Any] = {}
        for key, value in metrics.items():
            if key == "alias" or "," not in key:
                continue
            name, _, filter_name = key.partition(",")
            if name.endswith(("_stderr", "_stderr_clt", "_stderr_clustered")):
                continue
            stderr = metrics.get(f"{name}_stderr,{filter_name}")
            label = name if filter_name == "none" else f"{name} ({filter_name})"
            values[label] = {"value": value, "stderr": stderr if isinstance(stderr, (int, float)) else None}
        effective = (n_samples.get(task) or {}).get("effective")
        rows.append({"task": task, "alias": metrics.get("alias", task), "n": effective, "metrics": values})
    return rows


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
    records = sorted(run.records, key=lambda r: (r.task, _sortable(r.doc_id)))

    failures = []
    for record in records:
        if record.status != "answered":
            failures.append({"task": record.task, "doc_id": record.doc_id, "reason": record.failure})
    # Failed answers lmms-eval logged with no provenance record (another model, or a lost journal).
    known = {(r.task, _doc_key(r.doc_id)) for r in records}
    for task, by_doc in run.samples.items():
        for doc_key, sample in by_doc.items():
            answer = _answer_of(sample)
            if (task, doc_key) not in known and is_failure_answer(answer):
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
        "scores": _score_rows(run.results),
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


def _sortable(doc_id: Any) -> tuple[int, Any]:
    return (0, doc_id) if isinstance(doc_id, int) else (1, str(doc_id))


def _answer_of(sample: dict[str, Any]) -> Any:
    response = sample.get("filtered_resps")
    while isinstance(response, list) and response:
        response = response[0]
    return response


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


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------


def _pyplot():
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
    plt = _pyplot()
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


# ---------------------------------------------------------------------------------------------------------------------
# Submission bundle
# ---------------------------------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(run: RunFolder, out: str | Path, extra_files: Iterable[Path] = ()) -> Path:
    """One ``.tar.gz`` with the results, the samples files, every manifest and provenance journal, ``extra_files``
    (the report and its plots), and ``SHA256SUMS`` over all of them; paths inside are relative to the run folder,
    under one top folder named after the archive."""
    out = Path(out)
    top = out.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz") or "bundle"
    members: list[tuple[str, bytes]] = []
    for path in [run.results_path, *run.sample_paths, *run.manifest_paths, *run.provenance_paths, *extra_files]:
        path = Path(path)
        try:
            name = path.resolve().relative_to(run.path.resolve()).as_posix()
        except ValueError:
            name = f"omni_report/{path.name}"
        members.append((name, path.read_bytes()))
    checksums = "".join(f"{_sha256(data)}  {name}\n" for name, data in members).encode()
    members.append((CHECKSUMS, checksums))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def check_bundle(bundle: str | Path) -> list[str]:
    """Problems with a bundle: files whose SHA-256 differs from ``SHA256SUMS``, listed files that are missing, files
    not listed. Empty when the bundle is intact."""
    problems: list[str] = []
    with tarfile.open(bundle, "r:gz") as archive:
        files = {}
        for member in archive.getmembers():
            if member.isfile():
                handle = archive.extractfile(member)
                files[member.name.split("/", 1)[1] if "/" in member.name else member.name] = (
                    handle.read() if handle else b""
                )
    if CHECKSUMS not in files:
        return [f"{bundle}: no {CHECKSUMS} file"]
    listed = {}
    for line in files.pop(CHECKSUMS).decode().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, digest in listed.items():
        if name not in files:
            problems.append(f"{name}: listed in {CHECKSUMS} but missing")
        elif _sha256(files[name]) != digest:
            problems.append(f"{name}: SHA-256 {_sha256(files[name])} does not match {CHECKSUMS} ({digest})")
    problems.extend(f"{name}: not listed in {CHECKSUMS}" for name in sorted(set(files) - set(listed)))
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# Comparing two runs
# ---------------------------------------------------------------------------------------------------------------------

# Plan fields compared per media entry: what was decoded, at which size, with how much audio, and at what cost.
_PLAN_FIELDS = ("kind", "frames", "frame_indices", "frame_times", "decoded_times", "height", "width", "sample_fps", "audio_start",
                "audio_seconds", "audio_samples", "video_tokens", "audio_tokens", "total_tokens", "rule")  # fmt: skip


@dataclass(frozen=True)
class Difference:
    """One field that differs between run A and run B for one sample (``doc_id`` None for a task-level field)."""

    task: str
    doc_id: Any
    field: str
    a: Any
    b: Any

    def __str__(self) -> str:
        where = self.task if self.doc_id is None else f"{self.task}/doc_id={self.doc_id}"
        return f"{where}: {self.field}: A={_short(self.a)}  B={_short(self.b)}"


def _short(value: Any, width: int = 100) -> str:
    text = (
        json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
        if not isinstance(value, str)
        else repr(value)
    )
    return text if len(text) <= width else text[: width - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    # NaN scores (an empty subset) are equal to themselves here; JSON text compares them as "NaN".
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@dataclass
class _Collector:
    found: list[Difference] = field(default_factory=list)

    def check(self, task: str, doc_id: Any, name: str, a: Any, b: Any) -> None:
        if not _same(a, b):
            self.found.append(Difference(task, doc_id, name, a, b))


def _media_view(entry: dict[str, Any]) -> dict[str, Any]:
    view = {key: entry.get(key) for key in _PLAN_FIELDS if key in entry}
    if "path" in entry:
        # The file name, not where the data set lives on each machine; the input hash covers the content.
        view["file"] = Path(str(entry["path"])).name
    return view


def compare_runs(run_a: RunFolder, run_b: RunFolder) -> list[Difference]:
    """Every per-sample difference: which samples each run has, their status, plans (frames, times, size, audio),
    token counts, input hashes and answers (provenance), and the answers and per-sample scores lmms-eval logged; then
    the aggregate scores. Timings and memory are not compared."""
    out = _Collector()
    a_records = {(r.task, _doc_key(r.doc_id)): r for r in run_a.records}
    b_records = {(r.task, _doc_key(r.doc_id)): r for r in run_b.records}
    for key in sorted(set(a_records) | set(b_records), key=lambda k: (k[0], _sortable(_int_or(k[1])))):
        task, doc = key
        doc_id = _int_or(doc)
        ra, rb = a_records.get(key), b_records.get(key)
        if ra is None or rb is None:
            out.check(task, doc_id, "provenance record", "present" if ra else "missing", "present" if rb else "missing")
            continue
        out.check(task, doc_id, "status", ra.status, rb.status)
        out.check(task, doc_id, "failure", ra.failure, rb.failure)
        out.check(task, doc_id, "media count", len(ra.media), len(rb.media))
        for index, (ma, mb) in enumerate(zip(ra.media, rb.media, strict=False)):
            va, vb = _media_view(ma), _media_view(mb)
            for name in sorted(set(va) | set(vb)):
                out.check(task, doc_id, f"media[{index}].{name}", va.get(name), vb.get(name))
        out.check(task, doc_id, "tokens", _without(ra.tokens, "generated"), _without(rb.tokens, "generated"))
        out.check(task, doc_id, "input_hash", ra.input_hash, rb.input_hash)
        out.check(task, doc_id, "answer", ra.answer, rb.answer)
        out.check(task, doc_id, "generated tokens", ra.tokens.get("generated"), rb.tokens.get("generated"))

    for task in sorted(set(run_a.samples) | set(run_b.samples)):
        sa, sb = run_a.samples.get(task), run_b.samples.get(task)
        if sa is None or sb is None:
            out.check(
                task, None, "lmms-eval samples file", "present" if sa else "missing", "present" if sb else "missing"
            )
            continue
        metrics = list(dict.fromkeys(run_a.metric_names(task) + run_b.metric_names(task)))
        for doc in sorted(set(sa) | set(sb), key=lambda d: _sortable(_int_or(d))):
            doc_id = _int_or(doc)
            xa, xb = sa.get(doc), sb.get(doc)
            if xa is None or xb is None:
                out.check(
                    task, doc_id, "lmms-eval sample", "present" if xa else "missing", "present" if xb else "missing"
                )
                continue
            out.check(task, doc_id, "lmms-eval input", xa.get("input"), xb.get("input"))
            out.check(task, doc_id, "lmms-eval filtered_resps", xa.get("filtered_resps"), xb.get("filtered_resps"))
            for metric in metrics:
                out.check(task, doc_id, f"score {metric}", xa.get(metric), xb.get(metric))

    scores_a = {row["task"]: row["metrics"] for row in _score_rows(run_a.results)}
    scores_b = {row["task"]: row["metrics"] for row in _score_rows(run_b.results)}
    for task in sorted(set(scores_a) | set(scores_b)):
        ma, mb = scores_a.get(task, {}), scores_b.get(task, {})
        for name in sorted(set(ma) | set(mb)):
            out.check(
                task, None, f"aggregate {name}", (ma.get(name) or {}).get("value"), (mb.get(name) or {}).get("value")
            )
    return out.found


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _int_or(doc: str) -> Any:
    try:
        return int(doc)
    except (TypeError, ValueError):
        return doc


def render_differences(run_a: RunFolder, run_b: RunFolder, differences: list[Difference], *, limit: int = 50) -> str:
    """``identical`` with the counts compared, or every difference (cut at ``limit``) grouped by sample."""
    compared = (
        f"{len(run_a.records)} provenance records and {sum(len(s) for s in run_a.samples.values())} logged samples"
    )
    notes = [
        f"  note: model arg {name}: A={_short(a)}  B={_short(b)}" for name, a, b in _model_arg_changes(run_a, run_b)
    ]
    if not differences:
        return "\n".join([f"identical: A={run_a.path} and B={run_b.path} agree on {compared}", *notes])
    samples = {(d.task, str(d.doc_id)) for d in differences if d.doc_id is not None}
    lines = [
        f"DIFFERENT: {len(differences)} differences in {len(samples)} samples between A={run_a.path} and B={run_b.path}"
    ]
    lines.extend(f"  {d}" for d in differences[:limit])
    if len(differences) > limit:
        lines.append(f"  ... {len(differences) - limit} more")
    return "\n".join(lines + notes)


# Model args that name where a run writes, not what it computes.
_RUN_LOCAL_ARGS = NOT_IN_RESUME_KEY  # args that change neither the inputs nor the answers


def _model_arg_changes(run_a: RunFolder, run_b: RunFolder) -> list[tuple[str, Any, Any]]:
    """Model args that differ between the runs' manifests (reported beside the differences, not counted as one)."""
    a, b = run_a.model_args, run_b.model_args
    return [
        (name, a.get(name), b.get(name))
        for name in sorted(set(a) | set(b))
        if name not in _RUN_LOCAL_ARGS and not _same(a.get(name), b.get(name))
    ]
