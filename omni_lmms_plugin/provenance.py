"""Provenance: one JSON line per sample and one manifest per run, written as the run goes so nothing is lost.

Layout of a provenance folder (by default ``<--output_path>/omni_provenance``)::

    manifest_rank<R>.json      versions, devices, model path and weight hash, every model arg
    samples_rank<R>.jsonl      one :class:`SampleRecord` per finished request, appended and flushed at once

The sample journal doubles as the resume log: a rerun with the same model configuration reads it back and returns the
recorded answers of finished samples without running the model again. Failed samples are retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FAILURE_PREFIX",
    "PROVENANCE_DIR",
    "SampleRecord",
    "ProvenanceWriter",
    "failure_answer",
    "is_failure_answer",
    "default_provenance_dir",
    "read_records",
    "stable_hash",
]

# The answer text of a failed sample: never empty, recognisable in lmms-eval's logged samples, scored by our tasks'
# aggregations as a failure rather than as a wrong answer.
FAILURE_PREFIX = "[omni-lmms failed]"

# The folder beside lmms-eval's output that holds the manifests and journals.
PROVENANCE_DIR = "omni_provenance"


def failure_answer(reason: str) -> str:
    return f"{FAILURE_PREFIX} {reason}"


def is_failure_answer(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(FAILURE_PREFIX)


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value with sorted keys."""
    payload = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()


def default_provenance_dir(argv: list[str] | None = None) -> Path:
    """``<output_path>/omni_provenance`` when lmms-eval was started with ``--output_path``, else ``./omni_provenance``.

    The model is not told lmms-eval's output path, so it is read from the command line that started the run.
    """
    argv = sys.argv if argv is None else argv
    for index, arg in enumerate(argv):
        if arg == "--output_path" and index + 1 < len(argv):
            return Path(argv[index + 1]) / PROVENANCE_DIR
        if arg.startswith("--output_path="):
            return Path(arg.split("=", 1)[1]) / PROVENANCE_DIR
    return Path(PROVENANCE_DIR)


@dataclass(frozen=True)
class SampleRecord:
    """What happened to one request. ``status`` is ``answered`` or ``failed``; a failed record carries ``failure``."""

    task: str
    doc_id: int | str
    split: str
    request_key: str
    config_key: str
    status: str
    answer: str
    failure: str | None
    media: list[dict[str, Any]]
    tokens: dict[str, int]
    attempts: list[dict[str, Any]]
    attention: str
    peak_memory_bytes: int | None
    estimated_peak_bytes: int | None
    wall_seconds: float
    media_wait_seconds: float
    input_hash: str | None
    video_policy: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleRecord:
        return cls(**data)


def read_records(paths: Iterable[Path]) -> list[SampleRecord]:
    """Every record in the given journals; a line cut short by a killed process is skipped."""
    records: list[SampleRecord] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(SampleRecord.from_dict(json.loads(line)))
                except (json.JSONDecodeError, TypeError):
                    continue
    return records


class ProvenanceWriter:
    """Appends sample records for one rank and serves the answers of earlier runs for resume."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.samples_path = self.folder / f"samples_rank{rank}.jsonl"
        self.manifest_path = self.folder / f"manifest_rank{rank}.json"
        self._finished: dict[tuple[str, str], SampleRecord] = {}
        journals = sorted(self.folder.glob("samples_rank*.jsonl"))
        for record in read_records(journals):
            if record.status == "answered":
                self._finished[(record.config_key, record.request_key)] = record
        self._handle = open(self.samples_path, "a", encoding="utf-8")
        # A process killed mid-write leaves a partial last line: end it, so the next record starts on its own line.
        if self._handle.tell() > 0 and not self.samples_path.read_bytes().endswith(b"\n"):
            self._handle.write("\n")

    def finished(self, config_key: str, request_key: str) -> SampleRecord | None:
        """The answered record of this request from an earlier run with the same configuration, if any."""
        return self._finished.get((config_key, request_key))

    def write(self, record: SampleRecord) -> None:
        self._handle.write(record.to_json() + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
        tmp.replace(self.manifest_path)
