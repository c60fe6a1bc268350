"""The short summary printed at the end of a gate run: per suite, side by side, drift, artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..util import fmt
from .model import DiagnosisEntry, RunView, SuiteView

#: Findings printed per suite before the rest are only counted.
MAX_FINDINGS = 5

_num = fmt.short
_factor = fmt.ratio_short


def suite_lines(body: SuiteView) -> list[str]:
    """One suite: its verdict (`inconclusive` where latency could not judge), its per-output
    aggregates, drift and harness lines, and its first findings."""
    aggs = body.aggregates
    lines = [f"{body.name}: {body.outcome} ({body.chunks_run} chunks)"]
    if aggs:
        lines.append(
            f"  {'output':<28} {'metric':<10} {'worst':>10} {'p95':>10} {'mean':>10} {'pass rate':>9}"
        )
    for name, agg in aggs.items():
        rate = agg.get("pass_rate")
        lines.append(
            f"  {name:<28} {agg.get('metric', ''):<10} {_num(agg.get('worst')):>10} "
            f"{_num(agg.get('p95')):>10} {_num(agg.get('mean')):>10} "
            f"{'-' if not isinstance(rate, float | int) else f'{rate:.0%}':>9}"
        )
    lines += drift_lines(body.drift)
    lines += harness_lines(body.harness)
    findings = body.findings
    for f in findings[:MAX_FINDINGS]:
        lines.append(f"  {f.level.upper()}: {f.message}")
    if len(findings) > MAX_FINDINGS:
        lines.append(f"  ... {len(findings) - MAX_FINDINGS} more findings in summary.json")
    if body.error:
        lines.append(f"  ERROR: {body.error}")
    return lines


def harness_lines(harness: Mapping[str, Any] | None) -> list[str]:
    """What the gate's own loop cost a chunk, next to the engine step it wraps."""
    if not harness:
        return []
    share = harness.get("overhead_share")
    return [
        f"  harness: {_num(harness.get('overhead_ms'))} ms a chunk around an engine step of "
        f"{_num(harness.get('engine_step_ms'))} ms"
        + (f" ({share:.1%})" if isinstance(share, float) and share == share else "")
        + f"; comparison {_num(harness.get('compare_ms'))} ms on a worker thread"
    ]


def drift_lines(drift: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for output, stats in drift.items():
        streams = stats.get("streams", {})
        for stream, st in streams.items():
            name = f"{output} [{stream}]" if len(streams) > 1 else output
            trend = st.get("trend")
            text = f"  drift {name}: max {_num(st.get('max'))}, mean {_num(st.get('mean'))}"
            if trend:
                verdict = "significant" if trend.get("significant") else "not significant"
                text += (
                    f", trend {_num(trend.get('slope'))}/chunk (p={_num(trend.get('p_value'))}, {verdict}"
                    f" at alpha {_num(st.get('alpha'))}), growth {_num(trend.get('growth'))} of bound"
                )
            lines.append(text)
    return lines


def comparison_lines(comparison: Mapping[str, Any]) -> list[str]:
    """Functional and closed-loop error side by side, when both ran."""
    rows = {k: v for k, v in comparison.items() if v.get("functional") and v.get("closed_loop")}
    if not rows:
        return []
    lines = [
        "functional vs closed loop:",
        f"  {'output':<28} {'metric':<10} {'func worst':>10} {'loop worst':>10} {'x':>6} "
        f"{'func mean':>10} {'loop mean':>10} {'x':>6}",
    ]
    for name, c in rows.items():
        f, cl, lf = c["functional"], c["closed_loop"], c.get("loop_factor", {})
        lines.append(
            f"  {name:<28} {c.get('metric') or '':<10} {_num(f.get('worst')):>10} {_num(cl.get('worst')):>10} "
            f"{_factor(lf.get('worst')):>6} {_num(f.get('mean')):>10} {_num(cl.get('mean')):>10} "
            f"{_factor(lf.get('mean')):>6}"
        )
    return lines


def diagnosis_line(entry: DiagnosisEntry) -> str:
    """One line per explained output: where it first diverged, or why it was not localized."""
    from ..explain.render import render_line

    if entry.made is not None:
        return render_line(entry.made)
    return f"explain {entry.suite} {entry.output!r} on chunk {entry.chunk}: {entry.why}"


def summary_lines(run: RunView, path: str | None) -> list[str]:
    lines: list[str] = []
    for body in run.suites.values():
        lines += suite_lines(body)
    lines += comparison_lines(run.comparison)
    lines += [diagnosis_line(d) for d in run.diagnosis]
    if run.not_run:
        lines.append("not run: " + "; ".join(f"{k}: {v}" for k, v in run.not_run.items()))
    for err in run.errors:
        lines.append(f"ERROR: {err}")
    artifacts = run.artifacts
    if artifacts.get("folder"):
        drawn = len(artifacts.get("plots", {})) + sum(1 for d in run.diagnosis if d.plot)
        lines.append(
            f"artifacts: {artifacts['folder']} (summary.json, report.md, {drawn} plot(s)), "
            f"run {run.run_id}"
        )
    lines.append(f"verdict: {run.verdict.upper()}" + (f"  ({path})" if path else ""))
    return lines
