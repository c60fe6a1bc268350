"""The baseline suite: two engines on the same chunks, side by side, judged by the contract's ratio tiers."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend
from pytest_trtparity.checks.baseline import ratio, run_baseline
from pytest_trtparity.contract.model import contract_from_json, load_contract
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter

from .conftest import SILERO_CONTRACT, SILERO_REF

CHUNKS = 24


def test_ratio_rules() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(0.0, 0.0) == 1.0  # both exact: equal
    assert ratio(1e-7, 0.0) == math.inf
    assert ratio(1e-7, 0.0, floor=1e-5) == 1.0
    assert ratio(3e-5, 0.0, floor=1e-5) == pytest.approx(3.0)
    assert math.isnan(ratio(None, 1.0)) and math.isnan(ratio(1.0, math.nan))


def _contract(**sections: Mapping[str, Any]) -> Any:
    raw = json.loads(SILERO_CONTRACT.read_text())
    for key, value in sections.items():
        raw[key] = dict(value)
    raw.pop("$schema", None)
    return contract_from_json(raw)


@pytest.fixture(scope="module")
def engines(silero_onnx: Path) -> tuple[OnnxRuntimeBackend, OnnxRuntimeBackend]:
    return open_backend(silero_onnx).load(), open_backend(silero_onnx).load()  # type: ignore[return-value]


def test_two_engines_side_by_side(engines: Any) -> None:
    contract = _contract(latency={"baseline_ratio": {"fail": 1e6}, "baseline_error": {"fail": 1.5}})
    result = run_baseline(*engines, contract, ReferenceReader(SILERO_REF), chunks=CHUNKS, warmup=1)
    assert result.complete and result.chunks_run == CHUNKS and result.verdict is Level.PASS
    extra = result.payload.to_json()
    for side in ("engine", "baseline"):
        assert extra[side]["latency"]["n"] == CHUNKS
        assert extra[side]["latency"]["p50_ms"] > 0
    assert extra["ratios"]["latency_p50"] == pytest.approx(
        extra["engine"]["latency"]["p50_ms"] / extra["baseline"]["latency"]["p50_ms"]
    )
    assert extra["ratios"]["error_p95"] == {
        "output": 1.0,
        "stateN": 1.0,
    }  # the same model: the same error
    table = extra["table"]
    assert "ratio" in table[1] and table[1].count("silero_vad.onnx") == 2
    assert any(
        line.strip().startswith("latency p50 (ms)") and line.rstrip().endswith("x")
        for line in table
    )
    assert any(line.strip().startswith("stateN max_abs p95") for line in table)


def test_latency_ratio_tier_fails_with_one_sentence(engines: Any) -> None:
    contract = _contract(latency={"baseline_ratio": {"warn": 1e-9, "fail": 1e-8}})
    result = run_baseline(*engines, contract, ReferenceReader(SILERO_REF), chunks=CHUNKS, warmup=1)
    (finding,) = result.failures()
    assert finding.criterion == "latency p50" and finding.limit == 1e-8
    assert finding.message.startswith("latency p50 engine/baseline ")
    assert (
        "is above the fail tier 1e-08x" in finding.message and "over 24 chunks" in finding.message
    )


def _reference_written_by(backend: Any, path: Path) -> Path:
    """The committed reference's first chunks with `backend`'s own outputs, as its harness would."""
    with ReferenceWriter(path, metadata={"model": "silero_vad"}) as writer:
        for record in itertools.islice(ReferenceReader(SILERO_REF), CHUNKS):
            names = {io.name for io in backend.inputs}
            outputs = backend.run({k: v for k, v in record.inputs.items() if k in names})
            writer.write(inputs=record.inputs, outputs={k: outputs[k] for k in record.outputs})
    return path


def test_error_ratio_against_a_baseline_that_is_the_reference(
    silero_onnx: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="needs PyTorch for the TorchScript baseline")
    pytest.importorskip("silero_vad", reason="needs silero-vad")
    from pytest_trtparity.backends.torch import contract_options
    from pytest_trtparity.util.paths import package_file

    jit = package_file("pkg:silero_vad/data/silero_vad.jit")
    base = open_backend(
        jit, entry="_model", **contract_options(load_contract(SILERO_CONTRACT))
    ).load()
    engine = open_backend(silero_onnx).load()
    # The reference is rewritten here by the baseline itself, on this CPU: the committed one was
    # written on another machine, whose TorchScript kernels differ in the last bits.
    ref = _reference_written_by(base, tmp_path / "by_baseline.jsonl")
    strict = _contract(latency={"baseline_error": {"fail": 10.0}})
    result = run_baseline(engine, base, strict, ReferenceReader(ref), chunks=CHUNKS, warmup=1)
    assert result.payload.to_json()["baseline"]["error_p95"] == {
        "output": 0.0,
        "stateN": 0.0,
    }  # it wrote the reference
    messages = [f.message for f in result.failures()]
    assert any(
        "engine/baseline inf" in m and "set latency.baseline_error_floor" in m for m in messages
    )
    floored = _contract(latency={"baseline_error": {"fail": 10.0}, "baseline_error_floor": 1e-5})
    result = run_baseline(engine, base, floored, ReferenceReader(ref), chunks=CHUNKS, warmup=1)
    assert result.verdict is Level.PASS, [f.message for f in result.findings]


def test_device_memory_ratio_unmeasured_on_cpu_is_a_warning(engines: Any) -> None:
    contract = _contract(latency={}, memory={"baseline_device_ratio": {"fail": 1.0}})
    result = run_baseline(*engines, contract, ReferenceReader(SILERO_REF), chunks=4, warmup=0)
    (finding,) = result.findings
    assert finding.level is Level.WARN
    assert finding.message == (
        "peak device memory engine/baseline was not measured (none: the engine runs on the CPU), "
        "so its limit is unchecked"
    )


class Broken(OnnxRuntimeBackend):
    """Returns NaN for the probability on every chunk."""

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super()._infer(feeds)
        out["output"] = np.full_like(out["output"], np.nan)
        return out


def test_a_broken_baseline_fails_the_comparison(engines: Any, silero_onnx: Path) -> None:
    contract = _contract(latency={"baseline_error": {"fail": 10.0}})
    result = run_baseline(
        engines[0],
        Broken(silero_onnx).load(),
        contract,
        ReferenceReader(SILERO_REF),
        chunks=8,
        warmup=0,
    )
    assert result.verdict is Level.FAIL
    first = result.failures()[0]
    assert first.message.startswith(
        "the baseline output 'output' on chunk default#0: NaN at index (0, 0)"
    )
    assert any("more structural problems" in f.message for f in result.failures())
    assert any("could not be computed" in f.message for f in result.failures())


# -- as users run it -------------------------------------------------------------------------------


def _write_contract(tmp: Path, **latency: Any) -> Path:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["latency"] = {"iterations": CHUNKS, **latency}
    raw.pop("$schema", None)
    path = tmp / "contract.json"
    path.write_text(json.dumps(raw))
    return path


def _args(engine: Path, contract: Path, baseline: Path, tmp: Path) -> list[str]:
    return [
        f"--trt-engine={engine}",
        f"--trt-contract={contract}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-baseline={baseline}",
        f"--trt-artifacts={tmp / 'out'}",
        "-p",
        "no:cacheprovider",
        "-k",
        "baseline",
    ]


@pytest.mark.parametrize(("fail", "passes"), [(1e6, True), (1e-6, False)])
def test_gate_prints_both_engines_and_follows_the_ratio_tier(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path, fail: float, passes: bool
) -> None:
    contract = _write_contract(pytester.path, baseline_ratio={"fail": fail})
    result = pytester.runpytest(*_args(silero_onnx, contract, silero_onnx, pytester.path))
    result.stdout.fnmatch_lines(
        [
            "*trtparity performance*",
            "baseline: 24 chunks, same inputs for both*",
            "*onnxruntime silero_vad.onnx*onnxruntime silero_vad.onnx*ratio",
            "  latency p50 (ms)*x",
            "  output max_abs p95 * 1.00x",
        ]
    )
    summary = json.loads((pytester.path / "out" / "summary.json").read_text())
    assert summary["environment"]["baseline"]["backend"] == "onnxruntime"
    if passes:
        result.assert_outcomes(passed=1)
        assert summary["suites"]["baseline"]["verdict"] == "pass"
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["*latency p50 engine/baseline * is above the fail tier 1e-06x*"]
        )
        assert summary["verdict"] == "fail"


def test_gate_skips_the_baseline_suite_without_a_baseline(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    result = pytester.runpytest(
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={pytester.path / 'out'}",
        "-p",
        "no:cacheprovider",
        "-k",
        "baseline",
        "-rs",
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no baseline engine: pass --trt-baseline PATH*"])


def test_gate_reports_a_baseline_that_does_not_load(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    missing = pytester.path / "nope.onnx"
    result = pytester.runpytest(*_args(silero_onnx, SILERO_CONTRACT, missing, pytester.path))
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*nope.onnx: engine file not found*"])
