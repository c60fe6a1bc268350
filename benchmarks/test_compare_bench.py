"""The comparison against a bare max/mean |diff|, and the gate's overhead figure against the truth.

    pytest benchmarks/test_compare_bench.py -p no:cacheprovider

Every figure is a ratio of two things timed in this process, in one run, interleaved round by round,
so it holds on a slower or busier machine.

* `compare()` with the metrics a contract asks for, against `np.abs(got - ref)` then `.max()` and
  `.mean()` on the same arrays: 262,144-element and 25 MiB float32 outputs. Target: at most 2x for
  each metric a contract can judge an output by (all eight at once is reported, not targeted).
* The functional gate (`run_functional`: reading and decoding the reference, checking, comparing on
  the worker, judging) over a backend whose step sleeps a fixed time, against the bare loop over the
  same backend on feeds decoded beforehand. The gate's own figure (`overhead_share` in the summary)
  must meet the targets (5% at 5 ms steps, 20% at 1 ms) and must not understate the measured cost
  (gate wall time over bare wall time, minus one) by more than 3 points of the step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from interleave import interleaved

from pytest_trtparity.backends.base import Backend, BackendInfo, IOInfo
from pytest_trtparity.checks.functional import run_functional
from pytest_trtparity.contract.model import Contract, Tier, Tolerance, contract_from_json
from pytest_trtparity.judge.compare import compare
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter

ELEMENTS = 262_144
BIG = 25 * (1 << 20) // 4  # a 25 MiB float32 output
RATIO_TARGET = 2.0
HARNESS_TARGETS = {5.0: 0.05, 1.0: 0.20}
CHUNKS = 100
UNDERSTATE = 0.03
#: The in-process functional loop against the bare loop over the same backend.
LOOP_TARGET = 1.5
OUTPUTS = ("y0", "y1")


@pytest.mark.parametrize(("size", "rounds"), [(ELEMENTS, 200), (BIG, 15)])
def test_comparison_against_a_bare_diff(size: int, rounds: int, bench_report: list[str]) -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(size).astype(np.float32)
    got = ref + (rng.standard_normal(size) * 1e-3).astype(np.float32)
    tol = Tolerance(chunk=Tier(fail=1.0))

    def bare() -> None:
        d = np.abs(got - ref)
        d.max()
        d.mean()

    def ours(*metrics: str) -> Callable[[], Any]:
        return lambda: compare(
            "y", ref, got, expected_dtype="float32", tolerance=tol, metrics=metrics or None
        )

    sets = {
        "max_abs": ("max_abs",),
        "mean_abs": ("mean_abs",),
        "rmse": ("rmse",),
        "max_rel": ("max_rel",),
        "cosine_distance": ("cosine_distance",),
        "p95_abs": ("p95_abs",),
        "p99_abs": ("p99_abs",),
        "all eight": (),
    }
    medians = interleaved({"bare": bare} | {k: ours(*v) for k, v in sets.items()}, rounds)
    ratios = {k: medians[k] / medians["bare"] for k in sets}
    bench_report.append(
        f"compare, {size:,} float32 ({size * 4 / (1 << 20):.0f} MiB): bare max/mean |diff| "
        f"{medians['bare'] * 1e3:.3f} ms; compare() / bare: "
        + ", ".join(f"{k} {r:.2f}x" for k, r in ratios.items())
    )
    singles = [k for k in sets if k != "all eight"]  # a contract judges one metric an output
    for key in singles:
        met = "met" if ratios[key] <= RATIO_TARGET else "NOT met"
        bench_report.append(
            f"target compare {key} at {size:,}: {ratios[key]:.2f}x bare <= {RATIO_TARGET:g}x: {met}"
        )
    assert all(ratios[k] <= RATIO_TARGET for k in singles), ratios


# -- the harness figure ---------------------------------------------------------------------------


class SleepyEngine(Backend):
    """A stand-in for a GPU engine: each step waits `step_ms` without using the CPU (as the host does
    while the device computes) and returns fixed outputs close to the reference's."""

    kind = "sleepy"

    def __init__(self, step_ms: float, outputs: Mapping[str, np.ndarray]) -> None:
        super().__init__("sleepy.engine")
        self.step_s = step_ms / 1e3
        self.fixed = dict(outputs)

    def info(self) -> BackendInfo:
        return BackendInfo("sleepy", "0", "cpu", "sleepy.engine", "0" * 64, 0)

    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        outs = tuple(IOInfo(n, "float32", (ELEMENTS,)) for n in OUTPUTS)
        return (IOInfo("x", "float32", (1,)),), outs

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.step_s)
        return dict(self.fixed)


def _contract() -> Contract:
    raw = {
        "trtparity": "contract/1",
        "model": "sleepy",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [1]}],
        "outputs": [{"name": n, "dtype": "float32", "shape": [ELEMENTS]} for n in OUTPUTS],
        "default_tolerance": {"chunk": {"fail": 1.0}},
    }
    return contract_from_json(raw)


@pytest.fixture(scope="module")
def sleepy_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """CHUNKS records of two 262,144-element float32 outputs (one record, its line repeated)."""
    folder = tmp_path_factory.mktemp("sleepy")
    rng = np.random.default_rng(3)
    outputs = {n: rng.standard_normal(ELEMENTS).astype(np.float32) for n in OUTPUTS}
    one = folder / "one.jsonl"
    with ReferenceWriter(one, metadata={"model": "sleepy"}) as w:
        w.write(inputs={"x": np.zeros(1, np.float32)}, outputs=outputs)
    line = one.read_bytes().split(b"\n")[1]
    path = folder / "sleepy.jsonl"
    with path.open("wb") as fh:
        fh.write(json.dumps({"trtparity": "reference/1", "model": "sleepy"}).encode() + b"\n")
        for i in range(CHUNKS):
            fh.write(line.replace(b'"chunk_index":0', b'"chunk_index":%d' % i, 1) + b"\n")
    got = {n: v + np.float32(1e-4) for n, v in outputs.items()}
    return path, got


@pytest.mark.parametrize("step_ms", sorted(HARNESS_TARGETS))
def test_harness_figure_is_the_real_cost(
    step_ms: float, sleepy_reference: tuple[Path, dict[str, Any]], bench_report: list[str]
) -> None:
    path, got = sleepy_reference
    contract = _contract()
    engine = SleepyEngine(step_ms, got).load()
    feeds = [{"x": np.zeros(1, np.float32)} for _ in range(CHUNKS)]
    figures: list[dict[str, Any]] = []

    def gate() -> None:
        result = run_functional(engine, contract, ReferenceReader(path))
        assert result.complete and not result.failures(), result.error
        figures.append(result.payload.to_json()["harness"])

    def bare() -> None:
        for f in feeds:
            engine.reset_state()
            engine.run(f)

    gate()  # page cache and imports warm
    figures.clear()
    medians = interleaved({"gate": gate, "bare": bare}, 5)
    measured = medians["gate"] / medians["bare"] - 1.0
    share = float(np.median([f["overhead_share"] for f in figures]))
    p95 = float(np.median([f["overhead_p95_ms"] for f in figures]))
    bench_report.append(
        f"harness at {step_ms:g} ms steps, {CHUNKS} chunks x 2 outputs x {ELEMENTS:,} float32: "
        f"gate figure {share:.1%} (p95 {p95:.3f} ms a chunk), measured gate / bare loop - 1 = "
        f"{measured:.1%} (gate {medians['gate'] * 1e3:.0f} ms, bare {medians['bare'] * 1e3:.0f} ms)"
    )
    target = HARNESS_TARGETS[step_ms]
    met = "met" if share <= target else "NOT met"
    bench_report.append(
        f"target harness figure at {step_ms:g} ms: {share:.1%} <= {target:.0%}: {met}"
    )
    loop = medians["gate"] / medians["bare"]
    met = "met" if loop <= LOOP_TARGET else "NOT met"
    bench_report.append(
        f"target in-process loop at {step_ms:g} ms: {loop:.2f}x bare <= {LOOP_TARGET:g}x: {met}"
    )
    assert share <= target, figures
    assert loop <= LOOP_TARGET, medians
    assert share >= measured - UNDERSTATE, (share, measured)
