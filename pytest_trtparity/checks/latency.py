"""The latency suite: per-chunk engine latency over real reference chunks, judged against the contract.

Timing is done by pytest-benchmark's `benchmark.pedantic` (its storage, `--benchmark-compare` and
histograms apply), one round per chunk, chunks taken in stream order with the state carried by the
engine itself as in deployment. Percentiles come from pytest-benchmark's raw per-round data. GPU
backends add the CUDA-event split of each step (host-to-device, compute, device-to-host); with
`graphs=True` the suite times compute alone on device-resident inputs, replayed as a CUDA graph.

The harness's own per-chunk work around the engine call (building and checking feeds, comparing
outputs with the reference) is timed separately and reported as a share of the engine's time:
feeds between the timed steps, comparisons after them on the kept outputs (so that the comparison's
threads cannot slow the next step down). Decoding records is done once before timing and reported apart.
"""

from __future__ import annotations

import importlib.metadata
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..backends.base import Backend, DeviceStep, DeviceTimed, StepTiming
from ..contract.bindings import record_feeds
from ..contract.model import Contract, LatencySpec, Tier
from ..errors import BackendError, TrtParityError
from ..judge.compare import compare
from ..judge.payloads import LatencyPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level, MsThreshold, fmt_pair, judge, threshold_finding
from ..reference.reader import Record
from ..settings import GateSettings
from .timing import (
    CV_WARN_PCT,
    MIN_WINDOW_SAMPLES,
    STABILITY_PCT,
    STABILITY_WINDOWS,
    LatencyStats,
    WindowStability,
    cv_pct,
    fmt_ms,
    latency_stats,
    split_stats,
    window_stability,
)

SUITE = "latency"
DEFAULT_WARMUP = 20
DEFAULT_ITERATIONS = 300
DEFAULT_CHUNKS = 64
CRITERIA = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
MAX_TRIES = 2
"""Timed tries at most: an unstable crossing is measured once more before it is called inconclusive."""
MISSING_BENCHMARK = (
    "pytest-benchmark is not available (not installed, or blocked with -p no:benchmark), so latency "
    "was not measured: pip install pytest-benchmark (a dependency of pytest-trtparity), "
    "or deselect the latency suite with -m 'not trt_latency'"
)


class InconclusiveLatency(UserWarning):
    """A latency tier was crossed on a measurement too unstable to judge (see `Judgement`).

    A warning of its own kind, not a `ParityWarning`: `--trt-strict` fails warn-tier findings,
    and an inconclusive measurement is not one."""


class Pedantic(Protocol):
    """The part of pytest-benchmark's `benchmark` fixture the suite uses."""

    def pedantic(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        setup: Callable[[], Any] | None = None,
        teardown: Callable[..., Any] | None = None,
        rounds: int = 1,
        warmup_rounds: int = 0,
        iterations: int = 1,
    ) -> Any: ...


class LoopTimer:
    """`pedantic` with pytest-benchmark's semantics, for runs where pytest-benchmark is disabled
    (it turns itself off under xdist and with --benchmark-disable). Nothing is stored."""

    def __init__(self) -> None:
        self.data: list[float] = []

    def pedantic(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        setup: Callable[[], Any] | None = None,
        teardown: Callable[..., Any] | None = None,
        rounds: int = 1,
        warmup_rounds: int = 0,
        iterations: int = 1,
    ) -> Any:
        result = None
        for i in range(warmup_rounds + rounds):
            a, kw = setup() if setup is not None else (args, kwargs or {})
            start = time.perf_counter()
            for _ in range(iterations):
                result = target(*a, **kw)
            elapsed = time.perf_counter() - start
            if i >= warmup_rounds:
                self.data.append(elapsed / iterations)
            if teardown is not None:
                teardown(*a, **kw)
        return result


def round_seconds(bench: Any) -> list[float]:
    """Per-round durations in seconds, from pytest-benchmark's stats or a `LoopTimer`."""
    if isinstance(bench, LoopTimer):
        return list(bench.data)
    meta = getattr(bench, "stats", None)
    stats = getattr(meta, "stats", None)
    data = getattr(stats, "data", None)
    return [float(v) for v in data] if data else []


def timer_name(bench: Any) -> str:
    if isinstance(bench, LoopTimer):
        return "trtparity loop"
    try:
        return f"pytest-benchmark {importlib.metadata.version('pytest-benchmark')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a vendored copy
        return "pytest-benchmark"


@dataclass(frozen=True)
class PreparedChunk:
    """A decoded reference record, ready to feed (decoding stays outside the timed loop)."""

    where: str
    label: str
    stream: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]


#: What the decoded chunks a timed suite cycles, and the outputs it keeps for timing comparisons,
#: may each hold: with 25 MB tensors, 20 chunks and 64 kept outputs would be gigabytes.
HELD_BYTES = 64 << 20


def prepare_chunks(
    records: Iterable[Record], limit: int
) -> tuple[list[PreparedChunk], list[float]]:
    """The first `limit` records and how long decoding each took (ms); fewer once they hold
    `HELD_BYTES` (at least one), since timed runs cycle the chunks and memory must stay bounded."""
    chunks: list[PreparedChunk] = []
    decode_ms: list[float] = []
    it = iter(records)
    held = 0
    while len(chunks) < limit and (not chunks or held < HELD_BYTES):
        start = time.perf_counter()
        try:
            record = next(it)
        except StopIteration:
            break
        decode_ms.append((time.perf_counter() - start) * 1e3)
        held += record.nbytes
        chunks.append(
            PreparedChunk(
                record.where,
                f"{record.stream}#{record.chunk_index}",
                record.stream,
                record.inputs,
                record.outputs,
            )
        )
    return chunks, decode_ms


def carry_map(contract: Contract, backend: Backend) -> dict[str, str]:
    """input -> output for the contract's state pairs the engine has on both sides."""
    ins = {i.name for i in backend.inputs}
    outs = {o.name for o in backend.outputs}
    return {p.input: p.output for p in contract.state if p.input in ins and p.output in outs}


@dataclass
class ChunkDriver:
    """Feeds chunks in stream order, cycling, with the engine's own state carried between chunks,
    and times the harness's work around each engine call."""

    backend: Backend
    contract: Contract
    chunks: Sequence[PreparedChunk]
    carry: Mapping[str, str]
    compare_outputs: bool = True
    keep: int = 64
    timings: list[StepTiming] = field(default_factory=list)
    feeds_ms: list[float] = field(default_factory=list)
    compare_ms: list[float] = field(default_factory=list)
    _next: int = 0
    _current: PreparedChunk | None = None
    _last: dict[str, np.ndarray] = field(default_factory=dict)
    _kept: list[tuple[PreparedChunk, dict[str, np.ndarray]]] = field(default_factory=list)

    def setup(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """pytest-benchmark `setup`: the next chunk's feeds (untimed by the benchmark, timed here)."""
        chunk = self.chunks[self._next % len(self.chunks)]
        previous = self._current
        fresh = (
            previous is None
            or self._next % len(self.chunks) == 0
            or previous.stream != chunk.stream
        )
        self._next += 1
        self._current = chunk
        start = time.perf_counter()
        feeds = record_feeds(self.contract, chunk.inputs, self.backend.inputs, chunk.where)
        carry: dict[str, str] = {}
        if self.carry and not fresh:
            carry = dict(self.carry)
            for name in carry:
                feeds.pop(name, None)
        self.feeds_ms.append((time.perf_counter() - start) * 1e3)
        if fresh:
            self.backend.reset_state()
        return (feeds, carry), {}

    def step(self, feeds: Mapping[str, np.ndarray], carry: Mapping[str, str]) -> None:
        """pytest-benchmark `target`: one engine step."""
        out, timing = self.backend.run_timed(feeds, carry=carry)
        self._last = out
        self.timings.append(timing)

    def teardown(self, feeds: Mapping[str, np.ndarray], carry: Mapping[str, str]) -> None:
        """pytest-benchmark `teardown`: keep the outputs for `time_comparisons` (up to `keep`).

        Comparing here, between timed steps, would let the comparison's numpy and BLAS threads
        (which spin for a while after each call) steal the CPU from the next engine step."""
        if self.compare_outputs and self._current is not None and len(self._kept) < self.keep:
            held = sum(
                a.nbytes for _, out in [*self._kept, (None, self._last)] for a in out.values()
            )
            if not self._kept or held <= HELD_BYTES:
                self._kept.append((self._current, self._last))
        self._last = {}  # outputs not kept must not stay alive through the next step

    def time_comparisons(self) -> None:
        """Compare the kept outputs with the reference as a gate run does, timing each chunk."""
        for chunk, got in self._kept:
            start = time.perf_counter()
            for spec in self.contract.outputs:
                if spec.name in got and spec.name in chunk.outputs:
                    compare(
                        spec.name,
                        chunk.outputs[spec.name],
                        got[spec.name],
                        expected_dtype=spec.dtype,
                        tolerance=self.contract.tolerance(spec.name),
                        allow_empty=spec.allow_empty,
                    )
            self.compare_ms.append((time.perf_counter() - start) * 1e3)
        self._kept = []


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else math.nan


def overhead_report(
    driver: ChunkDriver, engine_ms: float, decode_ms: Sequence[float]
) -> dict[str, float]:
    feeds = _median(driver.feeds_ms)
    cmp = _median(driver.compare_ms) if driver.compare_ms else 0.0
    per_chunk = feeds + cmp
    return {
        "feeds_ms": feeds,
        "compare_ms": cmp,
        "per_chunk_ms": per_chunk,
        "share": per_chunk / engine_ms if engine_ms > 0 else math.nan,
        "decode_ms": _median(decode_ms),
    }


def overhead_finding(tier: Tier, overhead: Mapping[str, float], *, samples: int) -> Finding | None:
    """The harness's own per-chunk work as a share of the engine's p50, against `overhead_share`."""
    share = float(overhead["share"])
    level, limit = judge(tier, share)
    if level is Level.PASS or limit is None:
        return None
    word = "fail" if level is Level.FAIL else "warn"
    v, lim = fmt_pair(share * 100, limit * 100)
    message = (
        f"harness overhead: {fmt_ms(overhead['per_chunk_ms'])} ms a chunk (feeds "
        f"{fmt_ms(overhead['feeds_ms'])}, compare {fmt_ms(overhead['compare_ms'])}) is {v}% of the "
        f"engine's p50 over {samples} timed chunks, above the {word} tier {lim}%"
    )
    return Finding(level, SUITE, "engine", "overhead share", message, value=share, limit=limit)


def judge_latency(
    stats: LatencyStats,
    latency: LatencySpec,
    *,
    suite: str = SUITE,
    what: str = "engine latency",
) -> list[Finding]:
    """The contract's latency tiers on one set of statistics, stability aside (the baseline and
    throughput suites judge this way; the latency suite adds `judge_try`'s stability rules)."""
    findings = []
    for key, tier in latency_tiers(latency):
        ms = MsThreshold(tier=tier, criterion=key.removesuffix("_ms"), what=what, samples=stats.n)
        f = threshold_finding(ms, stats.value(key), suite=suite, output="engine")
        if f:
            findings.append(f)
    return findings


def latency_tiers(latency: LatencySpec) -> list[tuple[str, Tier]]:
    """The criteria (`p95_ms`, ...) the contract gives a tier, with the tier."""
    return [(key, tier) for key in CRITERIA if (tier := latency.tier(key)) is not None]


@dataclass(frozen=True)
class Judgement:
    """One criterion of one timed try: its value, how its windows agree, and what that allows.

    outcome: `pass` (no tier crossed), `judged` (crossed, and the windows agree or are too short to
    tell), `every step` (crossed with disagreeing windows, but even the fastest step crosses the same
    tier, so no window could pass), `bounded` (disagreeing windows; judged only as far as the fastest
    step goes), `inconclusive` (disagreeing windows, and the fastest step crosses nothing).
    Noise on a shared machine only ever adds time, so a value under its tier passes whatever the
    windows say, and the fastest step is the least disturbed evidence of what the engine costs.
    """

    criterion: str
    value: float
    stability: WindowStability
    outcome: str
    finding: Finding | None = None
    sentence: str | None = None

    @property
    def settled(self) -> bool:
        """False when measuring again could change the verdict."""
        return self.outcome not in ("bounded", "inconclusive")

    def to_json(self) -> dict[str, Any]:
        return {
            "value_ms": _json_ms(self.value),
            "outcome": self.outcome,
            **self.stability.to_json(),
        }


def _json_ms(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _fastest(tier: Tier, stats: LatencyStats) -> float:
    """The least disturbed step: the minimum when higher is worse, else the maximum."""
    return stats.min_ms if tier.higher_is_worse else stats.max_ms


def unstable_clause(stability: WindowStability, cv: float, tries: int) -> str:
    """`unstable (CV 38%, p95 of 3 windows 0.2/12.4/13.1 ms disagree by 6450%, limit 10%) after
    2 tries`, the part every unstable sentence shares."""
    name = stability.criterion.removesuffix("_ms")
    values = "/".join(fmt_ms(v) for v in stability.windows_ms)
    spread = (
        f"{stability.spread_pct:.0f}%" if math.isfinite(stability.spread_pct) else "without bound"
    )
    cv_text = f"CV {cv:.0f}%, " if math.isfinite(cv) else ""
    return (
        f"unstable ({cv_text}{name} of {len(stability.windows_ms)} windows {values} ms disagree by "
        f"{spread}, limit {stability.limit_pct:g}%) after {tries} {'try' if tries == 1 else 'tries'}"
    )


def judge_criterion(
    key: str,
    tier: Tier,
    samples: Sequence[float],
    *,
    tries: int,
    windows: int = STABILITY_WINDOWS,
    stability_pct: float = STABILITY_PCT,
    what: str = "engine latency",
) -> Judgement:
    """One criterion of one try, with the stability rules of `Judgement`."""
    stats = latency_stats(samples)
    value = stats.value(key)
    stability = window_stability(samples, key, windows=windows, limit_pct=stability_pct)
    name = key.removesuffix("_ms")
    ms = MsThreshold(tier=tier, criterion=name, what=what, samples=stats.n)
    finding = threshold_finding(ms, value, suite=SUITE, output="engine")
    if finding is None:
        return Judgement(key, value, stability, "pass")
    if stability.stable or not stability.assessed or math.isnan(value):
        return Judgement(key, value, stability, "judged", finding)
    floor_level, floor_limit = judge(tier, _fastest(tier, stats))
    if floor_level >= finding.level:
        return Judgement(key, value, stability, "every step", finding)
    head = (
        f"{finding.message} but the measurement is "
        f"{unstable_clause(stability, cv_pct(samples), tries)}"
    )
    if floor_level is Level.PASS or floor_limit is None:
        return Judgement(
            key, value, stability, "inconclusive", sentence=f"{head}: inconclusive, not judged"
        )
    fastest = _fastest(tier, stats)
    message = (
        f"{head}; every timed step took {'at least' if tier.higher_is_worse else 'at most'} "
        f"{fmt_ms(fastest)} ms, {ms.side} the {floor_level.word} tier {floor_limit:g} ms: "
        f"judged {floor_level.word}"
    )
    bounded = Finding(floor_level, SUITE, "engine", name, message, value=value, limit=floor_limit)
    return Judgement(key, value, stability, "bounded", bounded)


def judge_try(
    samples: Sequence[float],
    latency: LatencySpec,
    *,
    tries: int,
    windows: int = STABILITY_WINDOWS,
    stability_pct: float = STABILITY_PCT,
) -> list[Judgement]:
    """Every tiered criterion of one try; with no tier, p95's stability alone, for the record."""
    tiers = latency_tiers(latency) or [("p95_ms", Tier())]
    return [
        judge_criterion(
            key, tier, samples, tries=tries, windows=windows, stability_pct=stability_pct
        )
        for key, tier in tiers
    ]


def stability_outcome(judgements: Sequence[Judgement]) -> str:
    """One word for the summary: inconclusive, stable, unstable (but settled), or not assessed."""
    if any(j.outcome in ("bounded", "inconclusive") for j in judgements):
        return "inconclusive"
    if any(not j.stability.assessed for j in judgements):
        return "not assessed"
    return "stable" if all(j.stability.stable for j in judgements) else "unstable"


def run_latency(
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    bench: Pedantic | None = None,
    timing: str = "host",
    graphs: bool = False,
    warmup: int | None = None,
    iterations: int | None = None,
    chunks: int | None = None,
    note: str = "",
    windows: int = STABILITY_WINDOWS,
    stability_pct: float = STABILITY_PCT,
    max_tries: int = MAX_TRIES,
    retimer: Callable[[], Pedantic] = LoopTimer,
) -> SuiteResult:
    """Time the engine over reference chunks and judge the contract's latency tiers.

    `bench` is pytest-benchmark's `benchmark` fixture (a `LoopTimer` when None). `timing="device"`
    times compute alone on device-resident inputs instead of the host-side step with its transfers,
    replayed as a CUDA graph when `graphs` is True.
    A crossed tier whose windows disagree is measured again (up to `max_tries` in all, each further
    try timed by `retimer()`, since pytest-benchmark's fixture times once per test); still unstable,
    it is reported as inconclusive instead of judged (see `Judgement`).
    A failure part way keeps what was measured and is never a pass.
    """
    spec = contract.latency
    plan = _Plan(
        backend,
        contract,
        timing=timing,
        graphs=graphs,
        warm=int(_given(warmup, spec.warmup, DEFAULT_WARMUP)),
        rounds=int(_given(iterations, spec.iterations, DEFAULT_ITERATIONS)),
        windows=windows,
        stability_pct=stability_pct,
        max_tries=max_tries,
        retimer=retimer,
    )
    limit = int(_given(chunks, spec.chunks, DEFAULT_CHUNKS))
    result = SuiteResult(suite=SUITE)
    try:
        prepared, decode_ms = prepare_chunks(records, max(1, limit))
        if not prepared:
            result.error = "the reference holds no chunk to time"
            return result
        carry = carry_map(contract, backend)
        timer = bench if bench is not None else LoopTimer()
        attempts = _attempts(plan, prepared, decode_ms, carry, timer)
    except TrtParityError as exc:
        result.error = str(exc)
        return result
    _judge_attempts(result, plan, prepared, carry, attempts, note)
    return result


#: One timing try: its timer, what it measured (samples under `_samples`) and its judgements.
Attempt = tuple[Pedantic, dict[str, Any], list[Judgement]]


@dataclass(frozen=True)
class _Plan:
    """What every try of one latency run shares: engine, contract, timing mode and counts, and the
    stability rule deciding whether another try is due."""

    backend: Backend
    contract: Contract
    timing: str
    graphs: bool
    warm: int
    rounds: int
    windows: int
    stability_pct: float
    max_tries: int
    retimer: Callable[[], Pedantic]


def _attempts(
    plan: _Plan,
    prepared: Sequence[PreparedChunk],
    decode_ms: list[float],
    carry: Mapping[str, str],
    timer: Pedantic,
) -> list[Attempt]:
    """Time and judge, again while a crossed tier's windows disagree, up to `plan.max_tries`."""
    attempts: list[Attempt] = []
    b, c = plan.backend, plan.contract
    while not attempts or (
        len(attempts) < plan.max_tries and not all(j.settled for j in attempts[-1][2])
    ):
        t = timer if not attempts else plan.retimer()
        if plan.timing == "device":
            extra = _time_device(b, c, prepared, carry, t, plan.warm, plan.rounds, plan.graphs)
        else:
            extra = _time_host(b, c, prepared, carry, t, plan.warm, plan.rounds, decode_ms)
        judged = judge_try(
            extra["_samples"],
            c.latency,
            tries=len(attempts) + 1,
            windows=plan.windows,
            stability_pct=plan.stability_pct,
        )
        attempts.append((t, extra, judged))
    return attempts


def _judge_attempts(
    result: SuiteResult,
    plan: _Plan,
    prepared: Sequence[PreparedChunk],
    carry: Mapping[str, str],
    attempts: list[Attempt],
    note: str,
) -> None:
    """The last try's numbers and judgements into `result`, with every try's history."""
    history = [_try_record(i, t, x, js) for i, (t, x, js) in enumerate(attempts, 1)]
    final_timer, extra, judged = attempts[-1]
    samples = extra.pop("_samples")
    stats = latency_stats(samples)
    info = plan.backend.info()
    result.chunks_run = stats.n
    result.streams = sorted({c.stream for c in prepared})
    payload = LatencyPayload(
        measured={**stats.to_json(), **extra},
        warmup=plan.warm,
        iterations=plan.rounds,
        chunks=len(prepared),
        carry=dict(carry),
        timer=timer_name(final_timer),
        backend=info.backend,
        device=info.device,
        step_ms=[float(v) for v in samples],
        cv_pct=_json_ms(cv_pct(samples)),
        cv_warn_pct=CV_WARN_PCT,
        stability={
            "outcome": stability_outcome(judged),
            "windows": plan.windows,
            "stability_pct": plan.stability_pct,
            "tries": len(attempts),
            "max_tries": plan.max_tries,
            "criteria": {j.criterion: j.to_json() for j in judged},
            "history": history,
        },
        inconclusive=[j.sentence for j in judged if j.sentence],
        note=note or None,
    )
    result.payload = payload
    result.findings = [j.finding for j in judged if j.finding is not None]
    overhead = payload.stat("overhead")
    share_tier = plan.contract.latency.tier("overhead_share")
    if share_tier is not None and isinstance(overhead, Mapping):
        f = overhead_finding(share_tier, overhead, samples=stats.n)
        if f:
            result.findings.append(f)
    payload.table = table_lines(payload.to_json())
    result.complete = stats.n > 0
    if not result.complete:
        result.error = "no chunk was timed (is pytest-benchmark disabled?)"


def _given(*values: int | None) -> int:
    """The first count given: the caller's, the contract's, then the suite's default."""
    return next(v for v in values if v is not None)


def _try_record(
    index: int, timer: Pedantic, extra: Mapping[str, Any], judged: Sequence[Judgement]
) -> dict[str, Any]:
    """What one try measured, kept in `extra.stability.history` whether or not it was judged."""
    samples = extra.get("_samples") or []
    stats = latency_stats(samples)
    return {
        "try": index,
        "timer": timer_name(timer),
        "n": stats.n,
        "p50_ms": _json_ms(stats.p50_ms),
        "p95_ms": _json_ms(stats.p95_ms),
        "min_ms": _json_ms(stats.min_ms),
        "cv_pct": _json_ms(cv_pct(samples)),
        "criteria": {j.criterion: j.to_json() for j in judged},
    }


def _time_host(
    backend: Backend,
    contract: Contract,
    prepared: Sequence[PreparedChunk],
    carry: Mapping[str, str],
    timer: Pedantic,
    warm: int,
    rounds: int,
    decode_ms: Sequence[float],
) -> dict[str, Any]:
    driver = ChunkDriver(backend, contract, prepared, carry)
    timer.pedantic(
        driver.step, setup=driver.setup, teardown=driver.teardown, rounds=rounds, warmup_rounds=warm
    )
    driver.time_comparisons()
    samples = [s * 1e3 for s in round_seconds(timer)]
    timed = driver.timings[-len(samples) :] if samples else []
    split = split_stats(timed)
    engine_ms = _median(samples)
    return {
        "_samples": samples,
        "timing": "host",
        "graphs": False,
        "split": split.to_json() if split else None,
        "engine_step_p50_ms": _median([t.total_ms for t in timed]),
        "overhead": overhead_report(driver, engine_ms, decode_ms),
    }


def _time_device(
    backend: Backend,
    contract: Contract,
    prepared: Sequence[PreparedChunk],
    carry: Mapping[str, str],
    timer: Pedantic,
    warm: int,
    rounds: int,
    graphs: bool,
) -> dict[str, Any]:
    if not isinstance(backend, DeviceTimed):
        raise BackendError(
            f"{backend.path.name}: the {backend.kind} backend cannot time compute on the device; "
            "use --trt-latency-timing host or run the engine on a GPU backend"
        )
    first = prepared[0]
    feeds = record_feeds(contract, first.inputs, backend.inputs, first.where)
    step: DeviceStep = backend.device_step(feeds, carry=carry, graphs=graphs)
    device_ms: list[float] = []

    def target() -> None:
        device_ms.append(step())

    try:
        timer.pedantic(target, rounds=rounds, warmup_rounds=warm)
    finally:
        step.close()
    samples = [s * 1e3 for s in round_seconds(timer)]
    device = device_ms[-len(samples) :] if samples else []
    dev = latency_stats(device)
    host_sum = float(np.sum(samples)) if samples else math.nan
    return {
        "_samples": samples,
        "timing": "device, no transfers" + (", CUDA graph" if step.graphs else ", eager"),
        "graphs": step.graphs,
        "graph_note": step.note,
        "device_compute": dev.to_json(),
        "split": {
            "steps": len(device),
            "h2d_ms": 0.0,
            "compute_ms": dev.p50_ms,
            "d2h_ms": 0.0,
            "device_sum_ms": dev.p50_ms,
            "host_ms": _median(samples),
            "device_over_host": float(np.sum(device)) / host_sum
            if device and host_sum > 0
            else math.nan,
        },
        "overhead": None,
    }


def table_lines(extra: Mapping[str, Any]) -> list[str]:
    """The lines the terminal summary prints for this suite."""
    lines = [
        f"latency ({extra.get('timing')}, {extra.get('n')} chunks after {extra.get('warmup')} warm-up, "
        f"{extra.get('timer')}, {extra.get('backend')} on {extra.get('device')}):",
        "  p50 {} ms  p90 {} ms  p95 {} ms  p99 {} ms  mean {} ± {} ms".format(
            *(
                fmt_ms(extra.get(k))
                for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms")
            )
        ),
    ]
    lines.extend(stability_lines(extra))
    split = extra.get("split")
    if isinstance(split, Mapping):
        lines.append(
            f"  CUDA events (median): h2d {fmt_ms(split['h2d_ms'])} + compute {fmt_ms(split['compute_ms'])} "
            f"+ d2h {fmt_ms(split['d2h_ms'])} = {fmt_ms(split['device_sum_ms'])} ms; host {fmt_ms(split['host_ms'])} ms; "
            f"events/host {split['device_over_host']:.2f}"
        )
    overhead = extra.get("overhead")
    if isinstance(overhead, Mapping):
        lines.append(
            f"  harness overhead per chunk {fmt_ms(overhead['per_chunk_ms'])} ms (feeds {fmt_ms(overhead['feeds_ms'])}, "
            f"compare {fmt_ms(overhead['compare_ms'])}) = {overhead['share']:.1%} of p50; "
            f"record decode {fmt_ms(overhead['decode_ms'])} ms, outside the timed loop "
            "(an upper bound: parity runs compare on a worker thread, see their harness line)"
        )
    if extra.get("graph_note"):
        lines.append(f"  {extra['graph_note']}")
    if extra.get("note"):
        lines.append(f"  note: {extra['note']}")
    return lines


def stability_lines(extra: Mapping[str, Any]) -> list[str]:
    """`  stability: CV 9.6% (above 2.5%), p95 of 3 windows ... ms agree within 4% (limit 10%):
    stable, 1 try`, then the sentence of each inconclusive criterion."""
    stability = extra.get("stability")
    if not isinstance(stability, Mapping):
        return []
    cv = extra.get("cv_pct")
    warn = extra.get("cv_warn_pct", CV_WARN_PCT)
    parts = [
        "CV -"
        if cv is None
        else f"CV {cv:.1f}%" + (f" (above {warn:g}%: noisy timing)" if cv > warn else "")
    ]
    for key, c in stability.get("criteria", {}).items():
        name = key.removesuffix("_ms")
        if not c.get("assessed"):
            parts.append(
                f"{name} windows not assessed (fewer than {MIN_WINDOW_SAMPLES} steps a window)"
            )
            continue
        values = "/".join(fmt_ms(v) for v in c["windows_ms"])
        spread = c.get("spread_pct")
        verb = "agree within" if c.get("stable") else "disagree by"
        spread_text = "without bound" if spread is None else f"{spread:.0f}%"
        parts.append(
            f"{name} of {len(c['windows_ms'])} windows {values} ms {verb} {spread_text} "
            f"(limit {c['stability_pct']:g}%)"
        )
    tries = int(stability.get("tries", 1))
    lines = [
        f"  stability: {', '.join(parts)}: {stability.get('outcome')}, "
        f"{tries} {'try' if tries == 1 else 'tries'}"
    ]
    lines.extend(f"  {sentence}" for sentence in extra.get("inconclusive", []))
    return lines


def benchmark_for(request: Any) -> tuple[Any | None, str]:
    """pytest-benchmark's fixture for this test, or None and why not.

    Not installed, or blocked with `-p no:benchmark`: (None, reason) and the suite fails with it.
    Installed but disabled (xdist, --benchmark-disable): a `LoopTimer` and a note saying so.
    """
    config = request.config
    if not config.pluginmanager.hasplugin(
        "pytest_benchmark.plugin"
    ) and not config.pluginmanager.hasplugin("benchmark"):
        return None, MISSING_BENCHMARK
    bench = request.getfixturevalue("benchmark")
    if getattr(bench, "disabled", False):
        return (
            LoopTimer(),
            "pytest-benchmark is disabled in this run (xdist or --benchmark-disable): timed by a plain loop, nothing stored",
        )
    return bench, ""


def latency_suite(
    request: Any,
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    settings: GateSettings | None = None,
) -> SuiteResult:
    """What suites/test_latency.py runs: fetch the benchmark fixture, time, judge."""
    bench, why = benchmark_for(request)
    if bench is None:
        return SuiteResult(suite=SUITE, error=why)
    if not isinstance(bench, LoopTimer):
        bench.group = f"trtparity latency: {contract.model}"
    timing = settings.latency_timing if settings is not None else "host"
    graphs = settings.cuda_graphs if settings is not None else False
    result = run_latency(
        backend, contract, records, bench=bench, timing=timing, graphs=graphs, note=why
    )
    payload = result.payload
    if not isinstance(payload, LatencyPayload):
        return result
    extra_info = getattr(bench, "extra_info", None)
    if isinstance(extra_info, dict):
        extra_info.update(benchmark_info(payload))
    for sentence in payload.inconclusive:
        warnings.warn(InconclusiveLatency(sentence), stacklevel=2)
    return result


def benchmark_info(payload: LatencyPayload) -> dict[str, Any]:
    """What pytest-benchmark stores beside its own timings: the judged criteria, the timing mode,
    device, backend, the split and overhead where measured, CV and the stability outcome."""
    flat = payload.to_json()
    info = {k: flat[k] for k in (*CRITERIA, "std_ms", "timing", "device", "backend") if k in flat}
    info.update({k: flat[k] for k in ("split", "overhead") if flat.get(k)})
    info.update(
        {
            "cv_pct": payload.cv_pct,
            "stability": payload.stability.get("outcome"),
            "tries": payload.stability.get("tries"),
        }
    )
    return info
