"""Every TensorRT call the plugin makes, and nothing else: the only module that imports tensorrt.

Each function is a few calls against the documented Python API of TensorRT 10.x and 11.x and of
TensorRT-RTX 1.x (the same API under the module `tensorrt_rtx_bindings`, always strongly typed, with
ahead-of-time compute-capability targets), with every boolean return and None result checked. Where
the versions or flavours differ (weak typing and the precision flags are gone in 11.x and RTX; the
v1 memory APIs too; only RTX names its targets) both are handled here and nowhere else.

Objects from TensorRT are always held in variables named as in `OBJECT_TYPES`, so that
tests/test_trt_api_surface.py can check every attribute this module touches against the real
bindings of each supported version.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import BackendError, BuildError, ConfigError, EngineLoadError, MissingDependencyError
from . import cuda
from .profiles import Range
from .report import NetworkDescription, NetworkLayer, NetworkTensor
from .tensors import TensorDesc, dims_of, dtype_name, nbytes

log = logging.getLogger("pytest_trtparity.trt")
log.addHandler(logging.NullHandler())  # TensorRT's errors reach users in our sentences, not raw

#: What TensorRT-RTX logs after other errors on a machine without a CUDA driver: noise, not the cause.
NO_DRIVER_NOISE = "catchCudaError"

#: Modules tried in order: the full library (builder + runtime), then the lean runtime.
FULL_MODULES = ("tensorrt", "tensorrt_bindings")
RUNTIME_MODULES = (*FULL_MODULES, "tensorrt_lean", "tensorrt_lean_bindings")
#: TensorRT-RTX: one module holds builder, parser and runtime (its library loads without a GPU).
RTX_MODULES = ("tensorrt_rtx", "tensorrt_rtx_bindings")

#: Builder flavours: the TensorRT library, and TensorRT-RTX (RTX GPUs and A100-class, AOT targets).
FLAVOURS = ("tensorrt", "tensorrt-rtx")
FLAVOUR_TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}

INSTALL_BUILDER = (
    "building engines needs the full TensorRT library with its builder and ONNX parser: "
    "pip install tensorrt-cu12 (TensorRT 10.x, CUDA 12) or tensorrt-cu13 (11.x, CUDA 13) on a machine "
    "with an NVIDIA driver; the lean and dispatch runtimes cannot build"
)
INSTALL_RTX = (
    "TensorRT-RTX is not installed: pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
    "tensorrt-rtx-cu13-bindings==1.7.1.116 (its builder and ONNX parser work without a GPU)"
)
INSTALL_RUNTIME = (
    "the TensorRT backend needs TensorRT's Python runtime: pip install tensorrt-cu12 or tensorrt-cu13 "
    "(or tensorrt-lean-cu13 for version-compatible plans)"
)

#: Variable name -> TensorRT class of the object it holds, throughout this module.
OBJECT_TYPES: dict[str, str] = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "parser_error": "ParserError",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "timing": "ITimingCache",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "inspector": "EngineInspector",
    "layer": "ILayer",
    "tensor": "ITensor",
}

#: Attributes only one flavour has: path -> that flavour (the API-surface test checks both ways).
FLAVOUR_ONLY: dict[str, str] = {
    "ComputeCapability": "tensorrt-rtx",
    "IBuilderConfig.num_compute_capabilities": "tensorrt-rtx",
    "IBuilderConfig.set_compute_capability": "tensorrt-rtx",
}
#: Attributes TensorRT-RTX lacks although TensorRT has them (it has no int8 calibration, no v1 memory API).
NOT_IN_RTX = frozenset(
    {
        "IInt8EntropyCalibrator2",
        "IBuilderConfig.int8_calibrator",
        "IBuilderConfig.set_calibration_profile",
        "ICudaEngine.device_memory_size",
    }
)

#: Attributes that exist only in some versions: path -> (first version, first version without).
VERSIONED: dict[str, tuple[tuple[int, ...], tuple[int, ...] | None]] = {
    "IBuilderConfig.int8_calibrator": ((8,), (11,)),
    "IBuilderConfig.set_calibration_profile": ((8,), (11,)),
    "IInt8EntropyCalibrator2": ((8,), (11,)),
    "ICudaEngine.device_memory_size_v2": ((10, 1), None),
    "ICudaEngine.device_memory_size": ((8,), (11,)),
    "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY": ((10, 9), None),
    "INetworkDefinition.mark_unfused_tensors_as_debug_tensors": ((10, 8), None),
    "IExecutionContext.unfused_tensors_debug_state": ((10, 8), None),
}

#: The functions the runtime backend calls: they must work with the lean runtime module too.
RUNTIME_FUNCTIONS = (
    "new_logger",
    "deserialize",
    "describe_io",
    "profile_ranges",
    "device_memory_bytes",
    "new_context",
    "select_profile",
    "set_input_shape",
    "resolve_shapes",
    "tensor_shape",
    "bind",
    "enqueue",
)

#: --precision value -> BuilderFlag member (10.x only: 11.x removed weak typing and these flags).
PRECISION_FLAGS: dict[str, str] = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}


# -- modules and versions ---------------------------------------------------------------------
def _import_first(names: Sequence[str], *, need: str | None) -> Any:
    tried: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError) as exc:
            tried.append(f"{name}: {exc}")
            continue
        if need is None or hasattr(module, need):
            return module
        tried.append(f"{name}: has no {need}")
    log.debug("TensorRT not importable: %s", "; ".join(tried))
    return None


def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ConfigError(f"--builder {flavour!r}: expected one of {', '.join(FLAVOURS)}")


def import_builder(flavour: str = "tensorrt") -> Any:
    """The module of `flavour` with Builder and OnnxParser, or MissingDependencyError."""
    _check_flavour(flavour)
    modules = RTX_MODULES if flavour == "tensorrt-rtx" else FULL_MODULES
    module = _import_first(modules, need="Builder")
    if module is None:
        raise MissingDependencyError(INSTALL_RTX if flavour == "tensorrt-rtx" else INSTALL_BUILDER)
    return module


def import_runtime(flavour: str = "tensorrt") -> Any:
    """A module of `flavour` with a Runtime: for TensorRT the full library, else the lean runtime."""
    _check_flavour(flavour)
    modules = RTX_MODULES if flavour == "tensorrt-rtx" else RUNTIME_MODULES
    module = _import_first(modules, need="Runtime")
    if module is None:
        raise MissingDependencyError(INSTALL_RTX if flavour == "tensorrt-rtx" else INSTALL_RUNTIME)
    return module


def version(trt: Any) -> str:
    return str(trt.__version__)


def major(trt: Any) -> int:
    return int(version(trt).split(".", 1)[0])


def is_lean(trt: Any) -> bool:
    return not hasattr(trt, "Builder")


def flavour_of(trt: Any) -> str:
    """'tensorrt-rtx' for the TensorRT-RTX module, else 'tensorrt'."""
    return "tensorrt-rtx" if str(trt.__name__).startswith("tensorrt_rtx") else "tensorrt"


def title(trt: Any) -> str:
    """'TensorRT 10.16.1' or 'TensorRT-RTX 1.7.1.116': how messages name the library."""
    return f"{FLAVOUR_TITLES[flavour_of(trt)]} {version(trt)}"


def always_strongly_typed(trt: Any) -> bool:
    """TensorRT 11.x and TensorRT-RTX have no weak typing: precision comes from the graph."""
    return flavour_of(trt) == "tensorrt-rtx" or major(trt) >= 11


def compute_capabilities(trt: Any) -> tuple[str, ...]:
    """The ahead-of-time targets this builder offers ('8.9', ...); () when it builds only for
    the GPU it runs on (TensorRT itself)."""
    members = getattr(getattr(trt, "ComputeCapability", None), "__members__", {})
    out = []
    for name in members:
        digits = name.removeprefix("SM")
        if name.startswith("SM") and digits.isdigit() and len(digits) >= 2:
            out.append(f"{digits[:-1]}.{digits[-1]}")
    return tuple(out)


# -- logging ------------------------------------------------------------------------------------
def new_logger(trt: Any, keep: int = 200) -> Any:
    """An ILogger that keeps the last `keep` warnings and errors (TensorRT reports most failures
    only through the logger) and forwards everything to Python logging."""
    warning = int(trt.ILogger.Severity.WARNING)

    class CapturingLogger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            name = getattr(severity, "name", str(severity))
            if level <= warning:
                self.lines.append(f"{name}: {msg}")
                del self.lines[:-keep]
            log.log(
                logging.ERROR
                if level < warning
                else logging.WARNING
                if level == warning
                else logging.DEBUG,
                "TensorRT %s: %s",
                name,
                msg,
            )

    return CapturingLogger()


def last_lines(logger: Any) -> list[str]:
    return list(getattr(logger, "lines", []))


def forget_lines(logger: Any) -> None:
    """Drop what the logger kept, so the next failure is not explained by an earlier one."""
    lines = getattr(logger, "lines", None)
    if isinstance(lines, list):
        lines.clear()


# -- building ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildRequest:
    """What to build; every choice already validated by `trt.build` (plain code)."""

    onnx: str
    profiles: Sequence[Mapping[str, Range]]
    precision_flags: tuple[str, ...] = ()
    strongly_typed: bool = False
    workspace: int | None = None
    timing_cache: bytes = b""
    version_compatible: bool = False
    hardware_compatibility: str = "NONE"
    allow_tf32: bool = False
    calibration: Iterable[Mapping[str, np.ndarray]] | None = None
    calibration_cache: bytes = b""
    #: ahead-of-time targets ('8.9', ...), TensorRT-RTX only; () builds for the GPU present
    compute_capabilities: tuple[str, ...] = ()
    #: the user's file, named in errors (`onnx` may be a staged copy)
    origin: str = ""


@dataclass
class BuildOutput:
    plan: bytes
    timing_cache: bytes
    calibration_cache: bytes = b""
    log: list[str] = field(default_factory=list)
    network: NetworkDescription | None = None


def _parse_errors(parser: Any) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        parser_error = parser.get_error(i)
        out.append(
            f"node {parser_error.node()} ({parser_error.node_name()}, {parser_error.node_operator()}): {parser_error.desc()}"
        )
    return out


def has_builder_flag(trt: Any, name: str) -> bool:
    return hasattr(trt.BuilderFlag, name)


def network_flags(trt: Any, *, strongly_typed: bool) -> int:
    """STRONGLY_TYPED on request under 10.x; 11.x and RTX are always strongly typed."""
    if strongly_typed and not always_strongly_typed(trt):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


@dataclass
class Parsed:
    """A parsed network and the objects that must outlive it (the parser owns its weights)."""

    builder: Any
    network: Any
    parser: Any


def parse_network(
    trt: Any, onnx: str, logger: Any, *, strongly_typed: bool = False, origin: str = ""
) -> Parsed:
    """Parse an ONNX file into a TensorRT network; BuildError naming file, node and message."""
    builder = trt.Builder(logger)
    if not builder:
        raise BuildError(f"{title(trt)} could not create a builder: {_tail(logger)}")
    network = builder.create_network(network_flags(trt, strongly_typed=strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx) or parser.num_errors:
        errors = _parse_errors(parser) or [last_error(logger)]
        raise BuildError(
            f"{origin or onnx}: {title(trt)}'s ONNX parser failed at {errors[0]}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )
    return Parsed(builder, network, parser)


def _tensor(tensor: Any) -> NetworkTensor:
    dtype = tensor.dtype  # a DataType member; .name is read off it, not off ITensor
    return NetworkTensor(tensor.name, str(dtype.name), tuple(int(d) for d in tensor.shape))


def describe_network(trt: Any, network: Any) -> NetworkDescription:
    """The network as TensorRT parsed it: inputs, outputs, and each layer with its output dtypes."""
    ins = tuple(_tensor(network.get_input(i)) for i in range(network.num_inputs))
    outs = tuple(_tensor(network.get_output(i)) for i in range(network.num_outputs))
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type  # a LayerType member
        dtypes = tuple(_tensor(layer.get_output(j)).dtype for j in range(layer.num_outputs))
        layers.append(NetworkLayer(layer.name, str(kind.name), dtypes))
    return NetworkDescription(ins, outs, tuple(layers))


def check_profile(trt: Any, parsed: Parsed, shapes: Mapping[str, Range], logger: Any) -> str | None:
    """Why TensorRT refuses this optimization profile, or None when it accepts it."""
    forget_lines(logger)
    profile = parsed.builder.create_optimization_profile()
    config = parsed.builder.create_builder_config()
    try:
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
    except (ValueError, TypeError, RuntimeError) as exc:
        return str(exc) or last_error(logger)
    if not profile:  # IOptimizationProfile.__bool__: False when the shapes are inconsistent
        return last_error(logger)
    if config.add_optimization_profile(profile) < 0:
        return last_error(logger)
    return None


def build_plan(
    trt: Any,
    request: BuildRequest,
    logger: Any,
    edit_network: Callable[[Any], None] | None = None,
) -> BuildOutput:
    """Parse the (staged) ONNX file and build a serialized plan; `edit_network` (explain's debug
    build) sees the parsed network before the builder does."""
    parsed = parse_network(
        trt, request.onnx, logger, strongly_typed=request.strongly_typed, origin=request.origin
    )
    builder, network = parsed.builder, parsed.network
    if edit_network is not None:
        edit_network(network)
    config = builder.create_builder_config()
    set_targets(trt, config, request.compute_capabilities, logger)
    _set_flags(trt, config, request)
    first_profile = _add_profiles(builder, config, request.profiles, logger)
    uses_timing_cache = flavour_of(trt) == "tensorrt"  # no-ops, deprecated, in TensorRT-RTX
    if uses_timing_cache:
        timing = config.create_timing_cache(request.timing_cache)
        if not config.set_timing_cache(timing, True):
            raise BackendError(f"TensorRT could not attach the timing cache: {_tail(logger)}")
    calibrator = None
    if request.calibration is not None:
        calibrator = _calibrator(trt, network, request.calibration, request.calibration_cache)
        config.int8_calibrator = calibrator
        if first_profile is not None and not config.set_calibration_profile(first_profile):
            raise ConfigError(f"TensorRT rejected the calibration profile: {_tail(logger)}")
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.release()
    if plan is None:
        raise BuildError(build_failure(request.origin or request.onnx, title(trt), network, logger))
    timing = config.get_timing_cache() if uses_timing_cache else None
    return BuildOutput(
        plan=bytes(plan),
        timing_cache=bytes(timing.serialize()) if timing is not None else b"",
        calibration_cache=calibrator.cache if calibrator is not None else b"",
        log=last_lines(logger),
        network=describe_network(trt, network),
    )


def _set_flags(trt: Any, config: Any, request: BuildRequest) -> None:
    """Workspace, precision, TF32 and compatibility settings of the builder config."""
    if request.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request.workspace))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for flag in request.precision_flags:
        member = getattr(trt.BuilderFlag, flag, None)
        if member is None:  # trt.build refuses this first; never fall back to fp32 silently
            raise ConfigError(f"TensorRT {version(trt)} has no BuilderFlag.{flag}")
        config.set_flag(member)
    if not request.allow_tf32 and has_builder_flag(trt, "TF32"):
        # TF32 is on by default and rounds fp32 matmuls to 10 bits
        config.clear_flag(trt.BuilderFlag.TF32)
    if request.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if request.hardware_compatibility != "NONE":
        level = getattr(trt.HardwareCompatibilityLevel, request.hardware_compatibility, None)
        if level is None:
            raise ConfigError(
                f"TensorRT {version(trt)} has no hardware compatibility level {request.hardware_compatibility}"
            )
        config.hardware_compatibility_level = level


def _add_profiles(
    builder: Any, config: Any, profiles: Sequence[Mapping[str, Range]], logger: Any
) -> Any:
    """One optimization profile per entry, in order; the first (calibration runs under it)."""
    first_profile = None
    for index, shapes in enumerate(profiles):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise ConfigError(f"TensorRT rejected optimization profile {index}: {_tail(logger)}")
        if first_profile is None:
            first_profile = profile
    return first_profile


def _tail(logger: Any) -> str:
    lines = last_lines(logger)
    return lines[-1] if lines else "no message from TensorRT"


def last_error(logger: Any) -> str:
    """TensorRT's last error message (its severity prefix removed), else its last warning."""
    lines = last_lines(logger)
    errors = []
    for line in lines:
        for prefix in ("INTERNAL_ERROR: ", "ERROR: "):
            if line.startswith(prefix):
                errors.append(line[len(prefix) :])
    real = [e for e in errors if NO_DRIVER_NOISE not in e]
    if real or errors:
        return (real or errors)[-1]
    return lines[-1] if lines else "no message from TensorRT"


def set_targets(trt: Any, config: Any, targets: Sequence[str], logger: Any) -> None:
    """Ahead-of-time compute-capability targets (TensorRT-RTX): no GPU needed to build for them."""
    if not targets:
        return
    offered = compute_capabilities(trt)
    if not offered:
        raise ConfigError(
            f"{title(trt)} builds only for the GPU it runs on; --compute-capability needs --builder tensorrt-rtx"
        )
    members = []
    for cc in targets:
        if cc not in offered:
            raise ConfigError(
                f"--compute-capability {cc}: {title(trt)} targets only {', '.join(offered)}"
            )
        members.append(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")))
    config.num_compute_capabilities = len(members)
    for index, member in enumerate(members):
        if not config.set_compute_capability(member, index):
            raise ConfigError(
                f"{title(trt)} refused compute capability {targets[index]}: {_tail(logger)}"
            )


def build_failure(onnx: str, who: str, network: Any, logger: Any) -> str:
    """One sentence for a build that returned no plan: file, layer/node when TensorRT names one, message."""
    message = last_error(logger)
    node = _named_layer(network, message)
    where = f" at node {node}" if node else ""
    return f"{onnx}: {who} could not build the engine{where}: {message}"


def _named_layer(network: Any, message: str) -> str | None:
    """The longest layer name (TensorRT names layers after ONNX nodes) that the message mentions."""
    found = None
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        name = str(layer.name)
        if name and name in message and (found is None or len(name) > len(found)):
            found = name
    return found


def _calibrator(
    trt: Any, network: Any, batches: Iterable[Mapping[str, np.ndarray]], cache: bytes
) -> Any:
    """An entropy calibrator over host batches (10.x only; 11.x takes Q/DQ graphs instead)."""
    base = trt.IInt8EntropyCalibrator2

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.batches = iter(batches)
            self.buffers: dict[str, cuda.DeviceBuffer] = {}
            self.stream = cuda.Stream()
            self.cache = cache

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            pointers = []
            for name in names:
                array = np.ascontiguousarray(batch[name])
                buf = self.buffers.get(name)
                if buf is None or buf.nbytes < array.nbytes:
                    if buf is not None:
                        buf.free()
                    buf = self.buffers[name] = cuda.DeviceBuffer(array.nbytes)
                pinned = cuda.PinnedBuffer(array.nbytes)
                try:
                    pinned.write(array)
                    cuda.copy_h2d(buf.ptr, pinned.ptr, array.nbytes, self.stream)
                    self.stream.synchronize()
                finally:
                    pinned.free()
                pointers.append(buf.ptr)
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return self.cache or None

        def write_calibration_cache(self, data: Any) -> None:
            self.cache = bytes(data)

        def release(self) -> None:
            for buf in self.buffers.values():
                buf.free()
            self.buffers.clear()
            self.stream.destroy()

    return Calibrator()


# -- debug tensors (explain) ------------------------------------------------------------------------
def network_tensors(network: Any) -> dict[str, Any]:
    """Every layer output of a parsed network, by name (the ONNX tensor names the parser kept)."""
    out: dict[str, Any] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            out[str(tensor.name)] = tensor
    return out


def mark_unfused_debug(network: Any) -> bool:
    """Mark what survives fusion as debug tensors without preventing any fusion (10.8+, 11.x,
    TensorRT-RTX); False where this TensorRT lacks the call or refuses."""
    if not hasattr(network, "mark_unfused_tensors_as_debug_tensors"):
        return False
    return bool(network.mark_unfused_tensors_as_debug_tensors())


def mark_debug(network: Any, tensor: Any) -> bool | None:
    """Mark one tensor as a debug tensor (10.0+): True/False as TensorRT answers, None without the call."""
    if not hasattr(network, "mark_debug"):
        return None
    return bool(network.mark_debug(tensor))


def is_debug_tensor(network: Any, tensor: Any) -> bool:
    """Whether `mark_debug` took (tensors marked as unfused debug tensors do not show here)."""
    return bool(network.is_debug_tensor(tensor))


def mark_output(network: Any, tensor: Any) -> None:
    """The fallback without debug tensors: an extra network output (it changes fusions)."""
    network.mark_output(tensor)


def debug_listener_base(trt: Any) -> type:
    """The class a debug listener subclasses."""
    base: type = trt.IDebugListener
    return base


def watch_debug_tensors(
    context: Any, listener: Any, names: Sequence[str] | None, *, unfused: bool, logger: Any
) -> None:
    """Report debug tensors to `listener` at the next enqueue: all of them (`names` None), or those
    named; `unfused` also turns on the tensors marked by `mark_unfused_debug`."""
    if context.set_debug_listener(listener) is False:
        raise BackendError(f"TensorRT refused the debug listener: {_tail(logger)}")
    if unfused:
        context.unfused_tensors_debug_state = True
    if names is None:
        context.set_all_tensors_debug_state(True)
        return
    for name in names:
        if context.set_tensor_debug_state(name, True) is False:
            raise BackendError(f"TensorRT has no debug tensor {name!r}: {_tail(logger)}")


# -- loading and describing ----------------------------------------------------------------------
def deserialize(
    trt: Any, data: bytes, logger: Any, *, allow_host_code: bool = False
) -> tuple[Any, Any]:
    """(runtime, engine or None). The runtime must outlive the engine, so both are returned."""
    runtime = trt.Runtime(logger)
    if not runtime:
        raise EngineLoadError(
            f"TensorRT {version(trt)} could not create a runtime: {_tail(logger)}"
        )
    if allow_host_code:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(data)
    return runtime, engine


def describe_io(trt: Any, engine: Any) -> list[TensorDesc]:
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode: Literal["input", "output"] = (
            "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        )
        out.append(
            TensorDesc(
                name=name,
                mode=mode,
                dtype=dtype_name(engine.get_tensor_dtype(name).name, tensor=name),
                shape=dims_of(tuple(engine.get_tensor_shape(name))),
                on_host=engine.get_tensor_location(name) == trt.TensorLocation.HOST,
            )
        )
    return out


def profile_ranges(engine: Any, inputs: Sequence[str]) -> list[dict[str, Range]]:
    """min/opt/max of every input under every optimization profile of the engine."""
    out: list[dict[str, Range]] = []
    for index in range(engine.num_optimization_profiles):
        shapes: dict[str, Range] = {}
        for name in inputs:
            lo, opt, hi = engine.get_tensor_profile_shape(name, index)
            shapes[name] = (
                tuple(int(d) for d in lo),
                tuple(int(d) for d in opt),
                tuple(int(d) for d in hi),
            )
        out.append(shapes)
    return out


def device_memory_bytes(engine: Any) -> int:
    """Scratch memory the engine needs (v2 API from 10.1; the v1 name is gone in 11.x)."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)


def inspect_layers(trt: Any, engine: Any) -> str:
    """The engine inspector's JSON (layer names, types, tensor formats and precisions)."""
    inspector = engine.create_engine_inspector()
    if inspector is None:
        return "{}"
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# -- running -----------------------------------------------------------------------------------
def new_context(engine: Any, logger: Any) -> Any:
    context = engine.create_execution_context()
    if context is None:
        raise EngineLoadError(
            f"TensorRT could not create an execution context (out of device memory?): {_tail(logger)}"
        )
    return context


def select_profile(context: Any, index: int, stream: int, logger: Any) -> None:
    if not context.set_optimization_profile_async(index, stream):
        raise BackendError(f"TensorRT refused optimization profile {index}: {_tail(logger)}")


def set_input_shape(context: Any, name: str, shape: Sequence[int], logger: Any) -> None:
    if not context.set_input_shape(name, tuple(int(d) for d in shape)):
        raise BackendError(
            f"TensorRT refused shape {list(shape)} for input {name!r} (outside the active profile?): {_tail(logger)}"
        )


def resolve_shapes(context: Any, logger: Any) -> None:
    try:
        unresolved = context.infer_shapes()
    except RuntimeError as exc:
        raise BackendError(f"TensorRT shape inference failed: {exc}; {_tail(logger)}") from None
    if unresolved:
        raise BackendError(
            f"TensorRT cannot infer shapes: inputs {', '.join(unresolved)} are not fully specified"
        )


def tensor_shape(context: Any, name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in context.get_tensor_shape(name))


def bind(context: Any, name: str, address: int, logger: Any) -> None:
    if not context.set_tensor_address(name, int(address)):
        raise BackendError(f"TensorRT refused the address of tensor {name!r}: {_tail(logger)}")


def enqueue(context: Any, stream: int) -> bool:
    """Queue one inference; False when TensorRT refused (the caller decides how to report it)."""
    return bool(context.execute_async_v3(stream))


def output_bytes(desc: TensorDesc, shape: Sequence[int]) -> int:
    return nbytes(desc.dtype, shape)
