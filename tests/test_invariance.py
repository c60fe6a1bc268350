"""Invariance checks: engines that are exact at batch 1 but break at other batch sizes.

Each faulty engine is an ONNX edit of Silero whose change is exactly zero at batch 1 (so functional
parity, which runs one chunk at a time, passes it through the plugin), and about 1e-3 at batch 2
and above: only the invariance check can catch it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import Backend
from pytest_trtparity.checks.functional import run_functional
from pytest_trtparity.checks.invariance import run_invariance
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.reference.reader import Record, ReferenceReader

from .conftest import REPO, SILERO_CONTRACT, SILERO_REF

ENCODER = REPO / "references" / "encoder_streaming" / "encoder_streaming_small.onnx"
ENCODER_CONTRACT = REPO / "contracts" / "encoder_streaming_small.contract.json"
ENCODER_REF = REPO / "references" / "encoder_streaming_small_50.jsonl"
MIX = 1e-3


def _records(path: Path, n: int = 40) -> Iterator[Record]:
    return itertools.islice(ReferenceReader(path), n)


def _edit_state(src: Path, dst: Path, build: str, scale: float = MIX) -> Path:
    """stateN [2, B, 128] becomes stateN + 1e-3 x (roll(stateN, 1, axis=1) - stateN) ("mix": each
    row takes a little of its neighbour), or stateN + 1e-3 x (B - 1) ("batch"). Both are exactly
    stateN at batch 1."""
    model = onnx.load(str(src))
    g = model.graph
    for node in g.node:
        node.output[:] = ["stateN_raw" if o == "stateN" else o for o in node.output]
    const = [
        helper.make_tensor("k_mix", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("k_one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("k_starts_last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("k_end_big", TensorProto.INT64, [1], [1 << 30]),
        helper.make_tensor("k_zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("k_axis", TensorProto.INT64, [1], [1]),
    ]
    g.initializer.extend(const)
    if build == "mix":
        nodes = [
            helper.make_node(
                "Slice", ["stateN_raw", "k_starts_last", "k_end_big", "k_axis"], ["last"]
            ),
            helper.make_node(
                "Slice", ["stateN_raw", "k_zero", "k_starts_last", "k_axis"], ["head"]
            ),
            helper.make_node("Concat", ["last", "head"], ["rolled"], axis=1),
            helper.make_node("Sub", ["rolled", "stateN_raw"], ["delta"]),
        ]
    else:
        nodes = [
            helper.make_node("Shape", ["stateN_raw"], ["shape"]),
            helper.make_node("Gather", ["shape", "k_axis"], ["b"], axis=0),
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["bf", "k_one"], ["delta"]),
        ]
    nodes += [
        helper.make_node("Mul", ["delta", "k_mix"], ["scaled"]),
        helper.make_node("Add", ["stateN_raw", "scaled"], ["stateN"]),
    ]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _open(path: Path) -> Backend:
    return open_backend(path, "onnxruntime").load()


def test_clean_engines_pass(silero_onnx: Path) -> None:
    for engine, contract, ref in (
        (silero_onnx, SILERO_CONTRACT, SILERO_REF),
        (ENCODER, ENCODER_CONTRACT, ENCODER_REF),
    ):
        result = run_invariance(_open(engine), load_contract(contract), _records(ref))
        assert result.verdict is Level.PASS, [f.message for f in result.findings]
        assert result.complete and 8 in result.payload.to_json()["batch_sizes"]
        assert (
            len(result.payload.to_json()["chunks"]) == 4
        )  # distinct chunks of one shape, so they stack


@pytest.mark.parametrize(
    ("edit", "criteria"),
    [("mix", {"position"}), ("batch", {"position", "batch size"})],
)
def test_broken_invariance_is_caught_only_here(
    silero_onnx: Path, tmp_path: Path, edit: str, criteria: set[str]
) -> None:
    engine = _open(_edit_state(silero_onnx, tmp_path / f"{edit}.onnx", edit))
    contract = load_contract(SILERO_CONTRACT)
    functional = run_functional(engine, contract, _records(SILERO_REF, 300))
    assert functional.verdict is Level.PASS, [f.message for f in functional.findings]
    result = run_invariance(engine, contract, _records(SILERO_REF))
    assert result.verdict is Level.FAIL
    fails = result.failures()
    assert {f.criterion for f in fails} == criteria
    assert {f.output for f in fails} == {"stateN"}
    for f in fails:
        assert "batch " in f.message and "row" in f.message
        assert f.value is not None and 1e-5 < f.value <= 8 * MIX
    identical = [f for f in fails if f.criterion == "identical rows"]
    assert not identical  # both edits keep identical rows identical


def test_tier_from_contract_and_repeat(silero_onnx: Path, tmp_path: Path) -> None:
    """A contract tier above the fault's size passes it; non-determinism is reported by size."""
    raw = load_contract(SILERO_CONTRACT).raw
    loose = {**raw, "invariance": {"default": {"warn": 1e-4, "fail": 1e-2}, "batch_sizes": [2]}}
    from pytest_trtparity.contract.model import contract_from_json

    contract = contract_from_json(loose)
    engine = _open(_edit_state(silero_onnx, tmp_path / "mix.onnx", "mix"))
    result = run_invariance(engine, contract, _records(SILERO_REF))
    assert result.verdict is Level.WARN
    assert result.payload.to_json()["batch_sizes"] == [1, 2]

    class Noisy(type(engine)):  # type: ignore[misc]
        def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = super()._infer(feeds)
            self.calls = getattr(self, "calls", 0) + 1
            return {k: v + np.float32(1e-6 * self.calls) for k, v in out.items()}  # drifts per call

    noisy = Noisy(silero_onnx).load()
    result = run_invariance(noisy, load_contract(SILERO_CONTRACT), _records(SILERO_REF))
    repeat = [f for f in result.failures() if f.criterion == "repeat"]
    assert repeat and "non-deterministic" in repeat[0].message
    # chunk 0 ran first (call 1) and again after the other 3 chunks (call 5): 4e-6 apart
    assert repeat[0].value == pytest.approx(4e-6, rel=0.1)


# -- contracts without a batch axis, and the byte budget ---------------------------------------------


def _identity(path: Path, batch: int | str, elements: int) -> Path:
    """x [batch, elements] -> a = x, b = x + 0: a correct engine at every batch size."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, elements])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, elements]) for n in "ab"]
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Add", ["x", "zero"], ["b"]),
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(nodes, "identity", [x], outs, initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _starter(model: Path) -> Path:
    from pytest_trtparity.commands.contract import write_starter

    return write_starter(model, model.with_suffix(".contract.json"))


def _identity_records(n: int, elements: int) -> list[Record]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        x = rng.standard_normal((1, elements)).astype(np.float32)
        out.append(Record("default", i, {"x": x}, {"a": x, "b": x}, line=i + 2, source="mem"))
    return out


NO_BATCH = (
    "no input names the batch dimension 'B' (set invariance.batch_dim in the contract): "
    "batch checks not run"
)


def test_a_starter_contract_without_a_batch_dim_runs_the_repeat_check_alone(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    """A fixed batch of 1 used to stack into "batches" of the first chunk and fail a correct
    identity engine on position (each row compared with another chunk's output)."""
    from pytest_trtparity.reference import ReferenceWriter

    model = _identity(pytester.path / "model.onnx", 1, 64)
    contract = _starter(model)
    assert "B" not in contract.read_text()
    with ReferenceWriter(pytester.path / "ref.jsonl") as writer:
        for r in _identity_records(6, 64):
            writer.write(inputs=r.inputs, outputs=r.outputs)
    result = pytester.runpytest(
        *("-p", "no:cacheprovider", "-m", "trt_invariance", "--trt-engine", str(model)),
        *("--trt-contract", str(contract), "--trt-ref", str(pytester.path / "ref.jsonl")),
        *("--trt-artifacts", str(pytester.path / "out")),
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"invariance: {NO_BATCH}", "invariance: pass*"])
    extra = json.loads((pytester.path / "out" / "summary.json").read_text())
    extra = extra["suites"]["invariance"]["extra"]
    assert extra["not_run"] == [NO_BATCH]
    assert extra["batch_sizes"] == [1] and extra["chunks"] == ["default#0"]
    assert set(extra["worst"]) == {"repeat/a", "repeat/b"}


def test_without_a_batch_dim_a_non_deterministic_engine_still_fails(tmp_path: Path) -> None:
    engine = _open(_identity(tmp_path / "model.onnx", 1, 64))
    contract = load_contract(_starter(tmp_path / "model.onnx"))

    class Noisy(type(engine)):  # type: ignore[misc]
        def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls = getattr(self, "calls", 0) + 1
            return {k: v + np.float32(1e-3 * self.calls) for k, v in super()._infer(feeds).items()}

    result = run_invariance(
        Noisy(tmp_path / "model.onnx").load(), contract, _identity_records(4, 64)
    )
    assert result.verdict is Level.FAIL
    assert {f.criterion for f in result.failures()} == {"repeat"}
    assert result.payload.to_json()["not_run"] == [NO_BATCH]


def test_a_batch_over_the_byte_budget_is_skipped_and_said_so(tmp_path: Path) -> None:
    """3M float32 elements a tensor: a row is 36 MB of feed and outputs, so batch 8 (288 MB) is
    over the 256 MiB budget and batch 4 (144 MB) is not; a correct engine passes the rest."""
    elements = 3_000_000
    model = _identity(tmp_path / "model.onnx", "B", elements)
    raw = json.loads(_starter(model).read_text())
    assert raw["inputs"][0]["shape"] == ["B", elements]
    raw["invariance"] = {"batch_sizes": [2, 4, 8]}
    from pytest_trtparity.contract.model import contract_from_json

    result = run_invariance(_open(model), contract_from_json(raw), _identity_records(4, elements))
    assert result.verdict is Level.PASS, [f.message for f in result.findings]
    payload = result.payload.to_json()
    assert payload["batch_sizes"] == [1, 2, 4]
    assert payload["not_run"] == [
        "batch 8: stacked feeds and outputs would hold 274.7 MiB, over the 256.0 MiB budget: skipped"
    ]
    assert payload["table"] == [f"invariance: {payload['not_run'][0]}"]


def test_only_the_chunks_the_largest_batch_uses_are_read(tmp_path: Path) -> None:
    """Batch 2 rotated by one uses chunks 0, 1 and 2: a fourth is never decoded or run."""
    model = _identity(tmp_path / "model.onnx", "B", 16)
    raw = json.loads(_starter(model).read_text())
    raw["invariance"] = {"batch_sizes": [2]}
    from pytest_trtparity.contract.model import contract_from_json

    read: list[int] = []

    def records() -> Iterator[Record]:
        for r in _identity_records(6, 16):
            read.append(r.chunk_index)
            yield r

    result = run_invariance(_open(model), contract_from_json(raw), records())
    assert result.verdict is Level.PASS
    assert read == [0, 1, 2]
    assert result.payload.to_json()["chunks"] == ["default#0", "default#1", "default#2"]
    assert "not_run" not in result.payload.to_json()


def test_a_row_mixing_engine_fails_under_a_small_budget_too(
    silero_onnx: Path, tmp_path: Path
) -> None:
    """The budget skips batches, it never hides a fault in the batches it keeps."""
    engine = _open(_edit_state(silero_onnx, tmp_path / "mix.onnx", "mix"))
    result = run_invariance(
        engine, load_contract(SILERO_CONTRACT), _records(SILERO_REF), budget=3 * 4096
    )
    assert result.verdict is Level.FAIL
    assert {f.criterion for f in result.failures()} == {"position"}
    assert result.payload.to_json()["batch_sizes"] == [1, 2]
    assert all(line.endswith("budget: skipped") for line in result.payload.to_json()["not_run"])


def test_rounding_sized_batch_dependence_is_not_a_failure(
    silero_onnx: Path, tmp_path: Path
) -> None:
    """Other batch sizes run other kernels (GEMV at 1, blocked GEMM at 8): differences the size of
    rounding (here 1e-7 x (B - 1)) stay under 1% of the chunk fail tier (5e-5 for stateN), so a
    correct engine is not failed by chance; identical rows and repeated runs stay exact."""
    engine = _open(_edit_state(silero_onnx, tmp_path / "ulp.onnx", "batch", scale=1e-7))
    contract = load_contract(SILERO_CONTRACT)
    result = run_invariance(engine, contract, _records(SILERO_REF))
    assert result.verdict is Level.PASS, [f.message for f in result.findings]
    worst = result.payload.to_json()["worst"]
    assert 0 < worst["batch size/stateN"] < 1e-5  # measured, and judged against 5e-5
    assert worst["identical rows/stateN"] == 0 and worst["repeat/stateN"] == 0
    tiers = result.payload.to_json()["tiers"]
    assert tiers["stateN"]["fail"] == 0 and tiers["across batches/stateN"]["fail"] == 5e-5
