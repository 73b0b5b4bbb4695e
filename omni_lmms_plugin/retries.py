"""The out-of-memory policy: one request's attempts, each planned smaller than the last after an out-of-memory error.

An attempt has two steps, both supplied by the caller: ``stage(scale)`` plans and prepares the inputs at a budget
scale and returns a :class:`Staged` (what will run: its scale, input tokens, media plan and notes); ``run(staged)``
generates. :func:`run_with_retries` owns the attempts: it records what each staged and how it ended, frees memory after
an out-of-memory error, and stages the next attempt at ``shrink`` times the scale the last one ran at.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch

from .errors import BudgetError, ConfigError, MediaError

__all__ = ["Staged", "Attempt", "AttemptOutcome", "is_out_of_memory", "free_device_memory", "run_with_retries"]


class Staged(Protocol):
    """What an attempt is about to run."""

    scale: float
    input_tokens: int

    def plan_summary(self) -> list[dict[str, Any]]: ...

    def notes(self) -> list[str]: ...


S = TypeVar("S", bound=Staged)
R = TypeVar("R")


@dataclass(frozen=True)
class Attempt:
    """One try at a request: the budget scale it ran at, its input and media plan, and how it ended
    (``answered``, ``out_of_memory`` or ``failed``)."""

    index: int
    budget_scale: float
    outcome: str
    error: str | None = None
    plan: tuple[dict[str, Any], ...] = ()
    input_tokens: int | None = None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "budget_scale": round(self.budget_scale, 6),
            "outcome": self.outcome,
            "error": self.error,
            "plan": list(self.plan),
            "input_tokens": self.input_tokens,
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class AttemptOutcome(Generic[R]):
    """The end of a request: the result of the attempt that answered, or the reason none did, and every attempt."""

    result: R | None
    failure: str | None
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the allocator failures that other backends raise as RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_retries(
    stage: Callable[[float], S], run: Callable[[S], R], *, oom_retries: int, shrink: float
) -> AttemptOutcome[R]:
    """Stage and run until an attempt answers; after an out-of-memory error (in either step), stage again at
    ``shrink`` times the scale the failed attempt ran at, at most ``oom_retries`` times. Media, budget and
    configuration errors are not retried: a smaller plan cannot fix them."""
    attempts: list[Attempt] = []
    scale = 1.0
    for index in range(oom_retries + 1):
        started = time.perf_counter()
        staged: S | None = None
        try:
            staged = stage(scale)
            result = run(staged)
        except Exception as error:  # noqa: BLE001 - sorted below: OOM retries, anything else is recorded
            out_of_memory = not isinstance(error, (MediaError, BudgetError, ConfigError)) and is_out_of_memory(error)
            limit = 300 if out_of_memory else None
            message = f"{type(error).__name__}: {str(error)[:limit] if limit else error}"
            attempts.append(
                _attempt(index, scale, staged, "out_of_memory" if out_of_memory else "failed", message, started)
            )
            if not out_of_memory:
                return AttemptOutcome(None, message, tuple(attempts))
        else:
            attempts.append(_attempt(index, scale, staged, "answered", None, started))
            return AttemptOutcome(result, None, tuple(attempts))
        # Out of the except block, so the exception's traceback (and the tensors its frames hold) is gone.
        ran_at = staged.scale if staged is not None else scale
        free_device_memory()
        scale = math.floor(ran_at * shrink * 1e6) / 1e6
    reason = f"out of memory on all {oom_retries + 1} attempts (last budget scale {attempts[-1].budget_scale:g})"
    return AttemptOutcome(None, reason, tuple(attempts))


def _attempt(
    index: int, scale: float, staged: Staged | None, outcome: str, error: str | None, started: float
) -> Attempt:
    if staged is None:
        return Attempt(index, scale, outcome, error, seconds=time.perf_counter() - started)
    return Attempt(
        index,
        staged.scale,
        outcome,
        error,
        tuple(staged.plan_summary()),
        staged.input_tokens,
        tuple(staged.notes()),
        time.perf_counter() - started,
    )
