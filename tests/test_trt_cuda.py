"""The cuda-python layer: error tuples become errors that name the call, and no driver means a clear
error before any TensorRT object exists."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pytest_trtparity.errors import MissingDependencyError
from pytest_trtparity.trt import cuda

from .test_trt_api_surface import bindings_dir, require, run_python
from .test_trt_backend_logic import Err, FakeCudart


@pytest.fixture
def fake() -> FakeCudart:
    f = FakeCudart()
    cuda.use_cudart(f)
    cuda.TRANSFERS.reset()
    yield f  # type: ignore[misc]
    cuda.use_cudart(None)


def test_check_returns_values_or_names_the_failed_call(fake: FakeCudart) -> None:
    assert cuda.check((Err.cudaSuccess,), "x()") is None
    assert cuda.check((Err.cudaSuccess, 5), "x()") == 5
    assert cuda.check((Err.cudaSuccess, 1, 2), "x()") == (1, 2)
    with pytest.raises(
        cuda.CudaError, match=r"cudaMalloc\(64\) failed: cudaErrorMemoryAllocation \(2\)"
    ):
        cuda.check((Err.cudaErrorMemoryAllocation, None), "cudaMalloc(64)")
    with pytest.raises(cuda.CudaError, match=r"failed: .*35"):
        cuda.check((35, None), "plain int error")


def test_failed_allocation_raises(fake: FakeCudart) -> None:
    fake.fail_malloc = True
    with pytest.raises(
        cuda.CudaError, match=r"cudaMalloc\(128\) failed: cudaErrorMemoryAllocation"
    ):
        cuda.DeviceBuffer(128)


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (Err.cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver"),
        (Err.cudaErrorNoDevice, "cudaErrorNoDevice"),
    ],
)
def test_no_driver_or_no_gpu_is_one_clear_error(fake: FakeCudart, error: Err, why: str) -> None:
    fake.count_error = error
    with pytest.raises(cuda.CudaError) as err:
        cuda.require_device()
    assert str(err.value) == (
        f"no usable CUDA device: cudaGetDeviceCount() failed: {why} ({int(error)}); "
        "the TensorRT runtime needs an NVIDIA GPU and driver"
    )


def test_device_index_beyond_the_visible_ones(fake: FakeCudart) -> None:
    with pytest.raises(
        cuda.CudaError, match=r"CUDA device 2 asked for but 1 device\(s\) are visible"
    ):
        cuda.require_device(2)
    info = cuda.require_device(0)
    assert info.name == "Fake GPU" and info.compute_capability == "9.0"


def test_missing_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda, "_loaded", None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(
        MissingDependencyError,
        match="the TensorRT backend needs cuda-python: pip install cuda-python",
    ):
        cuda.cudart()


def test_copies_are_counted_by_direction(fake: FakeCudart) -> None:
    stream = cuda.Stream()
    dev = cuda.DeviceBuffer(16)
    pin = cuda.PinnedBuffer(16)
    pin.write(np.arange(4, dtype=np.float32))
    cuda.copy_h2d(dev.ptr, pin.ptr, 16, stream)
    pin.view()[:] = 0
    cuda.copy_d2h(pin.ptr, dev.ptr, 16, stream)
    assert pin.view(16).view(np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert (cuda.TRANSFERS.h2d, cuda.TRANSFERS.d2h, cuda.TRANSFERS.h2d_bytes) == (1, 1, 16)
    with pytest.raises(Exception, match="cannot hold 20"):
        pin.write(np.zeros(5, np.float32))


def test_graph_capture_is_ended_even_when_the_enqueue_fails(fake: FakeCudart) -> None:
    stream = cuda.Stream()
    graph, why = cuda.CudaGraph.capture(stream, lambda: False)
    assert graph is None and why == "the enqueue returned False during capture"
    assert fake.capturing is None  # capture ended

    def boom() -> bool:
        raise RuntimeError("bad")

    graph, why = cuda.CudaGraph.capture(stream, boom)
    assert graph is None and "enqueue raised RuntimeError: bad" in why and fake.capturing is None


def test_resources_release_in_reverse_and_report_failures(fake: FakeCudart) -> None:
    order: list[str] = []

    class Item:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name, self.fail = name, fail

        def free(self) -> None:
            order.append(self.name)
            if self.fail:
                raise cuda.CudaError(f"{self.name} failed")

    res = cuda.Resources()
    for item in (Item("a"), Item("b", fail=True), Item("c")):
        res.add(item)
    with pytest.raises(cuda.CudaError, match="b failed"):
        res.close()
    assert order == ["c", "b", "a"]


NO_DRIVER = r"""
import json
from pytest_trtparity.trt import cuda
try:
    cuda.require_device()
    print(json.dumps({"error": None}))
except cuda.CudaError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_real_cuda_bindings_without_a_driver_fail_cleanly() -> None:
    """cuda-bindings 13 imports without a GPU; on this CPU-only machine every call reports an error
    tuple. Run for real when ci/fetch-trt-bindings.sh has fetched it (and skipped on a GPU host)."""
    paths = [require("cuda-bindings-13.0.3"), require("cuda-pathfinder-1.9.0")]
    result = run_python(NO_DRIVER, paths=paths)
    if result["error"] is None:
        pytest.skip("a CUDA driver and GPU are present here; tests/gpu covers this machine")
    assert result["error"].startswith(
        "no usable CUDA device: cudaGetDeviceCount() failed: cudaError"
    )
    assert "the TensorRT runtime needs an NVIDIA GPU and driver" in result["error"]
    assert bindings_dir().is_dir()
