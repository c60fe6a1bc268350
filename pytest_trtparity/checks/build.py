"""What can be checked with a TensorRT builder and no GPU: the parsed network and the build itself.

TensorRT's ONNX parser decides the network the engine will have: its inputs, outputs, dtypes and
which dimensions stay dynamic. Checking the contract against that network (not against ONNX Runtime's
reading of the same file) catches what only TensorRT sees, and TensorRT-RTX does it on a CPU-only CI
machine. The `build` check then builds the plan and holds its size to the contract's engine-size
budget (the checklist's "engine < 2 GB" when the contract sets none).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.bindings import engine_problems
from ..contract.io import IOInfo
from ..contract.model import Contract, TensorSpec, Tier
from ..errors import BuildError, ConfigError, TrtParityError
from ..judge.payloads import BuildPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level
from ..trt import onnx_files
from ..trt.profiles import PlannedProfile, plan_profiles
from ..trt.report import NetworkDescription, NetworkTensor, network_json
from ..trt.tensors import dims_of, dtype_name

SUITE = "build"
#: The checklist's engine-size limit, used when the contract's memory.engine_bytes sets none.
DEFAULT_ENGINE_BYTES = Tier(fail=float(2 * 10**9))


@dataclass
class NetworkCheck:
    """The contract against the network TensorRT parsed: one sentence per disagreement."""

    who: str
    network: NetworkDescription
    problems: list[str]


def io_infos(tensors: Sequence[NetworkTensor]) -> tuple[IOInfo, ...]:
    return tuple(
        IOInfo(t.name, dtype_name(t.dtype, tensor=t.name), dims_of(t.shape)) for t in tensors
    )


def dynamic_problems(
    specs: Sequence[TensorSpec], tensors: Sequence[NetworkTensor], kind: str
) -> Iterator[str]:
    """A dimension the contract names as dynamic that TensorRT parsed as fixed: no profile can vary it."""
    have = {t.name: t for t in tensors}
    for spec in specs:
        tensor = have.get(spec.name)
        if tensor is None or len(tensor.shape) != len(spec.shape):
            continue  # engine_problems names these
        for axis, (dim, want) in enumerate(zip(tensor.shape, spec.shape, strict=True)):
            if isinstance(want, str) and dim >= 0:
                yield (
                    f"{kind} {spec.name!r}: dimension {axis} is fixed at {dim} in the network "
                    f"TensorRT parsed, contract says dynamic {want!r}"
                )


def profile_problems(
    planned: Sequence[PlannedProfile], inputs: Sequence[NetworkTensor]
) -> Iterator[str]:
    """Profile shapes the parsed network cannot take: unknown input, wrong rank, a fixed dim changed."""
    have = {t.name: t for t in inputs}
    for profile in planned:
        for name, points in profile.shapes.items():
            tensor = have.get(name)
            if tensor is None:
                yield f"profile {profile.name!r}: input {name!r} is not an input of the parsed network"
                continue
            for point, shape in zip(("min", "opt", "max"), points, strict=True):
                if len(shape) != len(tensor.shape):
                    yield (
                        f"profile {profile.name!r}: input {name!r} {point} {list(shape)} has rank "
                        f"{len(shape)}, the parsed network's is {len(tensor.shape)} {list(tensor.shape)}"
                    )
                    break
                fixed = [
                    a
                    for a, (d, s) in enumerate(zip(tensor.shape, shape, strict=True))
                    if 0 <= d != s
                ]
                if fixed:
                    yield (
                        f"profile {profile.name!r}: input {name!r} {point} {list(shape)} changes "
                        f"dimension {fixed[0]}, fixed at {tensor.shape[fixed[0]]} in the parsed network"
                    )
                    break


def check_network(onnx: Path, contract: Contract, flavour: str) -> NetworkCheck:
    """Parse `onnx` with TensorRT (no GPU needed) and compare the network with the contract.

    Raises MissingDependencyError when the builder is not installed, BuildError when the parser fails.
    """
    from ..trt import api

    if not onnx.is_file():
        raise ConfigError(f"{onnx}: ONNX file not found")
    files = onnx_files.sidecars(onnx)
    trt = api.import_builder(flavour)
    logger = api.new_logger(trt)
    with tempfile.TemporaryDirectory(prefix="trtparity-onnx-") as tmp:
        staged = (
            onnx_files.stage(onnx, Path(tmp), files)
            if onnx_files.needs_staging(onnx, files)
            else onnx
        )
        parsed = api.parse_network(trt, str(staged), logger, origin=str(onnx))
        network = api.describe_network(trt, parsed.network)
        problems = _contract_problems(contract, network)
        planned = plan_profiles(contract) if contract.profiles else []
        shape_problems = list(profile_problems(planned, network.inputs))
        problems += shape_problems
        if not shape_problems:
            for profile in planned:
                why = api.check_profile(trt, parsed, profile.shapes, logger)
                if why is not None:
                    problems.append(f"profile {profile.name!r}: {api.title(trt)} refused it: {why}")
    return NetworkCheck(api.title(trt), network, problems)


def _contract_problems(contract: Contract, network: NetworkDescription) -> list[str]:
    try:
        ins, outs = io_infos(network.inputs), io_infos(network.outputs)
    except TrtParityError as exc:
        return [str(exc)]
    problems = list(engine_problems(contract, ins, outs))
    problems += dynamic_problems(contract.inputs, network.inputs, "input")
    problems += dynamic_problems(contract.outputs, network.outputs, "output")
    return problems


def _finding(level: Level, criterion: str, message: str, **more: Any) -> Finding:
    return Finding(level, SUITE, "engine", criterion, message, **more)


def build_suite(
    onnx: Path,
    contract: Contract,
    options: Any,
    *,
    cache_dir: Path | None = None,
) -> SuiteResult:
    """The gate's `build` check: the contract against the parsed network, the build, and the plan's
    size against the contract's budget. MissingDependencyError (no builder) propagates: the suite
    skips naming why; everything else TensorRT refuses is a fail-level finding in one sentence."""
    from ..trt.build import build_engine
    from .memory import bytes_finding

    result = SuiteResult(suite=SUITE)
    try:
        check = check_network(onnx, contract, options.builder)
    except (BuildError, ConfigError) as exc:
        result.findings.append(_finding(Level.FAIL, "parse", str(exc)))
        result.complete = True
        return result
    payload = result.typed(BuildPayload)
    payload.network = {k: v for k, v in network_json(check.network).items() if k != "layers"}
    for problem in check.problems:
        result.findings.append(
            _finding(
                Level.FAIL,
                "network",
                f"{onnx} as {check.who} parsed it does not match {contract.where}: {problem}",
            )
        )
    try:
        built = build_engine(onnx, contract, options, cache_dir=cache_dir)
    except (BuildError, ConfigError) as exc:
        result.findings.append(_finding(Level.FAIL, "build", str(exc)))
        result.complete = True
        return result
    report = built.report
    size = int(report["engine"]["bytes"])
    tier = contract.memory.tier("engine_bytes") or DEFAULT_ENGINE_BYTES
    finding = bytes_finding("engine_bytes", tier, size, suite=SUITE)
    if finding is not None:
        result.findings.append(finding)
    payload.builder = report["tensorrt"]
    payload.targets = report.get("targets", [])
    payload.device = report["device"]
    payload.engine = {"path": str(built.engine), **report["engine"]}
    payload.build_seconds = report["build_seconds"]
    payload.cache_hit = built.cache_hit
    payload.budget_bytes = {"warn": tier.warn, "fail": tier.fail}
    payload.notes = list(built.notes)
    result.complete = True
    return result


def summary(result: SuiteResult) -> str:
    """One line for the terminal: what was built, how big, how long, against which budget."""
    p = result.typed(BuildPayload)
    if p.engine is None:
        return f"build: {result.verdict.word}, no plan ({len(result.findings)} finding(s))"
    builder = p.builder
    who = "TensorRT-RTX" if builder.get("flavour") == "tensorrt-rtx" else "TensorRT"
    device = p.device or {}
    targets = ", ".join(p.targets or []) or device.get("compute_capability") or "?"
    how = "from the engine cache" if p.cache_hit else f"in {p.build_seconds:.2f} s"
    layers = (p.network or {}).get("layer_count")
    return (
        f"build: {who} {builder['version']} for compute capability {targets}: "
        f"{p.engine['bytes']} bytes {how}, {layers} network layers"
    )
