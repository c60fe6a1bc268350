"""The baseline suite: the engine and a second engine (PyTorch or ONNX Runtime) through the same chunks.

Both get the same reference inputs chunk by chunk (reference state in), in alternating order so
that neither always runs on a warmer cache. The checklist's "compare to the ORT baseline (similar
or better)" and "match the PyTorch baseline" become ratios with tiers: latency
(`latency.baseline_ratio`, engine p50 over baseline p50), error (`latency.baseline_error`, per
output, engine p95 error over baseline p95 error against the reference) and device memory
(`memory.baseline_device_ratio`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend, BackendInfo
from ..contract.bindings import record_feeds
from ..contract.model import Contract, Tier
from ..errors import TrtParityError
from ..judge.compare import compare
from ..judge.payloads import BaselinePayload
from ..judge.results import SuiteResult, chunk_label
from ..judge.tiers import Finding, Level, RatioThreshold, percentile, threshold_finding
from ..reference.reader import Record
from ..settings import GateSettings
from .memory import DeviceMemoryProbe
from .timing import LatencyStats, fmt_bytes, fmt_ms, latency_stats

SUITE = "baseline"
DEFAULT_WARMUP = 5
#: Structural problems listed per engine before they are only counted.
MAX_LISTED = 5


def open_baseline(settings: GateSettings, contract: Contract | None) -> Backend:
    """The baseline named by --trt-baseline, loaded; its backend comes from its extension."""
    from ..backends.factory import open_baseline as open_from_settings

    return open_from_settings(settings, contract)


@dataclass
class EngineRun:
    """What one of the two engines did over the chunks."""

    role: str
    backend: Backend
    latency_ms: list[float] = field(default_factory=list)
    errors: dict[str, list[float]] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)
    probe: DeviceMemoryProbe | None = None

    def step(self, contract: Contract, record: Record, metrics: Mapping[str, str]) -> None:
        feeds = record_feeds(contract, record.inputs, self.backend.inputs, record.where)
        self.backend.reset_state()
        out, timing = self.backend.run_timed(feeds)
        self.latency_ms.append(timing.total_ms)
        label = chunk_label(record.stream, record.chunk_index)
        for spec in contract.outputs:
            series = self.errors.setdefault(spec.name, [])
            if spec.name not in out:
                self._problem(
                    spec.name, f"returned no output {spec.name!r} on chunk {label}", label
                )
                series.append(math.nan)
                continue
            cmp = compare(
                spec.name,
                record.outputs[spec.name],
                out[spec.name],
                expected_dtype=spec.dtype,
                tolerance=contract.tolerance(spec.name),
                allow_empty=spec.allow_empty,
            )
            if cmp.problem:
                self._problem(
                    spec.name, f"output {spec.name!r} on chunk {label}: {cmp.problem}", label
                )
                series.append(math.nan)
            else:
                series.append(cmp.metrics[metrics[spec.name]])
        if self.probe is not None:
            self.probe.sample()

    def _problem(self, output: str, text: str, label: str) -> None:
        self.problems.append(
            Finding(Level.FAIL, SUITE, output, "structure", f"the {self.role} {text}", chunk=label)
        )

    def summary(self, info: BackendInfo) -> dict[str, Any]:
        stats = latency_stats(self.latency_ms)
        return {
            "backend": info.backend,
            "engine": info.engine,
            "device": info.device,
            "version": info.version,
            "engine_bytes": info.engine_bytes,
            "latency": stats.to_json(),
            "error_p95": {k: _p95(v) for k, v in self.errors.items()},
            "error_max": {k: _max(v) for k, v in self.errors.items()},
            "peak_device_bytes": self.probe.peak if self.probe else None,
            "device_memory_source": self.probe.source if self.probe else None,
            "problems": len(self.problems),
        }


def _p95(values: Sequence[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else percentile(values, 95)


def _max(values: Sequence[float]) -> float:
    return math.nan if not values or any(math.isnan(v) for v in values) else float(np.max(values))


def ratio(engine: float | None, baseline: float | None, floor: float = 0.0) -> float:
    """engine / baseline, with both raised to `floor`; 0/0 is 1 (equal), x/0 is inf, unknown is NaN."""
    if engine is None or baseline is None or math.isnan(engine) or math.isnan(baseline):
        return math.nan
    e, b = max(engine, floor), max(baseline, floor)
    if b == 0:
        return 1.0 if e == 0 else math.inf
    return e / b


def _ratio(criterion: str, tier: Tier, value: float, *, output: str, detail: str) -> list[Finding]:
    """The finding (none or one) for an engine/baseline ratio."""
    ratio = RatioThreshold(tier=tier, criterion=criterion, detail=detail)
    f = threshold_finding(ratio, value, suite=SUITE, output=output)
    return [f] if f else []


def run_baseline(
    engine: Backend,
    baseline: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    chunks: int | None = None,
    warmup: int = DEFAULT_WARMUP,
) -> SuiteResult:
    """Run both engines over the same chunks, then judge the ratios the contract sets."""
    result = SuiteResult(suite=SUITE)
    limit = int(chunks if chunks is not None else contract.latency.iterations or 0) or None
    metrics = {spec.name: contract.tolerance(spec.name).metric for spec in contract.outputs}
    runs = [
        EngineRun("engine", engine, probe=DeviceMemoryProbe(engine, attributable=True)),
        EngineRun("baseline", baseline, probe=DeviceMemoryProbe(baseline, attributable=True)),
    ]
    try:
        _alternate(result, runs, contract, records, limit, metrics, warmup)
    except TrtParityError as exc:
        result.error = str(exc)
    infos = [run.backend.info() for run in runs]
    sides = {run.role: run.summary(info) for run, info in zip(runs, infos, strict=True)}
    for run in runs:
        result.findings.extend(_structure_findings(run))
    ratios = _ratios(sides, contract)
    result.findings.extend(_judge(ratios, sides, contract))
    payload = BaselinePayload(
        chunks=result.chunks_run,
        warmup=warmup,
        feeding="reference inputs and reference state on every chunk, same chunks for both",
        metrics=metrics,
        engine=sides["engine"],
        baseline=sides["baseline"],
        ratios=ratios,
    )
    payload.table = table_lines(payload)
    result.payload = payload
    if result.error is None:
        if result.chunks_run:
            result.complete = True
        else:
            result.error = "no chunk ran"
    return result


def _alternate(
    result: SuiteResult,
    runs: Sequence[EngineRun],
    contract: Contract,
    records: Iterable[Record],
    limit: int | None,
    metrics: Mapping[str, str],
    warmup: int,
) -> None:
    """Both engines on the same chunks, taking turns at going first so neither always runs warm."""
    for index, record in enumerate(records):
        if limit is not None and index >= limit:
            break
        if index == 0:
            _warm_up(runs, contract, record, warmup)
        for run in runs if index % 2 == 0 else runs[::-1]:
            run.step(contract, record, metrics)
        result.chunks_run += 1
        if record.stream not in result.streams:
            result.streams.append(record.stream)


def _structure_findings(run: EngineRun) -> list[Finding]:
    """The first structural problems in full, the rest counted in one more finding."""
    found = list(run.problems[:MAX_LISTED])
    if len(run.problems) > MAX_LISTED:
        more = len(run.problems) - MAX_LISTED
        message = f"the {run.role} had {more} more structural problems"
        found.append(Finding(Level.FAIL, SUITE, run.problems[0].output, "structure", message))
    return found


def _warm_up(runs: Sequence[EngineRun], contract: Contract, record: Record, warmup: int) -> None:
    for run in runs:
        feeds = record_feeds(contract, record.inputs, run.backend.inputs, record.where)
        for _ in range(warmup):
            run.backend.reset_state()
            run.backend.run(feeds)


def _ratios(sides: Mapping[str, Mapping[str, Any]], contract: Contract) -> dict[str, Any]:
    eng, base = sides["engine"], sides["baseline"]
    floor = contract.latency.baseline_error_floor
    return {
        "latency_p50": ratio(eng["latency"]["p50_ms"], base["latency"]["p50_ms"]),
        "latency_p95": ratio(eng["latency"]["p95_ms"], base["latency"]["p95_ms"]),
        "latency_mean": ratio(eng["latency"]["mean_ms"], base["latency"]["mean_ms"]),
        "error_p95": {
            k: ratio(eng["error_p95"][k], base["error_p95"].get(k), floor) for k in eng["error_p95"]
        },
        "error_floor": floor,
        "engine_bytes": ratio(eng["engine_bytes"], base["engine_bytes"]),
        "peak_device_bytes": ratio(eng["peak_device_bytes"], base["peak_device_bytes"]),
    }


def _judge(
    ratios: Mapping[str, Any], sides: Mapping[str, Mapping[str, Any]], contract: Contract
) -> list[Finding]:
    findings: list[Finding] = []
    eng, base = sides["engine"], sides["baseline"]
    tier = contract.latency.tier("baseline_ratio")
    if tier is not None:
        detail = (
            f"p50 {fmt_ms(eng['latency']['p50_ms'])} ms vs {fmt_ms(base['latency']['p50_ms'])} ms "
            f"over {eng['latency']['n']} chunks"
        )
        findings += _ratio(
            "latency p50", tier, ratios["latency_p50"], output="engine", detail=detail
        )
    tier = contract.latency.tier("baseline_error")
    if tier is not None:
        for name, value in ratios["error_p95"].items():
            metric = contract.tolerance(name).metric
            detail = f"p95 over chunks of {metric} {eng['error_p95'][name]:.3g} vs {base['error_p95'].get(name, math.nan):.3g}"
            if value == math.inf:
                detail += (
                    "; the baseline matches the reference exactly, set latency.baseline_error_floor"
                )
            findings += _ratio(f"output {name!r} error", tier, value, output=name, detail=detail)
    tier = contract.memory.tier("baseline_device_ratio")
    if tier is not None:
        value = ratios["peak_device_bytes"]
        if math.isnan(value):
            why = (
                eng["device_memory_source"]
                if eng["peak_device_bytes"] is None
                else base["device_memory_source"]
            )
            findings.append(
                Finding(
                    Level.WARN,
                    SUITE,
                    "engine",
                    "peak device memory",
                    f"peak device memory engine/baseline was not measured ({why}), so its limit is unchecked",
                )
            )
        else:
            detail = (
                f"{fmt_bytes(eng['peak_device_bytes'])} vs {fmt_bytes(base['peak_device_bytes'])}"
            )
            findings += _ratio("peak device memory", tier, value, output="engine", detail=detail)
    return findings


def _x(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}x"


def _g(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3g}"


def table_lines(payload: BaselinePayload) -> list[str]:
    """Both engines side by side, with the ratio, for the terminal summary."""
    eng, base, ratios = payload.engine, payload.baseline, payload.ratios
    name_e = f"{eng['backend']} {eng['engine'].rsplit('/', 1)[-1]}"
    name_b = f"{base['backend']} {base['engine'].rsplit('/', 1)[-1]}"
    w = max(16, len(name_e), len(name_b))
    lines = [
        f"baseline: {payload.chunks} chunks, same inputs for both; engine on {eng['device']}, baseline on {base['device']}",
        f"  {'':<26} {name_e:>{w}} {name_b:>{w}} {'ratio':>8}",
    ]

    def row(label: str, a: str, b: str, r: str) -> None:
        lines.append(f"  {label:<26} {a:>{w}} {b:>{w}} {r:>8}")

    for key, label in (
        ("p50_ms", "latency p50 (ms)"),
        ("p95_ms", "latency p95 (ms)"),
        ("mean_ms", "latency mean (ms)"),
    ):
        r = ratios.get(f"latency_{key.removesuffix('_ms')}", math.nan)
        row(label, fmt_ms(eng["latency"][key]), fmt_ms(base["latency"][key]), _x(r))
    for name, value in ratios["error_p95"].items():
        metric = payload.metrics[name]
        row(
            f"{name} {metric} p95",
            _g(eng["error_p95"][name]),
            _g(base["error_p95"].get(name)),
            _x(value),
        )
    row(
        "engine file",
        fmt_bytes(eng["engine_bytes"]),
        fmt_bytes(base["engine_bytes"]),
        _x(ratios["engine_bytes"]),
    )
    row(
        "peak device memory",
        fmt_bytes(eng["peak_device_bytes"]),
        fmt_bytes(base["peak_device_bytes"]),
        _x(ratios["peak_device_bytes"]),
    )
    return lines


def as_stats(raw: Mapping[str, Any]) -> LatencyStats:
    """A side's latency summary back as `LatencyStats` (for reports reading summary.json)."""
    return LatencyStats(**{k: raw[k] for k in LatencyStats.__dataclass_fields__})
