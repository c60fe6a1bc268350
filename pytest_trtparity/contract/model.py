"""The binding contract: load, validate against its JSON Schema, then check what a schema cannot.

The result is a tree of frozen dataclasses, so the rest of the code never touches raw JSON and a
misspelt key can never silently fall back to a default (the schema forbids unknown keys).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..errors import ContractError
from ..util import strictjson
from .validate import check_semantics

Dim = int | str
Shape = tuple[Dim, ...]
Metric = Literal["max_abs", "mean_abs", "p95_abs", "p99_abs", "max_rel", "rmse", "cosine_distance"]

SCHEMA_RESOURCE = "contract.schema.json"
#: The schema's `$id`, and what a contract's `$schema` names it by: the package ships the file, so
#: the name resolves wherever the plugin is installed (a relative path only inside this repository).
SCHEMA_ID = "urn:pytest-trtparity:contract:1"
_SCHEMA_ID_PREFIX = "urn:pytest-trtparity:contract:"


@dataclass(frozen=True)
class Tier:
    """Warn and fail limits of one criterion.

    `higher_is_worse` is False for criteria like a pass rate, where falling below the limit is bad.
    """

    warn: float | None = None
    fail: float | None = None
    higher_is_worse: bool = True

    @classmethod
    def from_json(
        cls, raw: Mapping[str, Any] | None, *, higher_is_worse: bool = True
    ) -> Tier | None:
        if raw is None:
            return None
        return cls(
            warn=_opt_float(raw.get("warn")),
            fail=_opt_float(raw.get("fail")),
            higher_is_worse=higher_is_worse,
        )

    def to_json(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.warn is not None:
            out["warn"] = self.warn
        if self.fail is not None:
            out["fail"] = self.fail
        return out


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: Shape
    description: str = ""
    optional: bool = False
    value_range: tuple[float, float] | None = None
    allow_empty: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class ProfileShape:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def admits(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


@dataclass(frozen=True)
class Profile:
    name: str
    shapes: Mapping[str, ProfileShape]
    description: str = ""

    def admits(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return all(
            name in shapes and spec.admits(shapes[name]) for name, spec in self.shapes.items()
        )


@dataclass(frozen=True)
class StatePair:
    output: str
    input: str
    initial: Literal["reference", "zeros"] = "reference"


@dataclass(frozen=True)
class Invariant:
    output: str
    check: Literal["equals", "dim_equals", "in_range", "finite"]
    value: float | None = None
    axis: int | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.check == "equals":
            return f"{self.output} == {_num(self.value)}"
        if self.check == "dim_equals":
            return f"{self.output}.shape[{self.axis}] == {_num(self.value)}"
        if self.check == "in_range":
            lo = "-inf" if self.min is None else _num(self.min)
            hi = "inf" if self.max is None else _num(self.max)
            return f"{lo} <= {self.output} <= {hi}"
        return f"{self.output} is finite"


@dataclass(frozen=True)
class Tolerance:
    metric: Metric = "max_abs"
    chunk: Tier | None = None
    p95: Tier | None = None
    pass_rate: Tier | None = None
    blocking: bool = True
    nan: Literal["fail", "match"] = "fail"
    inf: Literal["match", "fail"] = "match"
    signed_zero: bool = False
    note: str = ""

    @property
    def within(self) -> float | None:
        """The per-chunk limit a chunk must stay inside to count towards the pass rate."""
        if self.chunk is None:
            return None
        return self.chunk.warn if self.chunk.warn is not None else self.chunk.fail


#: Used for an output that neither `tolerances` nor `default_tolerance` mentions: exact match.
EXACT = Tolerance(metric="max_abs", chunk=Tier(fail=0.0))


@dataclass(frozen=True)
class TrendCriteria:
    alpha: float = 0.01
    growth: Tier | None = None
    min_chunks: int = 20


@dataclass(frozen=True)
class DriftCriteria:
    metric: Metric | None = None
    max: Tier | None = None
    mean: Tier | None = None
    trend: TrendCriteria | None = None
    blocking: bool = True


@dataclass(frozen=True)
class ClosedLoopSpec:
    chunks: int | None = None
    default: DriftCriteria | None = None
    outputs: Mapping[str, DriftCriteria] = field(default_factory=dict)

    def for_output(self, name: str) -> DriftCriteria | None:
        return self.outputs.get(name, self.default)


#: Defaults of the `regression` section (docs/signoff.md explains each number).
ERROR_GROWTH = Tier(warn=2.0, fail=10.0)
ERROR_FLOOR = 0.01
LATENCY_GROWTH = Tier(warn=1.25, fail=1.5)


@dataclass(frozen=True)
class RegressionSpec:
    """How much this run may be worse than a previous run. Growth is a ratio (new over previous);
    error growth counts only where the new error exceeds `error_floor` x the output's fail tier, so
    that noise far below any tier is never a regression."""

    error_growth: Tier = ERROR_GROWTH
    error_floor: float = ERROR_FLOOR
    latency_growth: Tier = LATENCY_GROWTH
    blocking: bool = True


@dataclass(frozen=True)
class InvarianceSpec:
    """Which outputs must not change with batch size, row position, neighbours, profile or a
    repeated run, and by how much they may. A tier of None means the check's own default (exact on
    a backend that promises determinism)."""

    batch_dim: str = "B"
    batch_sizes: tuple[int, ...] = ()
    chunks: int = 4
    default: Tier | None = None
    outputs: Mapping[str, Tier] = field(default_factory=dict)
    blocking: bool = True

    def tier_for(self, output: str) -> Tier | None:
        return self.outputs.get(output, self.default)


def _tiers(raw: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Tier]:
    """The section's tiers in the file's order (the order their problems are reported in)."""
    return {
        k: Tier(_opt_float(v.get("warn")), _opt_float(v.get("fail")))
        for k, v in raw.items()
        if k in names
    }


LATENCY_TIERS = (
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "baseline_ratio",
    "baseline_error",
    "overhead_share",
)


@dataclass(frozen=True)
class LatencySpec:
    """The `latency` section. A count left out is None: each suite applies its own default, which
    its module documents. `tiers` holds the criteria that have one (`p95_ms`, `baseline_ratio`, ...)."""

    warmup: int | None = None
    iterations: int | None = None
    chunks: int | None = None
    baseline_error_floor: float = 0.0
    throughput_batches: tuple[int, ...] = ()
    throughput_iterations: int | None = None
    tiers: Mapping[str, Tier] = field(default_factory=dict)

    def tier(self, name: str) -> Tier | None:
        return self.tiers.get(name)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LatencySpec:
        return cls(
            warmup=_opt_int(raw.get("warmup")),
            iterations=_opt_int(raw.get("iterations")),
            chunks=_opt_int(raw.get("chunks")),
            baseline_error_floor=float(raw.get("baseline_error_floor", 0.0)),
            throughput_batches=tuple(int(b) for b in raw.get("throughput_batches", ())),
            throughput_iterations=_opt_int(raw.get("throughput_iterations")),
            tiers=_tiers(raw, LATENCY_TIERS),
        )


MEMORY_TIERS = ("engine_bytes", "peak_device_bytes", "host_rss_bytes", "baseline_device_ratio")


@dataclass(frozen=True)
class MemorySpec:
    """The `memory` section: byte limits and the baseline ratio, each a tier when given."""

    tiers: Mapping[str, Tier] = field(default_factory=dict)

    def tier(self, name: str) -> Tier | None:
        return self.tiers.get(name)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> MemorySpec:
        return cls(tiers=_tiers(raw, MEMORY_TIERS))


@dataclass(frozen=True)
class CalibrationInfo:
    """What `trtparity contract calibrate` measured, on which engines, and the rule it applied."""

    engines: tuple[str, ...]
    rule: str
    measured: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ""
    created: str = ""
    loosened: bool = False


@dataclass(frozen=True)
class Contract:
    model: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    state: tuple[StatePair, ...] = ()
    invariants: tuple[Invariant, ...] = ()
    default_tolerance: Tolerance | None = None
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    closed_loop: ClosedLoopSpec = field(default_factory=ClosedLoopSpec)
    latency: LatencySpec = field(default_factory=lambda: LatencySpec())
    memory: MemorySpec = field(default_factory=lambda: MemorySpec())
    regression: RegressionSpec = field(default_factory=RegressionSpec)
    invariance: InvarianceSpec = field(default_factory=InvarianceSpec)
    calibration: CalibrationInfo | None = None
    description: str = ""
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, "input", self)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, "output", self)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def tolerance(self, output: str) -> Tolerance:
        return self.tolerances.get(output) or self.default_tolerance or EXACT

    def invariants_for(self, output: str) -> Iterator[Invariant]:
        return (inv for inv in self.invariants if inv.output == output)

    @property
    def state_inputs(self) -> frozenset[str]:
        return frozenset(p.input for p in self.state)

    @property
    def where(self) -> str:
        return str(self.path) if self.path else f"contract {self.model!r}"


def _by_name(specs: Sequence[TensorSpec], name: str, kind: str, contract: Contract) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"{contract.where}: no {kind} named {name!r}")


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@cache
def schema() -> dict[str, Any]:
    text = resources.files("pytest_trtparity.schemas").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _json_path(parts: Sequence[str | int]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def load_contract(path: str | Path) -> Contract:
    """Read, schema-validate and semantically check a contract file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ContractError(f"{path}: contract file not found") from None
    except OSError as exc:
        raise ContractError(f"{path}: cannot read contract: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: not UTF-8 (byte {exc.start})") from None
    if text.startswith(strictjson.BOM_TEXT):
        raise ContractError(f"{path}:1: the file {strictjson.BOM_MESSAGE}")
    try:
        raw = strictjson.loads(text)
    except strictjson.StrictJSONError as exc:
        line = _line_of_error(text, exc)
        field = f" at {_json_path(exc.path)}:" if exc.path else ""
        raise ContractError(f"{path}{line}:{field} {exc}") from None
    return contract_from_json(raw, path=path, text=text)


def _line_of_error(text: str, exc: strictjson.StrictJSONError) -> str:
    cause = exc.__context__
    if isinstance(cause, json.JSONDecodeError):
        return f":{cause.lineno}"
    line = strictjson.locate(text, exc)
    return f":{line}" if line is not None else ""


def validate_schema(raw: Any, where: str, text: str | None = None) -> None:
    """Schema errors name the deepest offending JSON path and, given the file's `text`, its line."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        first = min(errors, key=lambda e: len(e.absolute_path) * -1)
        parts = list(first.absolute_path)
        path = _json_path(parts)
        more = f" (and {len(errors) - 1} more schema errors)" if len(errors) > 1 else ""
        line = strictjson.line_of(text, parts) if text is not None else None
        at = f" (line {line})" if line is not None else ""
        raise ContractError(f"{where}: at {path}: {first.message}{at}{more}")


def check_schema_id(raw: Any, where: str) -> None:
    """A `$schema` naming another version of this schema is refused; any other value (the packaged
    schema's id, a path or URL to a copy for an editor) is a hint for tools and accepted."""
    named = raw.get("$schema") if isinstance(raw, dict) else None
    if isinstance(named, str) and named.startswith(_SCHEMA_ID_PREFIX) and named != SCHEMA_ID:
        raise ContractError(
            f"{where}: at $.$schema: {named!r} is not a schema this version reads ({SCHEMA_ID!r})"
        )


def contract_from_json(raw: Any, *, path: Path | None = None, text: str | None = None) -> Contract:
    """`text`, the file the contract was read from, lets schema errors name their line."""
    where = str(path) if path else "contract"
    check_schema_id(raw, where)
    validate_schema(raw, where, text)
    contract = _build(raw, path)
    check_semantics(contract)
    return contract


def _tensor(raw: Mapping[str, Any]) -> TensorSpec:
    rng = raw.get("range")
    return TensorSpec(
        name=raw["name"],
        dtype=raw["dtype"],
        shape=tuple(raw["shape"]),
        description=raw.get("description", ""),
        optional=raw.get("optional", False),
        value_range=(float(rng[0]), float(rng[1])) if rng else None,
        allow_empty=raw.get("allow_empty", False),
    )


def _tolerance(raw: Mapping[str, Any]) -> Tolerance:
    return Tolerance(
        metric=raw.get("metric", "max_abs"),
        chunk=Tier.from_json(raw.get("chunk")),
        p95=Tier.from_json(raw.get("p95")),
        pass_rate=Tier.from_json(raw.get("pass_rate"), higher_is_worse=False),
        blocking=raw.get("blocking", True),
        nan=raw.get("nan", "fail"),
        inf=raw.get("inf", "match"),
        signed_zero=raw.get("signed_zero", False),
        note=raw.get("note", ""),
    )


def _drift(raw: Mapping[str, Any]) -> DriftCriteria:
    trend_raw = raw.get("trend")
    trend = None
    if trend_raw is not None:
        trend = TrendCriteria(
            alpha=float(trend_raw.get("alpha", 0.01)),
            growth=Tier.from_json(trend_raw.get("growth")),
            min_chunks=int(trend_raw.get("min_chunks", 20)),
        )
    return DriftCriteria(
        metric=raw.get("metric"),
        max=Tier.from_json(raw.get("max")),
        mean=Tier.from_json(raw.get("mean")),
        trend=trend,
        blocking=raw.get("blocking", True),
    )


def _regression(raw: Mapping[str, Any]) -> RegressionSpec:
    return RegressionSpec(
        error_growth=Tier.from_json(raw.get("error_growth")) or ERROR_GROWTH,
        error_floor=float(raw.get("error_floor", ERROR_FLOOR)),
        latency_growth=Tier.from_json(raw.get("latency_growth")) or LATENCY_GROWTH,
        blocking=raw.get("blocking", True),
    )


def _invariance(raw: Mapping[str, Any]) -> InvarianceSpec:
    return InvarianceSpec(
        batch_dim=raw.get("batch_dim", "B"),
        batch_sizes=tuple(int(b) for b in raw.get("batch_sizes", ())),
        chunks=int(raw.get("chunks", 4)),
        default=Tier.from_json(raw.get("default")),
        outputs={k: Tier.from_json(v) or Tier() for k, v in raw.get("outputs", {}).items()},
        blocking=raw.get("blocking", True),
    )


def _calibration(raw: Mapping[str, Any]) -> CalibrationInfo:
    return CalibrationInfo(
        engines=tuple(raw["engines"]),
        rule=raw["rule"],
        measured=raw["measured"],
        reference=raw.get("reference", ""),
        created=raw.get("created", ""),
        loosened=raw.get("loosened", False),
    )


def _build(raw: Mapping[str, Any], path: Path | None) -> Contract:
    profiles = {
        name: Profile(
            name=name,
            description=p.get("description", ""),
            shapes={
                t: ProfileShape(tuple(s["min"]), tuple(s["opt"]), tuple(s["max"]))
                for t, s in p["shapes"].items()
            },
        )
        for name, p in raw.get("profiles", {}).items()
    }
    cl = raw.get("closed_loop", {})
    closed_loop = ClosedLoopSpec(
        chunks=cl.get("chunks"),
        default=_drift(cl["default"]) if "default" in cl else None,
        outputs={k: _drift(v) for k, v in cl.get("outputs", {}).items()},
    )
    return Contract(
        model=raw["model"],
        description=raw.get("description", ""),
        inputs=tuple(_tensor(t) for t in raw["inputs"]),
        outputs=tuple(_tensor(t) for t in raw["outputs"]),
        profiles=profiles,
        state=tuple(
            StatePair(s["output"], s["input"], s.get("initial", "reference"))
            for s in raw.get("state", [])
        ),
        invariants=tuple(
            Invariant(
                output=i["output"],
                check=i["check"],
                value=_opt_float(i.get("value")),
                axis=i.get("axis"),
                min=_opt_float(i.get("min")),
                max=_opt_float(i.get("max")),
                description=i.get("description", ""),
            )
            for i in raw.get("invariants", [])
        ),
        default_tolerance=_tolerance(raw["default_tolerance"])
        if "default_tolerance" in raw
        else None,
        tolerances={k: _tolerance(v) for k, v in raw.get("tolerances", {}).items()},
        closed_loop=closed_loop,
        latency=LatencySpec.from_json(raw.get("latency", {})),
        memory=MemorySpec.from_json(raw.get("memory", {})),
        regression=_regression(raw.get("regression", {})),
        invariance=_invariance(raw.get("invariance", {})),
        calibration=_calibration(raw["calibration"]) if "calibration" in raw else None,
        path=path,
        raw=raw,
    )


__all__ = [
    "Contract",
    "LatencySpec",
    "MemorySpec",
    "Tier",
    "check_semantics",
    "contract_from_json",
    "load_contract",
]
