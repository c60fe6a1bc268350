"""Each check's own numbers beside its series and findings: one typed payload per check.

A payload serialises to the JSON object summary.json keeps under a suite's `extra` key, key for
key and in the same order, and reads back from it: xdist workers and shard parts ship results as
JSON, and the controller must rebuild the same types. `PAYLOADS` names the type of each suite;
a suite it does not know (a user's own) keeps its keys in the base `Payload.other`, so nothing is
lost on the way. Nested values (drift statistics, latency stability) stay JSON-shaped: their
writers and the renderers of summary.json agree on them, and typing the top level is what lets a
reader find a key without guessing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

P = TypeVar("P", bound="Payload")

#: The key of a shard's own view of its part: never a suite's result beyond its worker.
SHARD_VIEW = "shard_view"


@dataclass
class Payload:
    """A check's numbers. Fields are written in declaration order; those in `OPTIONAL` only when
    set (they are filled as the check goes), the others always (None as null). `other` holds keys
    no field names, written last."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    other: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def _written(self, name: str, value: Any) -> bool:
        return value is not None or name not in self.OPTIONAL

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "other":
                continue
            value = getattr(self, f.name)
            if self._written(f.name, value):
                out[f.name] = value
        out.update(self.other)
        return out

    @classmethod
    def from_json(cls: type[P], raw: dict[str, Any]) -> P:
        return cls(**cls._arguments(raw))

    @classmethod
    def _arguments(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from `raw`: a named key absent there reads as None."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "other"]
        args: dict[str, Any] = {name: raw.get(name) for name in names}
        args["other"] = {k: v for k, v in raw.items() if k not in args}
        return args

    def copy(self: P) -> P:
        """A copy to merge into, so that judging the merged result leaves the parts alone."""
        return type(self).from_json(self.to_json())

    def without(self: P, judged: Payload) -> P:
        """This payload less the keys `judged` holds: what a shard keeps before the merge judges."""
        drop = judged.to_json()
        return type(self).from_json({k: v for k, v in self.to_json().items() if k not in drop})

    def printed_table(self) -> list[str]:
        """The lines the terminal prints for this check after the run (none by default)."""
        table = self.other.get("table")
        return [str(x) for x in table] if isinstance(table, list) else []


@dataclass
class ShardView(Payload):
    """Marks a shard's own view of its part, judged by that shard's test alone."""

    shard_view: str


@dataclass
class ContractPayload(Payload):
    """The engine's declared inputs and outputs, as name, dtype and shape."""

    engine_inputs: list[dict[str, Any]]
    engine_outputs: list[dict[str, Any]]


@dataclass
class LoopPayload(Payload):
    """A chunk loop's harness cost (`harness_report`), and the error closing it met, if any."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"harness", "check_error"})
    harness: dict[str, Any] | None = None
    check_error: str | None = None


@dataclass
class ClosedLoopPayload(LoopPayload):
    """The loop's state pairs, its chunk limit per stream and the judged drift per output."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"harness", "check_error", "state", "chunks_limit", "drift"}
    )
    state: list[dict[str, Any]] | None = None
    chunks_limit: int | None = None
    drift: dict[str, Any] | None = None

    def _written(self, name: str, value: Any) -> bool:
        if name == "chunks_limit":  # written with the state pairs, null when unlimited
            return self.state is not None
        return super()._written(name, value)


@dataclass
class ProfilesPayload(Payload):
    """Each swept corner's shapes and where its feeds came from."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"points"})
    points: dict[str, Any] | None = None


@dataclass
class LatencyPayload(Payload):
    """Timings and how they were judged. `measured` holds the statistics and what the timing mode
    adds (split, overhead, device_compute, ...), written first and flat, as summary.json has them."""

    measured: dict[str, Any]
    warmup: int
    iterations: int
    chunks: int
    carry: dict[str, str]
    timer: str
    backend: str
    device: str
    step_ms: list[float]
    cv_pct: float | None
    cv_warn_pct: float
    stability: dict[str, Any]
    inconclusive: list[str]
    note: str | None = None
    table: list[str] = field(default_factory=list)
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"note"})

    def to_json(self) -> dict[str, Any]:
        out = {**self.measured}
        out.update({k: v for k, v in super().to_json().items() if k != "measured"})
        return out

    @classmethod
    def _arguments(cls, raw: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)} - {"other", "measured"}
        args = super()._arguments({k: v for k, v in raw.items() if k in names})
        args["measured"] = {k: v for k, v in raw.items() if k not in names}
        return args

    def stat(self, key: str) -> Any:
        """One measured number (`p50_ms`, `n`, ...) or section (`split`, `overhead`), or None."""
        return self.measured.get(key)

    def printed_table(self) -> list[str]:
        return list(self.table)


@dataclass
class ThroughputPayload(Payload):
    """Per batch size: calls, timings and items per second."""

    batch_dim: str | None
    batches_from: str
    iterations: int
    warmup: int
    rows: list[dict[str, Any]]
    device: str
    backend: str
    table: list[str] = field(default_factory=list)

    def printed_table(self) -> list[str]:
        return list(self.table)


@dataclass
class MemoryPayload(Payload):
    """Engine file, peak device and host memory in bytes (None where not measured)."""

    engine_bytes: int | None
    peak_device_bytes: int | None
    host_rss_bytes: int | None
    device_source: str
    host_rss_now_bytes: int | None
    device: str
    backend: str
    table: list[str] = field(default_factory=list)

    def printed_table(self) -> list[str]:
        return list(self.table)


@dataclass
class BaselinePayload(Payload):
    """Engine and baseline side by side on the same chunks, and their ratios."""

    chunks: int
    warmup: int
    feeding: str
    metrics: dict[str, Any]
    engine: dict[str, Any]
    baseline: dict[str, Any]
    ratios: dict[str, Any]
    table: list[str] = field(default_factory=list)

    def printed_table(self) -> list[str]:
        return list(self.table)


@dataclass
class BuildPayload(Payload):
    """The parsed network's summary, then the build: builder, targets, engine, time, budget."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {
            "network",
            "builder",
            "targets",
            "device",
            "engine",
            "build_seconds",
            "cache_hit",
            "budget_bytes",
            "notes",
            "table",
        }
    )
    network: dict[str, Any] | None = None
    builder: Any = None
    targets: list[str] | None = None
    device: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    build_seconds: float | None = None
    cache_hit: bool | None = None
    budget_bytes: dict[str, Any] | None = None
    notes: list[str] | None = None
    table: list[str] | None = None

    def printed_table(self) -> list[str]:
        return list(self.table or [])


@dataclass
class InvariancePayload(Payload):
    """What was compared (chunks, batch sizes, profiles), the tiers used and the worst per criterion
    and output, keyed `criterion/output`."""

    chunks: list[str]
    batch_sizes: list[int]
    profiles: list[str]
    deterministic_backend: bool
    tiers: dict[str, Any]
    worst: dict[str, float]
    #: Checks that did not run and why (no batch axis, a batch over the byte budget); when set,
    #: `table` says the same on the terminal.
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"not_run", "table"})
    not_run: list[str] | None = None
    table: list[str] | None = None

    def printed_table(self) -> list[str]:
        return list(self.table or [])


@dataclass
class RegressionPayload(Payload):
    """The previous run compared against, the compared rows and the report's markdown section."""

    previous_run: str | None
    rows: list[dict[str, Any]]
    table: list[str] = field(default_factory=list)

    def printed_table(self) -> list[str]:
        return list(self.table)


#: The payload type of each suite; `checks.registry` names the same checks (a test keeps them so).
PAYLOADS: dict[str, type[Payload]] = {
    "contract": ContractPayload,
    "functional": LoopPayload,
    "closed_loop": ClosedLoopPayload,
    "profiles": ProfilesPayload,
    "latency": LatencyPayload,
    "throughput": ThroughputPayload,
    "memory": MemoryPayload,
    "baseline": BaselinePayload,
    "build": BuildPayload,
    "invariance": InvariancePayload,
    "regression": RegressionPayload,
}


def payload_from_json(suite: str, raw: dict[str, Any] | None) -> Payload:
    """The typed payload of `suite` read from its `extra` object; an empty object reads as the
    empty base payload (the check stopped before it measured anything)."""
    if not raw:
        return Payload()
    if SHARD_VIEW in raw:
        return ShardView.from_json(raw)
    return PAYLOADS.get(suite, Payload).from_json(raw)
