"""The chunk loop keeps few large records in memory: read-ahead and queued checks stop for them.

With 25 MB tensors every extra record the loop holds is tens of megabytes; the gate's peak memory is
bounded (2x the longest reference line + 200 MB, benchmarks/rss_bound.py) only if a large chunk is
checked before the next step and the next record is read only once the loop has taken this one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.checks import loop
from pytest_trtparity.checks.loop import ChunkChecker, prefetched
from pytest_trtparity.contract.model import Contract
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.reference.reader import Record


def make_record(i: int, elements: int = 1000) -> Record:
    return Record(
        stream="s",
        chunk_index=i,
        inputs={"x": np.zeros(elements, np.float32), "n": np.zeros(3, np.int64)},
        outputs={"y": np.zeros(elements, np.float32)},
    )


def test_record_nbytes_counts_inputs_and_outputs() -> None:
    assert make_record(0, 1000).nbytes == 4000 + 24 + 4000


def lead(large: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many records the reader got ahead of the one the loop holds, at most."""
    monkeypatch.setattr(loop, "IN_FLIGHT_BYTES", 100 if large else 1 << 30)
    read: list[int] = []

    def reader() -> Iterator[Record]:
        for i in range(8):
            read.append(i)
            yield make_record(i)

    worst = 0
    for r in prefetched(reader()):
        time.sleep(0.02)  # the engine step: time for the reader to run ahead
        worst = max(worst, max(read) - r.chunk_index)
    return worst


def test_large_records_are_read_one_ahead_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lead(True, monkeypatch) <= 1


def test_small_records_are_read_further_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The yardstick for the test above: without the size rule the reader runs two ahead."""
    assert lead(False, monkeypatch) == 2


def checked_at_submit(large: bool, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each submitted chunk, whether its check had finished when `submit` returned."""
    monkeypatch.setattr(loop, "IN_FLIGHT_BYTES", 100 if large else 1 << 30)
    done: list[int] = []
    lock = threading.Lock()

    def slow_check(
        result: SuiteResult, contract: Contract, record: Record, got: Mapping[str, Any], **_: Any
    ) -> None:
        time.sleep(0.05)
        with lock:
            done.append(record.chunk_index)

    monkeypatch.setattr(loop, "check_chunk", slow_check)
    contract: Any = object()
    finished: list[bool] = []
    with ChunkChecker(SuiteResult("functional"), contract, suite="functional") as checker:
        for i in range(3):
            checker.submit(make_record(i), {"y": np.zeros(1000, np.float32)})
            with lock:
                finished.append(i in done)
    assert sorted(done) == [0, 1, 2]  # every check ran, either way
    return finished


def test_a_large_chunk_is_checked_before_the_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checked_at_submit(True, monkeypatch) == [True, True, True]


def test_small_chunks_are_checked_on_the_worker_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checked_at_submit(False, monkeypatch) == [False, False, False]


def test_large_onnx_runtime_steps_hand_the_arena_back(
    silero_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime's CPU arena keeps every block it grew into; steps of large tensors ask it to
    shrink after the run (so one check's blocks do not sit under the next check's peak), while
    ordinary steps run as before, with no run options."""
    from pytest_trtparity.backends import onnxruntime as ortb

    backend = ortb.OnnxRuntimeBackend(silero_onnx).load()
    seen: list[object] = []
    real = backend.session.run

    def spy(names: Any, feeds: Any, options: Any = None) -> Any:
        seen.append(options)
        return real(names, feeds, options)

    monkeypatch.setattr(backend.session, "run", spy)
    feeds = {
        "input": np.zeros((1, 576), np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, np.int64),
    }
    backend.run(feeds)
    monkeypatch.setattr(ortb, "ARENA_SHRINK_BYTES", 1024)  # these feeds now count as large
    backend.run(feeds)
    backend.close()
    assert seen[0] is None
    assert seen[1] is not None
    assert seen[1].get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
