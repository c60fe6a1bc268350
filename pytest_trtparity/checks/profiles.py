"""Profile sweep: parity at every optimization profile's min, opt and max shapes.

TensorRT tunes kernels for a profile's opt shapes; an engine can be right at opt and wrong at min or
max (NVIDIA/TensorRT#4450), and a reference recorded at the deployment shape never exercises the
other corners. So each corner runs once on the engine and once on ONNX Runtime over the ONNX the
engine was built from. Inputs come from the reference where it has a chunk of exactly that shape,
otherwise from the contract's declared value ranges, seeded so that a failure reproduces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..backends.base import Backend, NamedProfiles, ProfileSelectable
from ..contract import dtypes
from ..contract.invariants import violation
from ..contract.model import Contract, TensorSpec
from ..errors import ConfigError, TrtParityError
from ..judge.compare import compare
from ..judge.payloads import ProfilesPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level, judge_series
from ..reference.reader import Record
from ..settings import GateSettings
from ..trt.profiles import POINTS, PlannedProfile, Point, plan_profiles

SUITE = "profiles"
#: Reference records scanned for chunks of a corner's shapes before falling back to value ranges.
SCAN_LIMIT = 256
DEFAULT_FLOAT_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class SweepPoint:
    """One distinct corner of a profile; corners with identical shapes (min = opt, say) run once."""

    profile: str
    points: tuple[Point, ...]
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def label(self) -> str:
        return f"{self.profile}@{'/'.join(self.points)}"


@dataclass
class SweepFeeds:
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def onnx_source(settings: GateSettings) -> Path | None:
    """The ONNX file the engine under test came from: --trt-onnx, or the engine itself when it is
    an .onnx file built on demand by the TensorRT backend."""
    if "onnx" in settings.deferred:
        return settings.require("onnx")  # raises: the configured source could not be resolved
    if settings.onnx is not None:
        return settings.onnx
    engine = settings.engine
    if engine is not None and engine.suffix.lower() == ".onnx" and settings.backend == "tensorrt":
        return engine
    return None


def _resolve(spec: TensorSpec, dims: Mapping[str, int]) -> tuple[int, ...] | None:
    out = []
    for d in spec.shape:
        if isinstance(d, int):
            out.append(d)
        elif d in dims:
            out.append(dims[d])
        else:
            return None
    return tuple(out)


def sweep_points(contract: Contract, profiles: Sequence[PlannedProfile]) -> list[SweepPoint]:
    """min, opt and max of each profile, with every input's shape (named dims filled in)."""
    points: list[SweepPoint] = []
    for profile in profiles:
        corners: list[SweepPoint] = []
        for point in POINTS:
            shapes = dict(profile.at(point))
            dims: dict[str, int] = {}
            for spec in contract.inputs:
                if spec.name in shapes:
                    for d, size in zip(spec.shape, shapes[spec.name], strict=False):
                        if isinstance(d, str):
                            dims.setdefault(d, size)
            for spec in contract.inputs:
                if spec.name not in shapes:
                    resolved = _resolve(spec, dims)
                    if resolved is not None:
                        shapes[spec.name] = resolved
            same = next((c for c in corners if c.shapes == shapes), None)
            if same is None:
                corners.append(SweepPoint(profile.name, (point,), shapes))
            else:
                corners[corners.index(same)] = replace(same, points=(*same.points, point))
        points.extend(corners)
    return points


def profiles_to_sweep(engine: Backend, contract: Contract) -> list[PlannedProfile]:
    """The contract's profiles that the engine has (all of them for engines without profiles)."""
    names = engine.profile_names if isinstance(engine, NamedProfiles) else None
    planned = plan_profiles(contract)
    if names is None:
        return planned
    known = [p for p in planned if p.name in names]
    if not known:
        raise ConfigError(
            f"{contract.where}: none of the contract's profiles ({', '.join(p.name for p in planned)}) "
            f"is in the engine (engine profiles: {', '.join(names)}); rebuild it from this contract"
        )
    return known


def synthetic(
    spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """An input drawn from the contract's declared value range (and how it was made)."""
    host = dtypes.host_dtype(spec.dtype)
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5, "random booleans"
    if spec.dtype in dtypes.FLOAT_DTYPES:
        lo, hi = spec.value_range or DEFAULT_FLOAT_RANGE
        how = f"uniform in [{lo:g}, {hi:g}]" + (
            "" if spec.value_range else " (no range in the contract)"
        )
        return rng.uniform(lo, hi, size=shape).astype(host), how
    if spec.value_range is None:
        return np.zeros(shape, dtype=host), "zeros (no range in the contract)"
    lo, hi = int(np.ceil(spec.value_range[0])), int(np.floor(spec.value_range[1]))
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(
        host
    ), f"integers in [{lo}, {hi}]"


def gather_feeds(
    contract: Contract,
    points: Sequence[SweepPoint],
    records: Iterable[Record],
    *,
    seed: int = 0,
    scan_limit: int = SCAN_LIMIT,
) -> dict[str, SweepFeeds]:
    """Feeds for every point: all inputs from the first reference chunk that holds every one of them
    at exactly the point's shapes (inputs of one chunk belong together: a `length` input must match
    its audio), else each input from the first chunk holding it at its shape, else synthetic from its
    value range."""
    out = {p.label: SweepFeeds() for p in points}
    whole: set[str] = set()
    partial: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    for scanned, record in enumerate(records):
        if len(whole) == len(points) or scanned >= scan_limit:
            break
        where = f"reference chunk {record.stream}#{record.chunk_index}"
        for p in points:
            if p.label in whole:
                continue
            matching = {
                name: value
                for name, shape in p.shapes.items()
                if (value := record.inputs.get(name)) is not None and tuple(value.shape) == shape
            }
            if len(matching) == len(p.shapes):
                out[p.label].feeds.update(matching)
                out[p.label].sources.update(dict.fromkeys(matching, where))
                whole.add(p.label)
                continue
            for name, value in matching.items():
                partial.setdefault((p.label, name), (value, where))
    rng = np.random.default_rng(seed)
    for p in points:
        if p.label in whole:
            continue
        for name, shape in p.shapes.items():
            if (p.label, name) in partial:
                array, how = partial[(p.label, name)]
            else:
                array, how = synthetic(contract.input(name), shape, rng)
            out[p.label].feeds[name] = array
            out[p.label].sources[name] = how
    return out


def _fail(result: SuiteResult, output: str, criterion: str, message: str, chunk: str) -> None:
    result.findings.append(Finding(Level.FAIL, SUITE, output, criterion, message, chunk=chunk))


def _check_point(
    result: SuiteResult,
    contract: Contract,
    label: str,
    want: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
) -> None:
    for spec in contract.outputs:
        name = spec.name
        if name not in got or name not in want:
            side = "engine" if name not in got else "ONNX Runtime reference"
            _fail(
                result,
                name,
                "missing output",
                f"output {name!r}: the {side} returned no such output at {label}",
                label,
            )
            result.series(name).add(label, {"max_abs": float("nan")})
            continue
        for inv in contract.invariants_for(name):
            why = violation(inv, got[name])
            if why:
                _fail(
                    result,
                    name,
                    "invariant",
                    f"output {name!r}: invariant {inv.describe()} violated at {label}: {why}",
                    label,
                )
        cmp = compare(
            name,
            want[name],
            got[name],
            expected_dtype=spec.dtype,
            tolerance=contract.tolerance(name),
            allow_empty=spec.allow_empty,
        )
        if cmp.problem:
            _fail(result, name, "structure", f"output {name!r} at {label}: {cmp.problem}", label)
            result.series(name).add(label, {"max_abs": float("nan")})
        else:
            result.series(name).add(label, cmp.metrics)


def run_sweep(
    engine: Backend,
    reference: Backend,
    contract: Contract,
    records: Iterable[Record] = (),
    *,
    seed: int = 0,
) -> SuiteResult:
    """Run every profile corner on the engine and on the reference backend and compare them.

    Each corner is judged on its own against the per-chunk tier of the output's tolerance (p95 and
    pass rates need many chunks, a sweep has three per profile). A corner that cannot run ends the
    sweep with what was measured so far kept and the result incomplete.
    """
    result = SuiteResult(suite=SUITE)
    pin = engine.pin_profile if isinstance(engine, ProfileSelectable) else None
    label = "setup"
    try:
        points = sweep_points(contract, profiles_to_sweep(engine, contract))
        gathered = gather_feeds(contract, points, records, seed=seed)
        result.typed(ProfilesPayload).points = {
            p.label: {
                "shapes": {k: list(v) for k, v in p.shapes.items()},
                "sources": gathered[p.label].sources,
            }
            for p in points
        }
        engine_inputs = {i.name for i in engine.inputs}
        reference_inputs = {i.name for i in reference.inputs}
        for point in points:
            label = point.label
            feeds = gathered[label].feeds
            if pin is not None:
                pin(point.profile)
            engine.reset_state()
            reference.reset_state()
            got = engine.run({k: v for k, v in feeds.items() if k in engine_inputs})
            want = reference.run({k: v for k, v in feeds.items() if k in reference_inputs})
            _check_point(result, contract, label, want, got)
            result.chunks_run += 1
            if point.profile not in result.streams:
                result.streams.append(point.profile)
        result.complete = result.chunks_run > 0
        if not result.complete:
            result.error = "no profile corner ran"
    except TrtParityError as exc:
        result.error = f"at {label}: {exc}"
    finally:
        if pin is not None:
            pin(None)
    judge(result, contract)
    return result


def judge(result: SuiteResult, contract: Contract) -> None:
    for spec in contract.outputs:
        series = result.outputs.get(spec.name)
        if series is None:
            continue
        tol = replace(contract.tolerance(spec.name), p95=None, pass_rate=None)
        if tol.chunk is None:  # a contract with only a p95 tier: use it per corner
            tol = replace(tol, chunk=contract.tolerance(spec.name).p95)
        result.findings.extend(
            judge_series(
                series.series(tol.metric), series.chunks, tol, suite=SUITE, output=spec.name
            )
        )
