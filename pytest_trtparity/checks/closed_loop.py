"""Closed loop: the engine runs on its own state, as it will in production.

Functional mode hands every chunk the reference state, so an engine whose state is slightly off
passes chunk by chunk while the error it feeds itself grows. Here only the first chunk of each
stream takes its state from the reference (or zeros, as the contract says); every later chunk takes
it from the engine's previous outputs through `backend.run(carry=...)`, which keeps it on the device
where the backend can. Every output of every chunk is still compared with the reference, and the
per-chunk error series are then judged for bound, mean and growth (`drift`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..contract.model import Contract, DriftCriteria, StatePair, Tier
from ..errors import BindingError, TrtParityError
from ..judge import drift
from ..judge.payloads import ClosedLoopPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level, describe, judge, judge_series, tier_finding
from ..reference.reader import Record
from .loop import ChunkCallback, ChunkChecker, prefetched, run_chunk, run_step

SUITE = "closed_loop"


@dataclass
class _Feeder:
    """Which state each step gets: the reference's, the engine's carried one, or a saved one.

    Streams may interleave in a reference; the backend carries only its last step's outputs, so a
    stream that is interrupted keeps the engine's own state on the host until it resumes.
    """

    backend: Backend
    pairs: tuple[StatePair, ...]
    current: str | None = None
    last: Mapping[str, np.ndarray] = field(default_factory=dict)
    parked: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def step(self, record: Record, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        carry: dict[str, str] = {}
        if record.stream == self.current:
            for pair in self.pairs:
                feeds.pop(pair.input, None)
                carry[pair.input] = pair.output
        else:
            if self.current is not None and self.pairs:
                self.parked[self.current] = {p.input: self._own(p) for p in self.pairs}
            self.backend.reset_state()
            resumed = self.parked.pop(record.stream, None)
            for pair in self.pairs:
                if resumed is not None:
                    feeds[pair.input] = resumed[pair.input]
                elif pair.initial == "zeros":
                    feeds[pair.input] = np.zeros_like(feeds[pair.input])
        out = run_step(self.backend, record, feeds, carry)
        self.current = record.stream
        self.last = out
        return out

    def _own(self, pair: StatePair) -> np.ndarray:
        if pair.output not in self.last:
            raise BindingError(f"state output {pair.output!r} was not returned by the engine")
        return self.last[pair.output]


def run_closed_loop(
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    chunks: int | None = None,
    on_chunk: ChunkCallback | None = None,
) -> SuiteResult:
    """Run each stream of `records` as one loop (at most `chunks`, else the contract's
    `closed_loop.chunks`, chunks per stream) and judge it. A reader, binding or backend error ends
    the run with what was gathered kept (`complete` False, `error` set); it never raises them."""
    result = SuiteResult(suite=SUITE, payload=ClosedLoopPayload())
    limit = chunks if chunks is not None else contract.closed_loop.chunks
    engine_inputs = backend.inputs
    engine_names = {i.name for i in engine_inputs}
    pairs = tuple(p for p in contract.state if p.input in engine_names)
    feeder = _Feeder(backend, pairs)
    ran: dict[str, int] = {}
    try:
        with ChunkChecker(result, contract, suite=SUITE) as checker:
            for record in prefetched(records):
                if limit is not None and ran.get(record.stream, 0) >= limit:
                    continue
                run_chunk(checker, engine_inputs, record, feeder.step, on_chunk)
                ran[record.stream] = ran.get(record.stream, 0) + 1
    except TrtParityError as exc:
        result.error = str(exc)
    result.finish()
    payload = result.typed(ClosedLoopPayload)
    payload.state = [{"output": p.output, "input": p.input, "initial": p.initial} for p in pairs]
    payload.chunks_limit = limit
    if not pairs:
        result.findings.append(
            Finding(
                Level.WARN,
                SUITE,
                "*",
                "state pairs",
                "closed loop carried no state: the contract declares no state pair whose input the "
                "engine takes, so this loop is the same as functional mode",
            )
        )
    judge_closed_loop(result, contract)
    return result


def judge_closed_loop(result: SuiteResult, contract: Contract) -> None:
    """Judge every output's whole series (after all chunks, or after merging shards).

    An output with closed-loop criteria in the contract is judged on bound, mean and growth per
    stream; one without is judged like functional mode, on its tolerance.
    """
    stats: dict[str, Any] = {}
    for spec in contract.outputs:
        series = result.outputs.get(spec.name)
        if series is None:
            continue
        crit = contract.closed_loop.for_output(spec.name)
        tol = contract.tolerance(spec.name)
        if crit is None:
            result.findings.extend(
                judge_series(
                    series.series(tol.metric),
                    series.chunks,
                    tol,
                    suite=result.suite,
                    output=spec.name,
                )
            )
            continue
        metric = crit.metric or tol.metric
        scale = _scale(crit.max) or _scale(tol.chunk)
        per_stream = _split_streams(series.chunks, series.series(metric))
        out_stats: dict[str, Any] = {"metric": metric, "scale": scale, "streams": {}}
        for stream, (labels, values) in per_stream.items():
            named = stream if len(per_stream) > 1 else None
            judged = judge_drift(
                values,
                labels,
                crit,
                suite=result.suite,
                output=spec.name,
                metric=metric,
                scale=scale,
                stream=named,
            )
            result.findings.extend(judged.findings)
            out_stats["streams"][stream] = judged.stats
        stats[spec.name] = out_stats
    result.typed(ClosedLoopPayload).drift = stats


def _scale(tier: Tier | None) -> float | None:
    if tier is None:
        return None
    value = tier.fail if tier.fail is not None else tier.warn
    return value if value else None


def _split_streams(
    labels: list[str], values: list[float]
) -> dict[str, tuple[list[str], list[float]]]:
    """Per stream, in run order; labels are `stream#chunk` (see results.chunk_label)."""
    out: dict[str, tuple[list[str], list[float]]] = {}
    for label, value in zip(labels, values, strict=False):
        stream = label.rpartition("#")[0]
        ls, vs = out.setdefault(stream, ([], []))
        ls.append(label)
        vs.append(value)
    return out


@dataclass
class DriftJudgement:
    findings: list[Finding]
    stats: dict[str, Any]


def judge_drift(
    values: list[float],
    labels: list[str],
    crit: DriftCriteria,
    *,
    suite: str,
    output: str,
    metric: str,
    scale: float | None,
    stream: str | None = None,
) -> DriftJudgement:
    """Bound, mean and growth of one loop's error series against the contract's criteria."""
    arr = np.asarray(values, dtype=np.float64)
    on = f" on stream {stream!r}" if stream else ""
    findings: list[Finding] = []
    stats: dict[str, Any] = {"chunks": int(arr.size)}
    if arr.size == 0:
        return DriftJudgement(findings, stats)
    nan = ~np.isfinite(arr)
    worst = int(np.argmax(np.where(nan, np.inf, arr)))
    mean = float(arr.mean()) if not nan.any() else math.nan
    stats.update(
        max=float(arr[worst]), max_chunk=labels[worst], mean=mean, nan_chunks=int(nan.sum())
    )
    for tier, value, criterion, chunk in (
        (crit.max, float(arr[worst]), f"closed-loop max of {metric}", labels[worst]),
        (crit.mean, mean, f"closed-loop mean of {metric}{on}", None),
    ):
        f = tier_finding(
            tier,
            value,
            suite=suite,
            output=output,
            criterion=criterion,
            chunk=chunk,
            blocking=crit.blocking,
        )
        if f:
            findings.append(f)
    if crit.trend is not None:
        f = _growth_finding(
            arr, labels, crit, stats, suite=suite, output=output, metric=metric, scale=scale, on=on
        )
        if f:
            findings.append(f)
    return DriftJudgement(findings, stats)


def _growth_finding(
    arr: np.ndarray,
    labels: list[str],
    crit: DriftCriteria,
    stats: dict[str, Any],
    *,
    suite: str,
    output: str,
    metric: str,
    scale: float | None,
    on: str,
) -> Finding | None:
    """Growth of one loop's error: too short to judge (warn), not a number (fail), or a significant
    Mann-Kendall trend whose rise, as a share of the bound, crosses the growth tier."""
    trend_crit = crit.trend
    assert trend_crit is not None
    criterion = f"closed-loop growth of {metric}{on}"
    stats["alpha"] = trend_crit.alpha
    if arr.size < trend_crit.min_chunks:
        stats["trend"] = None
        return Finding(
            Level.WARN,
            suite,
            output,
            criterion,
            f"output {output!r}: {criterion} not judged: the loop ran {arr.size} chunks, "
            f"the contract asks for at least {trend_crit.min_chunks}",
            value=float(arr.size),
            limit=float(trend_crit.min_chunks),
        )
    tr = drift.trend(arr)
    growth = _growth(tr, scale)
    stats["trend"] = _trend_stats(tr, trend_crit.alpha, growth)
    if math.isnan(tr.slope):
        first = labels[int(np.flatnonzero(~np.isfinite(arr))[0])]
        return Finding(
            Level.FAIL,
            suite,
            output,
            criterion,
            f"output {output!r}: {criterion} cannot be judged: the error is not a number on "
            f"{int((~np.isfinite(arr)).sum())} chunk(s), first on chunk {first}",
            value=math.nan,
            limit=trend_crit.growth.fail if trend_crit.growth else None,
        )
    if not tr.significant(trend_crit.alpha):
        return None
    return _judged_growth(
        tr, growth, crit, suite=suite, output=output, criterion=criterion, scale=scale
    )


def _trend_stats(tr: drift.Trend, alpha: float, growth: float) -> dict[str, Any]:
    return {
        "slope": tr.slope,
        "intercept": tr.intercept,
        "rise": tr.rise,
        "p_value": tr.p_value,
        "z": tr.z,
        "variance_factor": tr.variance_factor,
        "significant": tr.significant(alpha),
        "growth": growth,
    }


def _judged_growth(
    tr: drift.Trend,
    growth: float,
    crit: DriftCriteria,
    *,
    suite: str,
    output: str,
    criterion: str,
    scale: float | None,
) -> Finding | None:
    """A significant trend against the growth tier (without one, any significant rise fails)."""
    assert crit.trend is not None
    evidence = (
        f"Theil-Sen slope {tr.slope:.3g} per chunk, rise {tr.rise:.3g} over {tr.n} chunks"
        + (f" = {growth:.3g} of the bound {scale:g}" if scale else "")
        + f"; Mann-Kendall p {_p(tr.p_value)} < alpha {crit.trend.alpha:g}"
    )
    tier = crit.trend.growth
    if tier is None:
        level, limit = Level.FAIL, 0.0
    else:
        level, lim = judge(tier, growth)
        if level is Level.PASS or lim is None:
            return None
        limit = lim
    crossed = level
    if level is Level.FAIL and not crit.blocking:
        level = Level.WARN
        evidence = "non-blocking: " + evidence
    message = describe(
        output=output,
        criterion=criterion,
        value=growth,
        limit=limit,
        level=crossed,
        higher_is_worse=True,
        note=evidence,
    )
    return Finding(level, suite, output, criterion, message, value=growth, limit=limit)


def _growth(tr: drift.Trend, scale: float | None) -> float:
    """The rise over the loop as a share of the output's bound; without a bound, any rise is inf."""
    if math.isnan(tr.slope):
        return math.nan
    if scale:
        return tr.rise / scale
    return math.inf if tr.rise > 0 else 0.0


def _p(p: float) -> str:
    return "< 1e-12" if p < 1e-12 else f"= {p:.2g}"
