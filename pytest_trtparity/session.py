"""The state of one gate run: what each suite found, and the verdict and artifacts built from it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .artifacts.summary import build_summary, output_aggregates, write_summary
from .contract import Contract
from .errors import ParityWarning
from .gate import Level, verdict_of
from .results import SuiteResult
from .settings import GateSettings

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
            pytest.fail(f"{result.suite}: did not complete ({result.error or 'no chunk ran'})", pytrace=False)

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
                per.update(output_aggregates(SuiteResult(r.suite, {name: r.outputs[name]}), tol.metric, tol.within))
            out[r.suite] = per
        return out

    def build_summary(self) -> dict[str, Any]:
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
        )

    def write(self) -> Path:
        self.summary = self.build_summary()
        self.summary_path = write_summary(self.settings.artifacts, self.summary)
        return self.summary_path
