"""Backends behind one interface; each imported only when chosen, so optional dependencies stay optional."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Backend, BackendInfo, IOInfo
from .options import BackendOptions

#: backend name -> "module:class", imported on first use.
REGISTRY: dict[str, str] = {
    "onnxruntime": "pytest_trtparity.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "pytest_trtparity.backends.tensorrt:TensorRTBackend",
    "tensorrt-rtx": "pytest_trtparity.backends.tensorrt:TensorRTRTXBackend",
    "torch": "pytest_trtparity.backends.torch:TorchBackend",
}

EXTENSIONS: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".plan": "tensorrt",
    ".engine": "tensorrt",
    ".trt": "tensorrt",
    ".pt": "torch",
    ".ts": "torch",
    ".jit": "torch",
    ".pt2": "torch",
}


def backend_name_for(path: Path, override: str | None = None) -> str:
    if override:
        if override not in REGISTRY:
            raise ConfigError(f"--trt-backend {override!r}: expected one of {', '.join(REGISTRY)}")
        return override
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise ConfigError(
            f"{path}: cannot tell the backend from the extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(EXTENSIONS)} or pass --trt-backend"
        )
    return EXTENSIONS[suffix]


def backend_class(name: str) -> type[Backend]:
    module, _, cls = REGISTRY[name].partition(":")
    loaded: type[Backend] = getattr(importlib.import_module(module), cls)
    return loaded


def open_backend(
    path: str | Path,
    backend: str | None = None,
    options: BackendOptions | None = None,
    **keywords: Any,
) -> Backend:
    """Create (not yet load) the backend for an engine file.

    Pass the backend's typed options (`factory.py` builds them from the gate's settings), or, as a
    convenience, their fields as keywords: those become the typed options at once, and a name the
    backend does not take is a ConfigError."""
    p = Path(path)
    return backend_class(backend_name_for(p, backend))(p, options, **keywords)


__all__ = [
    "Backend",
    "BackendInfo",
    "BackendOptions",
    "IOInfo",
    "backend_name_for",
    "open_backend",
]
