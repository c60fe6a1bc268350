"""Timing cases against each other: each round runs every case once, in turn, and each case's
median is taken, so a machine that slows down part-way slows every case alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any


def interleaved(cases: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each case over `rounds` rounds, the cases run in turn within every round."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
