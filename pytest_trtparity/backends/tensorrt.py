"""TensorRT backend: a serialized engine run through the TensorRT runtime and cuda-python.

What it guarantees, beyond running the engine:
- nothing touches TensorRT before a CUDA device is confirmed (the lean runtime segfaults without
  one), and a plan the build report says was made by another TensorRT or for another GPU is refused
  before it is deserialized;
- TensorRT-RTX plans (`--trt-backend tensorrt-rtx`, or a build report saying the plan came from
  TensorRT-RTX) run through the same API calls with the TensorRT-RTX module; no GPU, or a GPU the
  runtime does not support (TensorRT-RTX refuses Hopper), is `ExecutionUnavailable`: one sentence,
  and the gate's execution checks skip with it;
- the engine's I/O is checked against the contract at load, by tensor name;
- every output buffer is filled with NaN bit patterns before each step, so a kernel that writes
  nothing cannot pass with the previous chunk's data;
- in closed loop a carried input is bound to the device buffer the previous step wrote (two buffers
  per carried output, swapped each step): the state never crosses to the host;
- outputs are copied back only when asked for (`fetch`), plus those the contract's invariants need,
  and a broken invariant fails the step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from ..contract.bindings import engine_problems
from ..contract.invariants import violation
from ..errors import (
    BackendError,
    BindingError,
    EngineLoadError,
    ExecutionUnavailable,
    InvariantViolation,
    MissingDependencyError,
)
from ..trt import api, compat, cuda
from ..trt.profiles import Range, choose_profile, match_profile_names, plan_profiles
from ..trt.tensors import TensorDesc, from_device_layout, nbytes, to_device_layout
from .base import Backend, BackendInfo, DeviceSplit, IOInfo, read_engine_file
from .options import TensorRTOptions

#: Byte that makes every float16, bfloat16 and float32 element a NaN (and integers -1).
NAN_FILL = 0xFF

GraphKey = tuple[int, tuple[tuple[str, tuple[int, ...]], ...], tuple[int, ...]]


class TensorRTBackend(Backend):
    kind = "tensorrt"
    options_type = TensorRTOptions
    options: TensorRTOptions
    #: the runtime module family when the options name none; None: as the build report says
    flavour: str | None = None

    # -- loading -------------------------------------------------------------------------------
    def _find_gpu(self) -> cuda.DeviceInfo:
        """The GPU to run on, or ExecutionUnavailable naming why there is none."""
        try:
            return cuda.require_device(self.options.device)
        except MissingDependencyError as exc:
            raise ExecutionUnavailable(
                f"{self.path}: cannot look for a GPU to run the engine on: {exc}"
            ) from None

    def gpu_index(self) -> int:
        """The CUDA device the engine runs on (`OnGpu`)."""
        return self.options.device

    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        self._deserialize(read_engine_file(self.path))
        self._io = {d.name: d for d in api.describe_io(self._trt, self._engine)}
        ins = tuple(IOInfo(d.name, d.dtype, d.shape) for d in self._io.values() if d.is_input)
        outs = tuple(IOInfo(d.name, d.dtype, d.shape) for d in self._io.values() if not d.is_input)
        self._contract = self.options.contract
        self._check_contract(ins, outs)
        device_inputs = [d.name for d in self._io.values() if d.is_input and not d.on_host]
        self._profiles: list[dict[str, Range]] = api.profile_ranges(self._engine, device_inputs)
        self._profile_names = self._name_profiles()
        self._context = api.new_context(self._engine, self._logger)
        self._prepare_run_state()
        return ins, outs

    def _deserialize(self, data: bytes) -> None:
        """The runtime and engine from the plan's bytes, after the build report's checks: another
        TensorRT or another GPU is refused before TensorRT sees the plan."""
        self._meta = compat.read_meta(self.path)
        flavour = (
            self.options.flavour or self.flavour or (self._meta.flavour if self._meta else None)
        )
        self._res = cuda.Resources()
        self._gpu = self._find_gpu()
        trt = self._trt = api.import_runtime(flavour or "tensorrt")
        self._version = api.version(trt)
        self._bytes = len(data)
        self._sha = hashlib.sha256(data).hexdigest()
        if self._meta is not None:
            compat.check_before_load(
                self.path,
                self._meta,
                installed_version=self._version,
                device_cc=self._gpu.compute_capability,
                device_name=self._gpu.name,
                engine_sha256=self._sha,
            )
        self._logger = api.new_logger(trt)
        allow_host = bool(self._meta and self._meta.version_compatible)
        self._runtime, self._engine = api.deserialize(
            trt, data, self._logger, allow_host_code=allow_host
        )
        if self._engine is None:
            raise self._deserialize_error()

    def _deserialize_error(self) -> BackendError:
        """Why the plan did not deserialize: a GPU the runtime refuses, else the log's account."""
        trt, log = self._trt, api.last_lines(self._logger)
        refusal = compat.gpu_refusal(self.path, api.title(trt), log)
        if refusal is not None:
            return ExecutionUnavailable(refusal)
        return EngineLoadError(
            compat.deserialize_failure(
                self.path,
                self._sha,
                installed_version=self._version,
                meta=self._meta,
                log=log,
                lean=api.is_lean(trt),
            )
        )

    def _check_contract(self, ins: tuple[IOInfo, ...], outs: tuple[IOInfo, ...]) -> None:
        if self._contract is None:
            return
        problems = list(engine_problems(self._contract, ins, outs))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise BindingError(
                f"{self.path}: engine does not match {self._contract.where}: {problems[0]}{more}"
            )

    def _prepare_run_state(self) -> None:
        """Stream, events and the (empty) buffer pools and CUDA graph cache of a fresh load."""
        self._stream = self._res.add(cuda.Stream())
        self._events = [self._res.add(cuda.Event()) for _ in range(4)]
        self._current: dict[str, cuda.DeviceBuffer] = {}
        self._spare: dict[str, cuda.DeviceBuffer] = {}
        self._pinned: dict[str, cuda.PinnedBuffer] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._active = -1
        self._pinned_profile: int | None = None
        self._use_graphs = self.options.cuda_graphs
        self._graphs: dict[GraphKey, cuda.CudaGraph | None] = {}
        self._warm: set[GraphKey] = set()
        self.graph_notes: list[str] = []
        self._check_invariants = self.options.check_invariants

    def _name_profiles(self) -> list[str]:
        count = len(self._profiles)
        if self._meta is not None and len(self._meta.profile_names) == count:
            return list(self._meta.profile_names)
        names = [f"profile {i}" for i in range(count)]
        if self._contract is not None and self._contract.profiles:
            try:
                planned = plan_profiles(self._contract)
            except Exception:  # an unplannable contract still runs; profiles keep their indices
                return names
            for name, index in match_profile_names(planned, self._profiles).items():
                names[index] = name
        return names

    def _close_impl(self) -> None:
        for graph in self._graphs.values():
            if graph is not None:
                graph.destroy()
        self._graphs.clear()
        for pool in (self._current, self._spare, self._pinned):
            for buf in pool.values():
                buf.free()
            pool.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        self._res.close()

    # -- profiles ------------------------------------------------------------------------------
    @property
    def profile_names(self) -> list[str]:
        self.load()
        return list(self._profile_names)

    def pin_profile(self, profile: str | int | None) -> None:
        """Run every following step under one profile (the profile sweep), or choose per chunk (None)."""
        self.load()
        if profile is None or isinstance(profile, int):
            index = profile
        elif profile in self._profile_names:
            index = self._profile_names.index(profile)
        else:
            raise BindingError(
                f"{self.path.name}: no optimization profile {profile!r} (engine has {', '.join(self._profile_names)})"
            )
        if index is not None and not 0 <= index < len(self._profiles):
            raise BindingError(
                f"{self.path.name}: profile index {index} out of range (0..{len(self._profiles) - 1})"
            )
        self._pinned_profile = index

    def _profile_for(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        device_shapes = (
            {k: v for k, v in shapes.items() if k in self._profiles[0]} if self._profiles else {}
        )
        if self._pinned_profile is None:
            return choose_profile(self._profiles, device_shapes, names=self._profile_names)
        index = self._pinned_profile
        choose_profile([self._profiles[index]], device_shapes, names=[self._profile_names[index]])
        return index

    # -- running -------------------------------------------------------------------------------
    def _run_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        return self._step(feeds, carry, fetch, timed=False)[0]

    def _run_timed_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None,
    ) -> tuple[dict[str, np.ndarray], DeviceSplit | None]:
        """The device split (host-to-device copies, compute, device-to-host copies) from CUDA
        events on the stream."""
        return self._step(feeds, carry, fetch, timed=True)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._step(feeds, {}, None, timed=False)[0]

    def _step(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None,
        *,
        timed: bool,
    ) -> tuple[dict[str, np.ndarray], DeviceSplit | None]:
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in feeds.items()}
        for inp, out in carry.items():
            shapes[inp] = self._shapes[out]
        index = self._set_shapes(shapes)
        outputs = [d for d in self._io.values() if not d.is_input]
        out_shapes = {d.name: api.tensor_shape(self._context, d.name) for d in outputs}
        addresses, targets = self._bind_outputs(outputs, out_shapes, carry)
        ev = self._events
        if timed:
            ev[0].record(self._stream)
        for name, array in feeds.items():
            addresses[name] = self._stage_input(self._io[name], array)
        if timed:
            ev[1].record(self._stream)
        for name, address in addresses.items():
            api.bind(self._context, name, address, self._logger)
        self._execute(index, shapes, addresses)
        if timed:
            ev[2].record(self._stream)
        for name in set(carry.values()):  # the buffer just written is the state the next step reads
            self._current[name], self._spare[name] = targets[name], self._current[name]
        self._shapes.update(out_shapes)
        wanted = self._copy_back(outputs, out_shapes, fetch)
        if timed:
            ev[3].record(self._stream)
        self._stream.synchronize()
        host = self._host_outputs(outputs, out_shapes, wanted)
        self._check(host)
        split = None
        if timed:
            split = (ev[1].elapsed_ms(ev[0]), ev[2].elapsed_ms(ev[1]), ev[3].elapsed_ms(ev[2]))
        result = host if fetch is None else {k: v for k, v in host.items() if k in fetch}
        return result, split

    def _set_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        """Select the profile for these input shapes and set them; the profile's index."""
        log = self._logger
        index = self._profile_for(shapes)
        if index != self._active:
            api.select_profile(self._context, index, self._stream.ptr, log)
            self._active = index
        for name, shape in shapes.items():
            api.set_input_shape(self._context, name, shape, log)
        api.resolve_shapes(self._context, log)
        return index

    def _bind_outputs(
        self,
        outputs: list[TensorDesc],
        out_shapes: Mapping[str, tuple[int, ...]],
        carry: Mapping[str, str],
    ) -> tuple[dict[str, int], dict[str, cuda.DeviceBuffer]]:
        """Addresses of the carried inputs (the state the last step wrote) and of every output (a
        fresh buffer for state, NaN everywhere: stale data cannot pass), and the output buffers."""
        for name, shape in out_shapes.items():
            if any(dim < 0 for dim in shape):
                raise BackendError(
                    f"{self.path.name}: output {name!r} has data-dependent shape {list(shape)}; not supported"
                )
        addresses: dict[str, int] = {}
        for inp, out in carry.items():
            if self._io[inp].dtype != self._io[out].dtype:
                raise BindingError(
                    f"{self.path.name}: carry {inp!r} <- {out!r}: input is {self._io[inp].dtype}, output is {self._io[out].dtype}"
                )
            addresses[inp] = self._current[out].ptr
        sources = set(carry.values())
        targets: dict[str, cuda.DeviceBuffer] = {}
        for desc in outputs:
            size = nbytes(desc.dtype, out_shapes[desc.name])
            pool = self._spare if desc.name in sources else self._current
            targets[desc.name] = buf = self._ensure(pool, desc.name, size)
            buf.fill_async(NAN_FILL, self._stream, size)
            addresses[desc.name] = buf.ptr
        return addresses, targets

    def _host_outputs(
        self,
        outputs: list[TensorDesc],
        out_shapes: Mapping[str, tuple[int, ...]],
        wanted: set[str],
    ) -> dict[str, np.ndarray]:
        """The copied-back outputs as host arrays, read from their pinned buffers."""
        return {
            d.name: from_device_layout(
                self._pinned[d.name].view(nbytes(d.dtype, out_shapes[d.name])),
                d.dtype,
                out_shapes[d.name],
            )
            for d in outputs
            if d.name in wanted
        }

    def _stage_input(self, desc: TensorDesc, array: np.ndarray) -> int:
        raw = to_device_layout(array, desc.dtype)
        pinned = self._ensure_pinned(desc.name, raw.nbytes)
        pinned.write(raw)
        if desc.on_host:  # shape tensors are read by TensorRT from host memory
            return pinned.ptr
        buf = self._ensure(self._current, desc.name, raw.nbytes)
        cuda.copy_h2d(buf.ptr, pinned.ptr, raw.nbytes, self._stream)
        return buf.ptr

    def _copy_back(
        self,
        outputs: list[TensorDesc],
        shapes: Mapping[str, tuple[int, ...]],
        fetch: Collection[str] | None,
    ) -> set[str]:
        wanted = {d.name for d in outputs} if fetch is None else set(fetch)
        if self._check_invariants and self._contract is not None:
            wanted |= {inv.output for inv in self._contract.invariants}
        for desc in outputs:
            if desc.name not in wanted:
                continue
            size = nbytes(desc.dtype, shapes[desc.name])
            source = self._current[desc.name]
            pinned = self._ensure_pinned(desc.name, size)
            cuda.copy_d2h(pinned.ptr, source.ptr, size, self._stream)
        return wanted

    def _check(self, host: Mapping[str, np.ndarray]) -> None:
        if not self._check_invariants or self._contract is None:
            return
        for inv in self._contract.invariants:
            if inv.output in host:
                why = violation(inv, host[inv.output])
                if why:
                    raise InvariantViolation(
                        f"{self.path.name}: output {inv.output!r}: invariant {inv.describe()} violated: {why}"
                    )

    def _execute(
        self, index: int, shapes: Mapping[str, tuple[int, ...]], addresses: Mapping[str, int]
    ) -> None:
        stream = self._stream
        key: GraphKey = (
            index,
            tuple(sorted(shapes.items())),
            tuple(addresses[k] for k in sorted(addresses)),
        )
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch(stream)
            return
        if self._use_graphs and key in self._warm and key not in self._graphs:
            # trtexec's recipe: one plain enqueue first (done on an earlier step), then capture
            graph, why = cuda.CudaGraph.capture(
                stream, lambda: api.enqueue(self._context, stream.ptr)
            )
            self._graphs[key] = graph
            if graph is not None:
                graph.launch(stream)
                return
            self.graph_notes.append(
                f"profile {self._profile_names[index]}: CUDA graph capture failed ({why}); running without"
            )
        if not api.enqueue(self._context, stream.ptr):
            raise BackendError(
                f"{self.path.name}: execute_async_v3 returned False under profile {self._profile_names[index]}: "
                f"{(api.last_lines(self._logger) or ['no message from TensorRT'])[-1]}"
            )
        self._warm.add(key)

    def _ensure(
        self, pool: dict[str, cuda.DeviceBuffer], name: str, size: int
    ) -> cuda.DeviceBuffer:
        buf = pool.get(name)
        if buf is None or buf.nbytes < size:
            if buf is not None:
                self._stream.synchronize()
                buf.free()
            buf = pool[name] = cuda.DeviceBuffer(size)
        return buf

    def _ensure_pinned(self, name: str, size: int) -> cuda.PinnedBuffer:
        buf = self._pinned.get(name)
        if buf is None or buf.nbytes < size:
            if buf is not None:
                self._stream.synchronize()
                buf.free()
            buf = self._pinned[name] = cuda.PinnedBuffer(size)
        return buf

    # -- description ---------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        self.load()
        return BackendInfo(
            backend=api.flavour_of(self._trt),
            version=self._version,
            device=self._gpu.describe(),
            engine=str(self.path),
            engine_sha256=self._sha,
            engine_bytes=self._bytes,
            extra={
                "compute_capability": self._gpu.compute_capability,
                "tensorrt_module": getattr(self._trt, "__name__", "tensorrt"),
                "lean_runtime": api.is_lean(self._trt),
                "profiles": list(self._profile_names),
                "device_memory_bytes": api.device_memory_bytes(self._engine),
                "cuda_graphs": self._use_graphs,
                "cuda_graph_notes": list(self.graph_notes),
                "built_by": self._meta.trt_version if self._meta else None,
                "built_for": list(self._meta.targets) if self._meta else [],
            },
        )

    def describe_profiles(self) -> dict[str, Any]:
        self.load()
        return {
            name: {
                t: {"min": list(r[0]), "opt": list(r[1]), "max": list(r[2])} for t, r in p.items()
            }
            for name, p in zip(self._profile_names, self._profiles, strict=True)
        }


class TensorRTRTXBackend(TensorRTBackend):
    """A TensorRT-RTX plan (RTX GPUs, Turing to Blackwell, and A100-class; not Hopper): the same
    runtime path with the TensorRT-RTX module."""

    flavour = "tensorrt-rtx"
