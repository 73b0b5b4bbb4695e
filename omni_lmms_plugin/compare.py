"""``omni-lmms verify``: every difference between two runs, sample by sample (plans, input hashes, answers, scores),
and in what they read (each dataset's resolved commit, the media files' fingerprints)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import NOT_IN_RESUME_KEY
from .runs import RunFolder, doc_id_of, doc_key, score_rows, sortable_doc_id

__all__ = ["Difference", "compare_runs", "render_differences"]


# Plan fields compared per media entry: what was decoded, at which size, with how much audio, and at what cost.
_PLAN_FIELDS = ("kind", "frames", "frame_indices", "frame_times", "decoded_times", "height", "width", "sample_fps", "audio_start",
                "audio_seconds", "audio_samples", "video_tokens", "audio_tokens", "total_tokens", "rule", "lines")  # fmt: skip


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


def _datasets_read(run: RunFolder) -> dict[str, dict[str, Any]]:
    """Per task, over every rank's manifest: the dataset repository and resolved commit, and the fingerprint of each
    media file read (``{name: fingerprint}``; each rank read its share)."""
    merged: dict[str, dict[str, Any]] = {}
    for manifest in run.manifests:
        for task, entry in (manifest.get("datasets") or {}).items():
            into = merged.setdefault(
                task, {"repo": entry.get("repo"), "commit": entry.get("commit"), "media_files": {}}
            )
            into["media_files"].update((entry.get("media_files") or {}).get("files") or {})
    return merged


def compare_runs(run_a: RunFolder, run_b: RunFolder) -> list[Difference]:
    """Every per-sample difference: which samples each run has, their status, plans (frames, times, size, audio),
    token counts, input hashes and answers (provenance), and the answers and per-sample scores lmms-eval logged; then
    per task the dataset's resolved commit and each media file's fingerprint (manifests), and the aggregate scores.
    Timings and memory are not compared."""
    out = _Collector()
    a_records = {(r.task, doc_key(r.doc_id)): r for r in run_a.records}
    b_records = {(r.task, doc_key(r.doc_id)): r for r in run_b.records}
    for key in sorted(set(a_records) | set(b_records), key=lambda k: (k[0], sortable_doc_id(doc_id_of(k[1])))):
        task, doc = key
        doc_id = doc_id_of(doc)
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
        for doc in sorted(set(sa) | set(sb), key=lambda d: sortable_doc_id(doc_id_of(d))):
            doc_id = doc_id_of(doc)
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

    read_a, read_b = _datasets_read(run_a), _datasets_read(run_b)
    for task in sorted(set(read_a) | set(read_b)):
        da, db = read_a.get(task, {}), read_b.get(task, {})
        out.check(task, None, "dataset", (da.get("repo"), da.get("commit")), (db.get("repo"), db.get("commit")))
        files_a, files_b = da.get("media_files", {}), db.get("media_files", {})
        for name in sorted(set(files_a) | set(files_b)):
            out.check(task, None, f"media file {name}", files_a.get(name), files_b.get(name))

    scores_a = {row["task"]: row["metrics"] for row in score_rows(run_a.results)}
    scores_b = {row["task"]: row["metrics"] for row in score_rows(run_b.results)}
    for task in sorted(set(scores_a) | set(scores_b)):
        ma, mb = scores_a.get(task, {}), scores_b.get(task, {})
        for name in sorted(set(ma) | set(mb)):
            out.check(
                task, None, f"aggregate {name}", (ma.get(name) or {}).get("value"), (mb.get(name) or {}).get("value")
            )
    return out.found


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


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


# Model args that change neither the inputs nor the answers (where a run writes, how it schedules work).
_RUN_LOCAL_ARGS = NOT_IN_RESUME_KEY


def _model_arg_changes(run_a: RunFolder, run_b: RunFolder) -> list[tuple[str, Any, Any]]:
    """Model args that differ between the runs' manifests (reported beside the differences, not counted as one)."""
    a, b = run_a.model_args, run_b.model_args
    return [
        (name, a.get(name), b.get(name))
        for name in sorted(set(a) | set(b))
        if name not in _RUN_LOCAL_ARGS and not _same(a.get(name), b.get(name))
    ]
