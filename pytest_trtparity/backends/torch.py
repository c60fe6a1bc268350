"""PyTorch backend: TorchScript archives (.pt, .ts, .jit) and torch.export programs (.pt2), on CPU or CUDA.

It is the baseline the engine is measured against (latency, memory, error) and can be the engine
under test itself. TorchScript keeps no output names and no dtypes or shapes, so those come from
the contract (`contract_options`); torch.export programs declare dtypes and shapes themselves.

`entry` names the submodule or method to call, for wrappers whose `forward` hides the network with
explicit state (Silero VAD's .jit keeps its state inside; `entry="_model"` calls the 16 kHz network
`forward(x, state) -> (prob, state)`). On CUDA, state carried from step to step stays on the device.
TF32 is off while the model is loaded unless `tf32=True` (torch_math.py says why), and the process's
own setting comes back on close. torch is imported only when this backend loads.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import dtypes
from ..errors import BackendError, BindingError, EngineLoadError, MissingDependencyError
from ..util.hashing import file_sha256
from .base import Backend, BackendInfo, DeviceSplit, IOInfo, host_cpu_name
from .gpu_facts import cublas_version, format_cudnn, gpu_clocks, nvml_uuid
from .options import Spec, TorchOptions
from .torch_math import apply_tf32, tf32_in_force

if TYPE_CHECKING:
    from ..contract.model import Contract

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit")
EXPORT_SUFFIXES = (".pt2",)
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
#: Schema types passed as Python scalars rather than tensors.
_SCALAR_TYPES = {"int": int, "float": float, "bool": bool}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"the torch backend needs PyTorch: pip install 'pytest-trtparity[torch]' ({exc})"
        ) from None
    return torch


def parse_device(text: str) -> str:
    """`cpu`, `cuda` or `cuda:N`, normalised (`cuda` means `cuda:0`)."""
    match = _DEVICE.match(text.strip().lower())
    if not match:
        raise BackendError(f"torch device {text!r}: expected cpu, cuda or cuda:N")
    kind, index = match.groups()
    if kind == "cpu":
        if index is not None:
            raise BackendError(f"torch device {text!r}: cpu takes no index")
        return "cpu"
    return f"cuda:{int(index or 0)}"


def contract_options(contract: Contract) -> dict[str, Any]:
    """What a TorchScript module cannot say about itself, taken from the contract (as keywords
    for `open_backend` or `TorchOptions`)."""
    return {
        "input_names": tuple(contract.input_names),
        "output_names": tuple(contract.output_names),
        "optional_inputs": tuple(t.name for t in contract.inputs if t.optional),
        "specs": {t.name: (t.dtype, tuple(t.shape)) for t in (*contract.inputs, *contract.outputs)},
    }


def torch_dtype_name(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in dtypes.WIRE_DTYPES:
        raise BackendError(
            f"torch dtype {dtype} has no trtparity name; supported: {', '.join(dtypes.SUPPORTED)}"
        )
    return name


@dataclass(frozen=True)
class _Arg:
    name: str
    kind: str  # "tensor" or a key of _SCALAR_TYPES


class TorchBackend(Backend):
    """Options: `TorchOptions`; `tf32` allows TF32 in fp32 matmul and cuDNN (default off)."""

    kind = "torch"
    options_type = TorchOptions
    options: TorchOptions

    def __init__(
        self, path: str | Path, options: TorchOptions | None = None, **keywords: Any
    ) -> None:
        super().__init__(path, options, **keywords)
        self._device_last: dict[str, Any] = {}
        self._split: tuple[float, float, float] | None = None
        self._args: tuple[_Arg, ...] = ()
        self._format = ""
        self._restore_math: Callable[[], None] | None = None

    # -- loading ---------------------------------------------------------------------------
    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        torch = _import_torch()
        self._torch = torch
        # process-wide, like the flags themselves: set for as long as this model is loaded
        self._restore_math = apply_tf32(torch, self.options.tf32)
        try:
            return self._load_model(torch)
        except BaseException:
            self._restore_tf32()
            raise

    def _restore_tf32(self) -> None:
        """Put back the TF32 setting the process had before this backend loaded."""
        restore, self._restore_math = self._restore_math, None
        if restore is not None:
            restore()

    def _load_model(self, torch: Any) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        self.device = parse_device(self.options.device or "cpu")
        self.cuda = self.device.startswith("cuda")
        if self.cuda:
            self._check_cuda(torch)
            torch.cuda.init()
            # before the caching allocator's first allocation there is no peak to reset, and
            # torch raises "Invalid device argument"
            with contextlib.suppress(RuntimeError):
                torch.cuda.reset_peak_memory_stats(self.device)
        threads = self.options.threads
        if threads:
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-module setting
        if not self.path.is_file():
            raise EngineLoadError(f"{self.path}: model file not found")
        self._engine_bytes = self.path.stat().st_size
        if self._engine_bytes == 0:
            raise EngineLoadError(f"{self.path}: model file is empty")
        suffix = self.path.suffix.lower()
        if suffix in EXPORT_SUFFIXES:
            module, declared = self._load_export(torch)
        else:
            module, declared = self._load_script(torch), None
        self._module = module
        self._entry_name = self.options.entry
        if self._entry_name:
            declared = None  # the program declares its own I/O, not that of a submodule
        self._target = self._resolve_entry(module, self._entry_name)
        self._args = self._signature(self._target)
        in_names = self._bind_inputs([a.name for a in self._args])
        out_names = self._output_names(declared)
        self._in_names = tuple(in_names)
        self._out_names = tuple(out_names)
        if declared is not None:
            ins = tuple(
                IOInfo(n, dt, tuple(shape))
                for n, (dt, shape) in zip(in_names, declared[0], strict=True)
            )
            outs = tuple(
                IOInfo(n, dt, tuple(shape))
                for n, (dt, shape) in zip(out_names, declared[1], strict=True)
            )
        else:
            ins = tuple(
                self._spec_io(n, "input", a.kind) for n, a in zip(in_names, self._args, strict=True)
            )
            outs = tuple(self._spec_io(n, "output", "tensor") for n in out_names)
        self.version = str(torch.__version__)
        return ins, outs

    def _check_cuda(self, torch: Any) -> None:
        if not torch.cuda.is_available():
            build = torch.version.cuda or "none (a CPU-only build)"
            raise BackendError(
                f"{self.path.name}: device {self.device} asked for, but torch {torch.__version__} sees no GPU "
                f"(CUDA in this build: {build})"
            )
        index = int(self.device.split(":")[1])
        if index >= torch.cuda.device_count():
            raise BackendError(
                f"{self.path.name}: device {self.device} asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
            )

    def _load_script(self, torch: Any) -> Any:
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream, but it is the format this file is in
                warnings.filterwarnings(
                    "ignore",
                    message=r".*torch\.jit\.load.* is deprecated",
                    category=DeprecationWarning,
                )
                module = torch.jit.load(str(self.path), map_location=self.device)
        except Exception as exc:  # torch raises RuntimeError/ValueError with a C++ trace
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineLoadError(
                f"{self.path}: not a TorchScript archive torch {torch.__version__} can load "
                f"(sha256 {file_sha256(self.path)[:16]}…): {first}. A .pt must come from torch.jit.save; "
                "a state dict or a pickled module cannot run without its code"
            ) from None
        module.eval()
        self._format = "torchscript"
        return module

    def _load_export(self, torch: Any) -> tuple[Any, tuple[list[Spec], list[Spec]]]:
        try:
            program = torch.export.load(str(self.path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineLoadError(
                f"{self.path}: not a torch.export program torch {torch.__version__} can load: {first}"
            ) from None
        inputs: dict[str, Spec] = {}
        outputs: list[Spec] = []
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
                inputs[node.name] = _meta_spec(node)
            elif node.op == "output":
                by_name = {a.name: a for a in node.args[0] if hasattr(a, "name")}
                outputs = [
                    _meta_spec(by_name[n])
                    for n in program.graph_signature.user_outputs
                    if n in by_name
                ]
        module = program.module()
        if self.cuda:
            module = module.to(self.device)
        self._format = "torch.export"
        self._export_inputs = tuple(program.graph_signature.user_inputs)
        self._export_outputs = tuple(program.graph_signature.user_outputs)
        return module, ([inputs[n] for n in self._export_inputs], outputs)

    def _resolve_entry(self, module: Any, entry: str) -> Any:
        target = module
        walked: list[str] = []
        for part in filter(None, entry.split(".")):
            if not hasattr(target, part):
                children = (
                    sorted(n for n, _ in target.named_children())
                    if hasattr(target, "named_children")
                    else []
                )
                raise EngineLoadError(
                    f"{self.path}: entry {entry!r}: {'.'.join(walked) or 'the model'} has no attribute {part!r}"
                    + (f" (submodules: {', '.join(children)})" if children else "")
                )
            target = getattr(target, part)
            walked.append(part)
        if not callable(target):
            raise EngineLoadError(f"{self.path}: entry {entry!r} is not a module or method")
        return target

    def _signature(self, target: Any) -> tuple[_Arg, ...]:
        schema = _schema(target)
        if schema is not None:
            args = [a for a in schema.arguments if a.name != "self"]
            return tuple(_Arg(a.name, _kind(str(a.type))) for a in args)
        if self._format == "torch.export" and not self._entry_name:
            return tuple(_Arg(n, "tensor") for n in self._export_inputs)
        params = inspect.signature(target).parameters.values()
        return tuple(
            _Arg(p.name, "tensor")
            for p in params
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )

    def _bind_inputs(self, declared: list[str]) -> list[str]:
        """The contract names of the module's arguments, in argument order.

        An argument named like a contract input is that input; the others take the remaining
        contract inputs by position, leaving out optional ones (last first) until the counts agree.
        """
        given = list(self.options.input_names)
        if not given:
            return declared
        unmatched = [d for d in declared if d not in given]
        remaining = [g for g in given if g not in declared]
        optional = [n for n in self.options.optional_inputs if n in remaining]
        for name in reversed(optional):
            if len(remaining) <= len(unmatched):
                break
            remaining.remove(name)
        if len(remaining) != len(unmatched):
            raise EngineLoadError(
                f"{self.path}: {self._entry_label} takes {len(declared)} input(s) ({', '.join(declared) or 'none'}) "
                f"but the contract names {len(given)} ({', '.join(given)}); "
                "use --trt-torch-entry to call the submodule that takes the contract's inputs"
            )
        by_position = iter(remaining)
        return [d if d in given else next(by_position) for d in declared]

    def _output_names(self, declared: tuple[list[Spec], list[Spec]] | None) -> list[str]:
        given = list(self.options.output_names)
        if declared is not None:
            count = len(declared[1])
            if given and len(given) != count:
                raise EngineLoadError(
                    f"{self.path}: the program returns {count} output(s) but the contract names {len(given)} "
                    f"({', '.join(given)})"
                )
            return given or list(self._export_outputs)
        if given:
            return given
        arity = _tuple_arity(_schema(self._target))
        if arity is None:
            raise EngineLoadError(
                f"{self.path}: TorchScript does not name outputs; pass output_names (the gate takes them from the contract)"
            )
        return ["output"] if arity == 1 else [f"output_{i}" for i in range(arity)]

    def _spec_io(self, name: str, side: str, kind: str) -> IOInfo:
        specs = self.options.specs
        if name in specs:
            dtype, shape = specs[name]
            return IOInfo(name, dtype, tuple(shape))
        if kind in _SCALAR_TYPES:
            return IOInfo(name, "int64" if kind in ("int", "bool") else "float64", ())
        raise EngineLoadError(
            f"{self.path}: TorchScript declares no dtype or shape for {side} {name!r}; "
            "pass specs={name: (dtype, shape)} (the gate takes them from the contract)"
        )

    @property
    def target(self) -> Any:
        """The loaded module or method each step calls (the entry), for tools that look inside it."""
        self.load()
        return self._target

    def call_args(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        """The arguments `target` is called with for `feeds`: tensors on the model's device, scalars."""
        self.load()
        return [
            self._to_arg(np.asarray(feeds[n]), n, a)
            for n, a in zip(self._in_names, self._args, strict=True)
        ]

    @property
    def _entry_label(self) -> str:
        return f"entry {self._entry_name!r}" if self._entry_name else "forward"

    def _close_impl(self) -> None:
        self._module = None
        self._target = None
        self._device_last = {}
        self._restore_tf32()

    # -- running ---------------------------------------------------------------------------
    def reset_state(self) -> None:
        super().reset_state()
        self._device_last = {}

    def _run_timed_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None,
    ) -> tuple[dict[str, np.ndarray], DeviceSplit | None]:
        """On CUDA the event split of the step; on the CPU none."""
        self._split = None
        out = self._run_impl(feeds, carry, fetch)
        return out, self._split

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [
            self._to_arg(feeds[n], n, a) for n, a in zip(self._in_names, self._args, strict=True)
        ]
        outs = self._call(args)
        return {n: _to_numpy(t) for n, t in outs.items()}

    def _run_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if not self.cuda:
            return super()._run_impl(feeds, carry, fetch)
        torch = self._torch
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.cuda.device(self.device):
            events[0].record()
            args = []
            for name, arg in zip(self._in_names, self._args, strict=True):
                if name in carry:
                    args.append(self._device_last[carry[name]])  # never leaves the device
                else:
                    args.append(self._to_arg(feeds[name], name, arg))
            events[1].record()
            outs = self._call(args)
            events[2].record()
            host = {n: _to_numpy(t) for n, t in outs.items() if fetch is None or n in fetch}
            events[3].record()
            events[3].synchronize()
        self._device_last = outs
        self._split = (
            float(events[0].elapsed_time(events[1])),
            float(events[1].elapsed_time(events[2])),
            float(events[2].elapsed_time(events[3])),
        )
        return host

    def _to_arg(self, array: np.ndarray, name: str, arg: _Arg) -> Any:
        if arg.kind in _SCALAR_TYPES:
            if array.size != 1:
                raise BindingError(
                    f"{self.path.name}: input {name!r} is a {arg.kind}, got shape {list(array.shape)}"
                )
            return _SCALAR_TYPES[arg.kind](array.reshape(()).item())
        torch = self._torch
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
        info = self.input_info(name)
        if info is not None and info.dtype == "bfloat16":
            tensor = tensor.to(torch.bfloat16)
        return tensor.to(self.device) if self.cuda else tensor

    def _call(self, args: Sequence[Any]) -> dict[str, Any]:
        torch = self._torch
        try:
            with torch.inference_mode():
                result = self._target(*args)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{self.path.name}: {self._entry_label} failed: {first}") from None
        return self._name_outputs(result)

    def _name_outputs(self, result: Any) -> dict[str, Any]:
        if isinstance(result, Mapping):
            missing = [n for n in self._out_names if n not in result]
            if missing:
                raise BackendError(
                    f"{self.path.name}: {self._entry_label} returned no {', '.join(map(repr, missing))}"
                )
            return {n: result[n] for n in self._out_names}
        values = list(result) if isinstance(result, tuple | list) else [result]
        if len(values) != len(self._out_names):
            raise BackendError(
                f"{self.path.name}: {self._entry_label} returned {len(values)} value(s), "
                f"but {len(self._out_names)} output name(s) are known ({', '.join(self._out_names)})"
            )
        return dict(zip(self._out_names, values, strict=True))

    # -- timing and memory -------------------------------------------------------------------
    def device_step(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        graphs: bool = False,
    ) -> TorchDeviceStep:
        """A step on device-resident inputs for timing compute alone (no transfers), optionally
        replayed as a CUDA graph. `feeds` holds every input once (state included); `carry` copies
        outputs into inputs on the device after each step, inside the graph when there is one."""
        self.load()
        if not self.cuda:
            raise BackendError(
                f"{self.path.name}: timing on the device needs device=cuda (this model runs on {self.device})"
            )
        self.check_feeds(feeds, {})
        return TorchDeviceStep(self, feeds, dict(carry or {}), graphs)

    def gpu_index(self) -> int | None:
        """The CUDA device index of `device`; None on the CPU (`OnGpu`)."""
        device = parse_device(self.options.device or "cpu")
        return int(device.split(":")[1]) if device.startswith("cuda:") else None

    def peak_device_bytes(self) -> int | None:
        """Peak bytes PyTorch's allocator held on this backend's GPU since load (None on the CPU).

        PyTorch keeps one peak per device: a second torch model loaded on the same GPU resets it,
        and from then on the count covers both."""
        if not self._loaded or not self.cuda:
            return None
        return int(self._torch.cuda.max_memory_allocated(self.device))

    def info(self) -> BackendInfo:
        self.load()
        torch = self._torch
        device = torch.cuda.get_device_name(self.device) if self.cuda else host_cpu_name()
        return BackendInfo(
            backend=self.kind,
            version=self.version,
            device=device,
            engine=str(self.path),
            engine_sha256=file_sha256(self.path),
            engine_bytes=self._engine_bytes,
            provider=self.device,
            extra={
                "torch_device": self.device,
                "format": self._format,
                "entry": self._entry_name or "forward",
                "threads": int(torch.get_num_threads()),
                "io_declared_by": "program" if self._format == "torch.export" else "contract",
                "cuda": torch.version.cuda,
                "tf32_requested": self.options.tf32,
                **tf32_in_force(torch),
                **(self._gpu_facts() if self.cuda else {}),
            },
        )

    def _gpu_facts(self) -> dict[str, Any]:
        """cuDNN and cuBLAS versions and the GPU's clocks; a fact that cannot be read is left out."""
        torch = self._torch
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        index = int(self.device.split(":")[1])
        facts = {
            "cudnn": format_cudnn(int(cudnn)) if cudnn else None,
            "cublas": cublas_version(),
            "gpu_clocks": gpu_clocks(uuid=nvml_uuid(uuid))
            if uuid is not None
            else gpu_clocks(index=index),
        }
        return {k: v for k, v in facts.items() if v is not None}


class TorchDeviceStep:
    """See `TorchBackend.device_step`; satisfies `base.DeviceStep`."""

    def __init__(
        self,
        backend: TorchBackend,
        feeds: Mapping[str, np.ndarray],
        carry: dict[str, str],
        graphs: bool,
    ) -> None:
        torch = backend._torch
        self._torch = torch
        self._backend = backend
        self._device = backend.device
        self.graphs = False
        self.note = ""
        with torch.cuda.device(self._device):
            self._inputs = {
                n: backend._to_arg(np.asarray(feeds[n]), n, a).clone()
                if a.kind == "tensor"
                else backend._to_arg(feeds[n], n, a)
                for n, a in zip(backend._in_names, backend._args, strict=True)
            }
            self._carry = carry
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._graph: Any = None
            # warm up on a side stream, as graph capture requires, and in any case
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._eager()
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize(self._device)
            if graphs:
                self._capture()

    def _eager(self) -> None:
        outs = self._backend._call(list(self._inputs.values()))
        for inp, out in self._carry.items():
            self._inputs[inp].copy_(outs[out])

    def _capture(self) -> None:
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._eager()
        except Exception as exc:  # capture refuses some ops (host syncs, CPU scalars)
            self.note = f"CUDA graph capture failed, timed eagerly: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            torch.cuda.synchronize(self._device)
            return
        self._graph = graph
        self.graphs = True

    def __call__(self) -> float:
        with self._torch.cuda.device(self._device):
            self._start.record()
            if self._graph is not None:
                self._graph.replay()
            else:
                self._eager()
            self._end.record()
            self._end.synchronize()
        return float(self._start.elapsed_time(self._end))

    def close(self) -> None:
        self._graph = None
        self._inputs = {}


def _schema(target: Any) -> Any:
    """The TorchScript schema of a scripted module's forward or of a scripted method, else None."""
    schema = getattr(target, "schema", None)
    if schema is not None and hasattr(schema, "arguments"):
        return schema
    forward = getattr(target, "forward", None)
    schema = getattr(forward, "schema", None)
    if schema is not None and hasattr(schema, "arguments"):
        return schema
    return None


def _kind(type_text: str) -> str:
    return type_text if type_text in _SCALAR_TYPES else "tensor"


def _tuple_arity(schema: Any) -> int | None:
    if schema is None or len(schema.returns) != 1:
        return None if schema is None else len(schema.returns)
    text = str(schema.returns[0].type)
    if text == "Tensor":
        return 1
    match = re.fullmatch(r"(?:Tuple|tuple)\[(.*)\]", text)
    if match and all(part.strip() == "Tensor" for part in match.group(1).split(",")):
        return len(match.group(1).split(","))
    return None


def _meta_spec(node: Any) -> Spec:
    value = node.meta.get("val")
    if value is None or not hasattr(value, "dtype"):
        raise EngineLoadError(f"exported graph node {node.name!r} carries no tensor metadata")
    shape = tuple(d if isinstance(d, int) else str(d) for d in value.shape)
    return torch_dtype_name(value.dtype), shape


def _to_numpy(tensor: Any) -> np.ndarray:
    if not hasattr(tensor, "detach"):
        return np.asarray(tensor)
    t = tensor.detach()
    if str(t.dtype) == "torch.bfloat16":
        t = t.float()
    return np.asarray(t.cpu().numpy())


def gate_options(
    contract: Contract | None,
    *,
    entry: str | None,
    device: str | None,
    threads: int = 0,
    tf32: bool = False,
) -> TorchOptions:
    """The options the gate passes when it opens a PyTorch model (engine or baseline)."""
    names = contract_options(contract) if contract is not None else {}
    return TorchOptions(
        threads=threads, tf32=tf32, entry=entry or "", device=device or "cpu", **names
    )
