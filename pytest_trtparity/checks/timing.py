"""Latency statistics and the device-step protocol shared by the latency, baseline and throughput suites.

Percentiles come from the raw per-step samples, never from a mean and a spread: step latency is
skewed (a few slow steps from the allocator, the OS or a clock change), and the tail is what a
real-time deadline meets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..backends.base import StepTiming
from ..util import fmt

PERCENTILES = (50, 90, 95, 99)
STABILITY_WINDOWS = 3
"""Consecutive windows a timed run is split into (perf_analyzer compares its last 3)."""
STABILITY_PCT = 10.0
"""Windows agree when max/min of their statistic is within this percentage (perf_analyzer's
default `--stability-percentage`)."""
CV_WARN_PCT = 2.5
"""Per-step coefficient of variation above which the timing is flagged as noisy."""
MIN_WINDOW_SAMPLES = 10
"""Fewer steps a window than this and a window's percentile says nothing: stability is not assessed."""


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-step latencies, in milliseconds."""

    n: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def value(self, criterion: str) -> float:
        """The number a contract key such as `p95_ms` names."""
        return float(getattr(self, criterion))


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """Percentiles (linear interpolation), mean, sample standard deviation, extremes.

    No samples gives NaN everywhere, which every tier judges as a failure.
    """
    if not samples_ms:
        nan = math.nan
        return LatencyStats(0, nan, nan, nan, nan, nan, nan, nan, nan)
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(arr, PERCENTILES))
    return LatencyStats(
        n=int(arr.size),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(arr.mean()),
        std_ms=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        min_ms=float(arr.min()),
        max_ms=float(arr.max()),
    )


def cv_pct(samples_ms: Sequence[float]) -> float:
    """Coefficient of variation (sample std / mean) in percent; NaN for fewer than two samples.

    trtexec reports the same figure for GPU compute time and warns when it is high: a high CV says
    the machine, not the engine, set part of the numbers."""
    if len(samples_ms) < 2:
        return math.nan
    arr = np.asarray(samples_ms, dtype=np.float64)
    mean = float(arr.mean())
    return float(arr.std(ddof=1)) / mean * 100 if mean > 0 else math.nan


@dataclass(frozen=True)
class WindowStability:
    """One statistic (e.g. `p95_ms`) computed on each consecutive window of a timed run.

    Judged on the statistic the tier judges, not on the mean: a tail that comes and goes with the
    machine's load moves a window's p95 by orders of magnitude while its mean hardly moves.
    `spread_pct` is perf_analyzer's measure, max/min - 1 over the windows; `assessed` is False
    when the windows are too short for their statistic to mean anything (then `stable` is False).
    """

    criterion: str
    windows_ms: tuple[float, ...]
    spread_pct: float
    limit_pct: float
    assessed: bool

    @property
    def stable(self) -> bool:
        return self.assessed and self.spread_pct <= self.limit_pct

    def to_json(self) -> dict[str, Any]:
        spread = self.spread_pct if math.isfinite(self.spread_pct) else None
        return {
            "windows_ms": list(self.windows_ms),
            "spread_pct": spread,
            "stability_pct": self.limit_pct,
            "assessed": self.assessed,
            "stable": self.stable,
        }


def window_stability(
    samples_ms: Sequence[float],
    criterion: str,
    *,
    windows: int = STABILITY_WINDOWS,
    limit_pct: float = STABILITY_PCT,
) -> WindowStability:
    """`criterion` on each of `windows` consecutive, equal slices of the samples, and their spread."""
    if windows < 2 or len(samples_ms) < windows * MIN_WINDOW_SAMPLES:
        return WindowStability(criterion, (), math.nan, limit_pct, assessed=False)
    parts = np.array_split(np.asarray(samples_ms, dtype=np.float64), windows)
    values = tuple(latency_stats([float(v) for v in part]).value(criterion) for part in parts)
    low, high = min(values), max(values)
    if low <= 0:  # a zero-time window: any other value is an unbounded disagreement
        return WindowStability(
            criterion, values, 0.0 if high == low else math.inf, limit_pct, assessed=True
        )
    return WindowStability(criterion, values, (high / low - 1) * 100, limit_pct, assessed=True)


@dataclass(frozen=True)
class SplitStats:
    """The CUDA-event split of the timed steps against the host's own measure of them.

    `device_over_host` is the sum of every step's h2d + compute + d2h over the sum of every step's
    host wall time: close to 1 when the events cover the step, lower by the host's launch and
    Python overhead. A value above 1 means the clocks disagree and the split cannot be trusted.
    """

    steps: int
    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    device_sum_ms: float
    host_ms: float
    device_over_host: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def split_stats(timings: Sequence[StepTiming]) -> SplitStats | None:
    """Medians of the device split over the steps that have one; None when no step has one."""
    split = [
        t
        for t in timings
        if t.h2d_ms is not None and t.compute_ms is not None and t.d2h_ms is not None
    ]
    if not split:
        return None
    h2d = np.asarray([t.h2d_ms for t in split], dtype=np.float64)
    compute = np.asarray([t.compute_ms for t in split], dtype=np.float64)
    d2h = np.asarray([t.d2h_ms for t in split], dtype=np.float64)
    host = np.asarray([t.total_ms for t in split], dtype=np.float64)
    sums = h2d + compute + d2h
    total_host = float(host.sum())
    return SplitStats(
        steps=len(split),
        h2d_ms=float(np.median(h2d)),
        compute_ms=float(np.median(compute)),
        d2h_ms=float(np.median(d2h)),
        device_sum_ms=float(np.median(sums)),
        host_ms=float(np.median(host)),
        device_over_host=float(sums.sum()) / total_host if total_host > 0 else math.nan,
    )


#: Milliseconds and sizes as every check prints them (one implementation: `util.fmt`).
fmt_ms = fmt.ms
fmt_bytes = fmt.nbytes
