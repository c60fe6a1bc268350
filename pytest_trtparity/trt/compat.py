"""Will this engine load here? Decided from the build report's metadata before TensorRT is asked.

A plan built by another TensorRT version or for another GPU makes `deserialize_cuda_engine` return
None and only log (NVIDIA/TensorRT#2041, #2176); the sidecar lets the gate say which version and
which GPU instead, and its checksum catches a plan that changed since it was built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EngineLoadError, ExecutionUnavailable

REPORT_SUFFIX = ".build.json"


def report_path(engine: Path) -> Path:
    """Where the build report (and so the compatibility metadata) of an engine lives."""
    return engine.with_name(engine.name + REPORT_SUFFIX)


def version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class EngineMeta:
    """What the build report says about where a plan can run."""

    trt_version: str
    compute_capability: str
    gpu: str = ""
    engine_sha256: str | None = None
    version_compatible: bool = False
    hardware_compatibility: str = "NONE"
    profile_names: tuple[str, ...] = ()
    flavour: str = "tensorrt"
    #: ahead-of-time target compute capabilities (TensorRT-RTX); () for a plan built on its GPU
    targets: tuple[str, ...] = ()

    @classmethod
    def from_report(cls, raw: Mapping[str, Any], where: str) -> EngineMeta:
        try:
            trt = raw["tensorrt"]
            device = raw["device"]
            options = raw.get("options", {})
            targets = tuple(str(t) for t in raw.get("targets") or ())
            cc = device["compute_capability"]
            if cc is None and not targets:
                raise KeyError("device.compute_capability")
            return cls(
                trt_version=str(trt["version"]),
                compute_capability=str(cc or ""),
                flavour=str(trt.get("flavour", "tensorrt")),
                targets=targets,
                gpu=str(device.get("name", "")),
                engine_sha256=raw.get("engine", {}).get("sha256"),
                version_compatible=bool(options.get("version_compatible", False)),
                hardware_compatibility=str(options.get("hardware_compatibility", "NONE")),
                profile_names=tuple(str(p["name"]) for p in raw.get("profiles", [])),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise EngineLoadError(
                f"{where}: build report lacks {exc} (tensorrt.version, device.compute_capability)"
            ) from None


def read_meta(engine: Path) -> EngineMeta | None:
    """The engine's build metadata, or None when it has no build report beside it."""
    path = report_path(engine)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineLoadError(f"{path}: build report is unreadable: {exc}") from None
    if not isinstance(raw, dict):
        raise EngineLoadError(f"{path}: build report must be a JSON object")
    return EngineMeta.from_report(raw, str(path))


def cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = cc.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise EngineLoadError(f"compute capability {cc!r} is not MAJOR.MINOR") from None


def version_problem(built: str, installed: str, *, version_compatible: bool) -> str | None:
    """Why a plan built by `built` cannot run on `installed`, or None.

    Plans are tied to major.minor.patch; version-compatible plans run on the same or a later
    release of the same major version, never an older one.
    """
    b, i = version_tuple(built), version_tuple(installed)
    if version_compatible:
        if b[:1] != i[:1] or i[:3] < b[:3]:
            return (
                f"built version-compatible by TensorRT {built}, which runs only on {b[0] if b else '?'}.x "
                f"releases at or after it; this runtime is {installed}"
            )
        return None
    if b[:3] != i[:3]:
        return f"built by TensorRT {built}, but this runtime is TensorRT {installed}; rebuild the engine with {installed}"
    return None


def device_problem(
    built_cc: str,
    device_cc: str,
    *,
    hardware_compatibility: str,
    built_gpu: str = "",
    device: str = "",
) -> str | None:
    """Why a plan built for compute capability `built_cc` cannot run on `device_cc`, or None."""
    b, d = cc_tuple(built_cc), cc_tuple(device_cc)
    level = hardware_compatibility.upper()
    on = f" ({device})" if device else ""
    was = f" ({built_gpu})" if built_gpu else ""
    if level == "AMPERE_PLUS":
        if d < (8, 0):
            return f"built hardware-compatible for Ampere and newer, but this GPU{on} is sm {device_cc}"
        return None
    if b != d:
        return f"built for GPU compute capability {built_cc}{was}, but this GPU{on} is {device_cc}; rebuild on this GPU"
    return None


def check_before_load(
    engine: Path,
    meta: EngineMeta,
    *,
    installed_version: str,
    device_cc: str,
    device_name: str,
    engine_sha256: str,
) -> None:
    """Raise EngineLoadError when the sidecar proves the plan cannot run here (or has changed)."""
    if meta.engine_sha256 and meta.engine_sha256 != engine_sha256:
        raise EngineLoadError(
            f"{engine}: sha256 {engine_sha256[:16]}… differs from {meta.engine_sha256[:16]}… recorded in "
            f"{report_path(engine).name} at build time; the plan changed or the report belongs to another engine"
        )
    problem = version_problem(
        meta.trt_version, installed_version, version_compatible=meta.version_compatible
    )
    if problem is None and meta.targets:
        if device_cc not in meta.targets:
            raise ExecutionUnavailable(
                f"{engine}: built ahead of time for compute capability {', '.join(meta.targets)}, "
                f"but this GPU ({device_name}) has compute capability {device_cc}; rebuild with "
                f"--compute-capability {device_cc} where the builder offers it"
            )
        return
    if problem is None:
        problem = device_problem(
            meta.compute_capability,
            device_cc,
            hardware_compatibility=meta.hardware_compatibility,
            built_gpu=meta.gpu,
            device=device_name,
        )
    if problem:
        raise EngineLoadError(f"{engine}: {problem}")


def deserialize_failure(
    engine: Path,
    engine_sha256: str,
    *,
    installed_version: str,
    meta: EngineMeta | None,
    log: Sequence[str] = (),
    lean: bool = False,
) -> str:
    """The sentence for `deserialize_cuda_engine` returning None: path, checksum, both versions."""
    built = meta.trt_version if meta else "unknown (no build report beside the engine)"
    text = (
        f"{engine}: TensorRT {installed_version} could not deserialize this engine "
        f"(sha256 {engine_sha256[:16]}…, built by TensorRT {built}); it is corrupt, not a TensorRT plan, "
        "or from another TensorRT version or GPU"
    )
    if lean:
        text += "; the lean runtime loads only plans built with the version-compatible flag"
    if log:
        text += f"; TensorRT said: {log[-1]}"
    return text


#: What TensorRT-RTX logs when its runtime does not support the GPU (for example sm_90, Hopper).
GPU_REFUSAL = "cannot run on this GPU"


def gpu_refusal(engine: Path, who: str, log: Sequence[str]) -> str | None:
    """The sentence for a runtime that refused the GPU itself, or None when the log says otherwise.

    TensorRT-RTX on an H200 logs "The engine cannot run on this GPU, which has compute capability
    9.0. Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0. ..." and returns no engine:
    no rebuild helps, so the gate's execution checks skip with this sentence instead of failing."""
    for line in reversed(log):
        if GPU_REFUSAL in line:
            message = (
                line.split(": ", 1)[1] if line.startswith(("ERROR: ", "INTERNAL_ERROR: ")) else line
            )
            return f"{engine}: {who} refuses to run on this GPU: {message.strip()}"
    return None
