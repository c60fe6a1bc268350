"""Tolerances from evidence: tiers set from the noise of engines the user accepts as correct.

"What atol for this model?" has no general answer; a contract's tiers are guesses until they are
measured. Calibration runs every accepted engine through the gate's own functional and closed-loop
suites, takes the worst value of every statistic the contract judges over all of them, and sets

    fail = max(FAIL_HEADROOM x worst, FLOOR)        warn = max(WARN_HEADROOM x worst, FLOOR / 10)

capped by the input contract's own tiers (never looser unless `loosen`). Headroom 10 on the fail tier
covers an engine not used for calibration that is as correct as those that were (another exporter,
opset or runtime version moves float32 rounding by a small factor, measured in docs/signoff.md);
headroom 3 on the warn tier flags an engine that is noisier than every accepted one. FLOOR (1e-6)
keeps a tier above float32 rounding at unit scale where accepted engines agree bit for bit.

A calibrated contract must still fail every fault in the catalogue: the catalogue is run under the new
tiers and the contract is refused, naming the faults that would pass.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..checks.closed_loop import run_closed_loop
from ..checks.functional import run_functional
from ..contract.model import Contract, Tier, contract_from_json
from ..errors import ConfigError
from ..faults import default_runners, run_catalogue
from ..faults.run import Catch
from ..judge.results import SuiteResult
from ..judge.tiers import percentile
from ..reference.reader import Record

FAIL_HEADROOM = 10.0
WARN_HEADROOM = 3.0
#: Closed loop: the error of a whole run fed its own state. Its worst is a statistic of hundreds of
#: chunks and moved by at most 0.8x between accepted engines, while a state that drifts by half a
#: functional tier per chunk moves it about 5x (docs/signoff.md): 10x would let that drift pass.
LOOP_FAIL_HEADROOM = 3.0
LOOP_WARN_HEADROOM = 2.0
FLOOR = 1e-6
RULE = (
    f"per chunk and p95: fail = max({FAIL_HEADROOM:g} x worst measured, {FLOOR:g}), "
    f"warn = max({WARN_HEADROOM:g} x worst measured, {FLOOR / 10:g}); closed-loop max and mean: "
    f"fail {LOOP_FAIL_HEADROOM:g} x, warn {LOOP_WARN_HEADROOM:g} x worst measured (same floors); "
    "never looser than the input contract unless --loosen"
)

Records = Callable[[], Iterable[Record]]


class CalibrationError(ConfigError):
    """The measurements do not support a contract: an accepted engine fails, or a fault passes."""


@dataclass
class Measured:
    """Per output, the worst value of each judged statistic over every calibration engine."""

    values: dict[str, dict[str, float]] = field(default_factory=dict)
    by_engine: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def add(self, engine: str, output: str, stat: str, value: float) -> None:
        self.by_engine.setdefault(engine, {}).setdefault(output, {})[stat] = value
        here = self.values.setdefault(output, {})
        here[stat] = max(here.get(stat, -math.inf), value)


def measure_engine(
    name: str, backend: Backend, contract: Contract, records: Records, measured: Measured
) -> list[SuiteResult]:
    """Functional (and closed loop where the contract has state) on one accepted engine."""
    results = [run_functional(backend, contract, records())]
    if contract.state:
        backend.reset_state()
        results.append(run_closed_loop(backend, contract, records()))
    for result in results:
        if result.error or not result.complete:
            raise CalibrationError(f"engine {name}: the {result.suite} run stopped: {result.error}")
        _measure(name, result, contract, measured)
    return results


def _measure(name: str, result: SuiteResult, contract: Contract, measured: Measured) -> None:
    for output in contract.output_names:
        series = result.outputs.get(output)
        if series is None:
            continue
        if result.suite == "functional":
            values = series.series(contract.tolerance(output).metric)
            measured.add(name, output, "chunk", max(values))
            measured.add(name, output, "p95", percentile(values, 95))
        else:
            crit = contract.closed_loop.for_output(output)
            metric = (crit.metric if crit else None) or contract.tolerance(output).metric
            values = series.series(metric)
            measured.add(name, output, "loop_max", max(values))
            measured.add(name, output, "loop_mean", _worst_stream_mean(series.chunks, values))


def _worst_stream_mean(chunks: Sequence[str], values: Sequence[float]) -> float:
    streams: dict[str, list[float]] = {}
    for label, v in zip(chunks, values, strict=True):
        streams.setdefault(label.rsplit("#", 1)[0], []).append(v)
    return max(sum(vs) / len(vs) for vs in streams.values())


def calibrated_tier(
    old: Tier | None,
    worst: float,
    *,
    loosen: bool,
    headroom: tuple[float, float] = (WARN_HEADROOM, FAIL_HEADROOM),
) -> Tier | None:
    """The headroom rule (warn, fail multipliers) on one criterion; a criterion the contract does
    not judge stays unjudged."""
    if old is None:
        return None
    fail = max(headroom[1] * worst, FLOOR)
    warn = max(headroom[0] * worst, FLOOR / 10)
    if not loosen:
        fail = fail if old.fail is None else min(fail, old.fail)
        warn = warn if old.warn is None else min(warn, old.warn)
    new_fail = fail if old.fail is not None or loosen else None
    new_warn = warn if old.warn is not None or loosen else None
    if new_fail is not None and new_warn is not None:
        new_warn = min(new_warn, new_fail)
    return Tier(warn=new_warn, fail=new_fail)


def calibrated_raw(
    contract: Contract, measured: Measured, *, engines: Sequence[str], reference: str, loosen: bool
) -> dict[str, Any]:
    """The input contract's JSON with every judged error tier set from `measured`."""
    raw: dict[str, Any] = deepcopy(dict(contract.raw))
    tolerances = raw.setdefault("tolerances", {})
    loop = raw.setdefault("closed_loop", {})
    for output in contract.output_names:
        got = measured.values.get(output, {})
        tol = contract.tolerance(output)
        entry = tolerances.setdefault(output, deepcopy(raw.get("default_tolerance") or {}))
        for stat in ("chunk", "p95"):
            tier = calibrated_tier(getattr(tol, stat), got.get(stat, math.nan), loosen=loosen)
            if tier is not None and stat in got:
                entry[stat] = tier.to_json()
        crit = contract.closed_loop.for_output(output)
        if crit is None or "loop_max" not in got:
            continue
        outs = loop.setdefault("outputs", {})
        drift = outs.setdefault(output, deepcopy(loop.get("default") or {}))
        for key, stat in (("max", "loop_max"), ("mean", "loop_mean")):
            tier = calibrated_tier(
                getattr(crit, key),
                got[stat],
                loosen=loosen,
                headroom=(LOOP_WARN_HEADROOM, LOOP_FAIL_HEADROOM),
            )
            if tier is not None:
                drift[key] = tier.to_json()
    if not loop:
        raw.pop("closed_loop")
    raw["calibration"] = {
        "engines": list(engines),
        "reference": reference,
        "rule": RULE,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loosened": loosen,
        "measured": {
            "worst": measured.values,
            "by_engine": measured.by_engine,
        },
    }
    return raw


def check_engines_pass(contract: Contract, measured: Measured) -> None:
    """Each accepted engine's worst must sit inside the new fail tiers (it can only fail where the
    input contract was already tighter than that engine's measured error: then say so)."""
    for engine, outputs in measured.by_engine.items():
        for output, stats in outputs.items():
            tol = contract.tolerance(output)
            crit = contract.closed_loop.for_output(output)
            limits = {
                "chunk": tol.chunk,
                "p95": tol.p95,
                "loop_max": crit.max if crit else None,
                "loop_mean": crit.mean if crit else None,
            }
            for stat, value in stats.items():
                tier = limits.get(stat)
                if tier is not None and tier.fail is not None and not value <= tier.fail:
                    raise CalibrationError(
                        f"engine {engine}: output {output!r} {stat} {value:.3g} is above the input "
                        f"contract's fail tier {tier.fail:g}: an engine accepted as correct fails "
                        "it (re-run with --loosen to let the measurement widen the tier)"
                    )


def check_catalogue(backend: Backend, contract: Contract, records: Records) -> list[Catch]:
    """Run the fault catalogue (no latency faults: calibration sets error tiers) under `contract`;
    refuse it when the clean engine fails or any applicable fault passes."""
    runners = default_runners(contract, latency=False)
    rows = run_catalogue(
        backend,
        contract,
        records,
        runners,
        select=lambda faults: [f for f in faults if not f.name.startswith("latency")],
    )
    clean = [r for r in rows if r.fault == "clean" and r.caught is False]
    if clean:
        raise CalibrationError(
            f"the first engine fails the calibrated contract: {clean[0].message}"
        )
    missed = [r for r in rows if r.fault != "clean" and r.caught is False]
    if missed:
        names = ", ".join(f"{r.fault} ({r.message})" for r in missed)
        raise CalibrationError(f"under the calibrated tiers these catalogue faults pass: {names}")
    return rows


def calibrate(
    engines: Mapping[str, Backend],
    contract: Contract,
    records: Records,
    *,
    reference: str,
    loosen: bool = False,
) -> tuple[dict[str, Any], Measured, list[Catch]]:
    """The calibrated contract's JSON (validated), what was measured, and the catalogue's rows."""
    if not engines:
        raise CalibrationError("calibration needs at least one engine accepted as correct")
    measured = Measured()
    for name, backend in engines.items():
        measure_engine(name, backend, contract, records, measured)
    raw = calibrated_raw(
        contract, measured, engines=list(engines), reference=reference, loosen=loosen
    )
    new = contract_from_json(raw, path=contract.path)
    check_engines_pass(new, measured)
    rows = check_catalogue(next(iter(engines.values())), new, records)
    return raw, measured, rows
