"""The short table printed at the end of a gate run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if v is None:
        return "-"
    return str(v)


def summary_lines(summary: Mapping[str, Any], path: str | None) -> list[str]:
    lines: list[str] = []
    for suite, body in summary.get("suites", {}).items():
        aggs = body.get("aggregates", {})
        lines.append(f"{suite}: {body.get('verdict')} ({body.get('chunks_run')} chunks)")
        if aggs:
            lines.append(f"  {'output':<28} {'metric':<10} {'worst':>10} {'p95':>10} {'mean':>10} {'pass rate':>9}")
        for name, agg in aggs.items():
            rate = agg.get("pass_rate")
            lines.append(
                f"  {name:<28} {agg.get('metric', ''):<10} {_num(agg.get('worst')):>10} "
                f"{_num(agg.get('p95')):>10} {_num(agg.get('mean')):>10} "
                f"{'-' if rate is None else f'{rate:.0%}':>9}"
            )
        for f in body.get("findings", [])[:5]:
            lines.append(f"  {f['level'].upper()}: {f['message']}")
        extra = len(body.get("findings", [])) - 5
        if extra > 0:
            lines.append(f"  ... {extra} more findings in summary.json")
    for err in summary.get("errors", []):
        lines.append(f"ERROR: {err}")
    lines.append(f"verdict: {str(summary.get('verdict', '?')).upper()}" + (f"  ({path})" if path else ""))
    return lines
