"""Check each chunk's outputs on a worker thread while the engine runs the next chunk.

Comparing every output of every chunk costs real CPU (eight metrics in float64 per output). Done in
line, that cost lands on the gate's critical path between two engine steps. numpy releases the GIL
in its loops, and a GPU engine leaves the host idle while the device computes, so the comparison of
chunk N runs during the step of chunk N+1. One worker keeps results in chunk order; at most `depth`
chunks wait, so memory stays bounded and a slow comparison makes the loop wait instead of queueing.

What the loop itself costs is measured, not assumed: per chunk, the wall time of the loop body minus
the engine step, next to the engine step and the comparison's own time on the worker.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from .contract import Contract
from .gate import percentile
from .reference.reader import Record
from .results import SuiteResult


class ChunkChecker:
    def __init__(
        self, result: SuiteResult, contract: Contract, *, suite: str, depth: int = 2
    ) -> None:
        self.result = result
        self.contract = contract
        self.suite = suite
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trtparity-check")
        self._pending: deque[Future[None]] = deque()
        self.compare_ms: list[float] = []
        self.step_ms: list[float] = []
        self.overhead_ms: list[float] = []

    def submit(self, record: Record, got: Mapping[str, np.ndarray]) -> None:
        """Queue one chunk's check. Arrays a backend may reuse (views of its staging buffers) are
        copied first, so the next step cannot change what is being compared."""
        owned = {k: v if v.flags.owndata else v.copy() for k, v in got.items()}
        self._pending.append(self._pool.submit(self._check, record, owned))
        while len(self._pending) > self.depth:
            self._pending.popleft().result()  # re-raises whatever the check raised

    def _check(self, record: Record, got: Mapping[str, np.ndarray]) -> None:
        from .functional import check_chunk

        start = time.perf_counter()
        check_chunk(self.result, self.contract, record, got, suite=self.suite)
        self.compare_ms.append((time.perf_counter() - start) * 1e3)

    def timed(self, step_ms: float, body_ms: float) -> None:
        """Record one loop body's wall time and the engine step inside it."""
        self.step_ms.append(step_ms)
        self.overhead_ms.append(max(0.0, body_ms - step_ms))

    def close(self) -> None:
        """Wait for every queued check (results gathered so far are never dropped)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
        if self.step_ms:
            self.result.extra["harness"] = harness_report(
                self.step_ms, self.overhead_ms, self.compare_ms
            )

    def __enter__(self) -> ChunkChecker:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.close()
            return
        try:  # an error is on its way up: still finish the chunks that ran, so none is lost
            self.close()
        except Exception as exc:  # the run has already failed; keep the first error, note this one
            self.result.extra["check_error"] = f"{type(exc).__name__}: {exc}"


def harness_report(
    step_ms: list[float], overhead_ms: list[float], compare_ms: list[float]
) -> dict[str, Any]:
    """Medians per chunk: the engine step, the loop's own time around it (feeds, handing the chunk to
    the checker, waiting for it when it falls behind), and the comparison's time on the worker."""
    step = percentile(step_ms, 50)
    overhead = percentile(overhead_ms, 50)
    return {
        "engine_step_ms": step,
        "overhead_ms": overhead,
        "overhead_share": overhead / step if step > 0 else math.nan,
        "compare_ms": percentile(compare_ms, 50),
        "chunks": len(step_ms),
    }
