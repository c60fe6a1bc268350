"""Building an engine from ONNX: options, precision rules per TensorRT version, caches, report.

The decisions live here as plain functions (tested in CI); `api.build_plan` only executes them.
A request the installed TensorRT cannot honour is an error before anything is built: 11.x and
TensorRT-RTX removed weak typing and the fp16/bf16/int8 builder flags, and quietly building fp32
instead would make the gate certify an engine nobody asked for.

Two builders: TensorRT, which builds for the GPU it runs on, and TensorRT-RTX, which also builds
ahead of time for named compute capabilities with no GPU at all (so CI machines run the real
builder). Without a GPU, the targets must be named: guessing one would cache a plan for a GPU
nobody asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.model import Contract
from ..errors import ConfigError, TrtParityError
from ..util.atomic import write_bytes
from ..util.hashing import file_sha256
from . import api, cuda, onnx_files
from .api import FLAVOURS, PRECISION_FLAGS
from .cache import EngineCache, cache_key, default_cache_dir
from .compat import report_path, version_tuple
from .profiles import PlannedProfile, plan_profiles
from .report import BuildReport, network_json, parse_inspector

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "graph")
HARDWARE_LEVELS = ("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
CALIBRATION_CHUNKS = 64

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "t": 10**12,
    "tb": 10**12,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_CC = re.compile(r"^[0-9]+\.[0-9]$")


def parse_size(text: str) -> int:
    """Bytes from '4GiB', '512MiB', '1.5G' or a plain number."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(f"--workspace {text!r}: expected a size like 4GiB, 512MiB or 1000000")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"--workspace {text!r}: must be more than 0 bytes")
    return value


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp32"
    workspace: int | None = None
    profiles: tuple[str, ...] = ()
    allow_tf32: bool = False
    version_compatible: bool = False
    hardware_compatibility: str = "NONE"
    builder: str = "tensorrt"
    #: ahead-of-time targets ('8.9', ...); () builds for the GPU present
    compute_capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.builder not in FLAVOURS:
            raise ConfigError(f"--builder {self.builder!r}: expected one of {', '.join(FLAVOURS)}")
        for cc in self.compute_capabilities:
            if not _CC.match(cc):
                raise ConfigError(
                    f"--compute-capability {cc!r}: expected MAJOR.MINOR, for example 8.9"
                )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}"
            )
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise ConfigError(
                f"hardware compatibility {self.hardware_compatibility!r}: expected one of {', '.join(HARDWARE_LEVELS)}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "workspace": self.workspace,
            "profiles": list(self.profiles),
            "allow_tf32": self.allow_tf32,
            "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility,
            "builder": self.builder,
            "compute_capabilities": list(self.compute_capabilities),
        }


@dataclass(frozen=True)
class PrecisionPlan:
    flags: tuple[str, ...]
    strongly_typed: bool
    calibrate: bool

    @property
    def source(self) -> str:
        return "onnx graph (strongly typed)" if self.strongly_typed else "builder flags"


def precision_plan(
    precision: str,
    trt_version: str,
    has_flag: Callable[[str], bool],
    *,
    strongly_typed_only: bool | None = None,
) -> PrecisionPlan:
    """How to ask the installed TensorRT for `precision`, or ConfigError when it cannot.

    `strongly_typed_only` is True for TensorRT-RTX (versions 1.x, no weak typing); None derives it
    from the TensorRT version (11.x and later)."""
    major = version_tuple(trt_version)[:1] or (0,)
    if strongly_typed_only is None:
        strongly_typed_only = major[0] >= 11
    if precision == "graph":
        return PrecisionPlan((), True, False)
    if strongly_typed_only:
        if precision == "fp32":
            return PrecisionPlan((), True, False)
        flag = PRECISION_FLAGS[precision]
        how = (
            "ModelOpt AutoCast"
            if precision in ("fp16", "bf16")
            else "Q/DQ nodes (ModelOpt quantization)"
        )
        raise ConfigError(
            f"--precision {precision}: TensorRT {trt_version} has no BuilderFlag.{flag} (11.x and TensorRT-RTX have no weak typing), "
            f"so precision comes from the ONNX graph; convert the model to {precision} with {how} and build it "
            "with --precision graph"
        )
    if precision == "fp32":
        return PrecisionPlan((), False, False)
    flag = PRECISION_FLAGS[precision]
    if not has_flag(flag):
        raise ConfigError(
            f"--precision {precision}: TensorRT {trt_version} has no BuilderFlag.{flag}"
        )
    return PrecisionPlan((flag,), False, precision == "int8")


def profiles_json(planned: list[PlannedProfile]) -> list[dict[str, Any]]:
    return [{"name": p.name, "shapes": p.to_json()} for p in planned]


def calibration_batches(
    contract: Contract, reference: Path, profile: PlannedProfile, limit: int = CALIBRATION_CHUNKS
) -> Iterator[dict[str, np.ndarray]]:
    """Reference inputs whose shapes the calibration profile admits, at most `limit` of them."""
    from ..reference.reader import ReferenceReader

    names = set(profile.shapes)
    count = 0
    for record in ReferenceReader(reference):
        feeds = {k: v for k, v in record.inputs.items() if k in names}
        if set(feeds) != names or not profile.admits({k: v.shape for k, v in feeds.items()}):
            continue
        yield feeds
        count += 1
        if count >= limit:
            return
    if count == 0:
        raise ConfigError(
            f"{reference}: no reference chunk fits profile {profile.name!r}, nothing to calibrate int8 with"
        )


@dataclass
class BuildResult:
    engine: Path
    report: dict[str, Any]
    cache_hit: bool
    notes: list[str] = field(default_factory=list)


def _read(path: Path | None) -> bytes:
    return path.read_bytes() if path is not None and path.is_file() else b""


@dataclass(frozen=True)
class Target:
    """What a plan is built for: the GPU present, or named compute capabilities (ahead of time)."""

    gpu_name: str
    compute_capability: str  # the GPU's; "" for an ahead-of-time build
    targets: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Compute capabilities as timing-cache file names carry them."""
        return "+".join(self.targets) if self.targets else self.compute_capability


def choose_target(
    options: BuildOptions,
    offered: tuple[str, ...],
    who: str,
    find_gpu: Callable[[], Any],
) -> Target:
    """The build's target, or ConfigError: named targets must be ones this builder offers, and
    without them a GPU must be present (never a guessed default)."""
    if options.compute_capabilities:
        if not offered:
            raise ConfigError(
                f"--compute-capability: {who} builds only for the GPU it runs on; ahead-of-time "
                "builds need --builder tensorrt-rtx"
            )
        unknown = [cc for cc in options.compute_capabilities if cc not in offered]
        if unknown:
            raise ConfigError(
                f"--compute-capability {unknown[0]}: {who} targets only {', '.join(offered)}"
            )
        targets = tuple(dict.fromkeys(options.compute_capabilities))
        return Target("none (ahead-of-time build)", "", targets)
    try:
        gpu = find_gpu()
    except TrtParityError as exc:
        hint = (
            f"name the targets with --compute-capability X.Y (repeatable; {who} offers {', '.join(offered)})"
            if offered
            else "TensorRT-RTX builds without one: --builder tensorrt-rtx --compute-capability X.Y"
        )
        raise ConfigError(f"{who} has no GPU to build for ({exc}); {hint}") from None
    return Target(str(gpu.name), str(gpu.compute_capability))


@dataclass
class _Job:
    """One build, decided: what to build, with which builder, for which target, under which key."""

    onnx: Path
    planned: list[PlannedProfile]
    files: dict[str, Path]
    digest: str
    trt: Any
    version: str
    precision: PrecisionPlan
    target: Target
    key_options: dict[str, Any]
    key: str


def build_engine(
    onnx: Path,
    contract: Contract,
    options: BuildOptions,
    *,
    output: Path | None = None,
    cache_dir: Path | None = None,
    timing_cache: Path | None = None,
    reference: Path | None = None,
    device: int = 0,
) -> BuildResult:
    """Build (or take from the engine cache) the engine for `onnx` under `contract`'s profiles."""
    job = _plan_job(onnx, contract, options, reference, device)
    cache = EngineCache(cache_dir or default_cache_dir())
    cached = cache.lookup(job.key)
    if cached is not None:
        report = json.loads(report_path(cached).read_text("utf-8"))
        engine = cache.copy_to(cached, output) if output else cached
        return BuildResult(engine, report, cache_hit=True)
    version = job.version
    cache_version = version if options.builder == "tensorrt" else f"{options.builder}-{version}"
    tc_path = timing_cache or cache.timing_cache(cache_version, job.target.label)
    calib_path = cache.root / "calibration" / f"{job.key[:32]}.cache"
    request = api.BuildRequest(
        onnx="",
        profiles=[p.shapes for p in job.planned],
        precision_flags=job.precision.flags,
        strongly_typed=job.precision.strongly_typed,
        workspace=options.workspace,
        timing_cache=_read(tc_path),
        allow_tf32=options.allow_tf32,
        version_compatible=options.version_compatible,
        hardware_compatibility=options.hardware_compatibility,
        calibration=calibration_batches(contract, reference, job.planned[0])
        if job.precision.calibrate and reference
        else None,
        calibration_cache=_read(calib_path),
        compute_capabilities=job.target.targets,
        origin=str(onnx),
    )
    logger = api.new_logger(job.trt)
    out, seconds = _run_builder(job, request, logger)
    if out.timing_cache:
        write_bytes(tc_path, out.timing_cache)
    if out.calibration_cache:
        write_bytes(calib_path, out.calibration_cache)
    layers, notes = _inspect(job, out.plan, logger)
    report = _report(job, options, out, seconds, layers, notes)
    stored = cache.store(job.key, out.plan, report)
    engine = cache.copy_to(stored, output) if output else stored
    return BuildResult(engine, report, cache_hit=False, notes=notes)


def _plan_job(
    onnx: Path,
    contract: Contract,
    options: BuildOptions,
    reference: Path | None,
    device: int,
) -> _Job:
    """Every decision of a build before anything is built: refusals come here, not mid-build."""
    if not onnx.is_file():
        raise ConfigError(f"{onnx}: ONNX file not found")
    planned = plan_profiles(contract, options.profiles)
    if options.precision == "int8" and reference is None:
        raise ConfigError(
            "--precision int8 calibrates from reference inputs: pass --reference REF.jsonl"
        )
    files = onnx_files.sidecars(onnx)
    digest = onnx_files.model_digest(onnx, files)
    trt = api.import_builder(options.builder)
    version = api.version(trt)
    who = api.title(trt)
    precision = precision_plan(
        options.precision,
        version,
        lambda flag: api.has_builder_flag(trt, flag),
        strongly_typed_only=api.always_strongly_typed(trt),
    )
    target = choose_target(
        options, api.compute_capabilities(trt), who, lambda: cuda.require_device(device)
    )
    key_options = options.to_json()
    if precision.calibrate and reference is not None:
        key_options["calibration_reference"] = file_sha256(reference)
    key = cache_key(
        model_digest=digest,
        profiles=profiles_json(planned),
        options=key_options,
        trt_version=version,
        compute_capability=target.compute_capability,
        flavour=options.builder,
        targets=target.targets,
    )
    return _Job(onnx, planned, files, digest, trt, version, precision, target, key_options, key)


def _run_builder(
    job: _Job, request: api.BuildRequest, logger: Any
) -> tuple[api.BuildOutput, float]:
    """The builder's output and its wall time, on a staged copy where the ONNX file needs one."""
    with tempfile.TemporaryDirectory(prefix="trtparity-onnx-") as tmp:
        staged = (
            onnx_files.stage(job.onnx, Path(tmp), job.files)
            if onnx_files.needs_staging(job.onnx, job.files)
            else job.onnx
        )
        start = time.perf_counter()
        out = api.build_plan(job.trt, replace(request, onnx=str(staged)), logger)
        return out, time.perf_counter() - start


def _inspect(job: _Job, plan: bytes, logger: Any) -> tuple[Any, list[str]]:
    """Per-layer precision from the engine inspector, and notes on why there is none."""
    if job.target.targets:
        return None, [
            "built ahead of time without a GPU: per-layer precision is the parsed network's "
            "(the engine inspector needs a GPU the runtime supports)"
        ]
    try:
        runtime, engine_obj = api.deserialize(job.trt, plan, logger)
        if engine_obj is None:
            raise ConfigError(f"the new plan did not deserialize: {api.last_error(logger)}")
        layers = parse_inspector(api.inspect_layers(job.trt, engine_obj))
        del engine_obj, runtime
    except (ConfigError, ValueError) as exc:
        return None, [f"engine inspector unavailable: {exc}"]
    return layers, []


def _report(
    job: _Job,
    options: BuildOptions,
    out: api.BuildOutput,
    seconds: float,
    layers: Any,
    notes: list[str],
) -> dict[str, Any]:
    return BuildReport(
        trt_version=job.version,
        gpu=job.target.gpu_name,
        compute_capability=job.target.compute_capability,
        profiles=profiles_json(job.planned),
        options={
            **job.key_options,
            "precision_source": job.precision.source,
            "strongly_typed": job.precision.strongly_typed,
            "builder_flags": list(job.precision.flags),
        },
        build_seconds=seconds,
        engine_bytes=len(out.plan),
        engine_sha256=hashlib.sha256(out.plan).hexdigest(),
        onnx={"path": str(job.onnx), "sha256": job.digest, "external_data": sorted(job.files)},
        cache_key=job.key,
        layers=layers,
        notes=notes,
        flavour=options.builder,
        targets=job.target.targets,
        network=network_json(out.network) if out.network is not None else None,
    ).to_json()


def summary_line(result: BuildResult) -> str:
    r: Mapping[str, Any] = result.report
    layers = r.get("layers") or {}
    how = "from the engine cache" if result.cache_hit else f"in {r.get('build_seconds', 0):.1f} s"
    precisions = (
        ", ".join(f"{k} {v}" for k, v in (layers.get("precisions") or {}).items()) or "unknown"
    )
    tensorrt = r["tensorrt"]
    who = "TensorRT-RTX" if tensorrt.get("flavour") == "tensorrt-rtx" else "TensorRT"
    targets = r.get("targets") or []
    where = (
        f"for compute capability {', '.join(targets)} (ahead of time, no GPU)"
        if targets
        else f"on {r['device']['name']} (sm {r['device']['compute_capability']})"
    )
    network = r.get("network") or {}
    count = layers.get("layer_count", network.get("layer_count", "?"))
    if not layers and network:
        precisions = ", ".join(f"{k} {v}" for k, v in network.get("output_dtypes", {}).items())
        precisions = f"network output dtypes: {precisions or 'unknown'}"
    sha = r["engine"].get("sha256", "")[:16]
    return (
        f"{result.engine}: {r['engine']['bytes']} bytes (sha256 {sha}…) {how}, {who} "
        f"{tensorrt['version']} {where}, {count} layers ({precisions})"
    )
