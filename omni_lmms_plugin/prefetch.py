"""Run each request's CPU preparation (probe, plan, decode, processor) ahead of the GPU, on several threads.

:func:`prefetched` yields requests in their original order with a handle to their prepared inputs. With ``depth=0``
the preparation runs in line when the handle is read (the sequential path); with ``depth>=1``, ``workers`` background
threads prepare the requests ahead of the one being read, at most ``max(depth, workers)`` of them, so memory stays
bounded by ``max(depth, workers) + 1`` prepared inputs (the one being read included). Decoding releases the GIL (PyAV
decodes and converts in C), so the workers decode in parallel. A preparation error travels with its own request and is
raised when that request reads its handle.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = [
    "Prepared",
    "prefetched",
    "cores_of_this_rank",
    "default_workers",
    "default_decode_workers",
    "MAX_DEFAULT_WORKERS",
]

R = TypeVar("R")
P = TypeVar("P")

# The default number of preparation threads is half the rank's cores, at most this many: every thread in flight
# holds one request's decoded frames and processor output in host memory.
MAX_DEFAULT_WORKERS = 8


def cores_of_this_rank() -> int:
    """The cores this process may run on (its CPU affinity, which a job scheduler or container sets), shared out among
    the ranks on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate); at least 1."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable // max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1))


def default_workers(cores: int | None = None) -> int:
    """Preparation threads for ``cores`` cores (default: this rank's): half of them, 1 to 8."""
    return max(1, min(MAX_DEFAULT_WORKERS, (cores or cores_of_this_rank()) // 2))


def default_decode_workers(preparing: int, cores: int | None = None) -> int:
    """Segments each video is decoded in when ``preparing`` requests are prepared at once: the cores (default: this
    rank's) shared out among them, so that every core decodes (at least 1)."""
    return max(1, (cores or cores_of_this_rank()) // max(preparing, 1))


class Prepared(Generic[P]):
    """A request's prepared inputs, computed in the background or on first read. ``wait_seconds`` says how long the
    caller waited for them (zero when prefetching kept ahead)."""

    def __init__(self, compute: Callable[[], P] | None = None, future: Future | None = None) -> None:
        self._compute = compute
        self._future = future
        self.wait_seconds = 0.0

    def get(self) -> P:
        started = time.perf_counter()
        try:
            return self._future.result() if self._future is not None else self._compute()
        finally:
            self.wait_seconds = time.perf_counter() - started


def prefetched(
    requests: list[R], prepare: Callable[[R], P], depth: int, workers: int = 1
) -> Iterator[tuple[R, Prepared[P]]]:
    """Yield ``(request, Prepared)`` in order, preparing up to ``max(depth, workers)`` requests ahead on ``workers``
    threads (``depth=0``: in line, no threads)."""
    if depth <= 0:
        for request in requests:
            yield request, Prepared(compute=lambda request=request: prepare(request))
        return
    if workers < 1:
        raise ValueError(f"workers={workers} must be at least 1 (preparation threads)")
    ahead = max(depth, workers)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omni-prefetch")
    pending: deque[tuple[R, Future]] = deque()
    upcoming = iter(requests)
    try:
        for request in upcoming:
            pending.append((request, executor.submit(prepare, request)))
            if len(pending) > ahead:
                done_request, future = pending.popleft()
                yield done_request, Prepared(future=future)
        while pending:
            done_request, future = pending.popleft()
            yield done_request, Prepared(future=future)
    finally:
        # Ctrl-C or an abandoned generator: drop queued work and do not wait for it.
        for _, future in pending:
            future.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
