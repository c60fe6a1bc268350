"""Metric values on hand-checked arrays, and the gate's judging of tiers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_trtparity.contract.model import Tier, Tolerance
from pytest_trtparity.judge.compare import compare
from pytest_trtparity.judge.tiers import Level, fmt_pair, judge, judge_series

TOL = Tolerance(chunk=Tier(warn=0.1, fail=1.0))


def test_metrics_match_hand_computed_values() -> None:
    ref = np.array([1.0, 2.0, -4.0, 0.0], dtype=np.float32)
    got = np.array([1.5, 2.0, -4.0, 0.25], dtype=np.float32)
    m = compare("y", ref, got, expected_dtype="float32", tolerance=TOL).metrics
    assert m["max_abs"] == 0.5
    assert m["mean_abs"] == pytest.approx(0.1875)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0.0625) / 4))
    assert m["max_rel"] == math.inf  # 0.25 against a reference of exactly 0
    expected_cos = float(ref @ got) / (np.linalg.norm(ref) * np.linalg.norm(got))
    assert m["cosine"] == pytest.approx(expected_cos)
    assert m["cosine_distance"] == pytest.approx(1 - expected_cos)
    assert m["p99_abs"] <= m["max_abs"] and m["p95_abs"] <= m["p99_abs"]


def test_worst_index_points_at_the_largest_error() -> None:
    ref = np.zeros((2, 3), dtype=np.float32)
    got = ref.copy()
    got[1, 2] = 0.01
    assert compare("y", ref, got, expected_dtype="float32", tolerance=TOL).worst_index == (1, 2)


def test_max_rel_ignores_exact_zeros() -> None:
    ref = np.array([0.0, 2.0], dtype=np.float32)
    got = np.array([0.0, 3.0], dtype=np.float32)
    assert compare("y", ref, got, expected_dtype="float32", tolerance=TOL).metrics["max_rel"] == 0.5


@pytest.mark.parametrize(
    ("ref", "got", "problem"),
    [
        (np.ones(5, np.float32), np.ones(1, np.float32), "shape [1], reference has [5]"),
        (
            np.ones((5, 1), np.float32),
            np.ones((1, 5), np.float32),
            "shape [1, 5], reference has [5, 1]",
        ),
        (np.ones(2, np.float32), np.ones(2, np.float16), "dtype float16, contract says float32"),
        (
            np.ones(2, np.float32),
            np.array([1, np.nan], np.float32),
            "NaN at index (1,) where the reference is 1",
        ),
        (np.zeros((0,), np.float32), np.zeros((0,), np.float32), "empty tensor"),
    ],
)
def test_structural_problems(ref: np.ndarray, got: np.ndarray, problem: str) -> None:
    result = compare("y", ref, got, expected_dtype="float32", tolerance=TOL)
    assert result.problem is not None and result.problem.startswith(problem)


def test_int8_difference_does_not_wrap() -> None:
    m = compare("y", np.int8([0]), np.int8([-128]), expected_dtype="int8", tolerance=TOL).metrics
    assert m["max_abs"] == 128


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (0.05, Level.PASS),
        (0.1, Level.PASS),
        (0.1000001, Level.WARN),
        (1.0, Level.WARN),
        (1.5, Level.FAIL),
        (math.nan, Level.FAIL),
    ],
)
def test_judge_tiers_are_strict_inequalities_and_nan_fails(value: float, level: Level) -> None:
    assert judge(Tier(warn=0.1, fail=1.0), value)[0] is level


def test_lower_is_worse_tier() -> None:
    tier = Tier(warn=0.95, fail=0.8, higher_is_worse=False)
    assert [judge(tier, v)[0] for v in (1.0, 0.9, 0.5)] == [Level.PASS, Level.WARN, Level.FAIL]


def test_fmt_pair_adds_digits_until_value_and_limit_differ() -> None:
    assert fmt_pair(0.0010000001, 0.001) == ("0.0010000001", "0.001")
    assert fmt_pair(0.5, 0.001) == ("0.5", "0.001")


def test_judge_series_names_worst_chunk_p95_and_pass_rate() -> None:
    tol = Tolerance(
        chunk=Tier(warn=0.1, fail=1.0),
        p95=Tier(fail=0.2),
        pass_rate=Tier(fail=0.9, higher_is_worse=False),
    )
    values = [0.0] * 8 + [0.5, 2.0]
    chunks = [f"s#{i}" for i in range(10)]
    findings = judge_series(values, chunks, tol, suite="functional", output="y")
    messages = [f.message for f in findings]
    assert messages == [
        "output 'y': max_abs 2 on chunk s#9 is above the fail tier 1",
        f"output 'y': p95 over chunks of max_abs {np.percentile(values, 95):.3g} is above the fail tier 0.2",
        "output 'y': pass rate (chunks with max_abs <= 0.1) 0.8 is below the fail tier 0.9",
    ]
    assert all(f.level is Level.FAIL for f in findings)
