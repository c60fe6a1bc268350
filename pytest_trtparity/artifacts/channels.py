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

from ..util import fmt
from ..util.jsonfloat import decode
from . import report
from .model import RunView, SuiteView

if TYPE_CHECKING:
    import pytest

PREFIX = "trtparity"


def _value(v: Any) -> str:
    """A JUnit value: numbers as `fmt.prop`, summary.json's "NaN"/"Infinity" read back as numbers."""
    number = decode(v) if isinstance(v, str) else None
    return fmt.prop(v if number is None else number)


def junit_properties(
    suite: SuiteView, metrics: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Name/value pairs for one suite's test case: verdict, chunks, and per output the worst error
    (plus, in closed loop, the drift statistics the verdict was judged on)."""
    metrics = metrics or {}
    props = [
        (f"{PREFIX}.suite", suite.name),
        (f"{PREFIX}.verdict", suite.verdict),
        (f"{PREFIX}.chunks", str(suite.chunks_run)),
        (f"{PREFIX}.complete", str(suite.complete).lower()),
    ]
    if suite.error:
        props.append((f"{PREFIX}.error", suite.error))
    for output, series in suite.outputs.items():
        metric = metrics.get(output, "max_abs")
        values = series.series(metric)
        if values:
            worst = max(values, key=lambda v: math.inf if math.isnan(v) else v)
            props.append((f"{PREFIX}.{output}.worst_{metric}", _value(worst)))
    for output, stats in suite.drift.items():
        streams = stats.get("streams", {})
        for stream, st in streams.items():
            at = f"{PREFIX}.{output}" + (f".{stream}" if len(streams) > 1 else "")
            props.append((f"{at}.loop_mean", _value(st.get("mean"))))
            trend = st.get("trend") or {}
            if trend:
                props.append((f"{at}.trend_slope", _value(trend.get("slope"))))
                props.append((f"{at}.trend_p", _value(trend.get("p_value"))))
    props += [(f"{PREFIX}.finding", f"{f.level}: {f.message}") for f in suite.findings[:20]]
    return props


def html_extras(pngs: Mapping[str, bytes]) -> list[Any]:
    """The plots (output -> PNG bytes) as pytest-html extras, or nothing without pytest-html."""
    if not pngs:
        return []
    try:
        from pytest_html import extras  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    return [
        extras.png(base64.b64encode(png).decode("ascii"), name=f"{output} stability")
        for output, png in pngs.items()
    ]


def html_available() -> bool:
    """Whether pytest-html can take extras: without it the plots are not drawn before the end."""
    try:
        from pytest_html import extras  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def skip_reason(rep: pytest.TestReport) -> str | None:
    """The reason a skipped test gave (pytest keeps it as "Skipped: <reason>")."""
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return None
    longrepr = rep.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(text).removeprefix("Skipped: ").strip() or "skipped"


def github_markdown(run: RunView, artifacts: str | None = None) -> str:
    """The job-summary version of report.md: sign-off and side-by-side table, no images (relative
    links to the artifacts folder do not resolve on the job page)."""
    lines = [
        f"## TensorRT parity gate: {report.verdict_mark(run.verdict)} {run.verdict.upper()}",
        "",
    ]
    lines += report.sign_off(run)
    lines += ["", "### Functional and closed loop", "", *report.comparison_table(run)]
    fails = [f for s in run.suites.values() for f in s.findings if f.level == "fail"]
    if run.not_run:
        lines += ["", "### Suites that did not run", "", *report.not_run_lines(run)]
    if fails:
        lines += ["", "### Failures", ""] + [f"- {f.message}" for f in fails[:10]]
        if len(fails) > 10:
            lines.append(f"- ... and {len(fails) - 10} more (summary.json)")
    if artifacts:
        lines += ["", f"Plots, report.md and summary.json: the `{artifacts}` artifact of this job."]
    return "\n".join(lines) + "\n\n"


def append_github_summary(
    run: RunView,
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
        fh.write(github_markdown(run, artifacts))
    return path
