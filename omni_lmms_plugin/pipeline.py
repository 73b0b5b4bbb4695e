"""Run each request's CPU preparation (probe, plan, decode, processor) ahead of the GPU.

:func:`prefetched` yields requests in their original order with a handle to their prepared inputs. With ``depth=0``
the preparation runs in line when the handle is read (the sequential path); with ``depth>=1`` one background worker
keeps up to ``depth`` requests prepared ahead, so memory stays bounded by ``depth`` planned inputs. A preparation
error travels with its own request and is raised when that request reads its handle.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["Prepared", "prefetched"]

R = TypeVar("R")
P = TypeVar("P")


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


def prefetched(requests: list[R], prepare: Callable[[R], P], depth: int) -> Iterator[tuple[R, Prepared[P]]]:
    """Yield ``(request, Prepared)`` in order, preparing up to ``depth`` requests ahead in one worker thread."""
    if depth <= 0:
        for request in requests:
            yield request, Prepared(compute=lambda request=request: prepare(request))
        return
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omni-prefetch")
    pending: deque[tuple[R, Future]] = deque()
    upcoming = iter(requests)
    try:
        for request in upcoming:
            pending.append((request, executor.submit(prepare, request)))
            if len(pending) > depth:
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
