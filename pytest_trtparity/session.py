"""The state of one gate run: what each suite found, and the verdict and artifacts built from it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .artifacts.summary import build_summary, output_aggregates, write_summary
from .contract import Contract
from .errors import ParityWarning, TrtParityError
from .gate import Level, verdict_of
from .results import SuiteResult
from .settings import GateSettings

if TYPE_CHECKING:
    from .sharding import Selection, ShardPart

#: Failures listed in a test's failure message before the rest are only counted.
MAX_LISTED = 12


@dataclass
class GateSession:
    settings: GateSettings
    results: list[SuiteResult] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    contract: Contract | None = None
    gate_items: int = 0
    summary_path: Path | None = None
    summary: dict[str, Any] | None = None
    #: Parts of sharded suites (pytest-xdist) waiting for their merge; see sharding.py.
    parts: list[ShardPart] = field(default_factory=list)

    def record(self, result: SuiteResult) -> None:
        self.results = [r for r in self.results if r.suite != result.suite] + [result]

    def enforce(self, result: SuiteResult) -> None:
        """Record `result`, then fail the calling test on fail-tier findings and warn on warn-tier ones.

        The message lists each failure on its own line, worst first, so the first line is the one
        sentence a developer needs.
        """
        self.record(result)
        fails = result.failures()
        warns = result.warnings()
        if self.settings.strict:
            fails, warns = fails + warns, []
        for w in warns:
            warnings.warn(ParityWarning(w.message), stacklevel=2)
        if result.error and not fails:
            pytest.fail(f"{result.suite}: {result.error}", pytrace=False)
        if fails:
            lines = [f.message for f in fails[:MAX_LISTED]]
            if len(fails) > MAX_LISTED:
                lines.append(f"... and {len(fails) - MAX_LISTED} more failures (see summary.json)")
            head = f"{result.suite} parity failed: {len(fails)} finding(s)"
            if self.settings.strict and any(f.level is Level.WARN for f in fails):
                head += " (--trt-strict: warnings fail)"
            pytest.fail(head + "\n" + "\n".join(lines), pytrace=False)
        if not result.complete:
            pytest.fail(
                f"{result.suite}: did not complete ({result.error or 'no chunk ran'})",
                pytrace=False,
            )

    @property
    def verdict(self) -> Level:
        levels = [r.verdict for r in self.results]
        if self.errors or not self.results:
            levels.append(Level.FAIL)
        level = verdict_of(levels)
        if self.settings.strict and level is Level.WARN:
            return Level.FAIL
        return level

    def aggregates(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            if not r.outputs or self.contract is None:
                continue
            per: dict[str, Any] = {}
            for name in r.outputs:
                tol = self.contract.tolerance(name)
                per.update(
                    output_aggregates(
                        SuiteResult(r.suite, {name: r.outputs[name]}), tol.metric, tol.within
                    )
                )
            out[r.suite] = per
        return out

    def build_summary(self, artifacts: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.settings
        return build_summary(
            results=self.results,
            environment=self.environment,
            inputs={
                "engine": str(s.engine) if s.engine else None,
                "contract": str(s.contract) if s.contract else None,
                "reference": str(s.ref) if s.ref else None,
                "mode": s.mode,
                "backend": s.backend,
            },
            contract_raw=self.contract.raw if self.contract else None,
            aggregates=self.aggregates(),
            errors=self.errors,
            strict=s.strict,
            contract=self.contract,
            artifacts=artifacts,
        )

    def enforce_shard(self, result: SuiteResult, selection: Selection) -> None:
        """`enforce` for one shard of a suite. Unsharded it is `enforce`. Sharded, the part is kept
        for the merge, and the test fails on what its chunks alone show (per-chunk findings); the
        criteria over all chunks are judged by `merge_parts` once every shard has reported."""
        if selection.shard.whole:
            self.enforce(result)
            return
        from .sharding import make_part, shard_view

        contract = self._merge_contract()
        part = make_part(result, selection, contract)
        self.parts.append(part)
        self.enforce(shard_view(part, contract))

    def merge_parts(self, *, final: bool = False) -> None:
        """Record each sharded suite whose shards have all reported (every one when `final`) as the
        merge of its parts, judged on the merged series exactly as one process would judge it."""
        from .sharding import merge

        suites = list(dict.fromkeys(p.suite for p in self.parts))
        for suite in suites:
            parts = [p for p in self.parts if p.suite == suite]
            if not final and {p.shard.index for p in parts} != set(range(parts[0].shard.count)):
                continue
            self.parts = [p for p in self.parts if p.suite != suite]
            self.record(merge(parts, self._merge_contract()))

    def _merge_contract(self) -> Contract:
        if self.contract is None and self.settings.contract is not None:
            self.contract = _contract_or_none(self.settings.contract)
        if self.contract is None:
            raise TrtParityError(
                "sharded results cannot be judged: the contract could not be loaded"
            )
        return self.contract

    def note_crash(self, suite: str, message: str) -> None:
        """A gate test failed before its suite recorded a result: the run must not look like a pass."""
        self.record(
            SuiteResult(
                suite=suite, error=f"the {suite} test failed before recording a result: {message}"
            )
        )

    def write(self) -> Path:
        """Every artifact, on every run: plots first (the summary lists them), then summary.json,
        report.md and the GitHub job summary. A plot that cannot be drawn is an error of the run,
        and the other artifacts are still written."""
        from .artifacts import channels, plots, report

        folder = self.settings.artifacts
        if self.contract is None and self.settings.contract is not None:
            self.contract = _contract_or_none(self.settings.contract)
        artifacts: dict[str, Any] = {
            "folder": str(folder),
            "summary": "summary.json",
            "report": "report.md",
            "plots": {},
            "errors": [],
        }
        try:
            artifacts["plots"] = plots.write_plots(folder, self.results, self.contract, self.errors)
        except TrtParityError:
            raise
        except Exception as exc:  # a plotting bug must not cost the summary and the report
            message = f"{folder / plots.PLOTS_DIR}: plots not written: {type(exc).__name__}: {exc}"
            artifacts["errors"].append(message)
            self.errors.append(message)
        self.summary = self.build_summary(artifacts)
        self.summary_path = write_summary(folder, self.summary)
        report.write_report(folder, self.summary, artifacts["plots"])
        try:
            channels.append_github_summary(self.summary, str(folder))
        except OSError as exc:
            warnings.warn(ParityWarning(f"GITHUB_STEP_SUMMARY not written: {exc}"), stacklevel=2)
        return self.summary_path


def _contract_or_none(path: Path) -> Contract | None:
    """The contract for the artifacts when no fixture loaded it (the engine failed first); a broken
    contract is reported by its own fixture, so here it only means no thresholds and no plots."""
    from .contract import load_contract

    try:
        return load_contract(path)
    except TrtParityError:
        return None
