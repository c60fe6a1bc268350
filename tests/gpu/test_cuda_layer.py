"""The cuda-python layer on a real GPU: allocation, pinned copies, streams, events, CUDA graphs, and
the TensorRT backend's closed-loop state staying on the device (with a stand-in engine whose only
work is device-to-device copies, so no TensorRT is needed: the device plumbing is what is tested).

Run: python3 -m pytest tests/gpu -v   (skips without cuda-python or a GPU)
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends.tensorrt import TensorRTBackend
from pytest_trtparity.trt import cuda


def test_device_is_described(gpu: cuda.DeviceInfo) -> None:
    major = int(gpu.compute_capability.split(".")[0])
    assert major >= 5 and gpu.total_memory > 1 << 30 and gpu.name
    free, total = cuda.memory_info()
    assert 0 < free <= total


def test_pinned_round_trip_through_device_memory(gpu: cuda.DeviceInfo) -> None:
    cuda.TRANSFERS.reset()
    data = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    with cuda.Resources() as res:
        stream = res.add(cuda.Stream())
        dev = res.add(cuda.DeviceBuffer(data.nbytes))
        dev2 = res.add(cuda.DeviceBuffer(data.nbytes))
        pin = res.add(cuda.PinnedBuffer(data.nbytes))
        pin.write(data)
        cuda.copy_h2d(dev.ptr, pin.ptr, data.nbytes, stream)
        cuda.copy_d2d(dev2.ptr, dev.ptr, data.nbytes, stream)
        pin.view()[:] = 0
        cuda.copy_d2h(pin.ptr, dev2.ptr, data.nbytes, stream)
        stream.synchronize()
        np.testing.assert_array_equal(pin.view().view(np.float32), data)
    assert (cuda.TRANSFERS.h2d, cuda.TRANSFERS.d2d, cuda.TRANSFERS.d2h) == (1, 1, 1)


def test_nan_fill_makes_every_float_a_nan(gpu: cuda.DeviceInfo) -> None:
    with cuda.Resources() as res:
        stream = res.add(cuda.Stream())
        dev = res.add(cuda.DeviceBuffer(4096))
        pin = res.add(cuda.PinnedBuffer(4096))
        dev.fill_async(0xFF, stream)
        cuda.copy_d2h(pin.ptr, dev.ptr, 4096, stream)
        stream.synchronize()
        for dtype in (np.float32, np.float16):
            assert np.isnan(pin.view().view(dtype)).all()


def test_events_time_a_copy(gpu: cuda.DeviceInfo) -> None:
    with cuda.Resources() as res:
        stream = res.add(cuda.Stream())
        a, b = res.add(cuda.Event()), res.add(cuda.Event())
        src, dst = res.add(cuda.DeviceBuffer(64 << 20)), res.add(cuda.DeviceBuffer(64 << 20))
        a.record(stream)
        cuda.copy_d2d(dst.ptr, src.ptr, 64 << 20, stream)
        b.record(stream)
        b.synchronize()
        assert 0 < b.elapsed_ms(a) < 1000


def test_graph_capture_replays_a_memcpy(gpu: cuda.DeviceInfo) -> None:
    n = 1 << 16
    with cuda.Resources() as res:
        stream = res.add(cuda.Stream())
        src, dst = res.add(cuda.DeviceBuffer(n)), res.add(cuda.DeviceBuffer(n))
        pin = res.add(cuda.PinnedBuffer(n))

        def enqueue() -> bool:
            cuda.copy_d2d(dst.ptr, src.ptr, n, stream)
            return True

        graph, why = cuda.CudaGraph.capture(stream, enqueue)
        assert graph is not None, why
        for value in (3, 7):
            src.fill_async(value, stream)
            graph.launch(stream)
            cuda.copy_d2h(pin.ptr, dst.ptr, n, stream)
            stream.synchronize()
            assert (pin.view() == value).all()
        graph.destroy()


# -- the backend's device plumbing with a stand-in engine ---------------------------------------------


def copy_engine_module() -> types.ModuleType:
    """A stand-in `tensorrt` whose engine does y = x and stateN = state with device-to-device copies
    on the backend's stream: real device memory, real stream order, real graph capture."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "0.0.0-stand-in"  # type: ignore[attr-defined]

    class ILogger:
        class Severity:
            WARNING = 2

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")  # type: ignore[attr-defined]
    trt.TensorLocation = types.SimpleNamespace(DEVICE="dev", HOST="host")  # type: ignore[attr-defined]
    io = {
        "x": ("in", (1, 1024)),
        "state": ("in", (2, 1, 256)),
        "y": ("out", (1, 1024)),
        "stateN": ("out", (2, 1, 256)),
    }

    class Context:
        def __init__(self) -> None:
            self.addr: dict[str, int] = {}

        def set_optimization_profile_async(self, i: int, s: int) -> bool:
            return i == 0

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            return tuple(shape) == io[name][1]

        def infer_shapes(self) -> list[str]:
            return []

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return io[name][1]

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            rt = cuda.cudart()
            kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            for src, dst, n in (("x", "y", 4096), ("state", "stateN", 2048)):
                err = rt.cudaMemcpyAsync(self.addr[dst], self.addr[src], n, kind, stream)[0]
                if int(err) != 0:
                    return False
            return True

    class Engine:
        num_io_tensors = 4
        num_optimization_profiles = 1
        device_memory_size_v2 = 0

        def get_tensor_name(self, i: int) -> str:
            return list(io)[i]

        def get_tensor_mode(self, n: str) -> str:
            return io[n][0]

        def get_tensor_dtype(self, n: str) -> Any:
            return types.SimpleNamespace(name="FLOAT")

        def get_tensor_shape(self, n: str) -> tuple[int, ...]:
            return io[n][1]

        def get_tensor_location(self, n: str) -> str:
            return "dev"

        def get_tensor_profile_shape(self, n: str, i: int) -> list[tuple[int, ...]]:
            return [io[n][1]] * 3

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return Engine()

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


@pytest.mark.parametrize("graphs", [False, True], ids=["stream", "cuda-graph"])
def test_closed_loop_state_never_crosses_to_the_host(
    gpu: cuda.DeviceInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graphs: bool
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", copy_engine_module())
    plan = tmp_path / "copy.plan"
    plan.write_bytes(b"stand-in")
    rng = np.random.default_rng(1)
    state0 = rng.standard_normal((2, 1, 256)).astype(np.float32)
    with TensorRTBackend(plan, cuda_graphs=graphs) as backend:
        first = backend.run({"x": np.zeros((1, 1024), np.float32), "state": state0})
        np.testing.assert_array_equal(first["stateN"], state0)
        cuda.TRANSFERS.reset()
        for step in range(50):
            x = np.full((1, 1024), step, np.float32)
            out = backend.run({"x": x}, carry={"state": "stateN"}, fetch=["y"])
            np.testing.assert_array_equal(out["y"], x)
        assert cuda.TRANSFERS.h2d == 50 and cuda.TRANSFERS.h2d_bytes == 50 * 4096  # x only
        assert cuda.TRANSFERS.d2h == 50 and cuda.TRANSFERS.d2h_bytes == 50 * 4096  # y only
        last = backend.run({"x": x}, carry={"state": "stateN"})
        np.testing.assert_array_equal(
            last["stateN"], state0
        )  # 51 device-side hand-overs, bit-exact
        _, timing = backend.run_timed({"x": x}, carry={"state": "stateN"})
        assert timing.compute_ms is not None and timing.total_ms > 0
        if graphs:
            assert backend.graph_notes == []
