"""The one input of every renderer: a typed, read-only view of summary.json.

The terminal summary, report.md, the plots, the GitHub job summary and the JUnit properties all
read the run through `RunView.from_summary(summary)`, never through the suites' result objects:
what a reviewer sees on any surface is exactly what summary.json says, and a change in how suites
keep their data in memory reaches no renderer as long as their JSON stays the same.

Printed values (aggregates, drift statistics, timings) stay as summary.json holds them, strings
"NaN"/"Infinity" included, so each renderer prints them as it always has; only the per-chunk
series, which are computed with, are decoded to floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..explain.diagnosis import Diagnosis
from ..util.jsonfloat import decode_number

Json = Mapping[str, Any]
#: The two suites that compare outputs chunk by chunk; plots and the side-by-side table show them.
CHUNK_SUITES = ("functional", "closed_loop")
FAIL_WORD = "fail"


def _map(raw: Any) -> Json:
    return raw if isinstance(raw, Mapping) else {}


@dataclass(frozen=True)
class FindingView:
    level: str
    output: str
    criterion: str
    message: str

    @classmethod
    def from_json(cls, raw: Json) -> FindingView:
        return cls(
            level=str(raw.get("level", FAIL_WORD)),
            output=str(raw.get("output", "")),
            criterion=str(raw.get("criterion", "")),
            message=str(raw.get("message", "")),
        )


@dataclass(frozen=True)
class SeriesView:
    """One output's per-chunk metrics, in run order, as floats (NaN where JSON says "NaN")."""

    chunks: tuple[str, ...]
    metrics: Mapping[str, tuple[float, ...]]

    @classmethod
    def from_json(cls, raw: Json) -> SeriesView:
        metrics = _map(raw.get("metrics"))
        return cls(
            chunks=tuple(str(c) for c in raw.get("chunks", [])),
            metrics={k: tuple(decode_number(v) for v in vs) for k, vs in metrics.items()},
        )

    def series(self, metric: str) -> tuple[float, ...]:
        return self.metrics.get(metric, ())


@dataclass(frozen=True)
class SuiteView:
    name: str
    verdict: str
    complete: bool
    error: str | None
    chunks_run: int
    findings: tuple[FindingView, ...] = ()
    outputs: Mapping[str, SeriesView] = field(default_factory=dict)
    aggregates: Mapping[str, Json] = field(default_factory=dict)
    extra: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, name: str, raw: Json) -> SuiteView:
        return cls(
            name=name,
            verdict=str(raw.get("verdict", FAIL_WORD)),
            complete=bool(raw.get("complete")),
            error=raw.get("error") or None,
            chunks_run=int(raw.get("chunks_run") or 0),
            findings=tuple(FindingView.from_json(f) for f in raw.get("findings", [])),
            outputs={k: SeriesView.from_json(v) for k, v in _map(raw.get("outputs")).items()},
            aggregates={k: _map(v) for k, v in _map(raw.get("aggregates")).items()},
            extra=_map(raw.get("extra")),
        )

    @property
    def drift(self) -> Mapping[str, Json]:
        """Closed loop: per output, the drift statistics its verdict was judged on."""
        return {k: _map(v) for k, v in _map(self.extra.get("drift")).items()}

    @property
    def harness(self) -> Json | None:
        """What the gate's own loop cost a chunk, when the suite measured it."""
        found = self.extra.get("harness")
        return found if isinstance(found, Mapping) and found else None

    @property
    def inconclusive(self) -> tuple[str, ...]:
        """Latency: the criteria that could not be judged (noisy timings), one sentence each."""
        return tuple(str(s) for s in self.extra.get("inconclusive", []) or [])

    @property
    def outcome(self) -> str:
        """The verdict word a person reads: a latency run that passed only because its stability
        rule could not judge a criterion is `inconclusive`, not `pass`; a warning with undecided
        criteria says both."""
        stability = _map(self.extra.get("stability"))
        if stability.get("outcome") != "inconclusive" or self.verdict == FAIL_WORD:
            return self.verdict
        return "inconclusive" if self.verdict == "pass" else f"{self.verdict}, inconclusive"

    def levels_for(self, output: str) -> list[str]:
        """Finding levels of one output (and of findings about every output, "*")."""
        return [f.level for f in self.findings if f.output in (output, "*")]


@dataclass(frozen=True)
class OutputLimits:
    """The limits one output was judged against, as summary.json's `thresholds` holds them."""

    metric: str
    chunk: Json | None
    loop_metric: str | None = None
    loop_max: Json | None = None
    trend_alpha: float | None = None
    raw: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Json) -> OutputLimits:
        tol = _map(raw.get("tolerance"))
        loop = raw.get("closed_loop")
        trend = _map(loop.get("trend")) if isinstance(loop, Mapping) else {}
        alpha = trend.get("alpha")
        return cls(
            metric=str(tol.get("metric", "max_abs")),
            chunk=tol.get("chunk"),
            loop_metric=loop.get("metric") if isinstance(loop, Mapping) else None,
            loop_max=loop.get("max") if isinstance(loop, Mapping) else None,
            trend_alpha=float(alpha) if isinstance(alpha, int | float) else None,
            raw=raw,
        )


@dataclass(frozen=True)
class DiagnosisEntry:
    """One explained output (summary.json `diagnosis`): the diagnosis made, or why none was, and
    the per-layer plot's path under the artifacts folder."""

    suite: str
    output: str
    chunk: str
    made: Diagnosis | None
    why: str = ""
    plot: str | None = None
    failing: bool = True

    @classmethod
    def from_json(cls, raw: Json) -> DiagnosisEntry:
        made = Diagnosis.from_json(raw) if "format" in raw else None
        return cls(
            suite=str(raw.get("suite", "")),
            output=str(raw.get("output", "")),
            chunk=str(raw.get("chunk", "")),
            made=made,
            why=str(raw.get("why", "")),
            plot=str(raw["plot"]) if raw.get("plot") else None,
            failing=bool(raw.get("failing", True)),
        )


@dataclass(frozen=True)
class RunView:
    """One run as every renderer reads it; `raw` is the summary it was built from."""

    raw: Json
    status: str
    verdict: str
    run_id: str | None
    suites: Mapping[str, SuiteView]
    thresholds: Mapping[str, OutputLimits]
    errors: tuple[str, ...]
    not_run: Mapping[str, str]
    environment: Json
    inputs: Json
    comparison: Mapping[str, Json]
    criteria: Json
    artifacts: Json
    diagnosis: tuple[DiagnosisEntry, ...] = ()

    @classmethod
    def from_summary(cls, summary: Json) -> RunView:
        return cls(
            raw=summary,
            status=str(summary.get("status", "")),
            verdict=str(summary.get("verdict", FAIL_WORD)),
            run_id=summary.get("run_id"),
            suites={k: SuiteView.from_json(k, v) for k, v in _map(summary.get("suites")).items()},
            thresholds={
                k: OutputLimits.from_json(_map(v))
                for k, v in _map(summary.get("thresholds")).items()
            },
            errors=tuple(str(e) for e in summary.get("errors", [])),
            not_run={str(k): str(v) for k, v in _map(summary.get("not_run")).items()},
            environment=_map(summary.get("environment")),
            inputs=_map(summary.get("inputs")),
            comparison={k: _map(v) for k, v in _map(summary.get("comparison")).items()},
            criteria=_map(summary.get("criteria")),
            artifacts=_map(summary.get("artifacts")),
            diagnosis=tuple(
                DiagnosisEntry.from_json(_map(d)) for d in summary.get("diagnosis", None) or []
            ),
        )

    def suite(self, name: str) -> SuiteView | None:
        return self.suites.get(name)

    def metric_of(self, output: str) -> str:
        limits = self.thresholds.get(output)
        return limits.metric if limits is not None else "max_abs"
