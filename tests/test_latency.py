"""The latency suite: statistics, the CUDA-event split, tiers, and the suite as users run it.

Structure, not speed: percentiles ordered, splits summing, tiers judged, a tiny fail limit failing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import Backend, BackendInfo, IOInfo, StepTiming
from pytest_trtparity.contract import Tier, load_contract
from pytest_trtparity.gate import Level
from pytest_trtparity.latency import LoopTimer, carry_map, judge_latency, run_latency
from pytest_trtparity.reference import ReferenceReader
from pytest_trtparity.timing import latency_stats, split_stats

from .conftest import SILERO_CONTRACT, SILERO_REF

GATE = ("-p", "no:cacheprovider", "-k", "latency")


def test_percentiles_of_known_samples() -> None:
    stats = latency_stats([float(v) for v in range(1, 101)])
    assert stats.n == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.std_ms == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (stats.min_ms, stats.max_ms) == (1.0, 100.0)


def test_no_samples_is_nan_and_fails_every_tier() -> None:
    stats = latency_stats([])
    assert stats.n == 0 and math.isnan(stats.p50_ms)
    findings = judge_latency(stats, {"p50_ms": {"fail": 1000.0}})
    assert [f.level for f in findings] == [Level.FAIL]
    assert (
        findings[0].message
        == "engine latency: p50 could not be measured over 0 timed chunks (limit 1000 ms)"
    )
    assert latency_stats([2.0]).std_ms == 0.0


def test_tiers_warn_and_fail_with_one_sentence() -> None:
    stats = latency_stats([1.0] * 10 + [3.0] * 10)
    findings = judge_latency(
        stats,
        {"p50_ms": {"warn": 1.5, "fail": 5.0}, "p99_ms": {"fail": 2.0}, "mean_ms": {"fail": 9.0}},
    )
    by = {f.criterion: f for f in findings}
    assert set(by) == {"p50", "p99"}
    assert by["p50"].level is Level.WARN
    assert (
        by["p50"].message
        == "engine latency: p50 2 ms over 20 timed chunks is above the warn tier 1.5 ms"
    )
    assert by["p99"].level is Level.FAIL and by["p99"].value == 3.0 and by["p99"].limit == 2.0


def test_a_value_just_over_its_limit_does_not_print_equal() -> None:
    stats = latency_stats([10.0001])
    (finding,) = judge_latency(stats, {"p50_ms": {"fail": 10.0}})
    assert "10.0001 ms" in finding.message and "tier 10 ms" in finding.message


def test_split_medians_and_the_events_over_host_ratio() -> None:
    timings = [StepTiming(total_ms=1.0, h2d_ms=0.1, compute_ms=0.6, d2h_ms=0.1) for _ in range(5)]
    timings.append(StepTiming(total_ms=2.0))  # a step without a split is left out
    split = split_stats(timings)
    assert split is not None and split.steps == 5
    assert split.device_sum_ms == pytest.approx(split.h2d_ms + split.compute_ms + split.d2h_ms)
    assert split.device_over_host == pytest.approx(0.8)
    assert split_stats([StepTiming(total_ms=1.0)]) is None


class FakeGpu(Backend):
    """A host backend that reports a CUDA-style split and counts how it was fed."""

    kind = "fake"

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(path, **options)
        self.carried = 0
        self.fed_state = 0

    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        return (
            (IOInfo("input", "float32", ("B", "T")), IOInfo("state", "float32", (2, "B", 128))),
            (IOInfo("output", "float32", ("B", 1)), IOInfo("stateN", "float32", (2, "B", 128))),
        )

    def _run_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        self.carried += bool(carry)
        self.fed_state += "state" in feeds
        return super()._run_impl(feeds, carry, fetch)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": np.full((1, 1), 0.5, np.float32), "stateN": np.asarray(feeds["state"])}

    def run_timed(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        fetch: Any = None,
    ) -> tuple[dict[str, np.ndarray], StepTiming]:
        out, timing = super().run_timed(feeds, carry=carry, fetch=fetch)
        return out, StepTiming(
            timing.total_ms, timing.total_ms * 0.1, timing.total_ms * 0.7, timing.total_ms * 0.1
        )

    def info(self) -> BackendInfo:
        return BackendInfo("fake", "0", "Fake GPU", str(self.path), "0" * 64, 1)


@pytest.fixture(scope="module")
def contract() -> Any:
    return load_contract(SILERO_CONTRACT)


def test_suite_structure_on_a_real_engine(contract: Any, silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    result = run_latency(
        backend, contract, ReferenceReader(SILERO_REF), iterations=40, warmup=3, chunks=16
    )
    assert result.complete and result.error is None and result.suite == "latency"
    extra = result.extra
    assert extra["n"] == 40 == result.chunks_run and len(extra["step_ms"]) == 40
    assert (
        0
        < extra["min_ms"]
        <= extra["p50_ms"]
        <= extra["p90_ms"]
        <= extra["p95_ms"]
        <= extra["p99_ms"]
        <= extra["max_ms"]
    )
    assert extra["std_ms"] >= 0 and extra["chunks"] == 16 and extra["carry"] == {"state": "stateN"}
    assert (
        extra["timing"] == "host" and extra["split"] is None
    )  # ONNX Runtime on the CPU has no device split
    overhead = extra["overhead"]
    assert overhead["per_chunk_ms"] == pytest.approx(overhead["feeds_ms"] + overhead["compare_ms"])
    assert overhead["share"] == pytest.approx(overhead["per_chunk_ms"] / extra["p50_ms"])
    assert overhead["decode_ms"] > 0
    assert extra["device"] and extra["backend"] == "onnxruntime"
    assert extra["table"][0].startswith("latency (host, 40 chunks after 3 warm-up")
    json.dumps(result.to_json(), allow_nan=False)


def test_chunks_run_in_order_with_the_engines_own_state(contract: Any, tmp_path: Path) -> None:
    backend = FakeGpu(tmp_path / "fake.plan").load()
    assert carry_map(contract, backend) == {"state": "stateN"}
    result = run_latency(
        backend, contract, ReferenceReader(SILERO_REF), iterations=20, warmup=0, chunks=5
    )
    # 20 steps over 5 chunks: each cycle starts from the reference state, then carries 4 times
    assert backend.fed_state == 4 and backend.carried == 16
    split = result.extra["split"]
    assert split["steps"] == 20
    assert split["device_sum_ms"] == pytest.approx(
        split["h2d_ms"] + split["compute_ms"] + split["d2h_ms"]
    )
    assert split["device_over_host"] == pytest.approx(0.9)
    assert any("CUDA events (median)" in line for line in result.extra["table"])


def test_device_timing_needs_a_device_step(contract: Any, silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    result = run_latency(
        backend, contract, ReferenceReader(SILERO_REF), timing="device", iterations=5
    )
    assert not result.complete and result.verdict is Level.FAIL
    assert result.error is not None and "cannot time compute on the device" in result.error


class FakeStep:
    graphs = True
    note = ""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return 0.25

    def close(self) -> None:
        pass


def test_device_timing_uses_the_backends_device_step(contract: Any, tmp_path: Path) -> None:
    backend = FakeGpu(tmp_path / "fake.plan").load()
    step = FakeStep()
    seen: dict[str, Any] = {}

    def device_step(
        feeds: Mapping[str, np.ndarray], *, carry: Mapping[str, str], graphs: bool
    ) -> FakeStep:
        seen.update(feeds=set(feeds), carry=dict(carry), graphs=graphs)
        return step

    backend.device_step = device_step  # type: ignore[attr-defined]
    timer = LoopTimer()
    result = run_latency(
        backend,
        contract,
        ReferenceReader(SILERO_REF),
        bench=timer,
        timing="device",
        graphs=True,
        iterations=10,
        warmup=2,
    )
    assert step.calls == 12 and len(timer.data) == 10
    assert seen == {"feeds": {"input", "state"}, "carry": {"state": "stateN"}, "graphs": True}
    assert result.complete and result.extra["timing"] == "device, no transfers, CUDA graph"
    assert result.extra["device_compute"]["p50_ms"] == 0.25 and result.extra["overhead"] is None


def test_a_reference_error_keeps_the_run_failed(
    contract: Any, silero_onnx: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(SILERO_REF.read_text().splitlines()[1][:200] + "\n")
    result = run_latency(
        open_backend(silero_onnx).load(), contract, ReferenceReader(bad), iterations=3
    )
    assert (
        result.verdict is Level.FAIL and result.error is not None and "bad.jsonl:1" in result.error
    )


def test_tier_parsing_matches_the_contract(contract: Any) -> None:
    assert Tier.from_json(contract.latency["p95_ms"]) == Tier(warn=10.0, fail=21.0)


# -- the suite as users run it -------------------------------------------------------------------


def _contract_with(tmp: Path, **latency: Any) -> Path:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["latency"] = {"warmup": 2, "iterations": 30, "chunks": 8, **latency}
    raw.pop("$schema", None)
    path = tmp / "contract.json"
    path.write_text(json.dumps(raw))
    return path


def _args(engine: Path, contract: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"--trt-engine={engine}",
        f"--trt-contract={contract}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        *GATE,
        *extra,
    ]


def test_gate_passes_and_stores_percentiles_in_pytest_benchmark(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    contract = _contract_with(pytester.path, p50_ms={"fail": 1e6}, p99_ms={"warn": 1e6})
    bench_json = pytester.path / "bench.json"
    result = pytester.runpytest(
        *_args(silero_onnx, contract, pytester.path / "out", f"--benchmark-json={bench_json}")
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*trtparity performance*",
            "latency (host, 30 chunks after 2 warm-up*",
            "  p50 * ms  p90 *",
            "*harness overhead per chunk*",
            "latency: pass (30 chunks)",
        ]
    )
    bench = json.loads(bench_json.read_text())["benchmarks"][0]
    assert bench["group"] == "trtparity latency: silero_vad"
    assert bench["stats"]["rounds"] == 30
    assert bench["extra_info"]["p50_ms"] * 1e-3 == pytest.approx(bench["stats"]["median"])
    assert bench["extra_info"]["p95_ms"] >= bench["extra_info"]["p50_ms"]
    summary = json.loads((pytester.path / "out" / "summary.json").read_text())
    assert summary["suites"]["latency"]["extra"]["timer"].startswith("pytest-benchmark")


def test_gate_fails_when_a_tier_is_crossed(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    contract = _contract_with(pytester.path, p50_ms={"fail": 1e-6})
    result = pytester.runpytest(*_args(silero_onnx, contract, pytester.path / "out"))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*latency parity failed: 1 finding(s)",
            "*engine latency: p50 * ms over 30 timed chunks is above the fail tier 1e-06 ms*",
        ]
    )
    assert json.loads((pytester.path / "out" / "summary.json").read_text())["verdict"] == "fail"


def test_without_pytest_benchmark_the_suite_says_so(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    contract = _contract_with(pytester.path)
    result = pytester.runpytest(
        *_args(silero_onnx, contract, pytester.path / "out", "-p", "no:benchmark")
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*latency: pytest-benchmark is not installed, so latency was not measured*"]
    )


def test_disabled_pytest_benchmark_falls_back_and_says_so(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    contract = _contract_with(pytester.path)
    result = pytester.runpytest(
        *_args(silero_onnx, contract, pytester.path / "out", "--benchmark-disable")
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*note: pytest-benchmark is disabled in this run*"])
    extra = json.loads((pytester.path / "out" / "summary.json").read_text())["suites"]["latency"][
        "extra"
    ]
    assert extra["timer"] == "trtparity loop" and extra["n"] == 30


def test_overhead_share_tier_names_its_parts() -> None:
    from pytest_trtparity.latency import overhead_finding

    overhead = {
        "feeds_ms": 0.01,
        "compare_ms": 0.09,
        "per_chunk_ms": 0.1,
        "share": 0.1,
        "decode_ms": 0.2,
    }
    finding = overhead_finding(Tier(warn=0.05), overhead, samples=30)
    assert finding is not None and finding.level is Level.WARN
    assert finding.message == (
        "harness overhead: 0.100 ms a chunk (feeds 0.010, compare 0.090) is 10% of the engine's p50 "
        "over 30 timed chunks, above the warn tier 5%"
    )
    assert overhead_finding(Tier(warn=0.2), overhead, samples=30) is None


def test_comparisons_are_timed_after_the_timed_steps(contract: Any, tmp_path: Path) -> None:
    backend = FakeGpu(tmp_path / "fake.plan").load()
    result = run_latency(
        backend, contract, ReferenceReader(SILERO_REF), iterations=10, warmup=2, chunks=4
    )
    overhead = result.extra["overhead"]
    assert overhead["compare_ms"] > 0 and overhead["feeds_ms"] > 0


def test_gate_device_timing_on_a_cpu_engine_fails_clearly(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    contract = _contract_with(pytester.path)
    result = pytester.runpytest(
        *_args(silero_onnx, contract, pytester.path / "out", "--trt-latency-timing=device")
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*latency: silero_vad.onnx: the onnxruntime backend cannot time compute on the device*"]
    )
