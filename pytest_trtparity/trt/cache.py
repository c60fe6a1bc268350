"""The engine cache and the timing cache: CI rebuilds only what changed.

An engine is reusable exactly when the same ONNX bytes (sidecars included), the same profiles, the
same build options, the same builder (TensorRT or TensorRT-RTX) and version, and the same GPU compute
capability (or, for an ahead-of-time build, the same target compute capabilities) went into it; the
cache key is a hash of exactly those. The timing cache is per TensorRT version and compute
capability, and survives option changes (it makes a rebuild fast even when the key differs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util.atomic import write_bytes
from .compat import report_path

KEY_VERSION = 2


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("TRTPARITY_CACHE_DIR")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "trtparity"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cache_key(
    *,
    model_digest: str,
    profiles: Any,
    options: Mapping[str, Any],
    trt_version: str,
    compute_capability: str,
    flavour: str = "tensorrt",
    targets: tuple[str, ...] = (),
) -> str:
    """The engine cache key: changes when anything that changes the plan changes."""
    material = canonical(
        {
            "key_version": KEY_VERSION,
            "model": model_digest,
            "profiles": profiles,
            "options": dict(options),
            "tensorrt": trt_version,
            "flavour": flavour,
            "targets": list(targets),
            "compute_capability": compute_capability,
        }
    )
    return hashlib.sha256(material.encode()).hexdigest()


def timing_cache_name(trt_version: str, compute_capability: str) -> str:
    return f"timing-trt{trt_version}-sm{compute_capability.replace('.', '')}.cache"


@dataclass(frozen=True)
class EngineCache:
    root: Path

    @property
    def engines(self) -> Path:
        return self.root / "engines"

    def engine_path(self, key: str) -> Path:
        return self.engines / f"{key[:32]}.plan"

    def timing_cache(self, trt_version: str, compute_capability: str) -> Path:
        return self.root / "timing" / timing_cache_name(trt_version, compute_capability)

    def lookup(self, key: str) -> Path | None:
        """The cached plan for `key`, when both it and its build report are present."""
        plan = self.engine_path(key)
        if plan.is_file() and plan.stat().st_size > 0 and report_path(plan).is_file():
            return plan
        return None

    def store(self, key: str, plan: bytes, report: Mapping[str, Any]) -> Path:
        path = self.engine_path(key)
        write_bytes(path, plan)
        write_bytes(
            report_path(path), (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
        )
        return path

    def copy_to(self, cached: Path, dest: Path) -> Path:
        """Copy a cached plan and its report to `dest` (the user's -o path)."""
        if dest.resolve() != cached.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(dest, cached.read_bytes())
            shutil.copyfile(report_path(cached), report_path(dest))
        return dest
