"""TensorRT engines: intermediates as debug tensors of a debug build, not as extra outputs.

Extra outputs change what TensorRT may fuse, which can hide or create the very error being looked
for. The documented way (TensorRT 10+) is to mark tensors for debugging and receive them at run
time through an `IDebugListener`:

- `INetworkDefinition.mark_unfused_tensors_as_debug_tensors()` marks what survives fusion without
  preventing any fusion (the engine stays as built); preferred where it exists (10.8+, 11.x, RTX);
- else `INetworkDefinition.mark_debug(tensor)` per named tensor, which keeps outputs as they are
  but may keep a marked tensor from being fused: said in the notes;
- else `mark_output(tensor)`: the engine changed, said in the notes.

The debug engine is rebuilt from the source ONNX named in the engine's build report, with the
report's options (flavour, profiles, precision, targets), through `trt.api` (the only module that
calls TensorRT). At run time the listener copies each debug tensor to the host. `DebugRuntime` is
the seam: `TensorRTRuntime` is the real one, the tests run the logic against a fake.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..contract.io import IOInfo
from ..errors import ConfigError, EngineLoadError, ExecutionUnavailable
from ..trt import api
from .intermediates import TensorNode
from .names import match_names

#: Copies `nbytes` at device address `addr` to a host array of `dtype` and `shape` (the cuda layer).
CopyToHost = Callable[[int, int, np.dtype[Any], tuple[int, ...], Any], np.ndarray]


@dataclass(frozen=True)
class Marking:
    """Which tensors were marked and how; `note` says when the engine may differ."""

    mode: str  # "unfused" | "debug" | "output"
    marked: tuple[str, ...]
    note: str


def mark_intermediates(network: Any, names: Sequence[str], *, prefer: str = "unfused") -> Marking:
    """Mark `names` (tensors of `network`) for reading back, by the least intrusive API there is
    (`prefer="debug"` skips the unfused marking, so the marked tensors can be named and counted)."""
    if prefer == "unfused" and api.mark_unfused_debug(network):
        return Marking(
            "unfused",
            (),
            "TensorRT debug tensors (unfused tensors marked): fusions as in the engine under test; fused tensors are not observed",
        )
    tensors = api.network_tensors(network)
    found = [n for n in names if n in tensors]
    if hasattr(network, "mark_debug"):
        marked = tuple(n for n in found if api.mark_debug(network, tensors[n]))
        return Marking(
            "debug",
            marked,
            "TensorRT debug tensors marked by name: a marked tensor may stay unfused, so the debug engine can differ from the engine under test",
        )
    for n in found:
        api.mark_output(network, tensors[n])
    return Marking(
        "output",
        tuple(found),
        "this TensorRT has no debug tensors: intermediates were marked as extra outputs, which changed the engine (fusions)",
    )


def make_listener(base: type, copy: CopyToHost, dtype_of: Callable[[Any], np.dtype[Any]]) -> Any:
    """An `IDebugListener` (subclass of `base`, i.e. `tensorrt.IDebugListener`) that copies each
    debug tensor to the host into its `tensors` dict."""

    class Listener(base):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.tensors: dict[str, np.ndarray] = {}

        def process_debug_tensor(
            self, addr: int, location: Any, type: Any, shape: Any, name: str, stream: Any
        ) -> bool:
            dims = tuple(int(d) for d in shape)
            dtype = dtype_of(type)
            nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize if dims else dtype.itemsize
            self.tensors[name] = copy(addr, nbytes, dtype, dims, stream)
            return True

    return Listener()


def attach(
    context: Any, listener: Any, names: Sequence[str] | None = None, *, unfused: bool = False
) -> None:
    """Ask `context` (an IExecutionContext) to report debug tensors to `listener`."""
    api.watch_debug_tensors(context, listener, names, unfused=unfused, logger=None)


# -- the build report and the debug build --------------------------------------------------------


@dataclass(frozen=True)
class BuildSpec:
    """How the engine under test was built, read from its build report: the debug build repeats it."""

    engine: Path
    source: Path
    flavour: str
    options: Mapping[str, Any]
    profiles: tuple[Mapping[str, tuple[tuple[int, ...], ...]], ...]
    targets: tuple[str, ...]
    inputs: tuple[IOInfo, ...]

    def request(self, onnx: Path) -> api.BuildRequest:
        """The builder request of the engine under test, for `onnx` (the source or an edited copy)."""
        o = self.options
        return api.BuildRequest(
            onnx=str(onnx),
            profiles=list(self.profiles),  # type: ignore[arg-type]
            precision_flags=tuple(str(f) for f in o.get("builder_flags") or ()),
            strongly_typed=bool(o.get("strongly_typed", False)),
            workspace=o.get("workspace"),
            allow_tf32=bool(o.get("allow_tf32", False)),
            version_compatible=bool(o.get("version_compatible", False)),
            hardware_compatibility=str(o.get("hardware_compatibility", "NONE")),
            compute_capabilities=self.targets,
            origin=str(onnx),
        )


def read_build_spec(engine: Path, source: Path | None = None) -> BuildSpec:
    """The engine's build report as a `BuildSpec`; `source` (--trt-onnx) overrides its onnx.path."""
    from ..trt.compat import report_path
    from ..trt.tensors import dtype_name

    path = report_path(engine)
    if not path.is_file():
        raise EngineLoadError(
            f"{path}: not found; a TensorRT engine is localized through its build report (the source ONNX and the options the debug build repeats)"
        )
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineLoadError(f"{path}: the engine's build report is unreadable: {exc}") from None
    field_name = "onnx.path"
    try:
        onnx = Path(str(source or raw["onnx"]["path"]))
        field_name = "options"
        options = dict(raw["options"])
        field_name = "profiles"
        profiles = tuple(_ranges(p["shapes"]) for p in raw["profiles"])
        field_name = "network.inputs"
        inputs = tuple(
            IOInfo(t["name"], dtype_name(t["dtype"], tensor=t["name"]), tuple(t["shape"]))
            for t in raw["network"]["inputs"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineLoadError(
            f"{path}: field '{field_name}' is missing or malformed ({exc})"
        ) from None
    if options.get("precision") == "int8":
        raise ConfigError(
            f"{path}: field 'options.precision' is int8: a debug build would need the engine's calibration, so int8 engines are not localized"
        )
    return BuildSpec(
        engine,
        onnx,
        str(raw.get("tensorrt", {}).get("flavour", "tensorrt")),
        options,
        profiles,
        tuple(str(t) for t in raw.get("targets") or ()),
        inputs,
    )


def _ranges(shapes: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], ...]]:
    return {name: (tuple(r["min"]), tuple(r["opt"]), tuple(r["max"])) for name, r in shapes.items()}


@dataclass
class DebugEngine:
    """A built debug plan: how its tensors were marked and how long the build took."""

    plan: bytes
    marking: Marking
    seconds: float
    spec: BuildSpec


class DebugRuntime(Protocol):
    """Builds debug engines and runs them; the real one is `TensorRTRuntime`."""

    def build(self, spec: BuildSpec, onnx: Path, names: Sequence[str]) -> DebugEngine: ...

    def run(
        self, engine: DebugEngine, feeds: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the engine's outputs, the debug tensors by TensorRT's names) for one chunk."""
        ...


class TensorRTRuntime:
    """The real TensorRT (or TensorRT-RTX) debug build and run."""

    def __init__(self, prefer: str = "unfused") -> None:
        self.prefer = prefer

    def build(self, spec: BuildSpec, onnx: Path, names: Sequence[str]) -> DebugEngine:
        trt = api.import_builder(spec.flavour)
        logger = api.new_logger(trt)
        marked: list[Marking] = []

        def edit(network: Any) -> None:
            marked.append(mark_intermediates(network, names, prefer=self.prefer))

        start = time.perf_counter()
        out = api.build_plan(trt, spec.request(onnx), logger, edit)
        return DebugEngine(out.plan, marked[0], time.perf_counter() - start, spec)

    def run(
        self, engine: DebugEngine, feeds: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Opened with the gate's TensorRT backend (its GPU and version checks), the listener on
        its execution context. Written to the documented API; it needs a GPU the runtime supports."""
        from ..backends import open_backend

        with tempfile.TemporaryDirectory(prefix="trtparity-debug-") as tmp:
            path = Path(tmp) / "debug.plan"
            path.write_bytes(engine.plan)
            backend: Any = open_backend(path, engine.spec.flavour)
            try:
                backend.load()
            except ExecutionUnavailable as exc:
                reason = str(exc).removeprefix(f"{path}: ")  # the temporary file means nothing
                raise ExecutionUnavailable(
                    f"{engine.spec.engine}: the debug engine was built ({engine.seconds:.1f} s) but could not run: {reason}"
                ) from None
            try:
                listener = make_listener(api.debug_listener_base(backend._trt), _copy, _dtype)
                names = None if engine.marking.mode == "unfused" else engine.marking.marked
                api.watch_debug_tensors(
                    backend._context,
                    listener,
                    names,
                    unfused=engine.marking.mode == "unfused",
                    logger=backend._logger,
                )
                outputs = backend.run(feeds)
                return outputs, dict(listener.tensors)
            finally:
                backend.close()


def _copy(
    addr: int, nbytes: int, dtype: np.dtype[Any], shape: tuple[int, ...], stream: Any
) -> np.ndarray:
    """A debug tensor to the host, on the stream TensorRT computes it on."""
    from ..trt import cuda

    host = np.empty(shape, dtype)
    rt = cuda.cudart()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    cuda.check(
        rt.cudaMemcpyAsync(host.ctypes.data, addr, nbytes, kind, stream), "cudaMemcpyAsync()"
    )
    cuda.check(rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize()")
    return host


def _dtype(trt_type: Any) -> np.dtype[Any]:
    from ..trt.tensors import dtype_name

    return np.dtype(dtype_name(str(getattr(trt_type, "name", trt_type))))


# -- the engine under test, as explain sees it ------------------------------------------------------


@dataclass
class DebugEngineRunner:
    """The debug engine as a replayable engine (`inputs`, `run`, `close`, like a backend): built
    once, each run keeps the debug tensors of the last chunk."""

    runtime: DebugRuntime
    spec: BuildSpec
    names: Sequence[str]
    engine: DebugEngine | None = None
    last_debug: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[IOInfo, ...]:
        return self.spec.inputs

    def build(self) -> DebugEngine:
        if self.engine is None:
            self.engine = self.runtime.build(self.spec, self.spec.source, self.names)
        return self.engine

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, self.last_debug = self.runtime.run(self.build(), feeds)
        return outputs

    def close(self) -> None:
        self.engine = None


@dataclass
class TensorRTTaps:
    """A TensorRT engine's intermediates, read as debug tensors of its debug build."""

    runner: DebugEngineRunner
    notes: tuple[str, ...] = field(default=(), init=False)

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        names: Sequence[str],
        outputs: Sequence[str],
        *,
        reference: Mapping[str, np.ndarray] | None = None,
        nodes: Sequence[TensorNode] = (),
    ) -> dict[str, np.ndarray]:
        got = self.runner.run(feeds)
        debug = self.runner.last_debug
        mapping = match_names(list(names), list(debug))
        out = {name: debug[mapping[name]] for name in names if name in mapping}
        out.update({o: got[o] for o in outputs})
        engine = self.runner.build()
        who = api.FLAVOUR_TITLES.get(engine.spec.flavour, engine.spec.flavour)
        self.notes = (
            engine.marking.note,
            f"debug engine rebuilt by {who} from {engine.spec.source.name} with the build report's options in {engine.seconds:.1f} s (its tactics may differ from the engine under test's); {len(mapping)} of {len(names)} reference tensors observed",
        )
        return out


def source_tensor_names(model: Any) -> list[str]:
    """Every node output of `model`, subgraphs (If branches) included: the names to mark."""
    names: list[str] = []

    def walk(graph: Any) -> None:
        for node in graph.node:
            names.extend(o for o in node.output if o)
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return list(dict.fromkeys(names))
