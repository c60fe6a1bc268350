"""Exact behaviour of the fast comparison paths and the gate's helpers, pinned value by value.

The comparison computes its percentiles from one partial sort and its cosine without BLAS; the gate
keeps infinities in percentiles and reads non-finite numbers back from JSON. Each test here states
what those must equal (numpy's own percentiles, exact cosines of extreme vectors, ...).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from pytest_trtparity.contract.model import Tier, Tolerance
from pytest_trtparity.judge import tiers as gate
from pytest_trtparity.judge.compare import Comparison, _cosine, _percentiles, compare

INF = math.inf
BIG = float(np.finfo(np.float64).max)
TINY = 5e-324  # the smallest subnormal
QS = (0.0, 1.0, 25.0, 50.0, 62.5, 95.0, 99.0, 99.9, 100.0)


def cmp(expected: object, got: object, tol: Tolerance, dtype: str = "float64") -> Comparison:
    return compare("y", np.asarray(expected), np.asarray(got), expected_dtype=dtype, tolerance=tol)


def close(a: float, b: float) -> bool:
    """Equal, or one rounding apart (numpy interpolates from the nearer neighbour)."""
    return a == b or math.isclose(a, b, rel_tol=4e-16, abs_tol=0.0)


# -- compare._percentiles: numpy's linear percentiles ----------------------------------------------


@pytest.mark.parametrize("n", [*range(1, 42), 100, 101, 257])
def test_percentiles_equal_numpy_for_every_size(n: int) -> None:
    rng = np.random.default_rng(n)
    distinct = rng.permutation(np.arange(n, dtype=np.float64) * 1.5 + 0.25)
    repeats = rng.integers(0, 3, n).astype(np.float64)
    for flat in (distinct, repeats, rng.exponential(1.0, n)):
        got = _percentiles(flat.copy(), QS)
        want = [float(np.percentile(flat, q)) for q in QS]
        assert all(close(g, w) for g, w in zip(got, want, strict=True)), (n, got, want)
        assert _percentiles(flat.copy(), (95.0, 99.0)) == got[5:7]


def test_percentiles_of_tiny_series_by_hand() -> None:
    assert _percentiles(np.float64([7.0]), (95.0, 99.0)) == [7.0, 7.0]
    assert _percentiles(np.float64([2.0, 1.0]), (95.0, 99.0)) == [1.95, 1.99]
    assert _percentiles(np.float64([0.0, 10.0, 20.0]), (50.0, 95.0, 99.0)) == [10.0, 19.0, 19.8]
    assert _percentiles(np.float64([4.0, 4.0, 4.0]), (95.0,)) == [4.0]


@pytest.mark.parametrize(
    ("flat", "qs", "want"),
    [
        ([INF], (95.0, 99.0), [INF, INF]),
        ([INF, INF], (95.0, 99.0), [INF, INF]),  # inf - inf must not turn into NaN
        ([1.0, INF], (0.0, 95.0), [1.0, INF]),  # any weight on inf is inf, none is the neighbour
        ([*range(20), INF], (95.0, 99.0), [19.0, INF]),  # 95th falls exactly on 19
        ([*range(21), INF], (95.0, 99.0), [19.95, INF]),
        ([3.0, INF, INF, INF], (50.0,), [INF]),
    ],
)
def test_percentiles_keep_infinities(
    flat: list[float], qs: tuple[float, ...], want: list[float]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _percentiles(np.float64(flat), qs) == want


def test_percentiles_agree_with_the_gates_percentile_on_errors_with_infinities() -> None:
    rng = np.random.default_rng(7)
    for n in range(1, 30):
        flat = rng.exponential(1.0, n)
        flat[rng.random(n) < 0.3] = INF
        for q in QS:
            assert close(_percentiles(flat.copy(), (q,))[0], gate.percentile(list(flat), q))


def test_compare_reports_the_exact_95th_and_99th_percentiles() -> None:
    tol = Tolerance(chunk=Tier(fail=100.0))
    ref = np.zeros(21)
    out = np.arange(21, dtype=np.float64)  # errors 0..20: 95th at 19, 99th at 19.8
    m = cmp(ref, out, tol).metrics
    assert (m["p95_abs"], m["p99_abs"]) == (19.0, 19.8)
    m = cmp(np.zeros(2), np.float64([1.0, 3.0]), tol).metrics
    assert (m["p95_abs"], m["p99_abs"]) == (2.9, 2.98)


# -- compare._cosine: scaled by each vector's largest magnitude -----------------------------------


@pytest.mark.parametrize(
    ("rv", "gv", "want"),
    [
        ([1e200, 1e200], [1e200, 1e200], 1.0),  # squares overflow unless scaled first
        ([1e200, 0.0], [0.0, 1e200], 0.0),
        ([3e200, 4e200], [-3e200, -4e200], -1.0),
        ([TINY, TINY], [TINY, TINY], 1.0),  # squares underflow to 0 unless scaled first
        ([TINY, 0.0], [0.0, TINY], 0.0),
        ([1e200, 1e200], [TINY, TINY], 1.0),  # each vector has its own scale
        ([3.0, 4.0], [4.0, -3.0], 0.0),
        ([0.0, 0.0], [0.0, 0.0], 1.0),
        ([0.0, 0.0], [0.0, 5.0], 0.0),
        ([5.0, 0.0], [0.0, 0.0], 0.0),
        ([], [], 1.0),  # no elements: identical, as for an allowed empty output
    ],
)
def test_cosine_of_extreme_and_degenerate_vectors(
    rv: list[float], gv: list[float], want: float
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cosine(np.float64(rv), np.float64(gv)) == pytest.approx(want, abs=1e-15)


def test_cosine_of_opposite_vectors_is_clipped_to_exactly_minus_one() -> None:
    """For [0.55, -0.92] scaled by its max, the quotient rounds to -1.0000000000000002."""
    v = np.float64([0.55, -0.92])
    a = v / 0.92
    assert float(np.add.reduce(a * -a)) / math.sqrt(float(np.add.reduce(a * a))) ** 2 < -1.0
    assert _cosine(v, -v) == -1.0
    m = cmp(v, -v, Tolerance(chunk=Tier(fail=10.0))).metrics
    assert m["cosine"] == -1.0 and m["cosine_distance"] == 2.0


def test_cosine_of_parallel_vectors_is_clipped_to_exactly_one() -> None:
    v = np.float64([-1.79, -0.38])
    assert _cosine(v, v) == 1.0 and _cosine(v, 3 * v) == 1.0


# -- compare: non-finite masks, integers, warnings --------------------------------------------------


def test_matched_nan_leaves_the_other_elements_compared() -> None:
    tol = Tolerance(chunk=Tier(fail=10.0), nan="match")
    c = cmp([np.nan, 1.0, 2.0, 3.0], [np.nan, 1.5, 2.0, 1.0], tol)
    assert c.ok
    m = c.metrics
    assert (m["max_abs"], m["mean_abs"]) == (2.0, 2.5 / 4)
    assert m["max_rel"] == pytest.approx(2.0 / 3.0, rel=1e-15)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 4.0) / 4), rel=1e-15)
    assert c.worst_index == (3,)


def test_matched_infinities_leave_the_other_elements_compared() -> None:
    tol = Tolerance(chunk=Tier(fail=10.0), inf="match", nan="match")
    c = cmp([[INF, 1.0], [-INF, np.nan]], [[INF, 4.0], [-INF, np.nan]], tol)
    assert c.ok and c.metrics["max_abs"] == 3.0 and c.worst_index == (0, 1)
    assert c.metrics["mean_abs"] == 0.75 and c.metrics["cosine"] == 1.0


@pytest.mark.parametrize(
    ("ref", "out", "want"),
    [
        (np.int8([-128, 5]), np.uint8([255, 5]), 383.0),
        (np.int64([2**62 + 3]), np.int8([-128]), float(2**62 + 3 + 128)),
        (np.uint8([200, 0]), np.int64([-(2**62), 0]), float(2**62 + 200)),
        (np.int16([-300, 7]), np.int32([70000, 7]), 70300.0),
    ],
)
def test_integer_dtypes_of_mixed_kinds_are_compared_exactly(
    ref: np.ndarray, out: np.ndarray, want: float
) -> None:
    c = compare(
        "y", ref, out, expected_dtype=str(out.dtype), tolerance=Tolerance(chunk=Tier(fail=1e30))
    )
    assert c.ok and c.metrics["max_abs"] == want


def test_relative_error_that_overflows_is_inf_without_a_warning() -> None:
    """1e150 / 1e-200 overflows inside max_rel: that is inf, not a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = cmp([1e-200, 1.0], [1e150, 1.0], Tolerance(chunk=Tier(fail=1e300)))
    assert c.metrics["max_rel"] == INF and c.metrics["max_abs"] == 1e150


# -- gate.percentile: infinities kept ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([0.0, 1.0, INF], 50.0, 1.0),  # exactly on a finite element: inf has no weight
        ([0.0, 1.0, INF], 75.0, INF),
        ([0.0, 1.0, 2.0, INF], 10.0, 0.30000000000000004),  # finite neighbours interpolate
        ([-INF, -1.0], 1.0, -INF),
        ([-INF, -1.0], 99.0, -INF),
        ([-INF, -1.0, 0.0], 50.0, -1.0),
        ([-INF, BIG], 50.0, -INF),
        ([BIG, INF], 1.0, INF),  # 99 % of the weight on inf
        ([1e30, INF], 1e-6, INF),
        ([INF, INF], 95.0, INF),
        ([-INF, INF], 50.0, INF),
    ],
)
def test_percentile_keeps_infinities(values: list[float], q: float, want: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gate.percentile(values, q) == want


def test_percentile_of_finite_values_is_numpys() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 33):
        values = list(rng.normal(0.0, 1.0, n))
        for q in QS:
            assert gate.percentile(values, q) == float(np.percentile(values, q))


# -- gate._float_from_json --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (0, 0.0),
        (3, 3.0),
        (-2.5, -2.5),
        (True, None),  # a bool is not a number here
        (False, None),
        ("NaN", math.nan),
        ("Infinity", INF),
        ("-Infinity", -INF),
        ("inf", None),
        ("1.5", None),
        ("", None),
        (None, None),
        ([1.0], None),  # any other JSON value reads as no value, not as an error
        ({"v": 1.0}, None),
    ],
)
def test_float_from_json(raw: object, want: float | None) -> None:
    got = gate._float_from_json(raw)
    if want is None:
        assert got is None
    else:
        assert isinstance(got, float) and (got == want or (math.isnan(got) and math.isnan(want)))


def test_finding_values_round_trip_through_json() -> None:
    for value in (0.0, 1.25, INF, -INF):
        f = gate.Finding(
            suite="s",
            output="y",
            criterion="max_abs",
            level=gate.Level.FAIL,
            message="m",
            value=value,
        )
        back = gate.Finding.from_json(json.loads(json.dumps(f.to_json())))
        assert back.value == value and type(back.value) is float
