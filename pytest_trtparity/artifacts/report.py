"""report.md: the sign-off page, one check or cross per item of the integration checklist.

The person who signs off a release reads this, not the JSON: each item says what was required,
whether it held, and the numbers behind the answer (the limit next to the value), and the stability
plots are linked below. Everything comes from summary.json (through its `RunView`), so the two can
never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..util import fmt
from .model import FindingView, RunView, SuiteView

PASS, WARN, FAIL, NONE = "pass", "warn", "fail", "none"
MARK = {PASS: "\u2705", WARN: "\u26a0\ufe0f", FAIL: "\u274c", NONE: "\u2796"}
WORD = {PASS: "pass", WARN: "pass with warnings", FAIL: "FAIL", NONE: "not measured"}
#: Findings about what the engine is, not how close it is: the checklist's "contract assertions".
ASSERTIONS = ("binding", "invariant", "structure", "missing output")
MAX_FINDINGS = 50

num = fmt.cell


def _tier(t: Mapping[str, Any] | None) -> str:
    if not t:
        return "no limit"
    parts = [f"{k} {num(t[k])}" for k in ("warn", "fail") if k in t]
    return ", ".join(parts)


def _worst(levels: Sequence[str]) -> str:
    order = [PASS, WARN, FAIL]
    return max(levels, key=order.index) if levels else PASS


def _findings(
    suite: SuiteView | None, *, output: str | None = None, assertions: bool | None = None
) -> list[FindingView]:
    if suite is None:
        return []
    out = []
    for f in suite.findings:
        if output is not None and f.output != output:
            continue
        is_assertion = f.criterion in ASSERTIONS
        if assertions is not None and is_assertion != assertions:
            continue
        out.append(f)
    return out


def _status(findings: Sequence[FindingView], suite: SuiteView | None) -> str:
    if suite is None:
        return NONE
    levels = [f.level for f in findings]
    if suite.error or not suite.complete:
        levels.append(FAIL)
    return _worst(levels)


# -- the sign-off items -----------------------------------------------------------------------


def item_assertions(run: RunView) -> tuple[str, str, list[str]]:
    contract = run.suite("contract")
    chunk_suites = [(n, s) for n in ("functional", "closed_loop") if (s := run.suite(n))]
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
            + (f" ({contract.error})" if contract.error else "")
        )
    for name, suite in chunk_suites:
        found = _findings(suite, assertions=True)
        levels.append(_status(found, suite))
        kinds = {k: sum(1 for f in found if f.criterion == k) for k in ASSERTIONS[1:]}
        detail = ", ".join(f"{v} {k}" for k, v in kinds.items())
        lines.append(
            f"{name}: {suite.chunks_run} chunks checked, {detail} violation(s)"
            + ("" if suite.complete else f"; stopped early: {suite.error}")
        )
    chunks = max((s.chunks_run for _, s in chunk_suites), default=0)
    return _worst(levels), f"All contract assertions pass ({chunks} chunks)", lines


def item_tolerance(run: RunView) -> tuple[str, str, list[str]]:
    suite = run.suite("functional")
    title = "Output errors within tolerance (p95 over chunks)"
    if suite is None:
        return NONE, title, ["functional mode did not run"]
    lines: list[str] = []
    levels = [_status([], suite)]
    for output, agg in suite.aggregates.items():
        limits = run.thresholds.get(output)
        tol = limits.raw.get("tolerance", {}) if limits is not None else {}
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


def item_growth(run: RunView) -> tuple[str, str, list[str]]:
    suite = run.suite("closed_loop")
    title = "No monotonic error growth in closed loop; error bounded, mean stable"
    if suite is None:
        return (
            NONE,
            title,
            ["closed loop did not run (--trt-mode functional, or a contract without state pairs)"],
        )
    lines: list[str] = []
    levels = [_status([], suite)]
    for output, stats in suite.drift.items():
        limits = run.thresholds.get(output)
        crit = (limits.raw.get("closed_loop") if limits is not None else None) or {}
        found = _findings(suite, output=output, assertions=False)
        levels.append(_status(found, suite))
        for stream, st in stats.get("streams", {}).items():
            where = f" stream `{stream}`" if len(stats.get("streams", {})) > 1 else ""
            lines.append(
                f"`{output}`{where} ({stats.get('metric')}): "
                + _drift_text(st, crit)
                + f" {MARK[_status(found, suite)]}"
            )
    return _worst(levels), f"{title} ({suite.chunks_run} chunks)", lines


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


#: Latency targets that only a suite other than latency judges, and only when that suite ran.
JUDGED_BY = {"baseline_": "baseline"}


def _applied_targets(run: RunView) -> tuple[dict[str, Any], list[str]]:
    """The contract's latency targets this run could apply, and a note for those it could not
    (the baseline limits mean nothing when no baseline ran)."""
    targets = run.criteria.get("latency", {})
    applied: dict[str, Any] = {}
    unused: dict[str, list[str]] = {}
    for key, value in targets.items():
        if not isinstance(value, Mapping):
            continue
        suite = next((s for p, s in JUDGED_BY.items() if key.startswith(p)), None)
        if suite is not None and run.suite(suite) is None:
            unused.setdefault(suite, []).append(key)
        else:
            applied[key] = value
    notes = [
        f"{', '.join(keys)} not applied: the {suite} suite did not run"
        + (f" ({run.not_run[suite]})" if suite in run.not_run else "")
        for suite, keys in unused.items()
    ]
    return applied, notes


def item_latency(run: RunView) -> tuple[str, str, list[str]]:
    suite = run.suite("latency")
    targets, notes = _applied_targets(run)
    target = ", ".join(f"{k} {_tier(v)}" for k, v in targets.items())
    title = "Performance meets targets" + (f" ({target})" if target else "")
    if suite is None:
        return NONE, title, ["latency not measured in this run", *notes]
    scalars = dict(_scalars(suite.extra))
    keys = [k for k in TIMINGS if k in scalars] + sorted(
        k for k in scalars if k.endswith("_ms") and k not in TIMINGS
    )
    lines = [
        "latency: " + (", ".join(f"{k} {num(scalars[k])}" for k in keys) or "no timings recorded")
    ]
    lines += [f.message for f in _findings(suite)]
    lines += [f"inconclusive, not judged: {s}" for s in suite.inconclusive]
    others = [f"{n} {s.verdict}" for n in PERFORMANCE[1:] if (s := run.suite(n))]
    if others:
        lines.append("also ran (see Findings): " + ", ".join(others))
    lines += notes
    return _status(suite.findings, suite), title, lines


def item_ci(run: RunView) -> tuple[str, str, list[str]]:
    ci = run.environment.get("ci")
    if ci:
        return PASS, "CI/CD integration", [f"this report was produced by a {ci} run"]
    return NONE, "CI/CD integration", ["local run: not produced by CI"]


ITEMS = (item_assertions, item_tolerance, item_growth, item_latency, item_ci)


def sign_off(run: RunView) -> list[str]:
    lines: list[str] = []
    for item in ITEMS:
        status, title, details = item(run)
        lines.append(f"- {MARK[status]} **{title}**: {WORD[status]}")
        lines += [f"  - {d}" for d in details]
    return lines


# -- tables -------------------------------------------------------------------------------------


def comparison_table(run: RunView) -> list[str]:
    if not run.comparison:
        return ["No per-chunk comparison ran."]
    lines = [
        "| output | metric | functional worst | closed loop worst | loop factor | functional mean | closed loop mean | loop factor |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for output, c in run.comparison.items():
        f = c.get("functional") or {}
        cl = c.get("closed_loop") or {}
        lf = c.get("loop_factor") or {}
        lines.append(
            f"| `{output}` | {c.get('metric')} | {num(f.get('worst'))} | {num(cl.get('worst'))} | "
            f"{fmt.ratio(lf.get('worst'))} | {num(f.get('mean'))} | {num(cl.get('mean'))} | {fmt.ratio(lf.get('mean'))} |"
        )
    lines.append("")
    lines.append(
        "Loop factor: closed-loop error over functional error, what feeding the engine its own state adds."
    )
    return lines


def findings_list(run: RunView, limit: int = MAX_FINDINGS) -> list[str]:
    lines: list[str] = []
    count = 0
    for name, suite in run.suites.items():
        for f in suite.findings:
            count += 1
            if count <= limit:
                lines.append(f"- {MARK.get(f.level, '')} `{name}` {f.message}")
        if suite.error:
            lines.append(f"- {MARK[FAIL]} `{name}` stopped: {suite.error}")
    if count > limit:
        lines.append(f"- ... and {count - limit} more in summary.json")
    for err in run.errors:
        lines.append(f"- {MARK[FAIL]} error: {err}")
    return lines or ["None."]


#: Environment keys shown first, in this order, under these names; every other key follows.
FIRST = (
    ("engine_sha256", "engine sha256"),
    ("backend", "backend"),
    ("version", "version"),
    ("device", "device"),
    ("provider", "provider"),
)
#: What decides fp32 numerics and GPU speed (TF32, library versions, clocks): shown next, one row
#: each, so a reviewer comparing two runs finds them together.
NUMERICS = ("tf32", "tf32_ops", "cudnn", "cublas", "gpu_clocks")


def _clocks(clocks: Mapping[str, Any]) -> str:
    """`SM 1980 MHz (max 1980), memory 3201 MHz (max 3201), from nvml` from gpu_facts' fields."""
    parts = []
    for label, key in (("SM", "sm"), ("memory", "mem")):
        if f"{key}_mhz" in clocks:
            top = clocks.get(f"{key}_max_mhz")
            parts.append(
                f"{label} {clocks[f'{key}_mhz']} MHz" + (f" (max {top})" if top is not None else "")
            )
    known = {f"{k}{m}_mhz" for k in ("sm", "mem") for m in ("", "_max")} | {"source"}
    parts += [f"{k} {v}" for k, v in clocks.items() if k not in known]
    source = clocks.get("source")
    return ", ".join(parts) + (f", from {source}" if source else "")


def _numerics(key: str, value: Any) -> Any:
    if isinstance(value, Mapping) and key == "gpu_clocks":
        return _clocks(value)
    if isinstance(value, Mapping):  # tf32_ops: operation -> precision
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    return value


def _plain(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _flat(env: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in env.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        elif isinstance(value, list | tuple):
            yield f"{prefix}{key}", ", ".join(str(v) for v in value)
        else:
            yield f"{prefix}{key}", value


def _cell(value: Any) -> str:
    """A table cell in full (no rounding: a version or a clock is not a measurement to shorten)."""
    text = _plain(value)
    return "`" + text.replace("|", "\\|").replace("`", "'").replace("\n", " ") + "`"


def environment_lines(run: RunView) -> list[str]:
    """Every key the environment holds (what the backend reported, what conftest hooks added),
    the best-known first, then TF32, cuDNN and cuBLAS versions and GPU clocks, then the rest."""
    raw = dict(run.environment)
    numerics = [(k, _numerics(k, raw.pop(k))) for k in NUMERICS if k in raw]
    env = dict(_flat(raw))
    inputs = run.inputs
    rows: list[tuple[str, Any]] = [("run", run.run_id), ("engine", inputs.get("engine"))]
    rows += [(name, env.pop(key, None)) for key, name in FIRST]
    rows += numerics
    rows += [(name, inputs.get(name)) for name in ("contract", "reference", "mode")]
    rows += [("strict", run.raw.get("strict")), ("started", run.raw.get("started"))]
    rows += [("finished", run.raw.get("created"))]
    rows += sorted(env.items())
    return ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows if v is not None]


def not_run_lines(run: RunView) -> list[str]:
    """The suites that did not run, each with why: an absent check is not a passed one."""
    from .not_run import NAMES

    return [
        f"- {MARK[NONE]} `{suite}` ({NAMES.get(suite, suite)}): {why}"
        for suite, why in run.not_run.items()
    ] or ["Every suite of the gate ran."]


IN_PROGRESS_MARK = "\u23f3"


def render_in_progress(run: RunView) -> str:
    """The page a run leaves at its start: if it stays, the run never finished."""
    return (
        f"# TensorRT parity sign-off: {IN_PROGRESS_MARK} IN PROGRESS\n\n"
        f"Run `{run.run_id}` started {run.raw.get('started')} and has not written its verdict yet.\n\n"
        f"If this page stays after the run has ended, the run was stopped before it could finish "
        f"(killed, cancelled, out of time): it has no verdict, and it did not pass. "
        f"summary.json says the same (`status: in_progress`, `verdict: running`).\n"
    )


def previous_release(run: RunView) -> list[str]:
    """`--trt-previous`: the regression check's table and the engine identity changes, as the
    check wrote them (its own heading included); why it could not compare, when it could not."""
    suite = run.suite("regression")
    if suite is None:
        return []
    table = [str(line) for line in suite.extra.get("table", []) or []]
    if table:
        return ["", *table]
    return ["", "## Against the previous release", "", f"Not compared: {suite.error or '?'}"]


def diagnosis_section(run: RunView, *, images: bool = True) -> list[str]:
    """Each explained output: the first diverging tensor, the chain, the probes and the per-layer
    plot; or the one sentence saying why it was not localized."""
    from ..explain.render import render_markdown

    if not run.diagnosis:
        return []
    lines = ["", "## Diagnosis", ""]
    for entry in run.diagnosis:
        if entry.made is None:
            lines += [
                f"### Diagnosis: {entry.suite} output `{entry.output}`, chunk {entry.chunk}",
                "",
                entry.why,
                "",
            ]
            continue
        lines += [render_markdown(entry.made, entry.plot if images else None)]
    return lines


def verdict_mark(verdict: str) -> str:
    return {"pass": MARK[PASS], "warn": MARK[WARN]}.get(verdict, MARK[FAIL])


def render(run: RunView, plots: Mapping[str, str] | None = None, *, images: bool = True) -> str:
    """The whole report; `images=False` leaves the plots out (for places that cannot show them)."""
    if run.status == "in_progress":
        return render_in_progress(run)
    lines = [f"# TensorRT parity sign-off: {verdict_mark(run.verdict)} {run.verdict.upper()}", ""]
    env = run.environment
    lines.append(
        f"Engine `{run.inputs.get('engine')}` on {env.get('backend', '?')} ({env.get('device', '?')}), "
        f"{run.raw.get('created', '')}, run `{run.run_id}`."
    )
    lines += ["", "## Sign-off", "", *sign_off(run)]
    lines += ["", "## Suites that did not run", "", *not_run_lines(run)]
    lines += ["", "## Functional and closed loop side by side", "", *comparison_table(run)]
    if images and plots:
        lines += ["", "## Stability plots", ""]
        for output, path in plots.items():
            lines += [f"### `{output}`", "", f"[![{output} error per chunk]({path})]({path})", ""]
    lines += previous_release(run)
    lines += diagnosis_section(run, images=images)
    lines += ["", "## Findings", "", *findings_list(run)]
    lines += ["", "## Environment", "", *environment_lines(run)]
    return "\n".join(lines).rstrip() + "\n"
