"""The result of explaining one failing output: frozen records with a JSON form.

They are the only thing the rest of the gate needs to know about explanation: the summary stores
`to_json()`, the report and the terminal render it, the plot draws `layers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..util import jsonfloat

#: Version of the JSON form, written into every diagnosis.
FORMAT = "diagnosis/1"


#: JSON has no infinities or NaN: they travel as strings, spelled as everywhere in summary.json.
_num = jsonfloat.encode


def _float(value: Any) -> float:
    number = jsonfloat.decode(value)
    if number is None:
        raise ValueError(f"not a number: {value!r}")
    return number


@dataclass(frozen=True)
class LayerError:
    """One intermediate tensor's error against the reference, in topological order."""

    tensor: str
    node: str
    op_type: str
    module: str
    error: float
    inputs_error: float

    def to_json(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op_type": self.op_type,
            "module": self.module,
            "error": _num(self.error),
            "inputs_error": _num(self.inputs_error),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LayerError:
        return cls(
            tensor=str(raw["tensor"]),
            node=str(raw["node"]),
            op_type=str(raw["op_type"]),
            module=str(raw["module"]),
            error=_float(raw["error"]),
            inputs_error=_float(raw["inputs_error"]),
        )


@dataclass(frozen=True)
class FirstDivergence:
    """The first tensor whose error crosses the tier, or jumps 10x over its inputs' error.

    `inputs_error` is the error before the node (the largest over its inputs), `error` after it;
    `inputs` gives each input's own error.
    """

    tensor: str
    node: str
    op_type: str
    module: str
    error: float
    tier: float
    inputs_error: float
    reason: str
    inputs: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op_type": self.op_type,
            "module": self.module,
            "error": _num(self.error),
            "tier": _num(self.tier),
            "inputs_error": _num(self.inputs_error),
            "reason": self.reason,
            "inputs": {k: _num(v) for k, v in self.inputs.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FirstDivergence:
        return cls(
            tensor=str(raw["tensor"]),
            node=str(raw["node"]),
            op_type=str(raw["op_type"]),
            module=str(raw["module"]),
            error=_float(raw["error"]),
            tier=_float(raw["tier"]),
            inputs_error=_float(raw["inputs_error"]),
            reason=str(raw["reason"]),
            inputs={str(k): _float(v) for k, v in raw.get("inputs", {}).items()},
        )


@dataclass(frozen=True)
class Probe:
    """One setting changed and the chunk re-run: did the failing output come back under its tier?

    `changed_engine` is True when the probe ran a modified engine (a cast, other weights), which is
    the point of a probe, but also said so the reader never mistakes it for the engine under test.
    """

    setting: str
    error_before: float
    error_after: float
    tier: float
    sentence: str
    changed_engine: bool = True

    @property
    def explains(self) -> bool:
        return self.error_after <= self.tier < self.error_before

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "error_before": _num(self.error_before),
            "error_after": _num(self.error_after),
            "tier": _num(self.tier),
            "explains": self.explains,
            "sentence": self.sentence,
            "changed_engine": self.changed_engine,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Probe:
        return cls(
            setting=str(raw["setting"]),
            error_before=_float(raw["error_before"]),
            error_after=_float(raw["error_after"]),
            tier=_float(raw["tier"]),
            sentence=str(raw["sentence"]),
            changed_engine=bool(raw.get("changed_engine", True)),
        )


@dataclass(frozen=True)
class Diagnosis:
    """Where and why one output of one chunk diverged.

    `first_divergence` is None when every intermediate tensor stayed within the tier and no error
    jumped: the engine agrees with the source layer by layer on this chunk. `chain` lists the
    tensors from the first divergence down to the failing output; `notes` says what the preparation
    did (branches inlined, tensors not comparable) and whether the engine had to be changed.
    """

    suite: str
    output: str
    chunk: str
    metric: str
    output_error: float
    tier: float
    first_divergence: FirstDivergence | None
    chain: tuple[str, ...] = ()
    probes: tuple[Probe, ...] = ()
    layers: tuple[LayerError, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "suite": self.suite,
            "output": self.output,
            "chunk": self.chunk,
            "metric": self.metric,
            "output_error": _num(self.output_error),
            "tier": _num(self.tier),
            "first_divergence": None
            if self.first_divergence is None
            else self.first_divergence.to_json(),
            "chain": list(self.chain),
            "probes": [p.to_json() for p in self.probes],
            "layers": [layer.to_json() for layer in self.layers],
            "notes": list(self.notes),
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Diagnosis:
        first = raw.get("first_divergence")
        return cls(
            suite=str(raw["suite"]),
            output=str(raw["output"]),
            chunk=str(raw["chunk"]),
            metric=str(raw.get("metric", "max_abs")),
            output_error=_float(raw["output_error"]),
            tier=_float(raw["tier"]),
            first_divergence=None if first is None else FirstDivergence.from_json(first),
            chain=tuple(str(t) for t in raw.get("chain", ())),
            probes=tuple(Probe.from_json(p) for p in raw.get("probes", ())),
            layers=tuple(LayerError.from_json(x) for x in raw.get("layers", ())),
            notes=tuple(str(n) for n in raw.get("notes", ())),
            seconds=float(raw.get("seconds", 0.0)),
        )


def explaining_probes(probes: Sequence[Probe]) -> list[Probe]:
    """The probes whose one change brought the output under its fail tier."""
    return [p for p in probes if p.explains]
