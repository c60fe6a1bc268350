"""Turn the gate's settings into a loaded backend (and, for TensorRT, build the engine on demand).

`--trt-engine model.onnx --trt-backend tensorrt` builds the engine through the engine cache (keyed by
the ONNX bytes, the contract's profiles, the options, the TensorRT version and the GPU), so a CI run
rebuilds only what changed, then opens it with the TensorRT backend like any other plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..settings import GateSettings
from . import backend_name_for, open_backend
from .base import Backend
from .options import BackendOptions, OnnxRuntimeOptions, TensorRTOptions, TorchOptions

#: The engine under test, or the second engine it is compared with (--trt-baseline): a baseline
#: is opened plainly, without the engine's contract check, CUDA graphs or provider engine cache.
Role = Literal["engine", "baseline"]
TENSORRT_BACKENDS = ("tensorrt", "tensorrt-rtx")

ORT_TRT_CACHE = "ort-tensorrt"


def _contract(settings: GateSettings) -> Any:
    if settings.contract is None:
        return None
    return settings.load_contract()


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


def backend_options(
    settings: GateSettings, backend: str, contract: Any = None, *, role: Role = "engine"
) -> BackendOptions:
    """The typed options of `backend` from the gate's settings: the one place they are built."""
    if backend == "onnxruntime":
        return _onnxruntime_options(settings, role)
    if backend == "torch":
        from .torch import gate_options

        return gate_options(
            contract,
            entry=settings.torch_entry,
            device=settings.torch_device,
            threads=settings.threads,
            tf32=settings.tf32,
        )
    if backend in TENSORRT_BACKENDS:
        engine = role == "engine"
        return TensorRTOptions(
            threads=settings.threads,
            tf32=settings.tf32,
            contract=contract if engine else None,
            cuda_graphs=settings.cuda_graphs if engine else False,
        )
    raise ConfigError(f"backend {backend!r}: no options known for it")


def _onnxruntime_options(settings: GateSettings, role: Role) -> OnnxRuntimeOptions:
    provider, threads, tf32 = settings.provider, settings.threads, settings.tf32
    if role != "engine" or provider != "tensorrt":
        return OnnxRuntimeOptions(provider=provider, threads=threads, tf32=tf32)
    from ..trt.cache import default_cache_dir

    return OnnxRuntimeOptions(
        provider=provider,
        threads=threads,
        tf32=tf32,
        trt_cache_dir=(settings.cache_dir or default_cache_dir()) / ORT_TRT_CACHE,
        precision=settings.precision,
    )


def open_engine(settings: GateSettings) -> Backend:
    """The engine under test, loaded."""
    engine = settings.require("engine")
    name = backend_name_for(engine, settings.backend)
    contract = _contract(settings) if name in (*TENSORRT_BACKENDS, "torch") else None
    if name in TENSORRT_BACKENDS and engine.suffix.lower() == ".onnx":
        engine = build_on_demand(settings, engine, contract, builder=name)
    return open_backend(engine, name, backend_options(settings, name, contract)).load()


def open_baseline(settings: GateSettings, contract: Any) -> Backend:
    """The baseline named by --trt-baseline, loaded; its backend comes from its extension."""
    path = settings.require("baseline")
    name = backend_name_for(path)
    options = backend_options(settings, name, contract, role="baseline")
    return open_backend(path, name, options).load()


def plain_options(backend: str, *, provider: str = "cpu", threads: int = 0) -> BackendOptions:
    """Options of an engine opened outside the gate (`trtparity selftest`): the ONNX Runtime
    provider and host threads go to the backends that take them, and only to those."""
    if backend == "onnxruntime":
        return OnnxRuntimeOptions(provider=provider, threads=threads)
    if backend == "torch":
        return TorchOptions(threads=threads)
    if backend in TENSORRT_BACKENDS:
        return TensorRTOptions(threads=threads)
    raise ConfigError(f"backend {backend!r}: no options known for it")
