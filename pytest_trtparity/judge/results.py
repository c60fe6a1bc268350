"""What a suite measured: per-output, per-chunk metric series and the findings judged from them.

Plain data that serialises to JSON and back, so that xdist workers can ship results to the
controller and the artifacts are built from exactly what was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..util.jsonfloat import decode_number, encode
from .payloads import Payload, payload_from_json
from .tiers import Finding, Level, verdict_of

P = TypeVar("P", bound=Payload)


def chunk_label(stream: str, chunk_index: int) -> str:
    return f"{stream}#{chunk_index}"


@dataclass
class OutputSeries:
    """One output's metrics, chunk by chunk, in the order the chunks ran."""

    output: str
    chunks: list[str] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def add(self, chunk: str, values: dict[str, float]) -> None:
        n = len(self.chunks)
        self.chunks.append(chunk)
        for key, value in values.items():
            self.metrics.setdefault(key, [math.nan] * n).append(value)
        for series in self.metrics.values():
            if len(series) == n:
                series.append(math.nan)

    def series(self, metric: str) -> list[float]:
        return self.metrics.get(metric, [])

    def to_json(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "metrics": {k: [encode(v) for v in vs] for k, vs in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, output: str, raw: dict[str, Any]) -> OutputSeries:
        return cls(
            output=output,
            chunks=list(raw["chunks"]),
            metrics={k: [decode_number(v) for v in vs] for k, vs in raw["metrics"].items()},
        )


@dataclass
class SuiteResult:
    """The outcome of one suite run (functional, closed loop, contract, ...); `payload` holds the
    suite's own numbers (see judge/payloads.py), kept under `extra` in JSON."""

    suite: str
    outputs: dict[str, OutputSeries] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    chunks_run: int = 0
    streams: list[str] = field(default_factory=list)
    complete: bool = False
    error: str | None = None
    payload: Payload = field(default_factory=Payload)

    def chunk_done(self, stream: str) -> None:
        self.chunks_run += 1
        if stream not in self.streams:
            self.streams.append(stream)

    def finish(self) -> None:
        """Complete unless an error stopped the run or nothing ran: an empty run is never a pass."""
        if self.error is None:
            if self.chunks_run == 0:
                self.error = "no chunk ran"
            else:
                self.complete = True

    @property
    def verdict(self) -> Level:
        if self.error or not self.complete:
            return Level.FAIL
        return verdict_of(f.level for f in self.findings)

    def series(self, output: str) -> OutputSeries:
        if output not in self.outputs:
            self.outputs[output] = OutputSeries(output)
        return self.outputs[output]

    def typed(self, kind: type[P]) -> P:
        """The payload as `kind`, read over from what it holds when it is another type (the empty
        payload a result starts with, or the untyped one of a suite name `PAYLOADS` lacks)."""
        current = self.payload
        if isinstance(current, kind):
            return current
        converted = kind.from_json(current.to_json())
        self.payload = converted
        return converted

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.FAIL]

    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.WARN]

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "verdict": self.verdict.word,
            "complete": self.complete,
            "error": self.error,
            "chunks_run": self.chunks_run,
            "streams": self.streams,
            "findings": [f.to_json() for f in self.findings],
            "outputs": {k: v.to_json() for k, v in self.outputs.items()},
            "extra": self.payload.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SuiteResult:
        return cls(
            suite=raw["suite"],
            outputs={k: OutputSeries.from_json(k, v) for k, v in raw["outputs"].items()},
            findings=[Finding.from_json(f) for f in raw["findings"]],
            chunks_run=int(raw["chunks_run"]),
            streams=list(raw["streams"]),
            complete=bool(raw["complete"]),
            error=raw.get("error"),
            payload=payload_from_json(raw["suite"], raw.get("extra")),
        )
