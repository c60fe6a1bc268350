"""report.md: the sign-off page, one check or cross per item of the integration checklist.

The person who signs off a release reads this, not the JSON: each item says what was required,
whether it held, and the numbers behind the answer (the limit next to the value), and the stability
plots are linked below. Everything comes from summary.json, so the two can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .atomic import write_text

PASS, WARN, FAIL, NONE = "pass", "warn", "fail", "none"
MARK = {PASS: "\u2705", WARN: "\u26a0\ufe0f", FAIL: "\u274c", NONE: "\u2796"}
WORD = {PASS: "pass", WARN: "pass with warnings", FAIL: "FAIL", NONE: "not measured"}
#: Findings about what the engine is, not how close it is: the checklist's "contract assertions".
ASSERTIONS = ("binding", "invariant", "structure", "missing output")
MAX_FINDINGS = 50

Summary = Mapping[str, Any]


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:.{digits}g}"
    return str(v)


def _tier(t: Mapping[str, Any] | None) -> str:
    if not t:
        return "no limit"
    parts = [f"{k} {num(t[k])}" for k in ("warn", "fail") if k in t]
    return ", ".join(parts)


def _worst(levels: Sequence[str]) -> str:
    order = [PASS, WARN, FAIL]
    return max(levels, key=order.index) if levels else PASS


def _suite(summary: Summary, name: str) -> Mapping[str, Any] | None:
    suite: Mapping[str, Any] | None = summary.get("suites", {}).get(name)
    return suite


def _findings(
    suite: Mapping[str, Any] | None, *, output: str | None = None, assertions: bool | None = None
) -> list[Mapping[str, Any]]:
    if suite is None:
        return []
    out = []
    for f in suite.get("findings", []):
        if output is not None and f["output"] != output:
            continue
        is_assertion = f["criterion"] in ASSERTIONS
        if assertions is not None and is_assertion != assertions:
            continue
        out.append(f)
    return out


def _status(findings: Sequence[Mapping[str, Any]], suite: Mapping[str, Any] | None) -> str:
    if suite is None:
        return NONE
    levels = [str(f["level"]) for f in findings]
    if suite.get("error") or not suite.get("complete"):
        levels.append(FAIL)
    return _worst(levels)


# -- the sign-off items -----------------------------------------------------------------------


def item_assertions(summary: Summary) -> tuple[str, str, list[str]]:
    contract = _suite(summary, "contract")
    chunk_suites = [(n, s) for n in ("functional", "closed_loop") if (s := _suite(summary, n))]
    if contract is None and not chunk_suites:
        return (
            NONE,
            "All contract assertions pass",
            ["no suite checked the engine against its contract"],
        )
    lines: list[str] = []
    levels: list[str] = []
    if contract is not None:
        found = _findings(contract)
        levels.append(_status(found, contract))
        lines.append(
            f"engine inputs and outputs vs the contract: {len(found)} mismatch(es)"
            + (f" ({contract['error']})" if contract.get("error") else "")
        )
    for name, suite in chunk_suites:
        found = _findings(suite, assertions=True)
        levels.append(_status(found, suite))
        kinds = {k: sum(1 for f in found if f["criterion"] == k) for k in ASSERTIONS[1:]}
        detail = ", ".join(f"{v} {k}" for k, v in kinds.items())
        lines.append(
            f"{name}: {suite.get('chunks_run', 0)} chunks checked, {detail} violation(s)"
            + ("" if suite.get("complete") else f"; stopped early: {suite.get('error')}")
        )
    chunks = max((s.get("chunks_run", 0) for _, s in chunk_suites), default=0)
    return _worst(levels), f"All contract assertions pass ({chunks} chunks)", lines


def item_tolerance(summary: Summary) -> tuple[str, str, list[str]]:
    suite = _suite(summary, "functional")
    title = "Output errors within tolerance (p95 over chunks)"
    if suite is None:
        return NONE, title, ["functional mode did not run"]
    lines: list[str] = []
    levels = [_status([], suite)]
    thresholds = summary.get("thresholds", {})
    for output, agg in suite.get("aggregates", {}).items():
        tol = thresholds.get(output, {}).get("tolerance", {})
        found = _findings(suite, output=output, assertions=False)
        levels.append(_status(found, suite))
        rate = agg.get("pass_rate")
        chunk = tol.get("chunk") or {}
        text = (
            f"`{output}` ({agg.get('metric')}): p95 {num(agg.get('p95'))} (limit: {_tier(tol.get('p95'))}); "
            f"worst chunk {num(agg.get('worst'))} on {agg.get('worst_chunk')} (limit: {_tier(chunk)})"
        )
        if isinstance(rate, int | float):
            text += f"; {rate:.0%} of chunks within {num(chunk.get('warn', chunk.get('fail')))}"
        lines.append(f"{text} {MARK[_status(found, suite)]}")
    return _worst(levels), title, lines


def item_growth(summary: Summary) -> tuple[str, str, list[str]]:
    suite = _suite(summary, "closed_loop")
    title = "No monotonic error growth in closed loop; error bounded, mean stable"
    if suite is None:
        return (
            NONE,
            title,
            ["closed loop did not run (--trt-mode functional, or a contract without state pairs)"],
        )
    lines: list[str] = []
    levels = [_status([], suite)]
    drift = suite.get("extra", {}).get("drift", {})
    thresholds = summary.get("thresholds", {})
    for output, stats in drift.items():
        crit = thresholds.get(output, {}).get("closed_loop") or {}
        found = _findings(suite, output=output, assertions=False)
        levels.append(_status(found, suite))
        for stream, st in stats.get("streams", {}).items():
            where = f" stream `{stream}`" if len(stats.get("streams", {})) > 1 else ""
            lines.append(
                f"`{output}`{where} ({stats.get('metric')}): "
                + _drift_text(st, crit)
                + f" {MARK[_status(found, suite)]}"
            )
    return _worst(levels), f"{title} ({suite.get('chunks_run', 0)} chunks)", lines


def _drift_text(st: Mapping[str, Any], crit: Mapping[str, Any]) -> str:
    parts = [
        f"max {num(st.get('max'))} on chunk {st.get('max_chunk')} (limit: {_tier(crit.get('max'))})",
        f"mean {num(st.get('mean'))} (limit: {_tier(crit.get('mean'))})",
    ]
    tr = st.get("trend")
    trend_crit = crit.get("trend") or {}
    if tr:
        verdict = "significant" if tr.get("significant") else "not significant"
        parts.append(
            f"trend {num(tr.get('slope'))} per chunk, Mann-Kendall p = {num(tr.get('p_value'), 2)} "
            f"({verdict} at alpha {num(st.get('alpha'))}), growth {num(tr.get('growth'))} of the bound "
            f"(limit: {_tier(trend_crit.get('growth'))})"
        )
    elif trend_crit:
        parts.append(f"trend not judged (fewer than {trend_crit.get('min_chunks')} chunks)")
    return "; ".join(parts)


def _scalars(extra: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in extra.items():
        if isinstance(value, Mapping):
            yield from _scalars(value, f"{prefix}{key}.")
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


#: Suites that measure speed or size. The checklist's item is the latency target; the others are
#: listed with their verdicts (their findings are under Findings).
PERFORMANCE = ("latency", "throughput", "memory", "baseline")
#: Timing keys shown first, in this order, when a latency suite left them in `extra`.
TIMINGS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms")


def item_latency(summary: Summary) -> tuple[str, str, list[str]]:
    suite = _suite(summary, "latency")
    targets = summary.get("criteria", {}).get("latency", {})
    target = ", ".join(f"{k} {_tier(v)}" for k, v in targets.items() if isinstance(v, Mapping))
    title = "Performance meets targets" + (f" ({target})" if target else "")
    if suite is None:
        return NONE, title, ["latency not measured in this run"]
    scalars = dict(_scalars(suite.get("extra", {})))
    keys = [k for k in TIMINGS if k in scalars] + sorted(
        k for k in scalars if k.endswith("_ms") and k not in TIMINGS
    )
    lines = [
        "latency: " + (", ".join(f"{k} {num(scalars[k])}" for k in keys) or "no timings recorded")
    ]
    lines += [f["message"] for f in _findings(suite)]
    others = [f"{n} {s.get('verdict')}" for n in PERFORMANCE[1:] if (s := _suite(summary, n))]
    if others:
        lines.append("also ran (see Findings): " + ", ".join(others))
    return _status(suite.get("findings", []), suite), title, lines


def item_ci(summary: Summary) -> tuple[str, str, list[str]]:
    ci = summary.get("environment", {}).get("ci")
    if ci:
        return PASS, "CI/CD integration", [f"this report was produced by a {ci} run"]
    return NONE, "CI/CD integration", ["local run: not produced by CI"]


ITEMS = (item_assertions, item_tolerance, item_growth, item_latency, item_ci)


def sign_off(summary: Summary) -> list[str]:
    lines: list[str] = []
    for item in ITEMS:
        status, title, details = item(summary)
        lines.append(f"- {MARK[status]} **{title}**: {WORD[status]}")
        lines += [f"  - {d}" for d in details]
    return lines


# -- tables -------------------------------------------------------------------------------------


def comparison_table(summary: Summary) -> list[str]:
    comp = summary.get("comparison", {})
    if not comp:
        return ["No per-chunk comparison ran."]
    lines = [
        "| output | metric | functional worst | closed loop worst | loop factor | functional mean | closed loop mean | loop factor |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for output, c in comp.items():
        f = c.get("functional") or {}
        cl = c.get("closed_loop") or {}
        lf = c.get("loop_factor") or {}
        lines.append(
            f"| `{output}` | {c.get('metric')} | {num(f.get('worst'))} | {num(cl.get('worst'))} | "
            f"{_factor(lf.get('worst'))} | {num(f.get('mean'))} | {num(cl.get('mean'))} | {_factor(lf.get('mean'))} |"
        )
    lines.append("")
    lines.append(
        "Loop factor: closed-loop error over functional error, what feeding the engine its own state adds."
    )
    return lines


def _factor(v: Any) -> str:
    return "-" if v is None else f"{num(v, 2)}\u00d7"


def findings_list(summary: Summary, limit: int = MAX_FINDINGS) -> list[str]:
    lines: list[str] = []
    count = 0
    for name, suite in summary.get("suites", {}).items():
        for f in suite.get("findings", []):
            count += 1
            if count <= limit:
                lines.append(f"- {MARK.get(f['level'], '')} `{name}` {f['message']}")
        if suite.get("error"):
            lines.append(f"- {MARK[FAIL]} `{name}` stopped: {suite['error']}")
    if count > limit:
        lines.append(f"- ... and {count - limit} more in summary.json")
    for err in summary.get("errors", []):
        lines.append(f"- {MARK[FAIL]} error: {err}")
    return lines or ["None."]


def environment_lines(summary: Summary) -> list[str]:
    env = summary.get("environment", {})
    inputs = summary.get("inputs", {})
    rows = [
        ("engine", inputs.get("engine")),
        ("engine sha256", env.get("engine_sha256")),
        (
            "backend",
            " ".join(str(x) for x in (env.get("backend"), env.get("version")) if x) or None,
        ),
        ("device", env.get("device")),
        ("provider", env.get("provider")),
        ("contract", inputs.get("contract")),
        ("reference", inputs.get("reference")),
        ("mode", inputs.get("mode")),
        ("strict", summary.get("strict")),
        ("trtparity", env.get("trtparity")),
        ("python", env.get("python")),
        ("platform", env.get("platform")),
        ("created", summary.get("created")),
    ]
    return ["| | |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in rows if v is not None]


def render(summary: Summary, plots: Mapping[str, str] | None = None, *, images: bool = True) -> str:
    """The whole report; `images=False` leaves the plots out (for places that cannot show them)."""
    verdict = str(summary.get("verdict", "fail"))
    mark = {"pass": MARK[PASS], "warn": MARK[WARN]}.get(verdict, MARK[FAIL])
    lines = [f"# TensorRT parity sign-off: {mark} {verdict.upper()}", ""]
    engine = summary.get("inputs", {}).get("engine")
    env = summary.get("environment", {})
    lines.append(
        f"Engine `{engine}` on {env.get('backend', '?')} ({env.get('device', '?')}), "
        f"{summary.get('created', '')}."
    )
    lines += ["", "## Sign-off", "", *sign_off(summary)]
    lines += ["", "## Functional and closed loop side by side", "", *comparison_table(summary)]
    if images and plots:
        lines += ["", "## Stability plots", ""]
        for output, path in plots.items():
            lines += [f"### `{output}`", "", f"[![{output} error per chunk]({path})]({path})", ""]
    lines += ["", "## Findings", "", *findings_list(summary)]
    lines += ["", "## Environment", "", *environment_lines(summary)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(folder: Path, summary: Summary, plots: Mapping[str, str] | None = None) -> Path:
    return write_text(folder / "report.md", render(summary, plots))
