"""What one shard of a run hands to whoever merges: one format for both ways of sharding.

An xdist worker sends it to its controller through `config.workeroutput`; a CI-matrix shard
(`--trt-shard K/N`) writes it into its part file, which `trtparity merge` reads back. Both end in
`ingest` and then the session's `merge_parts`, so a matrix merge is the xdist merge, not a copy of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..judge.payloads import ShardView
from ..judge.results import SuiteResult
from .parts import ShardPart

if TYPE_CHECKING:
    from ..session import GateSession


def payload(gate: GateSession) -> dict[str, Any]:
    """Finished suites (never a shard's own view), shard parts, errors, environment, item count."""
    return {
        "results": [r.to_json() for r in gate.results if not isinstance(r.payload, ShardView)],
        "parts": [p.to_json() for p in gate.parts],
        "errors": list(gate.errors),
        "environment": dict(gate.environment),
        "gate_items": gate.gate_items,
        "skipped": dict(gate.skipped),
    }


def ingest(gate: GateSession, raw: dict[str, Any]) -> None:
    """Add one shard's payload to the merging session (results, parts, errors, environment)."""
    for result in raw["results"]:
        gate.record(SuiteResult.from_json(result))
    gate.parts.extend(ShardPart.from_json(p) for p in raw["parts"])
    gate.errors.extend(e for e in raw["errors"] if e not in gate.errors)
    gate.environment.update(raw["environment"])
    gate.gate_items = max(gate.gate_items, int(raw["gate_items"]))
    for suite, reason in (raw.get("skipped") or {}).items():
        gate.note_skip(str(suite), str(reason))
