"""Thresholds decide; results only hold numbers.

A `Tier` judges one value; `judge_series` turns an output's per-chunk metric series into findings
against its `Tolerance`. Every finding carries the sentence a user reads: which output, which
criterion, the value, the limit, and the chunk where it happened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import numpy as np

from ..contract.model import Tier, Tolerance
from ..util import fmt
from ..util.jsonfloat import decode, encode_optional


class Level(IntEnum):
    PASS = 0
    WARN = 1
    FAIL = 2

    @property
    def word(self) -> str:
        return self.name.lower()


def verdict_of(levels: Iterable[Level]) -> Level:
    return max(levels, default=Level.PASS)


@dataclass(frozen=True)
class Finding:
    level: Level
    suite: str
    output: str
    criterion: str
    message: str
    value: float | None = None
    limit: float | None = None
    chunk: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level.word,
            "suite": self.suite,
            "output": self.output,
            "criterion": self.criterion,
            "value": encode_optional(self.value),
            "limit": self.limit,
            "chunk": self.chunk,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Finding:
        value = raw.get("value")
        return cls(
            level=Level[str(raw["level"]).upper()],
            suite=raw["suite"],
            output=raw["output"],
            criterion=raw["criterion"],
            message=raw["message"],
            value=decode(value),
            limit=raw.get("limit"),
            chunk=raw.get("chunk"),
        )


#: Value and limit with just enough digits to differ (one implementation: `util.fmt.pair`).
fmt_pair = fmt.pair
#: A finding's value read back from JSON (one implementation: `util.jsonfloat.decode`).
_float_from_json = decode


def judge(tier: Tier, value: float) -> tuple[Level, float | None]:
    """The level a value earns under a tier, and the limit it crossed (None when it passes).

    NaN always fails: a metric that could not be computed is never evidence of parity.
    """
    if math.isnan(value):
        return Level.FAIL, tier.fail if tier.fail is not None else tier.warn

    def worse(v: float, lim: float) -> bool:
        return v > lim if tier.higher_is_worse else v < lim

    if tier.fail is not None and worse(value, tier.fail):
        return Level.FAIL, tier.fail
    if tier.warn is not None and worse(value, tier.warn):
        return Level.WARN, tier.warn
    return Level.PASS, None


def describe(
    *,
    output: str,
    criterion: str,
    value: float,
    limit: float,
    level: Level,
    higher_is_worse: bool,
    chunk: str | None = None,
    note: str = "",
) -> str:
    v, lim = fmt.pair(value, limit)
    where = f" on chunk {chunk}" if chunk else ""
    side = "above" if higher_is_worse else "below"
    tier = "fail" if level is Level.FAIL else "warn"
    text = f"output {output!r}: {criterion} {v}{where} is {side} the {tier} tier {lim}"
    if math.isnan(value):
        text = f"output {output!r}: {criterion} is NaN{where} (limit {lim})"
    return text + (f" ({note})" if note else "")


@dataclass(frozen=True, kw_only=True)
class Threshold:
    """One tier and the words for one kind of value: `decide` gives the level a value earns and
    `describe` the sentence a user reads when it crossed a tier. Every check judges through one of
    these (`threshold_finding`), so a unit is written one way wherever it is judged."""

    tier: Tier
    criterion: str

    def decide(self, value: float) -> Level:
        return judge(self.tier, value)[0]

    def limit(self, value: float) -> float | None:
        """The limit `value` crossed (None when it passes)."""
        return judge(self.tier, value)[1]

    def describe(self, value: float, level: Level, limit: float) -> str:
        """The sentence for `value`, which crossed `limit` at `level`."""
        raise NotImplementedError

    @property
    def side(self) -> str:
        """Which side of a limit is worse, as a sentence says it."""
        return "above" if self.tier.higher_is_worse else "below"


@dataclass(frozen=True, kw_only=True)
class PlainThreshold(Threshold):
    """An output's metric (max_abs, cosine, ...): a bare number, on a chunk when it has one."""

    output: str
    chunk: str | None = None
    note: str = ""

    def describe(self, value: float, level: Level, limit: float) -> str:
        return describe(
            output=self.output,
            criterion=self.criterion,
            value=value,
            limit=limit,
            level=level,
            higher_is_worse=self.tier.higher_is_worse,
            chunk=self.chunk,
            note=self.note,
        )


@dataclass(frozen=True, kw_only=True)
class MsThreshold(Threshold):
    """A timing statistic (p95, ...) over `samples` timed chunks, in `unit` (ms unless told)."""

    what: str
    samples: int
    unit: str = "ms"

    def describe(self, value: float, level: Level, limit: float) -> str:
        head, unit, n = f"{self.what}: {self.criterion}", self.unit, self.samples
        if math.isnan(value):
            return f"{head} could not be measured over {n} timed chunks (limit {limit:g} {unit})"
        v, lim = fmt.pair(value, limit)
        return (
            f"{head} {v} {unit} over {n} timed chunks is {self.side} the {level.word} tier "
            f"{lim} {unit}"
        )


@dataclass(frozen=True, kw_only=True)
class RatioThreshold(Threshold):
    """Engine over baseline, with the two numbers behind the ratio (`detail`)."""

    detail: str

    def describe(self, value: float, level: Level, limit: float) -> str:
        head = f"{self.criterion} engine/baseline"
        if math.isnan(value):
            return f"{head} could not be computed ({self.detail}); limit {limit:g}x"
        v, lim = fmt.pair(value, limit)
        return f"{head} {v}x ({self.detail}) is above the {level.word} tier {lim}x"


@dataclass(frozen=True, kw_only=True)
class BytesThreshold(Threshold):
    """A size (`what`: "peak host RSS", ...) in KiB/MiB/GiB and as an exact count of bytes."""

    what: str

    def describe(self, value: float, level: Level, limit: float) -> str:
        return (
            f"{self.what} {fmt.nbytes(value)} ({_count(value)} bytes) is above the {level.word} "
            f"tier {fmt.nbytes(limit)} ({_count(limit)} bytes)"
        )

    def unmeasured(self, why: str) -> str:
        """A size that could not be measured leaves its limit unchecked, and says so."""
        limit = self.tier.fail if self.tier.fail is not None else self.tier.warn
        return (
            f"{self.what} was not measured ({why}), so its limit {fmt.nbytes(limit)} is unchecked"
        )


def _count(value: float) -> str:
    """Bytes as an exact integer, so a value one byte over its limit never prints equal to it."""
    return str(int(value)) if float(value).is_integer() else f"{value:.17g}"


def threshold_finding(
    threshold: Threshold, value: float, *, suite: str, output: str, chunk: str | None = None
) -> Finding | None:
    """The finding for one value under one threshold, or None when it passes."""
    level, limit = judge(threshold.tier, value)
    if level is Level.PASS or limit is None:
        return None
    message = threshold.describe(value, level, limit)
    return Finding(level, suite, output, threshold.criterion, message, value, limit, chunk)


def tier_finding(
    tier: Tier | None,
    value: float,
    *,
    suite: str,
    output: str,
    criterion: str,
    chunk: str | None = None,
    blocking: bool = True,
    note: str = "",
) -> Finding | None:
    """The finding for one value under one tier, or None when it passes.

    A non-blocking criterion that crosses its fail tier is reported as a warning, and says so.
    """
    if tier is None:
        return None
    if blocking:
        note = ""  # the contract's note explains a non-blocking exception, not every failure
    elif judge(tier, value)[0] is Level.FAIL:
        note = "non-blocking" + (f": {note}" if note else "")
    threshold = PlainThreshold(
        tier=tier, criterion=criterion, output=output, chunk=chunk, note=note
    )
    finding = threshold_finding(threshold, value, suite=suite, output=output, chunk=chunk)
    if finding is None or finding.level is not Level.FAIL or blocking:
        return finding
    return replace(finding, level=Level.WARN)  # the sentence still names the fail tier it crossed


def percentile(values: Sequence[float], q: float) -> float:
    """numpy interpolates inf - inf into NaN; an infinite error must stay infinite (and fail)."""
    if not values:
        return math.nan
    arr = np.asarray(values, dtype=np.float64)
    if np.isnan(arr).any():
        return math.nan
    if np.isfinite(arr).all():
        return float(np.percentile(arr, q))
    lower = float(np.percentile(arr, q, method="lower"))
    upper = float(np.percentile(arr, q, method="higher"))
    if lower == upper:
        return lower
    # lower != upper: both neighbours have a positive weight, and any weight on an infinity is infinite
    if math.isinf(upper) or math.isinf(lower):
        return upper if math.isinf(upper) else lower
    return float(np.percentile(arr, q))  # finite neighbours: numpy interpolates them exactly


def pass_rate(values: Sequence[float], within: float) -> float:
    """Share of chunks whose metric is inside `within`; NaN chunks count as outside."""
    if not values:
        return math.nan
    arr = np.asarray(values, dtype=np.float64)
    return float(np.count_nonzero(arr <= within) / arr.size)


def judge_series(
    values: Sequence[float], chunks: Sequence[str], tol: Tolerance, *, suite: str, output: str
) -> list[Finding]:
    """Findings for one output's per-chunk series of `tol.metric` against its tolerance."""
    if not values:
        return []
    arr = np.asarray(values, dtype=np.float64)
    metric = tol.metric
    note = tol.note
    findings: list[Finding] = []
    worst = int(np.argmax(np.where(np.isnan(arr), np.inf, arr)))
    f = tier_finding(
        tol.chunk,
        float(arr[worst]),
        suite=suite,
        output=output,
        criterion=metric,
        chunk=chunks[worst],
        blocking=tol.blocking,
        note=note,
    )
    if f:
        findings.append(f)
    f = tier_finding(
        tol.p95,
        percentile(values, 95) if not np.isnan(arr).any() else math.nan,
        suite=suite,
        output=output,
        criterion=f"p95 over chunks of {metric}",
        blocking=tol.blocking,
        note=note,
    )
    if f:
        findings.append(f)
    if tol.pass_rate is not None and tol.within is not None:
        rate = pass_rate(values, tol.within)
        f = tier_finding(
            tol.pass_rate,
            rate,
            suite=suite,
            output=output,
            criterion=f"pass rate (chunks with {metric} <= {tol.within:g})",
            blocking=tol.blocking,
            note=note,
        )
        if f:
            findings.append(f)
    return findings
