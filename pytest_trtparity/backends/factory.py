"""Turn the gate's settings into a loaded backend (and, for TensorRT, build the engine on demand).

`--trt-engine model.onnx --trt-backend tensorrt` builds the engine through the engine cache (keyed by
the ONNX bytes, the contract's profiles, the options, the TensorRT version and the GPU), so a CI run
rebuilds only what changed, then opens it with the TensorRT backend like any other plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import GateSettings
from . import backend_name_for, open_backend
from .base import Backend

ORT_TRT_CACHE = "ort-tensorrt"


def _contract(settings: GateSettings) -> Any:
    if settings.contract is None:
        return None
    from ..contract.model import load_contract

    return load_contract(settings.contract)


def build_on_demand(
    settings: GateSettings, onnx: Path, contract: Any, builder: str = "tensorrt"
) -> Path:
    """The plan for `onnx` under the contract's profiles, from the engine cache or freshly built."""
    from ..trt.build import BuildOptions, build_engine

    if contract is None:
        raise ConfigError(
            f"{onnx}: building a TensorRT engine needs the contract's optimization profiles: pass --trt-contract"
        )
    result = build_engine(
        onnx,
        contract,
        BuildOptions(
            precision=settings.precision,
            builder=builder,
            compute_capabilities=settings.compute_capability,
        ),
        cache_dir=settings.cache_dir,
        reference=settings.ref if settings.precision == "int8" else None,
    )
    return result.engine


def backend_options(settings: GateSettings, backend: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "provider": settings.provider,
        "threads": settings.threads,
        "tf32": settings.tf32,
    }
    if backend == "onnxruntime" and settings.provider == "tensorrt":
        from ..trt.cache import default_cache_dir

        options["trt_cache_dir"] = (settings.cache_dir or default_cache_dir()) / ORT_TRT_CACHE
        options["precision"] = settings.precision
    return options


def open_engine(settings: GateSettings) -> Backend:
    """The engine under test, loaded."""
    engine = settings.require("engine")
    name = backend_name_for(engine, settings.backend)
    options = backend_options(settings, name)
    if name in ("tensorrt", "tensorrt-rtx"):
        contract = _contract(settings)
        if engine.suffix.lower() == ".onnx":
            engine = build_on_demand(settings, engine, contract, builder=name)
        options.update(contract=contract, cuda_graphs=settings.cuda_graphs)
    if name == "torch":
        from .torch import gate_options

        options.update(
            gate_options(
                _contract(settings), entry=settings.torch_entry, device=settings.torch_device
            )
        )
    return open_backend(engine, name, **options).load()
