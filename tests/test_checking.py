"""Chunks checked on a worker thread: order, isolation from reused buffers, errors, nothing lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pytest_trtparity.checking import ChunkChecker
from pytest_trtparity.contract import load_contract
from pytest_trtparity.reference.reader import Record
from pytest_trtparity.results import SuiteResult

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
            checker.timed(1.0, 1.1)
    series = result.outputs["output"]
    assert series.chunks == [f"s#{i}" for i in range(50)]
    assert series.series("max_abs") == pytest.approx([i * 1e-6 for i in range(50)], abs=1e-7)
    harness = result.extra["harness"]
    assert harness["chunks"] == 50 and harness["overhead_ms"] == pytest.approx(0.1)


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
