"""The verdict through pytest's own channels: JUnit properties, the GitHub job summary, pytest-html.

CI systems already show JUnit XML and the GitHub job summary; a reviewer should see the verdict and
the worst errors there without downloading the artifacts. pytest-html is optional: when it is
installed the plots travel inside its report, and nothing here imports it otherwise.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..judge.results import SuiteResult
from . import report

if TYPE_CHECKING:
    import pytest

    from ..session import GateSession

PREFIX = "trtparity"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def junit_properties(
    result: SuiteResult, metrics: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Name/value pairs for one suite's test case: verdict, chunks, and per output the worst error
    (plus, in closed loop, the drift statistics the verdict was judged on)."""
    metrics = metrics or {}
    props = [
        (f"{PREFIX}.suite", result.suite),
        (f"{PREFIX}.verdict", result.verdict.word),
        (f"{PREFIX}.chunks", str(result.chunks_run)),
        (f"{PREFIX}.complete", str(result.complete).lower()),
    ]
    if result.error:
        props.append((f"{PREFIX}.error", result.error))
    for output, series in result.outputs.items():
        metric = metrics.get(output, "max_abs")
        values = series.series(metric)
        if values:
            worst = max(values, key=lambda v: math.inf if math.isnan(v) else v)
            props.append((f"{PREFIX}.{output}.worst_{metric}", _value(worst)))
    drift = result.extra.get("drift", {})
    for output, stats in drift.items():
        for stream, st in stats.get("streams", {}).items():
            at = f"{PREFIX}.{output}" + (f".{stream}" if len(stats.get("streams", {})) > 1 else "")
            props.append((f"{at}.loop_mean", _value(st.get("mean"))))
            trend = st.get("trend") or {}
            if trend:
                props.append((f"{at}.trend_slope", _value(trend.get("slope"))))
                props.append((f"{at}.trend_p", _value(trend.get("p_value"))))
    props += [(f"{PREFIX}.finding", f"{f.level.word}: {f.message}") for f in result.findings[:20]]
    return props


def metrics_of(gate: GateSession) -> dict[str, str]:
    if gate.contract is None:
        return {}
    return {spec.name: gate.contract.tolerance(spec.name).metric for spec in gate.contract.outputs}


def latest(gate: GateSession, suite: str) -> SuiteResult | None:
    return next((r for r in reversed(gate.results) if r.suite == suite), None)


def before_report(item: pytest.Item, gate: GateSession, suite: str, failed: str | None) -> None:
    """Called for a gate test's call phase before its report exists: attach JUnit properties, and
    record a crash as the suite's result when the test failed without recording one."""
    if failed is not None and latest(gate, suite) is None:
        gate.note_crash(suite, failed)
    result = latest(gate, suite)
    if result is not None:
        item.user_properties.extend(junit_properties(result, metrics_of(gate)))


def html_extras(gate: GateSession, suite: str) -> list[Any]:
    """The plots as pytest-html extras (embedded PNG), or nothing without pytest-html."""
    try:
        from pytest_html import extras  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    if suite not in ("functional", "closed_loop") or gate.contract is None:
        return []
    from .plots import write_plots

    folder = gate.settings.artifacts
    plots = write_plots(folder, gate.results, gate.contract)
    out = []
    for output, rel in plots.items():
        data = base64.b64encode((folder / rel).read_bytes()).decode("ascii")
        out.append(extras.png(data, name=f"{output} stability"))
    return out


def skip_reason(rep: pytest.TestReport) -> str | None:
    """The reason a skipped test gave (pytest keeps it as "Skipped: <reason>")."""
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return None
    longrepr = rep.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(text).removeprefix("Skipped: ").strip() or "skipped"


def after_report(rep: pytest.TestReport, gate: GateSession, suite: str) -> None:
    reason = skip_reason(rep)
    if reason is not None:
        gate.note_skip(suite, reason)
    found = html_extras(gate, suite)
    if found:
        rep.extras = [*getattr(rep, "extras", []), *found]  # type: ignore[attr-defined]


def github_markdown(summary: Mapping[str, Any], artifacts: str | None = None) -> str:
    """The job-summary version of report.md: sign-off and side-by-side table, no images (relative
    links to the artifacts folder do not resolve on the job page)."""
    verdict = str(summary.get("verdict", "fail"))
    mark = {"pass": report.MARK[report.PASS], "warn": report.MARK[report.WARN]}.get(
        verdict, report.MARK[report.FAIL]
    )
    lines = [f"## TensorRT parity gate: {mark} {verdict.upper()}", ""]
    lines += report.sign_off(summary)
    lines += ["", "### Functional and closed loop", "", *report.comparison_table(summary)]
    fails = [
        f
        for s in summary.get("suites", {}).values()
        for f in s.get("findings", [])
        if f["level"] == "fail"
    ]
    if summary.get("not_run"):
        lines += ["", "### Suites that did not run", "", *report.not_run_lines(summary)]
    if fails:
        lines += ["", "### Failures", ""] + [f"- {f['message']}" for f in fails[:10]]
        if len(fails) > 10:
            lines.append(f"- ... and {len(fails) - 10} more (summary.json)")
    if artifacts:
        lines += ["", f"Plots, report.md and summary.json: the `{artifacts}` artifact of this job."]
    return "\n".join(lines) + "\n\n"


def append_github_summary(
    summary: Mapping[str, Any],
    artifacts: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY when GitHub Actions set it; other steps append there too."""
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(github_markdown(summary, artifacts))
    return path
