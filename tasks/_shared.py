"""What every ``omni_*`` task shares: where the media are, how a sample is scored, and the aggregations.

Each benchmark's own functions live in the ``utils.py`` beside its YAMLs (``!function utils.<name>``, as lmms-eval's
built-in tasks do); they import this module as ``omni_lmms_plugin.tasks._shared``. The protocol each task follows, and
every place it differs from its reference, is in ``tasks/PROTOCOLS.md``. Rules common to every task:

* **Paths are resolved at call time** from ``$HF_HOME`` (default ``~/.cache/huggingface``) and the YAML's
  ``dataset_kwargs.cache_dir``, the way lmms-eval's downloader places the videos. Nothing is read at import.
* **A missing video is not fatal.** ``doc_to_visual`` never calls ``sys.exit``, never raises and never returns ``[]``
  (which would turn a video question into a text-only one): it logs the problem and returns the path where the video
  should be, so the adapter records the sample as failed ("file not found") and the run goes on.
* **Failed samples are counted, not hidden.** The adapter answers a sample it could not run with
  ``"[omni-lmms failed] <reason>"`` (see :mod:`omni_lmms_plugin.provenance`). Every ``process_results`` returns the
  benchmark's accuracy over all samples (a failed sample counts as wrong), ``<prefix>_answered_acc`` over the answered
  samples only, ``omni_failed`` (the number of failed samples) and the per-category accuracies the benchmark's
  leaderboard publishes (``<prefix>_acc_<category>_<value>``).
* **Leaderboard units.** Accuracies are percentages in [0, 100]; a sample's ``score`` is 100.0 or 0.0, so lmms-eval's
  CLT standard errors (computed from ``score``) are in percentage points too.
* **No random guesses.** Where a reference picks a random (or fixed) letter for an unparsable answer, an unparsable
  answer here is wrong.
* **Aggregations work on any subset** (``--limit``, data-parallel shards) and on an empty one (NaN).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omni_lmms_plugin.provenance import is_failure_answer

__all__ = [
    "FAILED_METRIC",
    "LETTERS",
    "accuracy",
    "answered_accuracy",
    "category_metric",
    "failed_count",
    "first_existing",
    "resolve_cache_dir",
    "response_text",
    "sample_results",
    "score_item",
    "sum_subtask_counts",
    "video_with_suffixes",
]

logger = logging.getLogger("omni_lmms_plugin.tasks")

FAILED_METRIC = "omni_failed"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------------


def hf_home() -> str:
    """``$HF_HOME`` as lmms-eval reads it when it places the videos (``~/.cache/huggingface`` when unset)."""
    return os.path.expanduser(os.getenv("HF_HOME", "~/.cache/huggingface"))


def resolve_cache_dir(cache_dir: str) -> str:
    """The folder a task's ``dataset_kwargs.cache_dir`` names: relative to ``$HF_HOME``, ``$VAR`` and ``~`` expanded
    (mirrors ``lmms_eval.utils.resolve_cache_dir(cache_dir, base_dir=HF_HOME)``)."""
    resolved = os.path.expanduser(os.path.expandvars(cache_dir))
    return resolved if os.path.isabs(resolved) else os.path.join(hf_home(), resolved)


def first_existing(candidates: Sequence[str], what: str) -> str:
    """The first candidate path that exists; else the first one, logged, so the adapter records the failure."""
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    logger.warning("%s not found (tried %s); the sample will be recorded as failed", what, ", ".join(candidates))
    return candidates[0]


def video_with_suffixes(stem: str, suffixes: Sequence[str] = (".mp4", ".MP4", ".mkv", ".webm", ".mov")) -> str:
    """``stem`` plus the first suffix whose file exists (``stem.mp4`` when none does)."""
    return first_existing([stem + suffix for suffix in suffixes], "video")


# ---------------------------------------------------------------------------------------------------------------------
# Per-sample scores
# ---------------------------------------------------------------------------------------------------------------------


def response_text(results: Sequence[Any]) -> str:
    """The model's text for a doc: lmms-eval passes ``[answer]`` to ``process_results``."""
    value = results[0] if results else ""
    return value if isinstance(value, str) else str(value)


def score_item(response: str, correct: bool, *, uid: Any = None, **extra: Any) -> dict[str, Any]:
    """The per-sample record every accuracy aggregates: ``score`` 100.0/0.0 (a failed sample scores 0.0), ``failed``
    and ``extra`` (ids, answer, parsed prediction). ``uid``, given only where the reference scores each question id
    once (WorldSense's ``index``), makes a repeated id count once."""
    failed = is_failure_answer(response)
    item = {"score": 0.0 if failed else 100.0 * bool(correct), "failed": failed, **extra}
    return item if uid is None else {**item, "uid": uid}


def _slug(value: Any) -> str:
    """``"Tech & Science"`` -> ``"tech_science"``: a metric-name fragment."""
    return re.sub(r"[^0-9a-z]+", "_", str(value).lower()).strip("_")


def category_metric(prefix: str, category: str, value: Any) -> str:
    """The metric name of one category's accuracy: ``videomme_acc_duration_short``."""
    return f"{prefix}_acc_{category}_{_slug(value)}"


def sample_results(
    prefix: str, item: dict[str, Any], categories: Mapping[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """``process_results``' return value: ``<prefix>_acc``, ``<prefix>_answered_acc``, ``omni_failed``, one
    ``<prefix>_acc_<category>_<value>`` per category of the sample, and ``more``.

    The answered-accuracy item of a failed sample has no ``score`` key, so lmms-eval's CLT standard error for that
    metric is computed over the answered samples only.
    """
    answered_item = dict(item) if not item["failed"] else {k: v for k, v in item.items() if k != "score"}
    per_category = {category_metric(prefix, key, value): item for key, value in (categories or {}).items()}
    return {
        f"{prefix}_acc": item,
        f"{prefix}_answered_acc": answered_item,
        FAILED_METRIC: int(item["failed"]),
        **per_category,
        **more,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Aggregations
# ---------------------------------------------------------------------------------------------------------------------


def _unique(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items with a repeated ``uid`` dropped (the first one counts), as WorldSense's reference aggregation does;
    items without a ``uid`` all count."""
    seen: set[Any] = set()
    kept = []
    for item in items:
        if "uid" in item:
            if item["uid"] in seen:
                continue
            seen.add(item["uid"])
        kept.append(item)
    return kept


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def accuracy(items: list[dict[str, Any]]) -> float:
    """Accuracy in percent over every question: a failed sample counts as wrong (its failure is counted in
    ``omni_failed``); a repeated ``uid`` counts once. NaN for no sample."""
    items = _unique(items)
    value = _mean([item.get("score", 0.0) for item in items])
    failed = sum(1 for item in items if item.get("failed"))
    logger.info("accuracy %.2f%% over %d samples (%d failed, scored as wrong)", value, len(items), failed)
    return value


def answered_accuracy(items: list[dict[str, Any]]) -> float:
    """Accuracy in percent over the questions the model answered; NaN when it answered none."""
    return _mean([item["score"] for item in _unique(items) if not item.get("failed") and "score" in item])


def failed_count(items: Iterable[int]) -> int:
    """How many samples failed (each item is 1 for a failed sample, 0 otherwise)."""
    return int(sum(int(item) for item in items))


def sum_subtask_counts(metrics: list[float], sizes: list[int], weight_by_size: bool = False) -> int:
    """Group aggregation of ``omni_failed``: the subtasks' counts added up (lmms-eval's ``mean`` would average them)."""
    return int(sum(metrics))
