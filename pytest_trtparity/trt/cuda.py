"""The CUDA runtime through cuda-python: device checks, buffers, copies, streams, events, graphs.

Every cuda-python call returns an error tuple instead of raising; `check` turns each into a value or a
`CudaError` naming the call, so a failed copy can never leave stale data that a later comparison
reads as a result. Copies go through `copy_*` so `TRANSFERS` can count them: the closed-loop test
proves carried state never crosses to the host.

The TensorRT lean runtime segfaults when created without a driver, so `require_device` runs (and
fails cleanly) before any TensorRT runtime object is made.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import BackendError, ExecutionUnavailable, MissingDependencyError

INSTALL_HINT = "pip install cuda-python (or cuda-bindings) matching your CUDA driver"

_override: Any = None
_loaded: Any = None


class CudaError(BackendError):
    """A CUDA runtime call returned an error."""


class NoDevice(CudaError, ExecutionUnavailable):
    """No CUDA device or driver: nothing can execute here (the gate's execution checks skip)."""


def use_cudart(module: Any) -> None:
    """Replace the CUDA runtime module (tests pass a fake; None restores the real one)."""
    global _override
    _override = module


def cudart() -> Any:
    """`cuda.bindings.runtime` (cuda-python >= 12.6), else the older `cuda.cudart`."""
    global _loaded
    if _override is not None:
        return _override
    if _loaded is None:
        try:
            from cuda.bindings import runtime
        except ImportError:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    from cuda import cudart as runtime
            except ImportError:
                raise MissingDependencyError(
                    f"the TensorRT backend needs cuda-python: {INSTALL_HINT}"
                ) from None
        _loaded = runtime
    return _loaded


def _code(err: Any) -> int:
    return int(getattr(err, "value", err))


def error_name(err: Any) -> str:
    try:
        result = cudart().cudaGetErrorName(err)
        name = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        if name:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # naming an error must never hide the error itself
        pass
    return str(getattr(err, "name", err))


def check(result: Any, call: str) -> Any:
    """The value(s) of a cuda-python call, or CudaError when its error code is not success."""
    values = result if isinstance(result, tuple) else (result,)
    if not values:
        raise CudaError(f"{call} returned nothing")
    err, rest = values[0], values[1:]
    if _code(err) != 0:
        raise CudaError(f"{call} failed: {error_name(err)} ({_code(err)})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str
    total_memory: int

    def describe(self) -> str:
        return f"{self.name} (sm {self.compute_capability}, {self.total_memory / 2**30:.0f} GiB)"


def device_count() -> int:
    """Visible CUDA devices; raises CudaError naming the reason when the runtime cannot tell
    (no driver: cudaErrorInsufficientDriver; no GPU: cudaErrorNoDevice)."""
    return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount()"))


def require_device(index: int = 0) -> DeviceInfo:
    """Select GPU `index` and describe it; the one check that must precede any TensorRT runtime."""
    try:
        count = device_count()
    except CudaError as exc:
        raise NoDevice(
            f"no usable CUDA device: {exc}; the TensorRT runtime needs an NVIDIA GPU and driver"
        ) from None
    if count <= index:
        raise (NoDevice if count == 0 else CudaError)(
            f"CUDA device {index} asked for but {count} device(s) are visible"
        )
    rt = cudart()
    check(rt.cudaSetDevice(index), f"cudaSetDevice({index})")
    props = check(rt.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    raw_name = props.name
    name = (
        raw_name.split(b"\0", 1)[0].decode(errors="replace")
        if isinstance(raw_name, bytes)
        else str(raw_name)
    )
    return DeviceInfo(index, name, f"{props.major}.{props.minor}", int(props.totalGlobalMem))


def memory_info() -> tuple[int, int]:
    """(free, total) bytes of the current device."""
    free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo()")
    return int(free), int(total)


@dataclass
class TransferCounter:
    """Host<->device copies issued through this module, by direction."""

    h2d: int = 0
    d2h: int = 0
    d2d: int = 0
    h2d_bytes: int = 0
    d2h_bytes: int = 0

    def reset(self) -> None:
        self.h2d = self.d2h = self.d2d = self.h2d_bytes = self.d2h_bytes = 0


TRANSFERS = TransferCounter()


class Stream:
    def __init__(self) -> None:
        self.handle: Any = check(cudart().cudaStreamCreate(), "cudaStreamCreate()")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize()")

    def destroy(self) -> None:
        if self.handle is not None:
            check(cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy()")
            self.handle = None


class Event:
    def __init__(self) -> None:
        self.handle: Any = check(cudart().cudaEventCreate(), "cudaEventCreate()")

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord()")

    def synchronize(self) -> None:
        check(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize()")

    def elapsed_ms(self, since: Event) -> float:
        """Milliseconds from `since` to this event (both recorded, this one complete)."""
        return float(
            check(
                cudart().cudaEventElapsedTime(since.handle, self.handle), "cudaEventElapsedTime()"
            )
        )

    def destroy(self) -> None:
        if self.handle is not None:
            check(cudart().cudaEventDestroy(self.handle), "cudaEventDestroy()")
            self.handle = None


class DeviceBuffer:
    """One device allocation (at least one byte, so every tensor has an address)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def fill_async(self, byte: int, stream: Stream, nbytes: int | None = None) -> None:
        count = self.nbytes if nbytes is None else nbytes
        check(
            cudart().cudaMemsetAsync(self.ptr, byte, count, stream.handle),
            f"cudaMemsetAsync({count})",
        )

    def free(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), "cudaFree()")
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory, the staging area for asynchronous copies."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(
            check(cudart().cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})")
        )
        self._bytes = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.ptr))

    def view(self, nbytes: int | None = None) -> np.ndarray:
        """The first `nbytes` as a uint8 array aliasing the pinned memory."""
        return self._bytes[: self.nbytes if nbytes is None else nbytes]

    def write(self, data: np.ndarray) -> int:
        """Copy a contiguous array's bytes in; returns the byte count."""
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if raw.nbytes > self.nbytes:
            raise BackendError(
                f"pinned staging buffer of {self.nbytes} bytes cannot hold {raw.nbytes}"
            )
        self._bytes[: raw.nbytes] = raw
        return int(raw.nbytes)

    def free(self) -> None:
        if self.ptr:
            self._bytes = np.empty(0, np.uint8)
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost()")
            self.ptr = 0


def _kind(name: str) -> Any:
    return getattr(cudart().cudaMemcpyKind, name)


def copy_h2d(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(
        cudart().cudaMemcpyAsync(dst, src, nbytes, _kind("cudaMemcpyHostToDevice"), stream.handle),
        f"cudaMemcpyAsync(host to device, {nbytes} bytes)",
    )
    TRANSFERS.h2d += 1
    TRANSFERS.h2d_bytes += nbytes


def copy_d2h(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(
        cudart().cudaMemcpyAsync(dst, src, nbytes, _kind("cudaMemcpyDeviceToHost"), stream.handle),
        f"cudaMemcpyAsync(device to host, {nbytes} bytes)",
    )
    TRANSFERS.d2h += 1
    TRANSFERS.d2h_bytes += nbytes


def copy_d2d(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(
        cudart().cudaMemcpyAsync(
            dst, src, nbytes, _kind("cudaMemcpyDeviceToDevice"), stream.handle
        ),
        f"cudaMemcpyAsync(device to device, {nbytes} bytes)",
    )
    TRANSFERS.d2d += 1


class CudaGraph:
    """A captured and instantiated stream graph; shapes and addresses are fixed inside it."""

    def __init__(self, graph: Any, exec_: Any) -> None:
        self._graph = graph
        self._exec = exec_

    @classmethod
    def capture(cls, stream: Stream, enqueue: Callable[[], bool]) -> tuple[CudaGraph | None, str]:
        """Capture what `enqueue` puts on `stream`; (graph, "") or (None, why it could not be).

        The capture is always ended, also when `enqueue` fails, so the stream is usable afterwards.
        """
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        check(rt.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture()")
        ok = False
        failure = ""
        try:
            ok = bool(enqueue())
        except Exception as exc:  # the capture must still be ended below
            failure = f"enqueue raised {type(exc).__name__}: {exc}"
        result = rt.cudaStreamEndCapture(stream.handle)
        err, graph = result[0], result[1] if len(result) > 1 else None
        if _code(err) != 0 or not ok:
            if graph is not None and _code(err) == 0:
                rt.cudaGraphDestroy(graph)
            why = failure or (
                "the enqueue returned False during capture"
                if not ok
                else f"cudaStreamEndCapture failed: {error_name(err)}"
            )
            return None, why
        inst = rt.cudaGraphInstantiate(graph, 0)
        if _code(inst[0]) != 0:
            rt.cudaGraphDestroy(graph)
            return None, f"cudaGraphInstantiate failed: {error_name(inst[0])}"
        return cls(graph, inst[1]), ""

    def launch(self, stream: Stream) -> None:
        check(cudart().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch()")

    def destroy(self) -> None:
        rt = cudart()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy()")
            self._exec = None
        if self._graph is not None:
            check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy()")
            self._graph = None


class Resources:
    """Frees what it was given, in reverse order, even when one release fails."""

    def __init__(self) -> None:
        self._items: list[Any] = []

    def add(self, item: Any) -> Any:
        self._items.append(item)
        return item

    def close(self) -> None:
        errors: list[str] = []
        while self._items:
            item = self._items.pop()
            release = getattr(item, "free", None) or getattr(item, "destroy", None)
            try:
                if release:
                    release()
            except CudaError as exc:
                errors.append(str(exc))
        if errors:
            raise CudaError("; ".join(errors))

    def __enter__(self) -> Resources:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
