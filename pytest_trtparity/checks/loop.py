"""The chunk loop functional and closed-loop runs share: read ahead, feed, step, check, judge.

Each chunk's outputs are checked on a worker thread while the engine runs the next chunk.

Comparing every output of every chunk costs real CPU (eight metrics in float64 per output). Done in
line, that cost lands on the gate's critical path between two engine steps. numpy releases the GIL
in its loops, and a GPU engine leaves the host idle while the device computes, so the comparison of
chunk N runs during the step of chunk N+1. One worker keeps results in chunk order; at most `depth`
chunks wait, so memory stays bounded and a slow comparison makes the loop wait instead of queueing.

What the loop itself costs is measured, not assumed, as a person timing the run would: the loop's
wall time from its start to the last check finished, minus the time spent inside engine steps. Reading
and decoding each record, checking it against the contract, building feeds, handing the outputs over,
waiting for a worker that fell behind and the final wait all count; so does the engine running slower
while the worker competes with it for the cores (a step counts as engine time only up to the steps'
10th percentile). Per chunk: the time since the previous chunk ended minus
its step, reported as mean and p95, not a median that hides the slow chunks.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from ..backends.base import Backend, IOInfo
from ..contract.bindings import record_feeds, record_outputs_problems
from ..contract.invariants import violation
from ..contract.model import Contract
from ..errors import BackendError, TrtParityError
from ..judge.compare import compare
from ..judge.payloads import LoopPayload
from ..judge.results import SuiteResult, chunk_label
from ..judge.tiers import Finding, Level, judge_series, percentile
from ..reference.reader import Record

ChunkCallback = Callable[[int], None]


class ChunkChecker:
    def __init__(
        self,
        result: SuiteResult,
        contract: Contract,
        *,
        suite: str,
        depth: int = 2,
        clock: Callable[[], float] = time.perf_counter,
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
        self.clock = clock
        self.started = clock()
        self._mark = self.started
        self.wall_ms = 0.0

    def submit(self, record: Record, got: Mapping[str, np.ndarray]) -> None:
        """Queue one chunk's check. Arrays a backend may reuse (views of its staging buffers) are
        copied first, so the next step cannot change what is being compared."""
        large = record.nbytes + sum(v.nbytes for v in got.values()) > IN_FLIGHT_BYTES
        # a large chunk is checked before the next step, so the backend's arrays need no copy
        owned = got if large else {k: v if v.flags.owndata else v.copy() for k, v in got.items()}
        self._pending.append(self._pool.submit(self._check, record, owned))
        while len(self._pending) > (0 if large else self.depth):  # large: check it before the next
            self._pending.popleft().result()  # re-raises whatever the check raised

    def _check(self, record: Record, got: Mapping[str, np.ndarray]) -> None:
        start = time.perf_counter()
        check_chunk(self.result, self.contract, record, got, suite=self.suite)
        self.compare_ms.append((time.perf_counter() - start) * 1e3)

    def timed(self, step_ms: float) -> None:
        """Record one chunk's engine step; the chunk's wall time runs from the end of the previous
        chunk (or the start of the loop), so reading the record counts."""
        now = self.clock()
        self.step_ms.append(step_ms)
        self.overhead_ms.append(max(0.0, (now - self._mark) * 1e3 - step_ms))
        self._mark = now

    def close(self) -> None:
        """Wait for every queued check (results gathered so far are never dropped)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
            self.wall_ms = (self.clock() - self.started) * 1e3
        if self.step_ms:
            self.result.typed(LoopPayload).harness = harness_report(
                self.step_ms, self.overhead_ms, self.compare_ms, wall_ms=self.wall_ms
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
            self.result.typed(LoopPayload).check_error = f"{type(exc).__name__}: {exc}"


#: The harness target as (engine step in ms, largest share of it the harness may add): at most 20%
#: around a 1 ms step and 5% around a 5 ms one, on two cores. Both allow about 0.2 ms a chunk: what
#: is fixed per chunk (reading a record, handing outputs over, the comparison's share of the GIL)
#: weighs more on a short step, so one share for every step would be either lax or unreachable.
HARNESS_TARGETS: tuple[tuple[float, float], ...] = ((1.0, 0.20), (5.0, 0.05))


def harness_target(step_ms: float) -> float | None:
    """The largest `overhead_share` allowed around an engine step of `step_ms`.

    Linear between the targets' points and the last point's share above them; None below the first
    point (a step under 1 ms is dominated by fixed costs no target is set for).
    """
    (lo_ms, lo_share), (hi_ms, hi_share) = HARNESS_TARGETS
    if not step_ms >= lo_ms:  # also NaN
        return None
    if step_ms >= hi_ms:
        return hi_share
    return lo_share + (hi_share - lo_share) * (step_ms - lo_ms) / (hi_ms - lo_ms)


def harness_report(
    step_ms: list[float],
    overhead_ms: list[float],
    compare_ms: list[float],
    *,
    wall_ms: float | None = None,
) -> dict[str, Any]:
    """The loop's own cost against the engine's time, as means and p95s per chunk.

    A step the checker's threads slowed down (they compete with it for the cores and the GIL) is
    not all engine time: each step counts as engine time only up to the 10th percentile of all
    steps (`engine_floor_ms`, the engine undisturbed), and the rest counts as the harness's. For an
    engine whose steps genuinely vary this overstates the harness's share; it never hides it.
    `overhead_ms` is the whole loop's wall time minus that engine time, per chunk (reading the end of
    the file and waiting for the last checks included); `overhead_share` is that total over the
    engine time; `overhead_p95_ms` is the p95 of the per-chunk figures; `compare_ms` the mean
    comparison time on the worker.
    """
    chunks = len(step_ms)
    floor = percentile(step_ms, 10)
    engine = math.fsum(min(s, floor) for s in step_ms)
    wall = wall_ms if wall_ms is not None else math.fsum(step_ms) + math.fsum(overhead_ms)
    overhead = max(0.0, wall - engine)
    per_chunk = [o + max(0.0, s - floor) for s, o in zip(step_ms, overhead_ms, strict=True)]
    return {
        "engine_step_ms": engine / chunks,
        "engine_step_measured_ms": math.fsum(step_ms) / chunks,
        "engine_step_p95_ms": percentile(step_ms, 95),
        "engine_floor_ms": floor,
        "overhead_ms": overhead / chunks,
        "overhead_p95_ms": percentile(per_chunk, 95),
        "overhead_share": overhead / engine if engine > 0 else math.nan,
        "compare_ms": math.fsum(compare_ms) / len(compare_ms) if compare_ms else math.nan,
        "compare_p95_ms": percentile(compare_ms, 95) if compare_ms else math.nan,
        "wall_ms": wall,
        "chunks": chunks,
    }


def judged_metrics(contract: Contract, output: str) -> frozenset[str]:
    """The metrics the contract judges `output` by (its tolerance's, and its closed-loop
    criteria's): the only ones worth computing on every chunk."""
    wanted = {contract.tolerance(output).metric}
    crit = contract.closed_loop.for_output(output)
    if crit is not None and crit.metric:
        wanted.add(crit.metric)
    return frozenset(wanted)


def check_chunk(
    result: SuiteResult,
    contract: Contract,
    record: Record,
    got: Mapping[str, np.ndarray],
    *,
    suite: str,
) -> None:
    """Invariants and comparison of one chunk's engine outputs; appends to `result`."""
    label = chunk_label(record.stream, record.chunk_index)
    for spec in contract.outputs:
        name = spec.name
        if name not in got:
            _problem(
                result,
                suite,
                name,
                "missing output",
                f"output {name!r}: the engine returned no such output on chunk {label}",
                label,
            )
            continue
        for inv in contract.invariants_for(name):
            why = violation(inv, got[name])
            if why:
                _problem(
                    result,
                    suite,
                    name,
                    "invariant",
                    f"output {name!r}: invariant {inv.describe()} violated on chunk {label}: {why}",
                    label,
                )
        cmp = compare(
            name,
            record.outputs[name],
            got[name],
            expected_dtype=spec.dtype,
            tolerance=contract.tolerance(name),
            allow_empty=spec.allow_empty,
            metrics=judged_metrics(contract, name),
        )
        if cmp.problem:
            _problem(
                result,
                suite,
                name,
                "structure",
                f"output {name!r} on chunk {label}: {cmp.problem}",
                label,
            )
            result.series(name).add(label, {"max_abs": float("nan")})
        else:
            result.series(name).add(label, cmp.metrics)


#: Records read ahead of the engine by the prefetching thread (each is one decoded record in memory).
PREFETCH = 1
#: A chunk holding more than this (record and outputs) is not queued: its check finishes before the
#: next step and the next record is read only once this one is taken, so the gate's peak memory
#: stays within two records whatever the tensors' size.
IN_FLIGHT_BYTES = 64 << 20


def prefetched(records: Iterable[Record], depth: int = PREFETCH) -> Iterator[Record]:
    """`records`, read and decoded on a thread of their own while the engine runs the previous one.

    Decoding a record (base64 and copies, which release the GIL) then overlaps the engine step
    instead of adding to it. Order is kept and an error from the reader is raised here, at the record
    where it happened; at most `depth` records wait, so memory stays bounded. Leaving the loop early
    stops the thread before the next record is read.
    """
    if depth <= 0:
        yield from records
        return
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for record in records:
                if not _put(box, stop, ("record", record)):
                    return
                if record.nbytes > IN_FLIGHT_BYTES:
                    _taken(box, stop)
        except BaseException as exc:  # handed to the loop, which raises it in order
            _put(box, stop, ("error", exc))
            return
        _put(box, stop, ("end", None))

    worker = threading.Thread(target=produce, name="trtparity-read", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                box.get(timeout=0.05)
        worker.join()


def _taken(box: queue.Queue[tuple[str, Any]], stop: threading.Event) -> None:
    """Wait until the loop has taken what the box holds (or is leaving)."""
    while not stop.is_set() and not box.empty():
        stop.wait(0.001)


def _put(box: queue.Queue[tuple[str, Any]], stop: threading.Event, item: tuple[str, Any]) -> bool:
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            box.put(item, timeout=0.05)
            return True
    return False


def run_step(
    backend: Backend,
    record: Record,
    feeds: Mapping[str, np.ndarray],
    carry: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """One engine step, with any failure re-raised as a `BackendError` naming file, line and chunk:
    a crash at chunk 120 must read as such, never as "120/300 passed"."""
    where = f"{record.where} (chunk {chunk_label(record.stream, record.chunk_index)})"
    try:
        return backend.run(feeds, carry=carry)
    except TrtParityError as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    except Exception as exc:
        raise BackendError(f"{where}: the engine step failed: {type(exc).__name__}: {exc}") from exc


StepFn = Callable[[Record, dict[str, np.ndarray]], dict[str, np.ndarray]]


def run_chunk(
    checker: ChunkChecker,
    engine_inputs: Sequence[IOInfo],
    record: Record,
    step: StepFn,
    on_chunk: ChunkCallback | None,
) -> None:
    """One chunk of a parity run: check the record against the contract, build its feeds, run the
    engine step, hand the outputs to the checker, and time the engine step (the checker times the
    chunk's wall time around it)."""
    contract = checker.contract
    record_outputs_problems(contract, record.outputs, record.where)
    feeds = record_feeds(contract, record.inputs, engine_inputs, record.where)
    start = time.perf_counter()
    got = step(record, feeds)
    step_ms = (time.perf_counter() - start) * 1e3
    checker.submit(record, got)
    checker.result.chunk_done(record.stream)
    if on_chunk:
        on_chunk(checker.result.chunks_run)
    checker.timed(step_ms)


def _problem(
    result: SuiteResult, suite: str, output: str, criterion: str, message: str, chunk: str
) -> None:
    result.findings.append(Finding(Level.FAIL, suite, output, criterion, message, chunk=chunk))


def judge_result(result: SuiteResult, contract: Contract, *, suite: str) -> None:
    """Judge every output's series against its tolerance (after all chunks have run)."""
    for spec in contract.outputs:
        series = result.outputs.get(spec.name)
        if series is None:
            continue
        tol = contract.tolerance(spec.name)
        result.findings.extend(
            judge_series(
                series.series(tol.metric), series.chunks, tol, suite=suite, output=spec.name
            )
        )
