"""The whole functional gate against the bare backend loop on the same records, as a ratio.

    pytest benchmarks/test_gate_bench.py

The gate reads the reference, checks each record against the contract, runs the engine, compares
every output and judges the series (`run_functional`). The bare loop only calls the backend on
feeds decoded beforehand: what a hand-written parity script spends in the engine. Silero VAD on
ONNX Runtime (one thread) over the committed 300-chunk reference; both timed in this run, pinned to
one core, so the ratio holds on a slower or busier machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import Backend
from pytest_trtparity.checks.functional import run_functional
from pytest_trtparity.contract.bindings import record_feeds
from pytest_trtparity.contract.model import Contract, load_contract
from pytest_trtparity.reference import ReferenceReader
from pytest_trtparity.util.paths import package_file

pytest.importorskip("pytest_benchmark", reason="the gate's cost is measured with pytest-benchmark")

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "silero_vad.contract.json"
REFERENCE = REPO / "references" / "silero_vad_300.jsonl"
ROUNDS = 7

_medians: dict[str, float] = {}


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def engine() -> Iterator[Backend]:
    backend = open_backend(package_file("pkg:silero_vad/data/silero_vad.onnx"), threads=1).load()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(CONTRACT)


def gate(engine: Backend, contract: Contract) -> int:
    result = run_functional(engine, contract, ReferenceReader(REFERENCE))
    assert result.complete, result.error
    return result.chunks_run


def bare(engine: Backend, feeds: list[dict[str, Any]]) -> int:
    for f in feeds:
        engine.reset_state()
        engine.run(f)
    return len(feeds)


@pytest.mark.benchmark(group="gate")
def test_gate(benchmark: Any, engine: Backend, contract: Contract) -> None:
    gate(engine, contract)
    with one_core():
        assert benchmark.pedantic(gate, args=(engine, contract), rounds=ROUNDS, iterations=1) == 300
    _medians["gate"] = benchmark.stats.stats.median


@pytest.mark.benchmark(group="gate")
def test_bare_backend_loop(benchmark: Any, engine: Backend, contract: Contract) -> None:
    feeds = [
        record_feeds(contract, r.inputs, engine.inputs, r.where) for r in ReferenceReader(REFERENCE)
    ]
    bare(engine, feeds)
    with one_core():
        assert benchmark.pedantic(bare, args=(engine, feeds), rounds=ROUNDS, iterations=1) == 300
    _medians["bare"] = benchmark.stats.stats.median


def test_report(bench_report: list[str]) -> None:
    if set(_medians) != {"gate", "bare"}:
        pytest.skip("needs both timings from this run")
    ratio = _medians["gate"] / _medians["bare"]
    bench_report.append(
        f"gate: functional gate {_medians['gate'] * 1e3:.1f} ms vs bare backend loop {_medians['bare'] * 1e3:.1f} ms "
        f"over 300 Silero chunks (medians of {ROUNDS}, one core): ratio {ratio:.2f}x, "
        f"{(_medians['gate'] - _medians['bare']) / 300 * 1e3:.3f} ms a chunk for reading, checking and comparing"
    )
