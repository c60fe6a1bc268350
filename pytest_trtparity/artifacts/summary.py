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
from ..gate import Level, percentile, verdict_of
from ..results import SuiteResult
from .atomic import write_text

SUMMARY_TAG = "trtparity-summary/1"


def output_aggregates(result: SuiteResult, metric: str, within: float | None) -> dict[str, dict[str, Any]]:
    """Per output: worst, p95, mean of the per-chunk `metric`, and the pass rate when defined."""
    out: dict[str, dict[str, Any]] = {}
    for name, series in result.outputs.items():
        values = series.series(metric)
        finite = [v for v in values if not math.isnan(v)]
        agg: dict[str, Any] = {
            "metric": metric,
            "chunks": len(values),
            "worst": max(values, key=lambda v: math.inf if math.isnan(v) else v) if values else None,
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


def _clean(obj: Any) -> Any:
    """JSON has no NaN or Infinity: write them as strings, so the file stays standard JSON."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def build_summary(
    *,
    results: Sequence[SuiteResult],
    environment: Mapping[str, Any],
    inputs: Mapping[str, Any],
    contract_raw: Mapping[str, Any] | None,
    aggregates: Mapping[str, Any],
    errors: Sequence[str] = (),
    strict: bool = False,
) -> dict[str, Any]:
    levels = [r.verdict for r in results]
    if errors or not results:
        levels.append(Level.FAIL)
    verdict = verdict_of(levels)
    if strict and verdict is Level.WARN:
        verdict = Level.FAIL
    return _clean(
        {
            "trtparity": SUMMARY_TAG,
            "verdict": verdict.word,
            "strict": strict,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": dict(inputs),
            "environment": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "trtparity": __version__,
                **environment,
            },
            "errors": list(errors) + ([] if results else ["no gating suite produced a result"]),
            "suites": {r.suite: {**r.to_json(), "aggregates": aggregates.get(r.suite, {})} for r in results},
            "criteria": {
                "tolerances": (contract_raw or {}).get("tolerances", {}),
                "default_tolerance": (contract_raw or {}).get("default_tolerance"),
                "invariants": (contract_raw or {}).get("invariants", []),
                "closed_loop": (contract_raw or {}).get("closed_loop", {}),
                "latency": (contract_raw or {}).get("latency", {}),
                "memory": (contract_raw or {}).get("memory", {}),
            },
        }
    )


def write_summary(folder: Path, summary: Mapping[str, Any]) -> Path:
    return write_text(folder / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
