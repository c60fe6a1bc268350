"""Functional parity: every chunk gets the reference inputs (reference states included) and every
output is compared with the reference and checked against the contract's invariants.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import Backend, IOInfo
from ..contract.bindings import record_feeds, record_outputs_problems
from ..contract.invariants import violation
from ..contract.model import Contract
from ..errors import BackendError, TrtParityError
from ..judge.compare import compare
from ..judge.results import SuiteResult, chunk_label
from ..judge.tiers import Finding, Level, judge_series
from ..reference.reader import Record

if TYPE_CHECKING:
    from .loop import ChunkChecker

#: Per-chunk problems listed in full before they are only counted.
MAX_LISTED = 20

ChunkCallback = Callable[[int], None]


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


def run_functional(
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    on_chunk: ChunkCallback | None = None,
    suite: str = "functional",
) -> SuiteResult:
    """Run every record through the engine. A reader or binding error ends the run with what was
    gathered so far kept in the result (`complete` False, `error` set): nothing measured is lost,
    and an incomplete result is never a pass."""
    from .loop import ChunkChecker

    result = SuiteResult(suite=suite)
    engine_inputs = backend.inputs
    try:

        def fresh_step(record: Record, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            backend.reset_state()  # functional: every chunk takes the reference state
            return run_step(backend, record, feeds)

        with ChunkChecker(result, contract, suite=suite) as checker:
            for record in prefetched(records):
                run_chunk(checker, engine_inputs, record, fresh_step, on_chunk)
    except TrtParityError as exc:
        result.error = str(exc)
    result.finish()
    judge_result(result, contract, suite=suite)
    return result
