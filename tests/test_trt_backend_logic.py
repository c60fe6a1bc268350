"""The TensorRT backend's own bookkeeping, run against a simulated runtime on the CPU.

Nothing here runs TensorRT: `FakeTRT` and `FakeCudart` stand in for the two libraries, with host
memory behind every "device" pointer and a tiny numpy model as the "engine". What is tested is the
backend's logic that no real run on a GPU would show clearly: which buffers a closed loop binds (the
state must never cross to the host), NaN-filled outputs, copies only for fetched outputs, profile
choice and pinning, invariants failing hard, CUDA-graph warm-up/capture/replay, and the refusal
of foreign engines before they are deserialized. tests/gpu/ runs the real thing.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends.base import NamedProfiles, ProfileSelectable
from pytest_trtparity.backends.options import TensorRTOptions
from pytest_trtparity.backends.tensorrt import TensorRTBackend
from pytest_trtparity.contract.model import Contract, contract_from_json
from pytest_trtparity.errors import BackendError, BindingError, EngineLoadError, InvariantViolation
from pytest_trtparity.trt import cuda
from pytest_trtparity.trt.compat import report_path

# -- the simulated CUDA runtime -------------------------------------------------------------------


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class FakeCudart:
    """Host memory behind every pointer; copies are memmove, memsets are memset."""

    cudaError_t = Err
    cudaMemcpyKind = types.SimpleNamespace(
        cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3
    )
    cudaStreamCaptureMode = types.SimpleNamespace(
        cudaStreamCaptureModeGlobal=0, cudaStreamCaptureModeThreadLocal=1
    )

    def __init__(self, devices: int = 1, count_error: Err = Err.cudaSuccess) -> None:
        self.devices = devices
        self.count_error = count_error
        self.memory: dict[int, np.ndarray] = {}
        self.host: dict[int, np.ndarray] = {}
        self.copies: list[tuple[int, int]] = []  # (kind, bytes)
        self.capturing: list[Callable[[], None]] | None = None
        self.launches = 0
        self.fail_malloc = False

    def cudaGetErrorName(self, err: Any) -> tuple[Err, bytes]:
        return Err.cudaSuccess, Err(int(err)).name.encode()

    def cudaGetDeviceCount(self) -> tuple[Err, int | None]:
        if self.count_error:
            return self.count_error, None
        return Err.cudaSuccess, self.devices

    def cudaSetDevice(self, index: int) -> tuple[Err]:
        return (Err.cudaSuccess,)

    def cudaGetDeviceProperties(self, index: int) -> tuple[Err, Any]:
        return Err.cudaSuccess, types.SimpleNamespace(
            name=b"Fake GPU\0\0", major=9, minor=0, totalGlobalMem=80 << 30
        )

    def cudaStreamCreate(self) -> tuple[Err, int]:
        return Err.cudaSuccess, 7

    def cudaStreamSynchronize(self, stream: Any) -> tuple[Err]:
        return (Err.cudaSuccess,)

    def cudaStreamDestroy(self, stream: Any) -> tuple[Err]:
        return (Err.cudaSuccess,)

    def cudaEventCreate(self) -> tuple[Err, Any]:
        return Err.cudaSuccess, types.SimpleNamespace(t=0.0)

    def cudaEventRecord(self, ev: Any, stream: Any) -> tuple[Err]:
        ev.t = time.perf_counter()
        return (Err.cudaSuccess,)

    def cudaEventSynchronize(self, ev: Any) -> tuple[Err]:
        return (Err.cudaSuccess,)

    def cudaEventElapsedTime(self, a: Any, b: Any) -> tuple[Err, float]:
        return Err.cudaSuccess, (b.t - a.t) * 1e3

    def cudaEventDestroy(self, ev: Any) -> tuple[Err]:
        return (Err.cudaSuccess,)

    def _alloc(self, pool: dict[int, np.ndarray], n: int) -> tuple[Err, int | None]:
        if self.fail_malloc:
            return Err.cudaErrorMemoryAllocation, None
        arr = np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8)  # uninitialised garbage
        pool[arr.ctypes.data] = arr
        return Err.cudaSuccess, arr.ctypes.data

    def cudaMalloc(self, n: int) -> tuple[Err, int | None]:
        return self._alloc(self.memory, n)

    def cudaMallocHost(self, n: int) -> tuple[Err, int | None]:
        return self._alloc(self.host, n)

    def cudaFree(self, ptr: int) -> tuple[Err]:
        del self.memory[ptr]
        return (Err.cudaSuccess,)

    def cudaFreeHost(self, ptr: int) -> tuple[Err]:
        del self.host[ptr]
        return (Err.cudaSuccess,)

    def cudaMemsetAsync(self, ptr: int, value: int, n: int, stream: Any) -> tuple[Err]:
        ctypes.memset(ptr, value, n)
        return (Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: Any) -> tuple[Err]:
        ctypes.memmove(dst, src, n)
        self.copies.append((kind, n))
        return (Err.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream: Any, mode: Any) -> tuple[Err]:
        self.capturing = []
        return (Err.cudaSuccess,)

    def cudaStreamEndCapture(self, stream: Any) -> tuple[Err, Any]:
        work, self.capturing = self.capturing, None
        return Err.cudaSuccess, work

    def cudaGraphInstantiate(self, graph: Any, flags: int) -> tuple[Err, Any]:
        return Err.cudaSuccess, graph

    def cudaGraphLaunch(self, exec_: Any, stream: Any) -> tuple[Err]:
        self.launches += 1
        for step in exec_:
            step()
        return (Err.cudaSuccess,)

    def cudaGraphExecDestroy(self, exec_: Any) -> tuple[Err]:
        return (Err.cudaSuccess,)

    def cudaGraphDestroy(self, graph: Any) -> tuple[Err]:
        return (Err.cudaSuccess,)


# -- the simulated TensorRT -----------------------------------------------------------------------


def model(x: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
    """The "engine": y = sigmoid(mean(x) + mean(state)); stateN = 0.5 * state + mean(x)."""
    mx = x.mean(axis=1, keepdims=True)
    ms = state.mean(axis=(0, 2))[:, None]
    return {
        "y": (1.0 / (1.0 + np.exp(-(mx + ms)))).astype(np.float32),
        "stateN": (0.5 * state + mx[None, :, :]).astype(np.float32),
    }


PLAN_MAGIC = b"FAKEPLAN"


def make_plan(
    profiles: list[dict[str, list[list[int]]]], *, writes: bool = True, y_offset: float = 0.0
) -> bytes:
    return (
        PLAN_MAGIC
        + json.dumps({"profiles": profiles, "writes": writes, "y_offset": y_offset}).encode()
    )


PROFILES = [
    {"x": [[1, 4], [1, 4], [1, 4]], "state": [[2, 1, 3], [2, 1, 3], [2, 1, 3]]},
    {"x": [[1, 4], [4, 4], [8, 4]], "state": [[2, 1, 3], [2, 4, 3], [2, 8, 3]]},
]


class DType:
    def __init__(self, name: str) -> None:
        self.name = name


def fake_trt_module(cudart: FakeCudart, version: str = "10.16.1.11") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        pass

    ILogger.Severity = Severity  # type: ignore[attr-defined]
    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")  # type: ignore[attr-defined]
    trt.TensorLocation = types.SimpleNamespace(DEVICE="dev", HOST="host")  # type: ignore[attr-defined]

    io = {
        "x": ("in", (-1, 4)),
        "state": ("in", (2, -1, 3)),
        "y": ("out", (-1, 1)),
        "stateN": ("out", (2, -1, 3)),
    }

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.profile = 0
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.executions = 0

        def set_optimization_profile_async(self, index: int, stream: int) -> bool:
            if not 0 <= index < len(self.engine.profiles):
                return False
            self.profile = index
            return True

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            lo, _, hi = self.engine.profiles[self.profile][name]
            if len(shape) != len(lo) or not all(
                a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)
            ):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def infer_shapes(self) -> list[str]:
            return [n for n in ("x", "state") if n not in self.shapes]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            b = self.shapes["x"][0]
            return {
                "x": self.shapes["x"],
                "state": self.shapes["state"],
                "y": (b, 1),
                "stateN": (2, b, 3),
            }[name]

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def _view(self, name: str) -> np.ndarray:
            shape = self.get_tensor_shape(name)
            count = int(np.prod(shape))
            raw = (ctypes.c_float * count).from_address(self.addresses[name])
            return np.ctypeslib.as_array(raw).reshape(shape)

        def _run(self, addresses: dict[str, int]) -> None:
            saved, self.addresses = self.addresses, addresses
            try:
                out = model(self._view("x").copy(), self._view("state").copy())
                if self.engine.spec["writes"]:
                    self._view("y")[...] = out["y"] + np.float32(self.engine.spec["y_offset"])
                    self._view("stateN")[...] = out["stateN"]
            finally:
                self.addresses = saved

        def execute_async_v3(self, stream: int) -> bool:
            if self.engine.refuse:
                return False
            self.executions += 1
            frozen = dict(self.addresses)
            if cudart.capturing is not None:
                cudart.capturing.append(lambda: self._run(frozen))
            else:
                self._run(frozen)
            return True

    class Engine:
        def __init__(self, spec: dict[str, Any]) -> None:
            self.spec = spec
            self.profiles = [
                {k: tuple(tuple(d) for d in v) for k, v in p.items()} for p in spec["profiles"]
            ]
            self.refuse = False
            self.contexts: list[Context] = []

        num_io_tensors = 4
        device_memory_size_v2 = 1024

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.profiles)

        def get_tensor_name(self, i: int) -> str:
            return list(io)[i]

        def get_tensor_mode(self, name: str) -> str:
            return io[name][0]

        def get_tensor_dtype(self, name: str) -> DType:
            return DType("FLOAT")

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return io[name][1]

        def get_tensor_location(self, name: str) -> str:
            return "dev"

        def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
            return list(self.profiles[index][name])

        def create_execution_context(self) -> Context:
            ctx = Context(self)
            self.contexts.append(ctx)
            return ctx

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            if not bytes(data).startswith(PLAN_MAGIC):
                self.logger.log(
                    Severity.ERROR,
                    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag mismatch)",
                )
                return None
            engine = Engine(json.loads(bytes(data)[len(PLAN_MAGIC) :]))
            trt.last_engine = engine  # type: ignore[attr-defined]
            return engine

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


# -- fixtures -------------------------------------------------------------------------------------


def fake_contract(**changes: Any) -> Contract:
    raw: dict[str, Any] = {
        "trtparity": "contract/1",
        "model": "fake",
        "inputs": [
            {"name": "x", "dtype": "float32", "shape": ["B", 4], "range": [-1.0, 1.0]},
            {"name": "state", "dtype": "float32", "shape": [2, "B", 3], "range": [-1.0, 1.0]},
        ],
        "outputs": [
            {"name": "y", "dtype": "float32", "shape": ["B", 1]},
            {"name": "stateN", "dtype": "float32", "shape": [2, "B", 3]},
        ],
        "profiles": {
            "one": {
                "shapes": {
                    "x": {"min": [1, 4], "opt": [1, 4], "max": [1, 4]},
                    "state": {"min": [2, 1, 3], "opt": [2, 1, 3], "max": [2, 1, 3]},
                }
            },
            "many": {
                "shapes": {
                    "x": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]},
                    "state": {"min": [2, 1, 3], "opt": [2, 4, 3], "max": [2, 8, 3]},
                }
            },
        },
        "state": [{"output": "stateN", "input": "state"}],
        "invariants": [{"output": "y", "check": "in_range", "min": 0.0, "max": 1.0}],
        "default_tolerance": {"metric": "max_abs", "chunk": {"fail": 1e-5}},
    }
    raw.update(changes)
    return contract_from_json(raw)


@pytest.fixture
def fake_cuda() -> Iterator[FakeCudart]:
    fake = FakeCudart()
    cuda.use_cudart(fake)
    cuda.TRANSFERS.reset()
    yield fake
    cuda.use_cudart(None)


@pytest.fixture
def fake_trt(fake_cuda: FakeCudart, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    trt = fake_trt_module(fake_cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def write_plan(
    tmp_path: Path, plan: bytes | None = None, report: dict[str, Any] | None = None
) -> Path:
    path = tmp_path / "fake.plan"
    path.write_bytes(make_plan(PROFILES) if plan is None else plan)
    if report is not None:
        report_path(path).write_text(json.dumps(report))
    return path


def open_fake(tmp_path: Path, **options: Any) -> TensorRTBackend:
    options.setdefault("contract", fake_contract())
    return TensorRTBackend(write_plan(tmp_path), TensorRTOptions(**options))


def chunk(b: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.uniform(-1, 1, (b, 4)).astype(np.float32),
        "state": rng.uniform(-1, 1, (2, b, 3)).astype(np.float32),
    }


# -- tests ----------------------------------------------------------------------------------------


def test_functional_step_matches_the_model(tmp_path: Path, fake_trt: Any) -> None:
    with open_fake(tmp_path) as backend:
        feeds = chunk(1, 0)
        got = backend.run(feeds)
        want = model(feeds["x"], feeds["state"])
        np.testing.assert_array_equal(got["y"], want["y"])
        np.testing.assert_array_equal(got["stateN"], want["stateN"])
        assert [i.name for i in backend.inputs] == ["x", "state"]
        assert backend.input_info("x").shape == (None, 4)  # type: ignore[union-attr]


def test_closed_loop_keeps_state_on_the_device(
    tmp_path: Path, fake_trt: Any, fake_cuda: FakeCudart
) -> None:
    """Carried state is bound to the previous step's output buffer: 30 steps, one state upload."""
    with open_fake(tmp_path) as backend:
        first = chunk(1, 1)
        backend.run(first, fetch=["y"])
        cuda.TRANSFERS.reset()
        state = model(first["x"], first["state"])["stateN"]
        ys = []
        for i in range(30):
            x = chunk(1, 100 + i)["x"]
            got = backend.run({"x": x}, carry={"state": "stateN"}, fetch=["y"])
            want = model(x, state)
            state = want["stateN"]
            ys.append(got["y"])
            np.testing.assert_allclose(got["y"], want["y"], rtol=0, atol=1e-6)
        assert set(got) == {"y"}
        x_bytes = 4 * 4
        assert (
            cuda.TRANSFERS.h2d == 30 and cuda.TRANSFERS.h2d_bytes == 30 * x_bytes
        )  # x only, never state
        assert cuda.TRANSFERS.d2h == 30 and cuda.TRANSFERS.d2h_bytes == 30 * 4  # y only
        final = backend.run({"x": chunk(1, 999)["x"]}, carry={"state": "stateN"})
        np.testing.assert_allclose(
            final["stateN"], model(chunk(1, 999)["x"], state)["stateN"], atol=1e-6
        )


def test_state_buffers_alternate_so_a_step_never_reads_what_it_writes(
    tmp_path: Path, fake_trt: Any
) -> None:
    with open_fake(tmp_path) as backend:
        backend.run(chunk(1, 1))
        ctx = fake_trt.last_engine.contexts[0]
        seen = []
        for i in range(4):
            backend.run({"x": chunk(1, i)["x"]}, carry={"state": "stateN"})
            seen.append((ctx.addresses["state"], ctx.addresses["stateN"]))
        for read, written in seen:
            assert read != written
        assert seen[0] == seen[2] and seen[1] == seen[3]  # two buffers, swapped each step
        assert seen[1][0] == seen[0][1]  # each step reads what the previous one wrote


def test_outputs_not_written_by_the_engine_are_nan(tmp_path: Path, fake_trt: Any) -> None:
    path = write_plan(tmp_path, make_plan(PROFILES, writes=False))
    with TensorRTBackend(path) as backend:
        got = backend.run(chunk(1, 0))
    assert np.isnan(got["y"]).all() and np.isnan(got["stateN"]).all()


def test_fetch_copies_only_what_is_compared_plus_invariant_outputs(
    tmp_path: Path, fake_trt: Any
) -> None:
    with open_fake(tmp_path) as backend:
        backend.run(chunk(1, 0))
        cuda.TRANSFERS.reset()
        got = backend.run(chunk(1, 1), fetch=["stateN"])
        assert set(got) == {"stateN"}
        assert cuda.TRANSFERS.d2h == 2  # stateN, and y for its in_range invariant
    with open_fake(tmp_path, contract=None) as backend:
        cuda.TRANSFERS.reset()
        backend.run(chunk(1, 1), fetch=[])
        assert cuda.TRANSFERS.d2h == 0


def test_invariant_violation_fails_the_step(tmp_path: Path, fake_trt: Any) -> None:
    path = write_plan(tmp_path, make_plan(PROFILES, y_offset=5.0))
    with (
        TensorRTBackend(path, TensorRTOptions(contract=fake_contract())) as backend,
        pytest.raises(InvariantViolation) as err,
    ):
        backend.run(chunk(1, 0), fetch=[])
    assert "output 'y': invariant 0 <= y <= 1 violated" in str(err.value)


def test_profile_is_chosen_per_chunk_and_can_be_pinned(tmp_path: Path, fake_trt: Any) -> None:
    with open_fake(tmp_path) as backend:
        assert backend.profile_names == ["one", "many"]  # matched to the contract by their shapes
        assert isinstance(backend, ProfileSelectable) and isinstance(backend, NamedProfiles)
        ctx = fake_trt.last_engine.contexts[0]
        backend.run(chunk(1, 0))
        assert ctx.profile == 0  # opt shapes equal the chunk's
        backend.run(chunk(4, 0))
        assert ctx.profile == 1
        backend.pin_profile("many")
        backend.run(chunk(1, 0))
        assert ctx.profile == 1
        with pytest.raises(BindingError, match=r"no optimization profile admits.*x \[9, 4\]"):
            backend.run(chunk(9, 0))
        with pytest.raises(BindingError, match="no optimization profile 'nope'"):
            backend.pin_profile("nope")
        backend.pin_profile(None)
        backend.run(chunk(1, 0))
        assert ctx.profile == 0


def test_engine_io_is_checked_against_the_contract_at_load(tmp_path: Path, fake_trt: Any) -> None:
    contract = fake_contract(
        outputs=[
            {"name": "y", "dtype": "float16", "shape": ["B", 1]},
            {"name": "stateN", "dtype": "float32", "shape": [2, "B", 3]},
        ],
        state=[],
        invariants=[],
    )
    with pytest.raises(
        BindingError, match="output 'y': engine dtype float32, contract says float16"
    ):
        TensorRTBackend(write_plan(tmp_path), TensorRTOptions(contract=contract)).load()


def test_carrying_before_any_step_is_refused(tmp_path: Path, fake_trt: Any) -> None:
    with open_fake(tmp_path) as backend:
        backend.run(chunk(1, 0))
        backend.reset_state()
        with pytest.raises(BindingError, match="before any step produced it"):
            backend.run({"x": chunk(1, 0)["x"]}, carry={"state": "stateN"})


def test_execute_returning_false_is_an_error(tmp_path: Path, fake_trt: Any) -> None:
    with open_fake(tmp_path) as backend:
        backend.inputs  # noqa: B018 - loads
        fake_trt.last_engine.refuse = True
        with pytest.raises(BackendError, match="execute_async_v3 returned False under profile one"):
            backend.run(chunk(1, 0))


def test_corrupt_engine_names_path_checksum_and_both_versions(
    tmp_path: Path, fake_trt: Any
) -> None:
    path = write_plan(tmp_path, b"\x00garbage", report=None)
    with pytest.raises(EngineLoadError) as err:
        TensorRTBackend(path).load()
    text = str(err.value)
    assert (
        str(path) in text
        and "sha256 " in text
        and "TensorRT 10.16.1.11 could not deserialize" in text
    )
    assert "built by TensorRT unknown (no build report beside the engine)" in text
    assert "magic tag mismatch" in text  # what TensorRT logged


def _report(version: str = "10.16.1.11", cc: str = "9.0", sha: str | None = None) -> dict[str, Any]:
    return {
        "tensorrt": {"version": version},
        "device": {"name": "H100", "compute_capability": cc},
        "engine": {"sha256": sha},
        "profiles": [{"name": "one"}, {"name": "many"}],
        "options": {},
    }


def test_engine_from_another_tensorrt_is_refused_before_deserializing(
    tmp_path: Path, fake_trt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_plan(tmp_path, report=_report(version="10.3.0.26"))
    calls: list[bytes] = []
    monkeypatch.setattr(
        fake_trt.Runtime, "deserialize_cuda_engine", lambda self, d: calls.append(d)
    )
    with pytest.raises(
        EngineLoadError,
        match=r"built by TensorRT 10\.3\.0\.26, but this runtime is TensorRT 10\.16\.1\.11",
    ):
        TensorRTBackend(path).load()
    assert calls == []


def test_engine_for_another_gpu_is_refused(tmp_path: Path, fake_trt: Any) -> None:
    path = write_plan(tmp_path, report=_report(cc="8.6"))
    with pytest.raises(
        EngineLoadError,
        match=r"compute capability 8\.6 \(H100\), but this GPU \(Fake GPU\) is 9\.0",
    ):
        TensorRTBackend(path).load()


def test_engine_changed_since_its_build_report_is_refused(tmp_path: Path, fake_trt: Any) -> None:
    path = write_plan(tmp_path, report=_report(sha="0" * 64))
    with pytest.raises(
        EngineLoadError, match=r"differs from 0000000000000000… recorded in fake\.plan\.build\.json"
    ):
        TensorRTBackend(path).load()


def test_build_report_names_the_profiles(tmp_path: Path, fake_trt: Any) -> None:
    import hashlib

    plan = make_plan(PROFILES)
    path = write_plan(tmp_path, plan, report=_report(sha=hashlib.sha256(plan).hexdigest()))
    with TensorRTBackend(path) as backend:
        assert backend.profile_names == ["one", "many"]
        info = backend.info().to_json()
    assert info["built_by"] == "10.16.1.11" and info["device"].startswith("Fake GPU (sm 9.0")
    assert info["profiles"] == ["one", "many"]


def test_no_tensorrt_runtime_is_created_without_a_device(
    tmp_path: Path, fake_trt: Any, fake_cuda: FakeCudart, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cuda.count_error = Err.cudaErrorInsufficientDriver
    monkeypatch.setattr(
        fake_trt, "Runtime", None
    )  # creating one would fail the test with a TypeError
    with pytest.raises(
        cuda.CudaError,
        match=r"no usable CUDA device: cudaGetDeviceCount\(\) failed: cudaErrorInsufficientDriver",
    ):
        TensorRTBackend(write_plan(tmp_path)).load()


def test_cuda_graphs_warm_up_capture_then_replay(
    tmp_path: Path, fake_trt: Any, fake_cuda: FakeCudart
) -> None:
    with open_fake(tmp_path, cuda_graphs=True) as backend:
        ctx = fake_trt.last_engine.contexts[0]
        feeds = chunk(1, 3)
        outs = [backend.run(feeds) for _ in range(4)]
        assert ctx.executions == 2  # plain warm-up, then the one captured enqueue
        assert fake_cuda.launches == 3  # replayed on steps 2, 3 and 4
        for out in outs[1:]:
            np.testing.assert_array_equal(out["y"], outs[0]["y"])
        backend.run(chunk(4, 3))  # new shapes: warm-up again, no stale graph replayed
        assert fake_cuda.launches == 3


def test_cuda_graph_replay_keeps_closed_loop_state_right(tmp_path: Path, fake_trt: Any) -> None:
    with open_fake(tmp_path, cuda_graphs=True) as backend:
        first = chunk(1, 5)
        backend.run(first)
        state = model(first["x"], first["state"])["stateN"]
        for i in range(8):
            x = chunk(1, 50 + i)["x"]
            got = backend.run({"x": x}, carry={"state": "stateN"})
            want = model(x, state)
            state = want["stateN"]
            np.testing.assert_allclose(got["stateN"], want["stateN"], atol=1e-6)


def test_run_timed_reports_the_device_split(tmp_path: Path, fake_trt: Any) -> None:
    with open_fake(tmp_path) as backend:
        _, timing = backend.run_timed(chunk(1, 0))
    assert timing.h2d_ms is not None and timing.compute_ms is not None and timing.d2h_ms is not None
    assert timing.total_ms >= timing.h2d_ms + timing.compute_ms + timing.d2h_ms >= 0


def test_close_frees_every_allocation(tmp_path: Path, fake_trt: Any, fake_cuda: FakeCudart) -> None:
    backend = open_fake(tmp_path).load()
    backend.run(chunk(1, 0))
    backend.run({"x": chunk(1, 1)["x"]}, carry={"state": "stateN"})
    assert fake_cuda.memory and fake_cuda.host
    backend.close()
    assert fake_cuda.memory == {} and fake_cuda.host == {}
