"""The latency suite: statistics, the CUDA-event split, tiers, and the suite as users run it.

Structure, not speed: percentiles ordered, splits summing, tiers judged, a tiny fail limit failing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import Backend, BackendInfo, IOInfo, StepTiming
from pytest_trtparity.checks.latency import (
    LoopTimer,
    carry_map,
    judge_criterion,
    judge_latency,
    run_latency,
)
from pytest_trtparity.checks.timing import cv_pct, latency_stats, split_stats, window_stability
from pytest_trtparity.contract.model import LatencySpec, Tier, load_contract
from pytest_trtparity.judge.tiers import (
    BytesThreshold,
    Level,
    MsThreshold,
    PlainThreshold,
    RatioThreshold,
    Threshold,
    threshold_finding,
)
from pytest_trtparity.reference import ReferenceReader

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
    findings = judge_latency(stats, LatencySpec.from_json({"p50_ms": {"fail": 1000.0}}))
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
        LatencySpec.from_json(
            {
                "p50_ms": {"warn": 1.5, "fail": 5.0},
                "p99_ms": {"fail": 2.0},
                "mean_ms": {"fail": 9.0},
            }
        ),
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
    (finding,) = judge_latency(stats, LatencySpec.from_json({"p50_ms": {"fail": 10.0}}))
    assert "10.0001 ms" in finding.message and "tier 10 ms" in finding.message


THRESHOLDS: list[Threshold] = [
    PlainThreshold(tier=Tier(warn=1.0, fail=2.0), criterion="max_abs", output="prob"),
    MsThreshold(tier=Tier(warn=1.0, fail=2.0), criterion="p95", what="engine latency", samples=9),
    RatioThreshold(tier=Tier(warn=1.0, fail=2.0), criterion="latency p50", detail="1 ms vs 1 ms"),
    BytesThreshold(tier=Tier(warn=1.0, fail=2.0), criterion="engine_bytes", what="engine size"),
]


@pytest.mark.parametrize("threshold", THRESHOLDS, ids=lambda t: type(t).__name__)
def test_every_threshold_kind_decides_and_describes_through_one_path(threshold: Threshold) -> None:
    """One decision for every kind: under the warn tier passes, between warns, over fails, NaN
    fails; the finding carries the threshold's sentence and its criterion."""
    assert [threshold.decide(v) for v in (0.5, 1.5, 2.5, math.nan)] == [
        Level.PASS,
        Level.WARN,
        Level.FAIL,
        Level.FAIL,
    ]
    assert threshold_finding(threshold, 0.5, suite="s", output="o") is None
    f = threshold_finding(threshold, 2.5, suite="s", output="o")
    assert f is not None and f.level is Level.FAIL and f.limit == 2.0
    assert f.criterion == threshold.criterion
    assert f.message == threshold.describe(2.5, Level.FAIL, 2.0)
    assert "fail tier" in f.message and "2.5" in f.message


def test_a_lower_is_worse_ms_threshold_says_below() -> None:
    tier = Tier(warn=5.0, fail=2.0, higher_is_worse=False)
    ms = MsThreshold(tier=tier, criterion="throughput", what="engine", samples=3, unit="fps")
    f = threshold_finding(ms, 1.0, suite="s", output="engine")
    assert f is not None
    assert f.message == "engine: throughput 1 fps over 3 timed chunks is below the fail tier 2 fps"


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
    extra = result.payload.to_json()
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
    split = result.payload.to_json()["split"]
    assert split["steps"] == 20
    assert split["device_sum_ms"] == pytest.approx(
        split["h2d_ms"] + split["compute_ms"] + split["d2h_ms"]
    )
    assert split["device_over_host"] == pytest.approx(0.9)
    assert any("CUDA events (median)" in line for line in result.payload.to_json()["table"])


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
    assert (
        result.complete and result.payload.to_json()["timing"] == "device, no transfers, CUDA graph"
    )
    assert (
        result.payload.to_json()["device_compute"]["p50_ms"] == 0.25
        and result.payload.to_json()["overhead"] is None
    )


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
    assert contract.latency.tier("p95_ms") == Tier(warn=10.0, fail=21.0)


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
        [
            "*latency: pytest-benchmark is not available (not installed, or blocked with "
            "-p no:benchmark), so latency was not measured*-m 'not trt_latency'"
        ]
    )
    assert "not trtparity" not in result.stdout.str()


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
    from pytest_trtparity.checks.latency import overhead_finding

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
    overhead = result.payload.to_json()["overhead"]
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


# -- stability: CV, windows, tries, inconclusive ---------------------------------------------------

BASE_MS = 0.2
SPIKE_MS = 20.0


def spiky(n: int, spikes: int, *, seed: int = 0) -> list[float]:
    """`n` fast steps with `spikes` slow ones at random places in the first third only: the tail
    a burst of load on a shared machine leaves, not a slow engine."""
    rng = np.random.default_rng(seed)
    samples = list(BASE_MS + rng.uniform(0, 0.02, n))
    for i in rng.choice(n // 3, spikes, replace=False):
        samples[int(i)] = SPIKE_MS
    return samples


def test_cv_is_std_over_mean_in_percent() -> None:
    assert cv_pct([2.0, 2.0, 2.0]) == 0.0
    assert cv_pct([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2 * 100)
    assert math.isnan(cv_pct([1.0]))


def test_windows_agree_disagree_or_are_too_short() -> None:
    steady = window_stability([1.0, 1.05] * 30, "p95_ms")
    assert steady.assessed and steady.stable and len(steady.windows_ms) == 3
    assert steady.spread_pct == pytest.approx(0.0, abs=1e-9)
    spikes = window_stability(spiky(60, 4), "p95_ms")
    assert spikes.assessed and not spikes.stable
    assert spikes.windows_ms[0] == pytest.approx(SPIKE_MS)
    assert spikes.spread_pct == pytest.approx(
        (max(spikes.windows_ms) / min(spikes.windows_ms) - 1) * 100
    )
    # judged on the statistic the tier judges: the same spiky windows agree on their median
    assert window_stability(spiky(60, 4), "p50_ms").stable
    short = window_stability([1.0] * 29, "p95_ms")
    assert not short.assessed and not short.stable and short.windows_ms == ()
    assert math.isinf(window_stability([0.0] * 20 + [1.0] * 10, "p50_ms").spread_pct)


def test_a_stable_crossing_is_judged() -> None:
    samples = [25.0 + 0.01 * (i % 5) for i in range(60)]
    j = judge_criterion("p95_ms", Tier(warn=10.0, fail=21.0), samples, tries=1)
    assert j.outcome == "judged" and j.settled and j.stability.stable
    assert j.finding is not None and j.finding.level is Level.FAIL and j.sentence is None
    assert j.finding.message.endswith("is above the fail tier 21 ms")


def test_clean_samples_pass_whatever_the_windows_say() -> None:
    j = judge_criterion("p95_ms", Tier(warn=10.0, fail=21.0), spiky(60, 0), tries=1)
    assert j.outcome == "pass" and j.finding is None and j.settled


def test_an_unstable_crossing_is_inconclusive_in_one_sentence() -> None:
    samples = spiky(60, 4)
    j = judge_criterion("p95_ms", Tier(warn=10.0, fail=21.0), samples, tries=2)
    assert j.outcome == "inconclusive" and not j.settled and j.finding is None
    assert j.sentence is not None
    assert j.sentence.startswith(
        "engine latency: p95 20 ms over 60 timed chunks is above the warn tier 10 ms but the "
        f"measurement is unstable (CV {cv_pct(samples):.0f}%, p95 of 3 windows 20.0/"
    )
    assert j.sentence.endswith(", limit 10%) after 2 tries: inconclusive, not judged")
    assert "disagree by" in j.sentence and ". " not in j.sentence  # one sentence


def test_when_every_step_crosses_the_windows_cannot_rescue_it() -> None:
    samples = [30.0] * 40 + [60.0] * 20  # windows disagree (p95 30 vs 60), yet no step is fast
    j = judge_criterion("p95_ms", Tier(warn=10.0, fail=21.0), samples, tries=2)
    assert not j.stability.stable and j.outcome == "every step" and j.settled
    assert j.finding is not None and j.finding.level is Level.FAIL


def test_an_unstable_fail_with_every_step_over_warn_is_judged_warn() -> None:
    samples = [12.0] * 40 + [30.0] * 20
    j = judge_criterion("p95_ms", Tier(warn=10.0, fail=21.0), samples, tries=2)
    assert j.outcome == "bounded" and not j.settled
    assert j.finding is not None and j.finding.level is Level.WARN and j.finding.limit == 10.0
    assert j.finding.message.endswith(
        "after 2 tries; every timed step took at least 12.0 ms, above the warn tier 10 ms: judged warn"
    )


class ScriptedTimer(LoopTimer):
    """`pedantic` that runs the steps but reports the given per-step durations (seconds)."""

    def __init__(self, samples_ms: list[float]) -> None:
        super().__init__()
        self.samples_ms = samples_ms

    def pedantic(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().pedantic(target, *args, **kwargs)
        self.data = [v * 1e-3 for v in self.samples_ms]
        return result


def _tiered(contract: Any, **tiers: Any) -> Any:
    latency = contract.latency
    added = {k: Tier(**v) for k, v in tiers.items()}
    return dataclasses.replace(
        contract, latency=dataclasses.replace(latency, tiers={**latency.tiers, **added})
    )


def _scripted(contract: Any, tmp_path: Path, *tries: list[float]) -> tuple[Any, list[int]]:
    timers = [ScriptedTimer(t) for t in tries]
    made = [0]

    def retimer() -> ScriptedTimer:
        made[0] += 1
        return timers[made[0]]

    result = run_latency(
        FakeGpu(tmp_path / "fake.plan").load(),
        contract,
        ReferenceReader(SILERO_REF),
        bench=timers[0],
        retimer=retimer,
        iterations=60,
        warmup=0,
        chunks=4,
    )
    return result, made


def test_unstable_twice_is_inconclusive_and_never_fails(contract: Any, tmp_path: Path) -> None:
    tiered = _tiered(contract, p95_ms={"warn": 10.0, "fail": 15.0})
    result, made = _scripted(tiered, tmp_path, spiky(60, 4), spiky(60, 4, seed=1))
    assert made == [1]  # measured exactly once more
    assert result.findings == [] and result.verdict is Level.PASS and result.complete
    stability = result.payload.to_json()["stability"]
    assert stability["outcome"] == "inconclusive" and stability["tries"] == 2
    assert [h["try"] for h in stability["history"]] == [1, 2]
    assert stability["history"][0]["criteria"]["p95_ms"]["outcome"] == "inconclusive"
    assert stability["criteria"]["p95_ms"]["stable"] is False
    assert result.payload.to_json()["cv_pct"] > result.payload.to_json()["cv_warn_pct"]
    (sentence,) = result.payload.to_json()["inconclusive"]
    assert "after 2 tries: inconclusive, not judged" in sentence
    table = "\n".join(result.payload.to_json()["table"])
    assert "disagree by" in table and "inconclusive, 2 tries" in table and sentence in table
    json.dumps(result.to_json(), allow_nan=False)


def test_unstable_then_stable_is_judged_on_the_second_try(contract: Any, tmp_path: Path) -> None:
    tiered = _tiered(contract, p95_ms={"warn": 10.0, "fail": 15.0})
    result, made = _scripted(tiered, tmp_path, spiky(60, 4), [SPIKE_MS] * 60)
    assert made == [1] and result.payload.to_json()["stability"]["tries"] == 2
    assert [f.level for f in result.findings] == [Level.FAIL]
    assert (
        result.payload.to_json()["stability"]["outcome"] == "stable"
        and result.payload.to_json()["inconclusive"] == []
    )
    assert result.payload.to_json()["p95_ms"] == pytest.approx(SPIKE_MS)


def test_a_stable_first_try_is_not_measured_again(contract: Any, tmp_path: Path) -> None:
    tiered = _tiered(contract, p95_ms={"warn": 10.0, "fail": 15.0})
    result, made = _scripted(tiered, tmp_path, [SPIKE_MS] * 60)
    assert made == [0] and result.verdict is Level.FAIL
    line = next(x for x in result.payload.to_json()["table"] if x.startswith("  stability:"))
    assert "agree within 0% (limit 10%): stable, 1 try" in line and "CV 0.0%" in line


class SleepyBackend(FakeGpu):
    """FakeGpu that sleeps `delay(call)` seconds a step: a slow engine or a noisy machine."""

    def __init__(self, path: Path, delay: Callable[[int], float]) -> None:
        super().__init__(path)
        self.delay = delay
        self.calls = 0

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        time.sleep(self.delay(self.calls))
        return super()._infer(feeds)


def _sleepy(contract: Any, tmp_path: Path, delay: Callable[[int], float]) -> Any:
    return run_latency(
        SleepyBackend(tmp_path / "fake.plan", delay).load(),
        _tiered(contract, p95_ms={"warn": 2.0, "fail": 4.0}),
        ReferenceReader(SILERO_REF),
        iterations=60,
        warmup=2,
        chunks=4,
    )


def spike_steps(*, seed: int = 0) -> set[int]:
    """Step numbers (1-based, warm-up included, each try 62 steps) that spike: 4 random steps in
    the first window of each try."""
    rng = np.random.default_rng(seed)
    first = [int(i) + 3 for i in rng.choice(20, 4, replace=False)]  # after 2 warm-up steps
    return {t * 62 + i for t in range(2) for i in first}


def test_a_stable_sleep_over_the_fail_tier_fails(contract: Any, tmp_path: Path) -> None:
    result = _sleepy(contract, tmp_path, lambda _: 0.006)
    assert result.verdict is Level.FAIL
    (finding,) = result.findings
    assert finding.level is Level.FAIL and "above the fail tier 4 ms" in finding.message
    # stable windows, or (on a loaded machine) every step over the tier anyway: judged either way
    assert result.payload.to_json()["stability"]["criteria"]["p95_ms"]["outcome"] in (
        "judged",
        "every step",
    )


def test_random_spikes_are_inconclusive(contract: Any, tmp_path: Path) -> None:
    spikes = spike_steps()
    result = _sleepy(contract, tmp_path, lambda call: 0.02 if call in spikes else 0.0)
    assert result.payload.to_json()["stability"]["tries"] == 2
    assert result.payload.to_json()["stability"]["outcome"] == "inconclusive", (
        result.payload.to_json()["table"]
    )
    assert result.findings == [] and result.verdict is Level.PASS
    assert (
        result.payload.to_json()["p95_ms"] > 4.0
    )  # the tier was crossed: the old gate would have failed


def test_a_clean_backend_passes(contract: Any, tmp_path: Path) -> None:
    result = run_latency(
        SleepyBackend(tmp_path / "fake.plan", lambda _: 0.0).load(),
        _tiered(contract, p95_ms={"warn": 50.0, "fail": 100.0}),
        ReferenceReader(SILERO_REF),
        iterations=60,
        warmup=2,
        chunks=4,
    )
    assert result.verdict is Level.PASS and result.findings == []
    assert (
        result.payload.to_json()["stability"]["tries"] == 1
        and result.payload.to_json()["inconclusive"] == []
    )


SPIKY_CONFTEST = """
import time
import pytest

@pytest.fixture(scope="session")
def trt_engine(trt_engine):
    run_timed = trt_engine.run_timed
    calls = [0]

    def slowed(feeds, **kwargs):
        calls[0] += 1
        time.sleep(DELAY(calls[0]))
        return run_timed(feeds, **kwargs)

    trt_engine.run_timed = slowed
    return trt_engine
"""


def _slowed_gate(pytester: pytest.Pytester, engine: Path, delay: str) -> pytest.RunResult:
    """The latency suite under --trt-strict on Silero, each engine step slowed by `delay(call)` s."""
    pytester.makeconftest(f"DELAY = {delay}\n" + SPIKY_CONFTEST)
    contract = _contract_with(pytester.path, iterations=60, p95_ms={"warn": 2.0, "fail": 4.0})
    return pytester.runpytest(*_args(engine, contract, pytester.path / "out", "--trt-strict"))


def _latency_extra(pytester: pytest.Pytester) -> dict[str, Any]:
    summary = json.loads((pytester.path / "out" / "summary.json").read_text())
    extra: dict[str, Any] = summary["suites"]["latency"]["extra"]
    return extra


def test_strict_gate_with_random_spikes_is_inconclusive_not_failed(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    result = _slowed_gate(
        pytester, silero_onnx, f"lambda call: 0.02 if call in {spike_steps()} else 0"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*InconclusiveLatency: engine latency: p95 * ms over 60 timed chunks is above the fail "
            "tier 4 ms but the measurement is unstable (CV *%, p95 of 3 windows * ms disagree by "
            "*%, limit 10%) after 2 tries: inconclusive, not judged",
            "*  stability: CV *% (above 2.5%: noisy timing), p95 of 3 windows * ms disagree by *"
            ": inconclusive, 2 tries",
        ]
    )
    extra = _latency_extra(pytester)
    assert extra["stability"]["outcome"] == "inconclusive" and len(extra["inconclusive"]) == 1
    assert extra["p95_ms"] > 4.0


def test_strict_gate_with_a_stable_slow_engine_fails(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    result = _slowed_gate(pytester, silero_onnx, "lambda call: 0.006")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*engine latency: p95 * ms over 60 timed chunks is above the fail tier 4 ms*"]
    )
    extra = _latency_extra(pytester)
    assert extra["inconclusive"] == [] and extra["stability"]["tries"] == 1
