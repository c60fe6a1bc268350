"""Drift statistics: Theil-Sen, Mann-Kendall with its autocorrelation correction, and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_trtparity.checks.closed_loop import judge_drift
from pytest_trtparity.contract.model import DriftCriteria, Tier, TrendCriteria
from pytest_trtparity.judge import drift
from pytest_trtparity.judge.tiers import Level

ALPHA = 0.05


def _ar1(rng: np.random.Generator, phi: float, n: int) -> np.ndarray:
    e = rng.normal(size=n)
    y = np.empty(n)
    y[0] = e[0]
    for k in range(1, n):
        y[k] = phi * y[k - 1] + e[k]
    return y


def _rejection_rate(series: list[np.ndarray], alpha: float) -> float:
    return sum(drift.trend(y).p_value < alpha for y in series) / len(series)


# -- Theil-Sen ------------------------------------------------------------------------------------


def test_theil_sen_ignores_an_outlier_that_moves_least_squares() -> None:
    x = np.arange(50, dtype=float)
    y = 2e-6 * x + 1e-4
    y[-1] = 1.0  # one wild chunk at the end
    slope, intercept = drift.theil_sen(y)
    assert slope == pytest.approx(2e-6, rel=1e-9)
    assert intercept == pytest.approx(1e-4, rel=1e-6)
    least_squares = np.polyfit(x, y, 1)[0]
    assert least_squares > 100 * slope  # what a naive slope would have reported


def test_theil_sen_of_a_series_with_nan_is_nan() -> None:
    assert all(math.isnan(v) for v in drift.theil_sen(np.array([1.0, math.nan, 3.0])))


# -- Mann-Kendall ---------------------------------------------------------------------------------


def test_mann_kendall_s_and_variance_match_the_definition() -> None:
    y = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    s = sum(np.sign(y[j] - y[i]) for i in range(y.size) for j in range(i + 1, y.size))
    assert drift._mk_s(y) == s
    n = y.size  # one pair of ties (the two 1.0)
    assert drift._mk_variance(y) == pytest.approx((n * (n - 1) * (2 * n + 5) - 2 * 1 * 9) / 18)


def test_a_real_rise_is_significant_and_a_fall_is_not() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(scale=0.01, size=300)
    up = drift.trend(noise + 1e-3 * np.arange(300))
    down = drift.trend(noise - 1e-3 * np.arange(300))
    assert up.p_value < 1e-6 and up.slope == pytest.approx(1e-3, rel=0.1)
    assert up.rise == pytest.approx(up.slope * 299)
    assert down.p_value > 0.99  # one-sided: an error that shrinks is no drift


def test_constant_series_has_no_trend() -> None:
    t = drift.trend(np.full(50, 1e-6))
    assert t.slope == 0.0 and t.p_value == 1.0


def test_nan_anywhere_gives_a_nan_trend() -> None:
    y = np.linspace(0, 1, 40)
    y[25] = math.nan
    assert math.isnan(drift.trend(y).slope) and math.isnan(drift.trend(y).p_value)


def test_false_alarm_rate_on_iid_noise_is_alpha() -> None:
    """Clean runs: errors that are i.i.d. noise (here log-normal, as error magnitudes are) must be
    flagged in about alpha of the runs. 1000 runs: the 99.9% binomial interval is about ±0.023."""
    rng = np.random.default_rng(12345)
    rate = _rejection_rate([rng.lognormal(size=120) for _ in range(1000)], ALPHA)
    assert abs(rate - ALPHA) < 0.023, rate


def test_autocorrelation_correction_keeps_false_alarms_near_alpha() -> None:
    """Closed-loop errors are autocorrelated; without the correction the test flags noise far more
    often than alpha (checked here too, so this test shows what the correction buys)."""
    rng = np.random.default_rng(99)
    series = [_ar1(rng, 0.8, 200) for _ in range(400)]
    corrected = _rejection_rate(series, ALPHA)
    plain = 0
    for y in series:
        s = drift._mk_s(y)
        z = (s - math.copysign(1.0, s)) / math.sqrt(drift._mk_variance(y)) if s else 0.0
        plain += 1 - drift._NORMAL.cdf(z) < ALPHA
    assert plain / len(series) > 0.2  # the uncorrected test is useless here
    assert corrected < 2 * ALPHA, corrected


def test_variance_factor_is_one_for_noise_and_large_for_a_smooth_wander() -> None:
    rng = np.random.default_rng(3)
    assert drift.variance_factor(rng.normal(size=300), 0.0) < 1.5
    assert drift.variance_factor(_ar1(rng, 0.95, 300), 0.0) > 5


def test_long_series_are_thinned_to_block_medians_with_the_slope_per_chunk_kept() -> None:
    rng = np.random.default_rng(5)
    y = 1e-6 * np.arange(10_000) + rng.normal(scale=1e-5, size=10_000)
    t = drift.trend(y, max_points=500)
    assert t.n == 10_000
    assert t.slope == pytest.approx(1e-6, rel=0.05)
    assert t.p_value < 1e-6


def test_rolling_mean_skips_nan() -> None:
    out = drift.rolling_mean(np.array([1.0, math.nan, 3.0, 5.0]), 3)
    assert out[1] == pytest.approx(2.0) and out[2] == pytest.approx(4.0)


# -- the verdicts ---------------------------------------------------------------------------------

CRIT = DriftCriteria(
    max=Tier(warn=5e-4, fail=1e-3),
    mean=Tier(warn=1e-4, fail=2e-4),
    trend=TrendCriteria(alpha=0.01, growth=Tier(warn=0.25, fail=0.5), min_chunks=20),
)


def _judge(values: np.ndarray, crit: DriftCriteria = CRIT) -> list:
    labels = [f"default#{i}" for i in range(values.size)]
    return judge_drift(
        list(values), labels, crit, suite="closed_loop", output="enc", metric="max_abs", scale=1e-3
    ).findings


def test_steady_growth_below_the_bound_fails_on_growth() -> None:
    rng = np.random.default_rng(1)
    values = 1e-5 + 2e-6 * np.arange(300) * (
        1 + 0.05 * rng.normal(size=300)
    )  # rise 6e-4 < max 1e-3
    findings = _judge(values, DriftCriteria(max=CRIT.max, trend=CRIT.trend))
    assert [f.criterion for f in findings if f.level is Level.FAIL] == [
        "closed-loop growth of max_abs"
    ]
    f = next(f for f in findings if f.criterion.startswith("closed-loop growth"))
    assert f.value == pytest.approx(0.6, rel=0.1) and f.limit == 0.5
    assert f.message.startswith("output 'enc': closed-loop growth of max_abs 0.")
    assert "above the fail tier 0.5" in f.message and "Mann-Kendall p" in f.message
    assert "\n" not in f.message


def test_bound_and_mean_name_the_criterion_value_limit_and_chunk() -> None:
    values = np.full(100, 1e-5)
    values[40] = 3e-3
    values[41:] = 3e-4
    messages = {f.criterion: f for f in _judge(values)}
    assert messages["closed-loop max of max_abs"].chunk == "default#40"
    assert messages["closed-loop max of max_abs"].message == (
        "output 'enc': closed-loop max of max_abs 0.003 on chunk default#40 is above the fail tier 0.001"
    )
    assert messages["closed-loop mean of max_abs"].level is Level.FAIL


def test_clean_noise_is_not_flagged() -> None:
    rng = np.random.default_rng(11)
    assert _judge(1e-6 * rng.lognormal(size=300)) == []


def test_nan_chunk_fails_bound_mean_and_trend() -> None:
    values = np.full(60, 1e-6)
    values[33] = math.nan
    found = {f.criterion: f for f in _judge(values)}
    assert set(found) == {
        "closed-loop max of max_abs",
        "closed-loop mean of max_abs",
        "closed-loop growth of max_abs",
    }
    assert all(f.level is Level.FAIL for f in found.values())
    assert "default#33" in found["closed-loop growth of max_abs"].message


def test_short_loop_warns_that_growth_was_not_judged() -> None:
    (f,) = _judge(np.full(10, 1e-6))
    assert f.level is Level.WARN and "not judged" in f.message and "20" in f.message


def test_non_blocking_growth_only_warns() -> None:
    crit = DriftCriteria(trend=CRIT.trend, blocking=False)
    (f,) = _judge(3e-6 * np.arange(1, 301, dtype=float), crit)
    assert f.level is Level.WARN and "non-blocking" in f.message and "fail tier 0.5" in f.message


def test_significant_growth_without_a_growth_tier_fails() -> None:
    crit = DriftCriteria(trend=TrendCriteria(alpha=0.01))
    (f,) = _judge(1e-7 * np.arange(1, 301, dtype=float), crit)
    assert f.level is Level.FAIL and f.criterion == "closed-loop growth of max_abs"
