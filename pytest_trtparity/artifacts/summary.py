"""summary.json: the machine-readable verdict of one gate run."""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..contract.model import Contract, Tier
from ..judge.results import SuiteResult
from ..judge.tiers import Level, percentile, verdict_of
from ..util.atomic import write_text
from ..util.jsonfloat import clean
from ..util.progress import ci_env
from .run_folder import new_run_id

SUMMARY_TAG = "trtparity-summary/1"
#: `status` of a summary: written at a run's start, replaced at its end (docs/artifacts.md).
IN_PROGRESS, COMPLETE = "in_progress", "complete"
#: The verdict of a run that has not finished: never pass, never an earlier run's verdict.
RUNNING = "running"
SCHEMA_RESOURCE = "summary.schema.json"
#: The two suites whose errors are shown side by side: how much does running on its own state add?
SIDE_BY_SIDE = ("functional", "closed_loop")


def output_aggregates(
    result: SuiteResult, metric: str, within: float | None
) -> dict[str, dict[str, Any]]:
    """Per output: worst, p95, mean of the per-chunk `metric`, and the pass rate when defined."""
    out: dict[str, dict[str, Any]] = {}
    for name, series in result.outputs.items():
        values = series.series(metric)
        finite = [v for v in values if not math.isnan(v)]
        agg: dict[str, Any] = {
            "metric": metric,
            "chunks": len(values),
            "worst": max(values, key=lambda v: math.inf if math.isnan(v) else v)
            if values
            else None,
            "worst_chunk": series.chunks[_worst_index(values)] if values else None,
            "p95": percentile(finite, 95) if finite and len(finite) == len(values) else None,
            "mean": sum(finite) / len(finite) if finite and len(finite) == len(values) else None,
        }
        for other in ("max_abs", "p99_abs", "max_rel", "rmse", "cosine"):
            vals = series.series(other)
            if vals:
                agg[f"max_{other}" if other != "cosine" else "min_cosine"] = (
                    min(vals) if other == "cosine" else max(vals)
                )
        if within is not None and values:
            agg["pass_rate"] = sum(1 for v in values if v <= within) / len(values)
        out[name] = agg
    return out


def _worst_index(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: math.inf if math.isnan(values[i]) else values[i])


def comparison(aggregates: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per output: functional and closed-loop worst, p95 and mean side by side, and their ratio.

    The ratio (closed loop over functional) says how much error the loop adds by feeding the engine
    its own state; it is None where either side is missing or the functional error is zero.
    """
    outputs: list[str] = []
    for suite in SIDE_BY_SIDE:
        outputs += [o for o in aggregates.get(suite, {}) if o not in outputs]
    out: dict[str, dict[str, Any]] = {}
    for name in outputs:
        sides = {suite: aggregates.get(suite, {}).get(name) for suite in SIDE_BY_SIDE}
        metric = next((a["metric"] for a in sides.values() if a), None)
        entry: dict[str, Any] = {"metric": metric}
        for suite, agg in sides.items():
            entry[suite] = (
                None if agg is None else {k: agg.get(k) for k in ("worst", "p95", "mean")}
            )
        func, loop = sides["functional"], sides["closed_loop"]
        entry["loop_factor"] = {
            k: _ratio(loop.get(k) if loop else None, func.get(k) if func else None)
            for k in ("worst", "mean")
        }
        out[name] = entry
    return out


def _ratio(num: Any, den: Any) -> float | None:
    if not isinstance(num, int | float) or not isinstance(den, int | float):
        return None
    if den == 0 or math.isnan(num) or math.isnan(den):
        return None
    return float(num) / float(den)


def _tier(tier: Tier | None) -> dict[str, float] | None:
    return None if tier is None else tier.to_json()


def thresholds(contract: Contract) -> dict[str, dict[str, Any]]:
    """Per output, the limits that were actually applied, after defaults were resolved."""
    out: dict[str, dict[str, Any]] = {}
    for spec in contract.outputs:
        tol = contract.tolerance(spec.name)
        entry: dict[str, Any] = {
            "tolerance": {
                "metric": tol.metric,
                "chunk": _tier(tol.chunk),
                "p95": _tier(tol.p95),
                "pass_rate": _tier(tol.pass_rate),
                "blocking": tol.blocking,
            },
            "closed_loop": None,
        }
        crit = contract.closed_loop.for_output(spec.name)
        if crit is not None:
            entry["closed_loop"] = {
                "metric": crit.metric or tol.metric,
                "max": _tier(crit.max),
                "mean": _tier(crit.mean),
                "trend": None
                if crit.trend is None
                else {
                    "alpha": crit.trend.alpha,
                    "growth": _tier(crit.trend.growth),
                    "min_chunks": crit.trend.min_chunks,
                },
                "blocking": crit.blocking,
            }
        out[spec.name] = entry
    return out


def ci_name(environ: Mapping[str, str] | None = None) -> str | None:
    """Which CI ran the gate, for the report's sign-off; None on a developer's machine."""
    import os

    env = os.environ if environ is None else environ
    for var, name in (
        ("GITHUB_ACTIONS", "github-actions"),
        ("GITLAB_CI", "gitlab-ci"),
        ("JENKINS_URL", "jenkins"),
        ("BUILDKITE", "buildkite"),
    ):
        if env.get(var):
            return name
    return "ci" if ci_env(env) else None


def build_summary(
    *,
    results: Sequence[SuiteResult],
    environment: Mapping[str, Any],
    inputs: Mapping[str, Any],
    contract_raw: Mapping[str, Any] | None,
    aggregates: Mapping[str, Any],
    errors: Sequence[str] = (),
    strict: bool = False,
    contract: Contract | None = None,
    artifacts: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    started: str | None = None,
    status: str = COMPLETE,
    not_run: Mapping[str, str] | None = None,
    diagnosis: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The summary of a finished run (`status` complete), or, with `status` in_progress, the one a
    run writes at its start: verdict `running`, no errors yet. `diagnosis` (the explained outputs)
    is written only when there is one, so a run with nothing to explain reads as before."""
    running = status == IN_PROGRESS
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if not running and not results:
        errors = [*errors, "no gating suite produced a result"]
    summary: dict[str, Any] = clean(
        {
            "trtparity": SUMMARY_TAG,
            "status": status,
            "run_id": run_id or new_run_id(),
            "verdict": RUNNING if running else run_verdict(results, errors, strict).word,
            "strict": strict,
            "started": started or now,
            "created": now,
            "inputs": dict(inputs),
            "environment": _environment(environment),
            "errors": list(errors),
            "suites": {
                r.suite: {**r.to_json(), "aggregates": aggregates.get(r.suite, {})} for r in results
            },
            "comparison": comparison(aggregates),
            "thresholds": thresholds(contract) if contract is not None else {},
            "criteria": criteria(contract_raw or {}),
            "not_run": dict(not_run or {}),
            "artifacts": dict(artifacts or {}),
        }
    )
    if diagnosis and not running:
        summary["diagnosis"] = [dict(d) for d in diagnosis]
    return summary


def run_verdict(results: Sequence[SuiteResult], errors: Sequence[str], strict: bool) -> Level:
    """The run's verdict: the worst suite's, FAIL on an error or when nothing ran, and FAIL for a
    warning under --trt-strict."""
    levels = [r.verdict for r in results]
    if errors or not results:
        levels.append(Level.FAIL)
    verdict = verdict_of(levels)
    return Level.FAIL if strict and verdict is Level.WARN else verdict


def _environment(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Where the run ran: Python, platform, this package, CI, then what backends and hooks added."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "trtparity": __version__,
        "ci": ci_name(),
        **facts,
    }


#: The contract's sections a summary copies verbatim, so a reader sees what was asked for.
CRITERIA = ("tolerances", "default_tolerance", "invariants", "closed_loop", "latency", "memory")
_EMPTY: dict[str, Any] = {"invariants": [], "default_tolerance": None}


def criteria(contract_raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: contract_raw.get(k, _EMPTY.get(k, {})) for k in CRITERIA}


def dumps(summary: Mapping[str, Any]) -> str:
    """summary.json's text. Raises ValueError for what JSON cannot hold (the caller falls back)."""
    return json.dumps(summary, indent=2, allow_nan=False) + "\n"


def write_summary(folder: Path, summary: Mapping[str, Any]) -> Path:
    return write_text(folder / "summary.json", dumps(summary))


def schema() -> dict[str, Any]:
    """The JSON Schema of summary.json (shipped in the package; contracts/ holds a copy)."""
    from importlib import resources

    text = resources.files("pytest_trtparity.schemas").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
