"""Does a closed loop's error stay put? Bound, mean and trend of one per-chunk error series.

A least-squares slope is moved by one bad chunk, and "slope > 0" flags every noisy run half of the
time. The trend here is a Theil-Sen slope (the median of all pairwise slopes: one outlier cannot
move it), and it only counts when a one-sided Mann-Kendall test says the rise is not noise. Closed
loop errors are autocorrelated (the state carries them from chunk to chunk), which makes the plain
Mann-Kendall test see trends in noise; the effective-sample-size correction of Yue and Wang (2004)
accounts for that. Everything is numpy and the standard library: scipy is not a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Longer series are reduced to block medians first; Theil-Sen and Mann-Kendall are O(n^2).
MAX_POINTS = 2000
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Trend:
    """A robust trend of one series: slope per chunk and the evidence that it is real.

    `p_value` is one-sided (the error grows). `rise` is the slope times the loop length: how much
    the error grew from first to last chunk, which is what a tolerance can be compared with.
    """

    slope: float
    intercept: float
    p_value: float
    z: float
    n: int
    variance_factor: float = 1.0

    @property
    def rise(self) -> float:
        return self.slope * (self.n - 1) if self.n > 1 else 0.0

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha


NAN_TREND = Trend(math.nan, math.nan, math.nan, math.nan, 0)


def theil_sen(y: np.ndarray, x: np.ndarray | None = None) -> tuple[float, float]:
    """Median pairwise slope and the median intercept; NaN when a value is NaN or n < 2."""
    y = np.asarray(y, dtype=np.float64)
    x = np.arange(y.size, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    if y.size < 2 or not np.all(np.isfinite(y)):
        return math.nan, math.nan
    i, j = np.triu_indices(y.size, k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    slope = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    intercept = float(np.median(y - slope * x))
    return slope, intercept


def _mk_s(y: np.ndarray) -> float:
    i, j = np.triu_indices(y.size, k=1)
    return float(np.sign(y[j] - y[i]).sum())


def _mk_variance(y: np.ndarray) -> float:
    n = y.size
    _, counts = np.unique(y, return_counts=True)
    ties = counts[counts > 1].astype(np.float64)
    return float((n * (n - 1) * (2 * n + 5) - np.sum(ties * (ties - 1) * (2 * ties + 5))) / 18.0)


def _ranks(y: np.ndarray) -> np.ndarray:
    order = np.argsort(y, kind="mergesort")
    ranks = np.empty(y.size, dtype=np.float64)
    ranks[order] = np.arange(1, y.size + 1, dtype=np.float64)
    return ranks


def variance_factor(y: np.ndarray, slope: float) -> float:
    """n/n*: how much serial correlation inflates the variance of S (never taken below 1).

    The effective sample size of Yue and Wang (2004) for an AR(1) process, with the lag-1
    autocorrelation taken from the ranks of the detrended series (one outlier cannot move a rank
    much). Below 1 (negative autocorrelation) it is clamped, so the correction can only make the
    test more cautious.
    """
    n = y.size
    if n < 4 or not math.isfinite(slope):
        return 1.0
    r = _ranks(y - slope * np.arange(n))
    r = r - r.mean()
    denom = float(np.dot(r, r))
    if denom == 0.0:
        return 1.0
    rho = float(np.dot(r[:-1], r[1:]) / denom)
    if rho <= 0.0:
        return 1.0
    k = np.arange(1, n, dtype=np.float64)
    return max(1.0, 1.0 + 2.0 * float(np.sum((1.0 - k / n) * rho**k)))


def mann_kendall(y: np.ndarray, *, slope: float | None = None) -> tuple[float, float, float]:
    """One-sided Mann-Kendall test for an increasing trend: (z, p, variance factor)."""
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 3 or not np.all(np.isfinite(y)):
        return math.nan, math.nan, math.nan
    s = _mk_s(y)
    if slope is None:
        slope, _ = theil_sen(y)
    factor = variance_factor(y, slope)
    var = _mk_variance(y) * factor
    if var <= 0.0:  # every value equal: no trend at all
        return 0.0, 1.0, factor
    z = (s - math.copysign(1.0, s)) / math.sqrt(var) if s != 0 else 0.0
    return z, 1.0 - _NORMAL.cdf(z), factor


def _thin(y: np.ndarray, max_points: int) -> tuple[np.ndarray, int]:
    """Block medians of a long series, and the block length (1 when left as is)."""
    if y.size <= max_points:
        return y, 1
    block = math.ceil(y.size / max_points)
    usable = (y.size // block) * block
    return np.median(y[:usable].reshape(-1, block), axis=1), block


def trend(values: Sequence[float] | np.ndarray, *, max_points: int = MAX_POINTS) -> Trend:
    """Theil-Sen slope (per chunk) and the Mann-Kendall p-value that the error grows.

    A NaN anywhere gives a NaN trend: a series with holes proves nothing about stability.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.size < 3 or not np.all(np.isfinite(y)):
        return Trend(math.nan, math.nan, math.nan, math.nan, int(y.size))
    thin, block = _thin(y, max_points)
    slope, _ = theil_sen(thin)
    z, p, factor = mann_kendall(thin, slope=slope)
    slope /= block
    intercept = float(np.median(y - slope * np.arange(y.size)))
    return Trend(slope, intercept, p, z, int(y.size), factor)


def rolling_mean(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Centred-as-possible rolling mean that ignores NaN; NaN where a window holds no number."""
    y = np.asarray(values, dtype=np.float64)
    if y.size == 0:
        return y
    window = max(1, min(window, y.size))
    finite = np.isfinite(y)
    sums = np.convolve(np.where(finite, y, 0.0), np.ones(window), mode="same")
    counts = np.convolve(finite.astype(np.float64), np.ones(window), mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
