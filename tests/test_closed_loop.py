"""Closed loop: the engine runs on its own state, and drift fails it where functional mode passes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import Backend, BackendInfo, IOInfo
from pytest_trtparity.checks.closed_loop import run_closed_loop
from pytest_trtparity.checks.functional import run_functional
from pytest_trtparity.contract.model import Contract, contract_from_json, load_contract
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.reference.reader import Record, ReferenceReader

from .conftest import SILERO_CONTRACT, SILERO_REF
from .onnx_edits import ignore_input, scale_output

#: stateN times (1 + EPS) each chunk: functional error stays far inside every tolerance, while
#: fed back 300 times it leaves the closed-loop bound (measured: functional stateN max 1.1e-4,
#: closed loop 6.3e-3 against the 5e-3 fail tier).
EPS = 3e-6


@pytest.fixture(scope="module")
def silero() -> Contract:
    return load_contract(SILERO_CONTRACT)


@pytest.fixture(scope="module")
def drifting_onnx(tmp_path_factory: pytest.TempPathFactory, silero_onnx: Path) -> Path:
    return scale_output(
        silero_onnx, tmp_path_factory.mktemp("edits") / "drift.onnx", "stateN", 1 + EPS
    )


# -- the real model -------------------------------------------------------------------------------


def test_silero_fp32_passes_300_chunks_of_closed_loop(silero: Contract, silero_onnx: Path) -> None:
    result = run_closed_loop(open_backend(silero_onnx).load(), silero, ReferenceReader(SILERO_REF))
    assert result.suite == "closed_loop" and result.complete and result.error is None
    assert result.chunks_run == 300 and result.streams == ["default"]
    assert result.verdict is Level.PASS, [f.message for f in result.findings]
    for output in ("output", "stateN"):
        stats = result.payload.to_json()["drift"][output]["streams"]["default"]
        assert stats["chunks"] == 300
        assert not stats["trend"]["significant"]  # the real loop is not flagged by noise
        assert stats["trend"]["growth"] < 0.05
    assert result.payload.to_json()["state"] == [
        {"output": "stateN", "input": "state", "initial": "reference"}
    ]


def test_state_drift_passes_functional_and_fails_closed_loop(
    silero: Contract, drifting_onnx: Path
) -> None:
    backend = open_backend(drifting_onnx).load()
    functional = run_functional(backend, silero, ReferenceReader(SILERO_REF))
    assert functional.verdict is Level.PASS, [f.message for f in functional.findings]
    loop = run_closed_loop(backend, silero, ReferenceReader(SILERO_REF))
    assert loop.verdict is Level.FAIL
    failed = {(f.output, f.criterion) for f in loop.failures()}
    assert ("stateN", "closed-loop max of max_abs") in failed
    assert ("stateN", "closed-loop mean of max_abs") in failed
    bound = next(f for f in loop.failures() if f.criterion == "closed-loop max of max_abs")
    assert bound.message.startswith("output 'stateN': closed-loop max of max_abs 0.00")
    assert bound.message.endswith("is above the fail tier 0.005") and bound.chunk


def test_engine_that_ignores_its_state_fails_closed_loop(
    silero: Contract, silero_onnx: Path, tmp_path: Path
) -> None:
    deaf = ignore_input(silero_onnx, tmp_path / "deaf.onnx", "state")
    loop = run_closed_loop(
        open_backend(deaf).load(), silero, ReferenceReader(SILERO_REF), chunks=60
    )
    assert loop.verdict is Level.FAIL
    assert {f.output for f in loop.failures()} == {"output", "stateN"}


def test_chunks_limit_from_argument_and_contract(silero: Contract, silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    assert run_closed_loop(backend, silero, ReferenceReader(SILERO_REF), chunks=25).chunks_run == 25
    raw = json.loads(Path(SILERO_CONTRACT).read_text())
    raw["closed_loop"]["chunks"] = 30
    limited = contract_from_json(raw)
    result = run_closed_loop(backend, limited, ReferenceReader(SILERO_REF))
    assert result.chunks_run == 30 and result.payload.to_json()["chunks_limit"] == 30


def test_reader_error_mid_loop_keeps_what_ran_and_never_passes(
    silero: Contract, silero_onnx: Path, tmp_path: Path
) -> None:
    lines = Path(SILERO_REF).read_bytes().splitlines(keepends=True)
    broken = tmp_path / "cut.jsonl"
    broken.write_bytes(b"".join(lines[:41]) + lines[41][: len(lines[41]) // 2])
    result = run_closed_loop(open_backend(silero_onnx).load(), silero, ReferenceReader(broken))
    assert not result.complete and result.verdict is Level.FAIL
    assert result.chunks_run == 40
    assert f"{broken}:42" in (result.error or "")
    assert len(result.outputs["stateN"].chunks) == 40
    assert result.payload.to_json()["drift"]["stateN"]["streams"]["default"]["chunks"] == 40


# -- the feeding of state, with a transparent engine ---------------------------------------------

TOY = {
    "trtparity": "contract/1",
    "model": "toy",
    "inputs": [
        {"name": "x", "dtype": "float32", "shape": [1]},
        {"name": "s", "dtype": "float32", "shape": [1]},
    ],
    "outputs": [
        {"name": "y", "dtype": "float32", "shape": [1]},
        {"name": "sN", "dtype": "float32", "shape": [1]},
    ],
    "state": [{"output": "sN", "input": "s"}],
    "default_tolerance": {"chunk": {"fail": 0.0}},
}


class Spy(Backend):
    """sN = s + x and y = s, recording the state it was given; `leak` adds to each new state."""

    kind = "spy"

    def __init__(self, leak: float = 0.0) -> None:
        super().__init__("spy.onnx")
        self.leak = leak
        self.seen: list[float] = []

    def info(self) -> BackendInfo:
        return BackendInfo("spy", "0", "cpu", "spy.onnx", "0" * 64, 0)

    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        io = lambda n: IOInfo(n, "float32", (1,))  # noqa: E731
        return (io("x"), io("s")), (io("y"), io("sN"))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(float(feeds["s"][0]))
        return {"y": feeds["s"].copy(), "sN": feeds["s"] + feeds["x"] + np.float32(self.leak)}


def _arr(v: float) -> np.ndarray:
    return np.array([v], dtype=np.float32)


def toy_records(
    streams: Mapping[str, list[float]], order: list[str], *, ref_state: float = 100.0
) -> list[Record]:
    """Records of a reference written in closed loop by the true model (no leak). Each record's
    state input is the reference's own state, offset by `ref_state` so feeding it back is visible."""
    state = {name: 0.0 for name in streams}
    index = {name: 0 for name in streams}
    out = []
    for name in order:
        k = index[name]
        x, s = streams[name][k], state[name]
        out.append(
            Record(
                name,
                k,
                {"x": _arr(x), "s": _arr(s + (ref_state if k else 0.0))},
                {"y": _arr(s), "sN": _arr(s + x)},
                line=len(out) + 2,
                source="toy.jsonl",
            )
        )
        state[name] = s + x
        index[name] = k + 1
    return out


def test_later_chunks_take_the_engines_own_state_not_the_reference() -> None:
    contract = contract_from_json(TOY)
    spy = Spy()
    result = run_closed_loop(spy, contract, toy_records({"a": [1.0, 2.0, 3.0, 4.0]}, ["a"] * 4))
    assert spy.seen == [0.0, 1.0, 3.0, 6.0]  # never the offset reference state
    assert result.verdict is Level.PASS, [f.message for f in result.findings]


def test_a_leak_grows_in_closed_loop_and_is_caught() -> None:
    contract = contract_from_json(TOY)
    result = run_closed_loop(Spy(leak=0.5), contract, toy_records({"a": [1.0] * 5}, ["a"] * 5))
    assert result.verdict is Level.FAIL
    assert result.outputs["sN"].series("max_abs") == [0.5, 1.0, 1.5, 2.0, 2.5]


def test_zeros_initial_state() -> None:
    raw = json.loads(json.dumps(TOY))
    raw["state"][0]["initial"] = "zeros"
    spy = Spy()
    records = toy_records({"a": [1.0, 1.0]}, ["a", "a"])
    records[0].inputs["s"][0] = 42.0  # the reference's first state is ignored with initial: zeros
    run_closed_loop(spy, contract_from_json(raw), records)
    assert spy.seen == [0.0, 1.0]


def test_streams_are_separate_loops_even_when_interleaved() -> None:
    contract = contract_from_json(TOY)
    spy = Spy()
    streams = {"a": [1.0, 1.0, 1.0], "b": [10.0, 10.0, 10.0]}
    result = run_closed_loop(spy, contract, toy_records(streams, ["a", "a", "b", "a", "b", "b"]))
    assert spy.seen == [0.0, 1.0, 0.0, 2.0, 10.0, 20.0]
    assert result.streams == ["a", "b"] and result.verdict is Level.PASS
    assert (
        set(result.payload.to_json()["drift"]) == set()
    )  # toy contract has no closed_loop criteria


def test_a_contract_without_state_pairs_warns_that_nothing_was_carried() -> None:
    raw = json.loads(json.dumps(TOY))
    del raw["state"]
    result = run_closed_loop(Spy(), contract_from_json(raw), toy_records({"a": [1.0]}, ["a"]))
    assert [f.level for f in result.findings] == [Level.WARN]
    assert "no state pair" in result.findings[0].message


def test_progress_callback_counts_chunks() -> None:
    seen: list[int] = []
    run_closed_loop(
        Spy(),
        contract_from_json(TOY),
        toy_records({"a": [1.0] * 3}, ["a"] * 3),
        on_chunk=seen.append,
    )
    assert seen == [1, 2, 3]


# -- as users run it ------------------------------------------------------------------------------


def _args(engine: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
        *extra,
    ]


def test_mode_closed_loop_runs_only_the_loop(
    pytester: pytest.Pytester, loop_dir: Path, silero_onnx: Path
) -> None:
    out = pytester.path / "art"
    result = pytester.runpytest(*_args(silero_onnx, out, "--trt-mode=closed_loop"))
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(
        ["closed_loop: pass (300 chunks)", "*drift stateN: max *", "verdict: PASS*"]
    )
    assert set(json.loads((out / "summary.json").read_text())["suites"]) == {
        "contract",
        "closed_loop",
    }


def test_drifting_engine_fails_the_gate_in_closed_loop_only(
    pytester: pytest.Pytester, loop_dir: Path, drifting_onnx: Path
) -> None:
    out = pytester.path / "art"
    result = pytester.runpytest(*_args(drifting_onnx, out, "--trt-mode=both"))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*closed_loop parity failed: * finding(s)",
            "output 'stateN': closed-loop max of max_abs 0.00* on chunk default#* is above the fail tier 0.005",
            "FAILED test_closed_loop.py::test_closed_loop_stability*",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suites"]["functional"]["verdict"] == "pass"
    assert summary["suites"]["closed_loop"]["verdict"] == "fail"
    assert summary["comparison"]["stateN"]["loop_factor"]["worst"] > 10
