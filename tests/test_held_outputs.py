"""The timed and memory suites hold no more chunks and outputs than they use.

With 26 MB tensors each set of outputs left alive by a name still bound to it (and the engine
buffers behind it) adds 52 MB under the next step, and a record kept while the next is decoded adds
a whole record: the gate's peak memory is made of these. Each step here checks, with weak
references, what the suite still holds from before.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import onnxruntime as ortb
from pytest_trtparity.backends.base import StepTiming
from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend
from pytest_trtparity.checks.latency import run_latency
from pytest_trtparity.checks.memory import run_memory
from pytest_trtparity.checks.throughput import run_throughput
from pytest_trtparity.commands.contract import write_starter
from pytest_trtparity.contract.model import Contract, load_contract
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter
from pytest_trtparity.reference.reader import Record

from .test_invariance import _identity

ELEMENTS = 64


class Watching(OnnxRuntimeBackend):
    """Counts, as each step's session run starts, the outputs of earlier steps still alive."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.given: list[weakref.ref[np.ndarray]] = []
        self.alive: list[int] = []

    def _load_impl(self) -> Any:
        loaded = super()._load_impl()
        real = self.session.run

        def counting(*a: Any) -> Any:
            self.given = [r for r in self.given if r() is not None]
            self.alive.append(len(self.given))
            return real(*a)

        self.session.run = counting
        return loaded

    def _watch(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.given += [weakref.ref(a) for a in out.values()]
        return out

    def run(self, feeds: Mapping[str, np.ndarray], **kw: Any) -> dict[str, np.ndarray]:
        return self._watch(super().run(feeds, **kw))

    def run_timed(
        self, feeds: Mapping[str, np.ndarray], **kw: Any
    ) -> tuple[dict[str, np.ndarray], StepTiming]:
        out, timing = super().run_timed(feeds, **kw)
        return self._watch(out), timing


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Watching, Contract, Path]:
    """The identity engine, its starter contract and a 6-record reference; every step counts as
    one of large tensors (the backend then keeps no outputs of its own through the next step)."""
    monkeypatch.setattr(ortb, "ARENA_SHRINK_BYTES", 1)
    onnx_path = _identity(tmp_path / "model.onnx", 1, ELEMENTS)
    contract = load_contract(write_starter(onnx_path, tmp_path / "model.contract.json"))
    ref = tmp_path / "ref.jsonl"
    rng = np.random.default_rng(0)
    with ReferenceWriter(ref) as w:
        for _ in range(6):
            x = rng.standard_normal((1, ELEMENTS)).astype(np.float32)
            w.write(inputs={"x": x}, outputs={"a": x, "b": x})
    backend = Watching(onnx_path)
    backend.load()
    return backend, contract, ref


def test_throughput_steps_hold_no_earlier_outputs(model: tuple[Watching, Contract, Path]) -> None:
    backend, contract, ref = model
    result = run_throughput(backend, contract, ReferenceReader(ref), iterations=5, warmup=2)
    assert result.complete, result.error
    assert len(backend.alive) >= 8 and backend.alive == [0] * len(backend.alive)


def test_latency_steps_hold_only_the_outputs_kept_for_comparisons(
    model: tuple[Watching, Contract, Path],
) -> None:
    """Tiny outputs: up to `keep` (64) of them are kept on purpose, two a step; nothing more."""
    backend, contract, ref = model
    result = run_latency(backend, contract, ReferenceReader(ref), warmup=3, iterations=10)
    assert result.error is None
    kept = [min(2 * i, 2 * 64) for i in range(len(backend.alive))]
    assert len(backend.alive) >= 13
    assert all(alive <= k for alive, k in zip(backend.alive, kept, strict=True)), backend.alive


def test_latency_with_large_outputs_holds_one_kept_set(
    model: tuple[Watching, Contract, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs over `HELD_BYTES`: the first step's are kept, no other step's outlive it."""
    import pytest_trtparity.checks.latency as latency

    monkeypatch.setattr(latency, "HELD_BYTES", 1)
    backend, contract, ref = model
    result = run_latency(backend, contract, ReferenceReader(ref), warmup=3, iterations=10)
    assert result.error is None
    assert backend.alive[0] == 0 and set(backend.alive[2:]) <= {2}, backend.alive


def _fresh(n: int, alive: list[int]) -> Iterator[Record]:
    """`n` records made on demand, counting before each is made the arrays of earlier ones still
    alive (this generator keeps none of them)."""
    refs: list[weakref.ref[np.ndarray]] = []
    for i in range(n):
        refs = [r for r in refs if r() is not None]
        alive.append(len(refs))
        x = np.full((1, ELEMENTS), i, np.float32)
        record = Record("default", i, {"x": x}, {"a": x.copy(), "b": x.copy()}, line=i + 1)
        refs += [weakref.ref(a) for a in (x, record.outputs["a"], record.outputs["b"])]
        del x
        yield record
        del record


def test_memory_suite_lets_go_of_a_chunk_before_reading_the_next(
    model: tuple[Watching, Contract, Path],
) -> None:
    backend, contract, _ = model
    alive: list[int] = []
    result = run_memory(backend, contract, _fresh(6, alive), chunks=4)
    assert result.complete and result.chunks_run == 4
    assert alive[:4] == [0, 0, 0, 0], alive
    assert backend.alive == [0, 0, 0, 0], backend.alive


def test_the_reader_holds_no_record_while_decoding_the_next(
    model: tuple[Watching, Contract, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, ref = model
    refs: list[weakref.ref[np.ndarray]] = []
    alive: list[int] = []
    read = ReferenceReader._read

    def counting(self: ReferenceReader, *a: Any) -> Any:
        alive.append(sum(1 for r in refs if r() is not None))
        return read(self, *a)

    monkeypatch.setattr(ReferenceReader, "_read", counting)
    for record in ReferenceReader(ref):
        refs.extend(weakref.ref(a) for a in (*record.inputs.values(), *record.outputs.values()))
        del record
    assert alive == [0] * 7  # the header line, then 6 records


def test_a_large_step_keeps_no_outputs_of_the_last_yet_carries_state(
    silero_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silero carries its state (stateN -> state) in closed loop: with every step counted as large,
    the backend holds no earlier outputs during a step and carries exactly the same state."""
    feeds: dict[str, np.ndarray] = {
        "input": np.zeros((1, 576), np.float32),
        "sr": np.array(16000, np.int64),
    }
    first = {**feeds, "state": np.zeros((2, 1, 128), np.float32)}
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((1, 576)).astype(np.float32) for _ in range(5)]

    def loop() -> tuple[list[bytes], list[int]]:
        backend = Watching(silero_onnx)
        backend.load()
        got = [backend.run(first)["output"].tobytes()]
        for chunk in chunks:
            out = backend.run({**feeds, "input": chunk}, carry={"state": "stateN"})
            got.append(out["output"].tobytes())
            del out
        backend.close()
        return got, backend.alive

    small, held = loop()
    monkeypatch.setattr(ortb, "ARENA_SHRINK_BYTES", 1)
    large, not_held = loop()
    assert large == small
    assert held[1:] == [2] * 5  # a small step keeps the last outputs, as it always has
    assert not_held == [0] + [1] * 5  # the carried state alone: it is this step's input
