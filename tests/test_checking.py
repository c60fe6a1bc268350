"""Chunks checked on a worker thread: order, isolation from reused buffers, errors, nothing lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pytest_trtparity.checks.loop import ChunkChecker, harness_target
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.reference.reader import Record

from .conftest import SILERO_CONTRACT


def record(i: int, value: float) -> Record:
    out = {
        "output": np.full((1, 1), value, np.float32),
        "stateN": np.zeros((2, 1, 128), np.float32),
    }
    return Record("s", i, {}, out, line=i + 1, source="ref.jsonl")


def test_results_keep_chunk_order_and_are_all_there() -> None:
    contract = load_contract(SILERO_CONTRACT)
    result = SuiteResult("functional")
    with ChunkChecker(result, contract, suite="functional", depth=2) as checker:
        for i in range(50):
            checker.submit(
                record(i, 0.5),
                {
                    "output": np.full((1, 1), 0.5 + i * 1e-6, np.float32),
                    "stateN": np.zeros((2, 1, 128), np.float32),
                },
            )
            checker.timed(1.0)
    series = result.outputs["output"]
    assert series.chunks == [f"s#{i}" for i in range(50)]
    assert series.series("max_abs") == pytest.approx([i * 1e-6 for i in range(50)], abs=1e-7)
    assert result.payload.to_json()["harness"]["chunks"] == 50


class FakeClock:
    """Seconds that advance only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1e3


def test_overhead_counts_reading_waiting_and_the_final_drain() -> None:
    """Per chunk: 0.3 ms reading the record, a 1 ms engine step, 0.1 ms after it; one chunk in ten
    waits 2 ms for the worker; closing waits 5 ms. Every one of those is the loop's cost."""
    contract = load_contract(SILERO_CONTRACT)
    result = SuiteResult("functional")
    clock = FakeClock()
    checker = ChunkChecker(result, contract, suite="functional", clock=clock)
    for i in range(20):
        clock.advance(0.3)  # the reader decodes the next record
        clock.advance(1.0)  # the engine step
        clock.advance(0.1 + (2.0 if i % 10 == 9 else 0.0))
        checker.timed(1.0)
    clock.advance(5.0)
    checker.close()
    h = result.payload.to_json()["harness"]
    assert h["engine_step_ms"] == pytest.approx(1.0)
    assert h["overhead_ms"] == pytest.approx((20 * 0.4 + 2 * 2.0 + 5.0) / 20)
    assert h["overhead_share"] == pytest.approx(h["overhead_ms"] / 1.0)
    assert h["overhead_p95_ms"] == pytest.approx(2.4, abs=0.05)  # the slow chunks, not the median
    assert h["wall_ms"] == pytest.approx(20 * 1.4 + 4.0 + 5.0)


def test_a_reused_staging_buffer_cannot_change_what_is_compared() -> None:
    contract = load_contract(SILERO_CONTRACT)
    result = SuiteResult("functional")
    staging = np.full((3, 1, 1), 0.5, np.float32)  # a backend's host buffer, reused every step
    gate = threading.Event()
    with ChunkChecker(result, contract, suite="functional", depth=8) as checker:
        original = checker._check

        def slow_check(rec: Record, got: dict[str, np.ndarray]) -> None:
            gate.wait(5)
            original(rec, got)

        checker._check = slow_check  # type: ignore[method-assign]
        for i in range(3):
            view = staging[i]  # a view: the checker must copy it
            checker.submit(
                record(i, 0.5), {"output": view, "stateN": np.zeros((2, 1, 128), np.float32)}
            )
            staging[i] = 99.0  # the next step overwrites the buffer before the check runs
        gate.set()
    assert result.outputs["output"].series("max_abs") == [0.0, 0.0, 0.0]


def test_a_check_that_fails_on_the_worker_raises_in_the_loop() -> None:
    contract = load_contract(SILERO_CONTRACT)
    result = SuiteResult("functional")
    checker = ChunkChecker(result, contract, suite="functional", depth=0)

    def broken(rec: Record, got: dict[str, np.ndarray]) -> None:
        raise ValueError(f"check of {rec.where} failed")

    checker._check = broken  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"check of ref.jsonl:1 failed"):
        checker.submit(record(0, 0.5), {"output": np.zeros((1, 1), np.float32)})
    checker.close()


def test_an_error_in_the_loop_still_finishes_the_chunks_that_ran() -> None:
    contract = load_contract(SILERO_CONTRACT)
    result = SuiteResult("functional")
    with (
        pytest.raises(RuntimeError, match="reader died"),
        ChunkChecker(result, contract, suite="functional", depth=4) as checker,
    ):
        for i in range(3):
            checker.submit(
                record(i, 0.5),
                {
                    "output": np.full((1, 1), 0.5, np.float32),
                    "stateN": np.zeros((2, 1, 128), np.float32),
                },
            )
        time.sleep(0)
        raise RuntimeError("reader died")
    assert result.outputs["output"].chunks == ["s#0", "s#1", "s#2"]


def test_prefetched_keeps_order_raises_in_place_and_stops_early() -> None:
    from collections.abc import Iterator

    from pytest_trtparity.checks.loop import prefetched
    from pytest_trtparity.errors import ReferenceFormatError

    read: list[int] = []

    def reader(fail_at: int | None) -> Iterator[Record]:
        for i in range(10):
            if i == fail_at:
                raise ReferenceFormatError(f"ref.jsonl:{i + 2}: bad line")
            read.append(i)
            yield record(i, 0.0)

    assert [r.chunk_index for r in prefetched(reader(None))] == list(range(10))
    seen: list[int] = []
    with pytest.raises(ReferenceFormatError, match=r"ref\.jsonl:6"):
        for r in prefetched(reader(4)):
            seen.append(r.chunk_index)
    assert seen == [0, 1, 2, 3]  # every record before the bad line reached the loop
    read.clear()
    for r in prefetched(reader(None), depth=1):
        if r.chunk_index == 2:
            break
    assert max(read) <= 4  # the reader stopped soon after the loop did, not at the end of the file


def test_a_step_slowed_by_the_checker_counts_as_harness_cost() -> None:
    """Eighteen 1 ms steps and two that took 4 ms while the worker held the cores: the 6 ms extra is
    the harness's, not the engine's."""
    contract = load_contract(SILERO_CONTRACT)
    result = SuiteResult("functional")
    clock = FakeClock()
    checker = ChunkChecker(result, contract, suite="functional", clock=clock)
    for i in range(20):
        step = 4.0 if i in (7, 15) else 1.0
        clock.advance(step)
        checker.timed(step)
    checker.close()
    h = result.payload.to_json()["harness"]
    assert h["engine_floor_ms"] == 1.0 and h["engine_step_ms"] == pytest.approx(1.0)
    assert h["engine_step_measured_ms"] == pytest.approx(26.0 / 20)
    assert h["overhead_share"] == pytest.approx(6.0 / 20.0)
    assert h["overhead_p95_ms"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("step_ms", "share"),
    [(1.0, 0.20), (3.0, 0.125), (5.0, 0.05), (40.0, 0.05)],
)
def test_harness_target_is_20_percent_at_1_ms_and_5_percent_from_5_ms(
    step_ms: float, share: float
) -> None:
    target = harness_target(step_ms)
    assert target is not None
    assert target == pytest.approx(share)


@pytest.mark.parametrize("step_ms", [0.3, 0.999, float("nan")])
def test_no_harness_target_below_a_1_ms_step(step_ms: float) -> None:
    assert harness_target(step_ms) is None
