"""Sign-off against a previous run: is this engine worse than the one we shipped?

Fixed tiers answer "is the engine close enough to the reference"; they let an engine 35x worse than
the released one pass as long as both sit inside the tiers, and that is how regressions across
TensorRT upgrades ship. This module reads a previous run's summary.json and sets this run's errors
and latency beside the previous ones, judged by the contract's `regression` section:

* error growth (this run over the previous) against `error_growth`, only where the new error exceeds
  `error_floor` x the output's fail tier for that statistic: growth from 1e-8 to 1e-7 is noise;
* latency growth against `latency_growth`, only when both runs' latency was measured stably (the
  latency suite's `extra.stability.outcome` is "stable"): an unstable machine is no evidence.

The result is the project's `SuiteResult` (suite "regression") plus a typed table and the engine
identity changes for the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.model import Contract, Tier
from ..errors import ConfigError
from ..judge.payloads import RegressionPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level, judge
from ..util import jsonfloat

SUITE = "regression"
SUMMARY_TAG = "trtparity-summary/1"
#: The suites whose per-output error aggregates are compared, and the statistics of each.
ERROR_SUITES = ("functional", "closed_loop")
STATISTICS = ("worst", "p95", "mean")
#: The latency statistics compared (milliseconds, from the latency suite's extra block).
LATENCY_KEYS = ("p50_ms", "p95_ms")
#: Environment keys that identify the engine and what ran it, with the words the report uses.
IDENTITY = (
    ("engine_sha256", "engine sha256"),
    ("backend", "backend"),
    ("version", "runtime version (TensorRT / ONNX Runtime / PyTorch)"),
    ("built_by", "TensorRT that built the engine"),
    ("provider", "ONNX Runtime provider"),
    ("device", "device (GPU or CPU)"),
    ("compute_capability", "compute capability"),
    ("driver", "driver"),
    ("cuda", "CUDA"),
    ("trtparity", "pytest-trtparity"),
)


class PreviousRunError(ConfigError):
    """The previous run's summary cannot be compared with this run."""


@dataclass(frozen=True)
class RegressionRow:
    """One line of the "against the previous release" table."""

    check: str  # functional, closed_loop, latency
    output: str  # an output name, or "latency"
    statistic: str  # e.g. "max_abs p95", "p95_ms"
    current: float | None
    previous: float | None
    ratio: float | None
    level: Level
    judged: bool
    note: str = ""


@dataclass(frozen=True)
class IdentityChange:
    """One field of the engine's identity in both runs."""

    key: str
    label: str
    previous: str | None
    current: str | None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


@dataclass
class RegressionReport:
    result: SuiteResult
    rows: list[RegressionRow] = field(default_factory=list)
    identity: list[IdentityChange] = field(default_factory=list)
    previous_path: Path | None = None
    previous_run: str | None = None


# -- reading the previous run -----------------------------------------------------------------


def load_previous(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The previous run's summary (from an artifacts folder or its summary.json) and its path.

    Refused, in one sentence naming file and field: missing, unreadable, not a summary, or a run that
    had not finished (`status` in_progress: its numbers are partial)."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PreviousRunError(f"{p}: previous run's summary not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreviousRunError(f"{p}: previous run's summary is unreadable: {exc}") from None
    if not isinstance(raw, dict) or raw.get("trtparity") != SUMMARY_TAG:
        got = raw.get("trtparity") if isinstance(raw, dict) else type(raw).__name__
        raise PreviousRunError(f"{p}: field 'trtparity' is {got!r}, not {SUMMARY_TAG!r}")
    if raw.get("status") != "complete":
        raise PreviousRunError(
            f"{p}: field 'status' is {raw.get('status')!r}: the previous run had not finished"
        )
    return raw, p


def check_same_contract(
    current: Mapping[str, Any], previous: Mapping[str, Any], contract: Contract, where: Path
) -> None:
    """Refuse a previous run of another model or contract: its outputs must be this contract's,
    and, where its contract file can still be read, name the same model."""
    prev_outputs = sorted(previous.get("thresholds", {}))
    outputs = sorted(contract.output_names)
    if prev_outputs != outputs:
        raise PreviousRunError(
            f"{where}: field 'thresholds' judges outputs {prev_outputs}, this contract's are "
            f"{outputs}: a run of another contract"
        )
    model = _contract_model(previous.get("inputs", {}).get("contract"))
    if model is not None and model != contract.model:
        raise PreviousRunError(
            f"{where}: field 'inputs.contract' names model {model!r}, this run's is "
            f"{contract.model!r}"
        )


def _contract_model(path: Any) -> str | None:
    if not isinstance(path, str):
        return None
    try:
        model = json.loads(Path(path).read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


# -- comparing --------------------------------------------------------------------------------


def compare_runs(
    current: Mapping[str, Any],
    previous: Mapping[str, Any],
    contract: Contract,
    *,
    previous_path: Path | None = None,
) -> RegressionReport:
    """This run's summary against the previous run's, judged by `contract.regression`."""
    where = previous_path or Path("previous summary.json")
    check_same_contract(current, previous, contract, where)
    result = SuiteResult(suite=SUITE)
    report = RegressionReport(
        result, previous_path=previous_path, previous_run=previous.get("run_id")
    )
    for suite in ERROR_SUITES:
        for output in contract.output_names:
            report.rows += _error_rows(current, previous, contract, suite, output)
    report.rows += _latency_rows(current, previous, contract)
    report.identity = identity_changes(current, previous)
    result.findings = [_finding(r, contract) for r in report.rows if r.level is not Level.PASS]
    result.chunks_run = len(report.rows)
    result.streams = sorted({r.check for r in report.rows})
    if not report.rows:
        result.error = f"{where}: neither run has error aggregates or latency to compare"
    result.payload = RegressionPayload(
        previous_run=report.previous_run,
        rows=rows_json(report.rows),
        table=render_markdown(report),
    )
    result.finish()
    return report


def _aggregate(summary: Mapping[str, Any], suite: str, output: str) -> Mapping[str, Any] | None:
    agg = summary.get("suites", {}).get(suite, {}).get("aggregates", {}).get(output)
    return agg if isinstance(agg, Mapping) else None


def fail_limit(contract: Contract, suite: str, output: str, statistic: str) -> float | None:
    """The fail tier this statistic is judged against in its own suite (the floor's scale)."""
    tol = contract.tolerance(output)
    if suite == "closed_loop":
        crit = contract.closed_loop.for_output(output)
        if crit is not None:
            tier = crit.mean if statistic == "mean" else crit.max
            if tier is not None and tier.fail is not None:
                return tier.fail
    tier = tol.p95 if statistic == "p95" else tol.chunk
    for t in (tier, tol.chunk, tol.p95):
        if t is not None and t.fail is not None:
            return t.fail
    return None


def _error_rows(
    current: Mapping[str, Any],
    previous: Mapping[str, Any],
    contract: Contract,
    suite: str,
    output: str,
) -> list[RegressionRow]:
    now, before = _aggregate(current, suite, output), _aggregate(previous, suite, output)
    if now is None and before is None:
        return []
    metric = str((now or before or {}).get("metric", "error"))
    spec = contract.regression
    rows = []
    for stat in STATISTICS:
        cur = jsonfloat.decode(now.get(stat)) if now else None
        prev = jsonfloat.decode(before.get(stat)) if before else None
        limit = fail_limit(contract, suite, output, stat)
        floor = None if limit is None else spec.error_floor * limit
        rows.append(
            _growth_row(
                suite, output, f"{metric} {stat}", cur, prev, spec.error_growth, floor=floor
            )
        )
    return rows


def _growth_row(
    check: str,
    output: str,
    statistic: str,
    cur: float | None,
    prev: float | None,
    tier: Tier,
    *,
    floor: float | None = None,
    unstable: str = "",
) -> RegressionRow:
    if cur is None or prev is None:
        side = "this run" if cur is None else "the previous run"
        return RegressionRow(
            check, output, statistic, cur, prev, None, Level.PASS, False, f"not in {side}"
        )
    ratio = _ratio(cur, prev)
    if unstable:
        return RegressionRow(
            check, output, statistic, cur, prev, ratio, Level.PASS, False, unstable
        )
    if floor is not None and not math.isnan(cur) and cur <= floor:
        note = f"below the floor {floor:.3g}"
        return RegressionRow(check, output, statistic, cur, prev, ratio, Level.PASS, False, note)
    level, _ = judge(tier, ratio)
    return RegressionRow(check, output, statistic, cur, prev, ratio, level, True)


def _ratio(cur: float, prev: float) -> float:
    if math.isnan(cur) or math.isnan(prev):
        return math.nan
    if prev == 0:
        return 1.0 if cur == 0 else math.inf
    return cur / prev


def _latency_rows(
    current: Mapping[str, Any], previous: Mapping[str, Any], contract: Contract
) -> list[RegressionRow]:
    now = current.get("suites", {}).get("latency", {}).get("extra")
    before = previous.get("suites", {}).get("latency", {}).get("extra")
    if not isinstance(now, Mapping) and not isinstance(before, Mapping):
        return []
    now, before = now or {}, before or {}
    unstable = _instability(now, "this run") or _instability(before, "the previous run")
    return [
        _growth_row(
            "latency",
            "latency",
            key,
            jsonfloat.decode(now.get(key)),
            jsonfloat.decode(before.get(key)),
            contract.regression.latency_growth,
            unstable=unstable,
        )
        for key in LATENCY_KEYS
    ]


def _instability(extra: Mapping[str, Any], who: str) -> str:
    outcome = extra.get("stability", {}).get("outcome") if extra else None
    return "" if outcome == "stable" else f"not judged: {who}'s latency is {outcome or 'missing'}"


def _finding(row: RegressionRow, contract: Contract) -> Finding:
    tier = (
        contract.regression.latency_growth
        if row.check == "latency"
        else contract.regression.error_growth
    )
    crossed = tier.fail if row.level is Level.FAIL else tier.warn
    level = row.level
    tail = ""
    if level is Level.FAIL and not contract.regression.blocking:
        level, tail = Level.WARN, " (non-blocking)"
    word = "fail" if row.level is Level.FAIL else "warn"
    assert row.current is not None and row.previous is not None and row.ratio is not None
    subject = (
        f"latency {row.statistic}"
        if row.check == "latency"
        else f"output {row.output!r}: {row.check} {row.statistic}"
    )
    message = (
        f"{subject} {_g(row.current)} is {_times(row.ratio)} the previous release's "
        f"{_g(row.previous)}, above the {word} tier {_g(crossed)}x{tail}"
    )
    return Finding(
        level, SUITE, row.output, f"{row.check} {row.statistic} growth", message, row.ratio, crossed
    )


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _times(ratio: float) -> str:
    if math.isinf(ratio):
        return "infinitely many times (previous 0)"
    return f"{ratio:.3g}x" if ratio < 10 else f"{ratio:.0f}x"


# -- identity -----------------------------------------------------------------------------------


def identity_changes(
    current: Mapping[str, Any], previous: Mapping[str, Any]
) -> list[IdentityChange]:
    """The engine identity fields present in either run's environment block, changed or not."""
    now, before = current.get("environment", {}), previous.get("environment", {})
    out = []
    for key, label in IDENTITY:
        a, b = before.get(key), now.get(key)
        if a is None and b is None:
            continue
        out.append(IdentityChange(key, label, _text(a), _text(b)))
    return out


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


# -- report --------------------------------------------------------------------------------------


def render_markdown(report: RegressionReport) -> list[str]:
    """The report's "against the previous release" section: the table, then the identity diff."""
    prev = report.previous_run or "?"
    lines = [f"## Against the previous release (run {prev})", ""]
    lines += [
        "| check | output | statistic | this run | previous | ratio | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        ratio = "-" if r.ratio is None else _times(r.ratio)
        verdict = r.level.word if r.judged else (r.note or "not judged")
        lines.append(
            f"| {r.check} | {r.output} | {r.statistic} | {_g(r.current)} | {_g(r.previous)} "
            f"| {ratio} | {verdict} |"
        )
    lines += ["", "| identity | previous | this run |", "|---|---|---|"]
    for c in report.identity:
        mark = " (changed)" if c.changed else ""
        lines.append(f"| {c.label}{mark} | {c.previous or '-'} | {c.current or '-'} |")
    return lines


def regression_check(
    current: Mapping[str, Any], previous: str | Path, contract: Contract
) -> RegressionReport:
    """`--trt-previous DIR`: load the previous summary and compare this run's with it."""
    raw, path = load_previous(previous)
    return compare_runs(current, raw, contract, previous_path=path)


def rows_json(rows: Sequence[RegressionRow]) -> list[dict[str, Any]]:
    """The table as JSON for summary.json's regression suite (NaN and inf as strings)."""
    return [
        {
            "check": r.check,
            "output": r.output,
            "statistic": r.statistic,
            "current": jsonfloat.encode_optional(r.current),
            "previous": jsonfloat.encode_optional(r.previous),
            "ratio": jsonfloat.encode_optional(r.ratio),
            "level": r.level.word,
            "judged": r.judged,
            "note": r.note,
        }
        for r in rows
    ]
