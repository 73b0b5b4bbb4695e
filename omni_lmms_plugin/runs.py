"""A finished run read back from its folder (lmms-eval's ``--output_path``), for ``omni-lmms report`` and ``verify``.

lmms-eval writes ``<model_name_sanitized>/<date>_results.json`` and ``<date>_samples_<task>.jsonl`` (with
``--log_samples``) under the folder; the adapter writes ``omni_provenance/`` beside them
(:mod:`omni_lmms_plugin.provenance`). :func:`load_run` joins the two by ``(task, doc_id)``: it reads the newest results
file, its samples files, the manifests and the provenance journals. Provenance can hold several records of one sample
(a resumed run appends, an earlier run with other model args left its own): records of configurations no manifest
names are set aside, and of the rest the last record of each sample is kept: the latest run's outcome, as lmms-eval's
results of that run count it (a resumed run only adds records for samples it computed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OmniPluginError
from .provenance import PROVENANCE_DIR, SampleRecord, read_records

__all__ = [
    "RunFolderError",
    "RunFolder",
    "load_run",
    "dedupe_records",
    "score_rows",
    "answer_of",
    "sortable_doc_id",
    "doc_id_of",
    "doc_key",
]

# Keys of a logged lmms-eval sample that are not scores.
_SAMPLE_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "token_counts", "doc_hash",
                "prompt_hash", "target_hash", "input", "task_name", "repeats"}  # fmt: skip


class RunFolderError(OmniPluginError, FileNotFoundError):
    """A folder is not a finished lmms-eval run (no results file), or a bundle is malformed."""


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
        return self._by_key().get((task, doc_key(doc_id)))

    def _by_key(self) -> dict[tuple[str, str], SampleRecord]:
        return {(r.task, doc_key(r.doc_id)): r for r in self.records}

    def metric_names(self, task: str) -> list[str]:
        """The per-sample score keys of a task: its metrics as lmms-eval lists them in ``higher_is_better``."""
        names = list((self.results.get("higher_is_better") or {}).get(task, {}))
        if names:
            return names
        first = next(iter(self.samples.get(task, {}).values()), {})
        return [key for key in first if key not in _SAMPLE_KEYS]


def doc_key(doc_id: Any) -> str:
    """The key of a doc id in :class:`RunFolder` maps (lmms-eval logs ints, provenance may hold strings)."""
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
                by_doc[doc_key(sample.get("doc_id"))] = sample
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
        chosen[(record.task, doc_key(record.doc_id))] = record
    return list(chosen.values())


def score_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task of lmms-eval's results: ``{"task", "alias", "n", "metrics": {label: {"value", "stderr"}}}``."""
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


def sortable_doc_id(doc_id: Any) -> tuple[int, Any]:
    """A sort key that orders integer doc ids numerically, before any string ids."""
    return (0, doc_id) if isinstance(doc_id, int) else (1, str(doc_id))


def answer_of(sample: dict[str, Any]) -> Any:
    """The scored answer of a logged lmms-eval sample (the first filtered response)."""
    response = sample.get("filtered_resps")
    while isinstance(response, list) and response:
        response = response[0]
    return response


def doc_id_of(doc: str) -> Any:
    """A doc id back from its string key: an int when it is one."""
    try:
        return int(doc)
    except (TypeError, ValueError):
        return doc
