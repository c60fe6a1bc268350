"""TF32 control and the GPU facts of the environment block, checked on the CPU.

PyTorch's precision flags are process-wide and can be set and read without a GPU, so applying and
restoring them is tested here with the real torch; the GPU side (that TF32 really changes a result,
that the versions and clocks are read) is in tests/gpu/test_tf32_cuda.py and skips without CUDA.
ONNX Runtime's CUDA provider is exercised through a stand-in session: these tests check what the
backend asks for and records, not that a GPU ran.
"""

from __future__ import annotations

import importlib.metadata
import json
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.backends import gpu_facts, open_backend
from pytest_trtparity.backends import onnxruntime as ort_backend
from pytest_trtparity.backends.factory import backend_options
from pytest_trtparity.backends.torch_math import apply_tf32, has_precision_api, tf32_in_force
from pytest_trtparity.errors import EngineLoadError
from pytest_trtparity.settings import resolve_settings

from .conftest import SILERO_CONTRACT, SILERO_REF

torch = pytest.importorskip("torch", reason="the TF32 tests need PyTorch (pip install torch)")

#: The precision values this module's tests touch, as PyTorch (2.9+) exposes them.
PATHS = (
    ("cuda", "matmul"),
    ("cudnn", "conv"),
    ("cudnn", "rnn"),
    ("mkldnn", "matmul"),
    ("cudnn",),
    (),
)
new_api = pytest.mark.skipif(
    not has_precision_api(torch), reason="needs PyTorch 2.9+ (per-operation fp32_precision)"
)


def _node(path: tuple[str, ...]) -> Any:
    node: Any = torch.backends
    for part in path:
        node = getattr(node, part)
    return node


def _snapshot() -> dict[tuple[str, ...], str]:
    return {p: str(_node(p).fp32_precision) for p in PATHS}


def _legacy_answers() -> tuple[str, bool, bool]:
    """The older getters, which PyTorch's own code (torch.export) still calls: they raise once the
    per-operation values and the flags stored beside them disagree, so they must keep answering."""
    return (
        torch.get_float32_matmul_precision(),
        bool(torch.backends.cuda.matmul.allow_tf32),
        bool(torch.backends.cudnn.allow_tf32),
    )


@pytest.fixture
def user_precision() -> Any:
    """A user process that asked for TF32 the usual way; put back whatever it was after the test."""
    before = _snapshot() if has_precision_api(torch) else None
    legacy = _legacy_answers()
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(legacy[0])
    torch.backends.cudnn.allow_tf32 = legacy[2]
    if before is not None:
        for path, value in before.items():
            _node(path).fp32_precision = value


class Cell(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


@pytest.fixture
def cell_pt(tmp_path: Path) -> Path:
    path = tmp_path / "cell.pt"
    torch.jit.save(torch.jit.script(Cell()), str(path))
    return path


NAMES: dict[str, Any] = {
    "input_names": ("x",),
    "output_names": ("y",),
    "specs": {"x": ("float32", (1, 4)), "y": ("float32", (1, 4))},
}


@new_api
def test_backend_turns_tf32_off_while_loaded_and_gives_the_process_its_setting_back(
    user_precision: None, cell_pt: Path
) -> None:
    before = _snapshot()
    assert tf32_in_force(torch)["tf32"] is True
    assert _legacy_answers() == ("high", True, True)
    backend = open_backend(cell_pt, **NAMES).load()
    assert tf32_in_force(torch)["tf32_ops"] == {
        "matmul": "ieee",
        "cudnn_conv": "ieee",
        "cudnn_rnn": "ieee",
    }
    assert _legacy_answers() == ("highest", False, False)
    info = backend.info().extra
    assert info["tf32"] is False and info["tf32_requested"] is False
    backend.close()
    assert _snapshot() == before
    assert _legacy_answers() == ("high", True, True)


@new_api
def test_trt_tf32_allows_it_and_the_record_says_so(cell_pt: Path) -> None:
    before, legacy = _snapshot(), _legacy_answers()
    backend = open_backend(cell_pt, tf32=True, **NAMES).load()
    info = backend.info().extra
    assert info["tf32"] is True and info["tf32_requested"] is True
    assert set(info["tf32_ops"].values()) == {"tf32"}
    assert _legacy_answers() == ("high", True, True)
    backend.close()
    assert _snapshot() == before and _legacy_answers() == legacy


@new_api
def test_a_failed_load_leaves_the_process_setting_alone(
    user_precision: None, tmp_path: Path
) -> None:
    before = _snapshot()
    with pytest.raises(EngineLoadError, match="model file not found"):
        open_backend(tmp_path / "missing.pt", **NAMES).load()
    assert _snapshot() == before


@new_api
def test_inherited_tf32_is_seen_and_overridden() -> None:
    """A process that set TF32 once for everything ("none" below inherits it) still gets fp32."""
    before = _snapshot()
    try:
        torch.backends.fp32_precision = "tf32"
        for path in PATHS[:3]:
            _node(path).fp32_precision = "none"
        user = tf32_in_force(torch)
        assert user["tf32_ops"]["cudnn_rnn"] == "tf32"
        restore = apply_tf32(torch, False)
        assert set(tf32_in_force(torch)["tf32_ops"].values()) == {"ieee"}
        restore()
        assert tf32_in_force(torch) == user
    finally:
        for path, value in before.items():
            _node(path).fp32_precision = value


def test_nvidia_tf32_override_zero_wins_over_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _legacy_torch(precision="high", matmul=True, cudnn=True)
    assert tf32_in_force(fake)["tf32"] is True
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    facts = tf32_in_force(fake)
    assert facts["tf32"] is False and facts["nvidia_tf32_override"] == "0"
    assert facts["tf32_ops"]["cudnn_rnn"] == "tf32"  # what PyTorch asks for, overridden


def _legacy_torch(*, precision: str, matmul: bool, cudnn: bool) -> Any:
    """A PyTorch before 2.9 as far as TF32 goes: two flags and the matmul precision, nothing more."""
    state = {"precision": precision}

    def set_precision(value: str) -> None:
        state["precision"] = value
        fake.backends.cuda.matmul.allow_tf32 = value != "highest"

    fake = types.SimpleNamespace(
        backends=types.SimpleNamespace(
            cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=matmul)),
            cudnn=types.SimpleNamespace(allow_tf32=cudnn),
        ),
        get_float32_matmul_precision=lambda: state["precision"],
        set_float32_matmul_precision=set_precision,
    )
    return fake


@pytest.mark.parametrize("allow", [False, True])
def test_older_pytorch_flags_are_set_and_restored(allow: bool) -> None:
    fake = _legacy_torch(precision="high", matmul=True, cudnn=True)
    assert not has_precision_api(fake)
    restore = apply_tf32(fake, allow)
    assert fake.backends.cuda.matmul.allow_tf32 is allow
    assert fake.backends.cudnn.allow_tf32 is allow
    assert fake.get_float32_matmul_precision() == ("high" if allow else "highest")
    assert tf32_in_force(fake)["tf32"] is allow
    restore()
    assert fake.backends.cuda.matmul.allow_tf32 is True and fake.backends.cudnn.allow_tf32 is True
    assert fake.get_float32_matmul_precision() == "high"


def test_cpu_backend_records_no_gpu_facts(cell_pt: Path) -> None:
    info = open_backend(cell_pt, **NAMES).load().info().extra
    assert "tf32" in info and "tf32_ops" in info
    assert not {"cudnn", "cublas", "gpu_clocks"} & set(info)


# -- the option ----------------------------------------------------------------------------------
def _settings(cli: dict[str, Any], ini: dict[str, Any]) -> Any:
    return resolve_settings(cli, ini, cli_base=Path.cwd(), ini_base=Path.cwd())


def test_trt_tf32_option_reaches_the_backend_options() -> None:
    assert _settings({}, {}).tf32 is False
    assert _settings({"trt_tf32": True}, {}).tf32 is True
    assert _settings({}, {"trt_tf32": "true"}).tf32 is True
    for backend in ("torch", "onnxruntime"):
        assert backend_options(_settings({"trt_tf32": True}, {}), backend).tf32 is True
        assert backend_options(_settings({}, {}), backend).tf32 is False


@pytest.mark.parametrize("flag", [[], ["--trt-tf32"]])
def test_the_gate_records_tf32_in_the_summary(
    pytester: pytest.Pytester, gate_dir: Path, flag: list[str]
) -> None:
    pytest.importorskip("silero_vad", reason="needs the silero-vad package")
    out = pytester.path / "artifacts"
    result = pytester.runpytest(
        "--trt-engine=pkg:silero_vad/data/silero_vad.jit",
        "--trt-torch-entry=_model",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        *flag,
        "-p",
        "no:cacheprovider",
        "-k",
        "contract",
    )
    assert result.ret == 0, result.stdout.str()[-2000:]
    env = json.loads((out / "summary.json").read_text())["environment"]
    assert env["tf32_requested"] is bool(flag)
    assert env["tf32"] is bool(flag)


# -- GPU facts, from stand-ins -------------------------------------------------------------------
def test_cudnn_versions_are_spelled_out() -> None:
    assert gpu_facts.format_cudnn(91900) == "9.19.0"
    assert gpu_facts.format_cudnn(90100) == "9.1.0"
    assert gpu_facts.format_cudnn(8902) == "8.9.2"


def test_loaded_library_is_found_in_the_process_map() -> None:
    maps = (
        "7f00-7f01 r-xp 00000000 08:01 12 /opt/x/libcublasLt.so.13\n"
        "7f01-7f02 r-xp 00000000 08:01 13 /opt/x/libcublas.so.13\n"
        "7f02-7f03 rw-p 00000000 00:00 0\n"
    )
    assert gpu_facts.loaded_library("cublas", maps) == "/opt/x/libcublas.so.13"
    assert gpu_facts.loaded_library("cudnn", maps) is None


def test_cublas_version_falls_back_to_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_facts, "loaded_library", lambda stem, maps=None: None)

    def version(name: str) -> str:
        if name == "nvidia-cublas":
            return "13.1.0.3"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert gpu_facts.cublas_version() == "13.1.0.3 (nvidia-cublas wheel)"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version("none"))
    assert gpu_facts.cublas_version() is None


def _fake_nvml(calls: list[str]) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM = 1, 2  # type: ignore[attr-defined]
    clocks = {1: 1980, 2: 3201}
    nvml.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: calls.append(f"uuid {uuid!r}") or "h"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: calls.append(f"index {i}") or "h"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetClockInfo = lambda h, kind: clocks[kind] // 2  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, kind: clocks[kind]  # type: ignore[attr-defined]
    return nvml


def test_clocks_come_from_nvml_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(calls))
    clocks = gpu_facts.gpu_clocks(uuid="GPU-abc")
    assert clocks == {
        "sm_mhz": 990,
        "mem_mhz": 1600,
        "sm_max_mhz": 1980,
        "mem_max_mhz": 3201,
        "source": "nvml",
    }
    assert calls == ["init", "uuid b'GPU-abc'", "shutdown"]


def test_clocks_come_from_nvidia_smi_without_nvml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\necho "345, 3201, 1980, 3201"\n')
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpu_facts.shutil, "which", lambda name: str(smi))
    clocks = gpu_facts.gpu_clocks(index=3)
    assert clocks == {
        "sm_mhz": 345,
        "mem_mhz": 3201,
        "sm_max_mhz": 1980,
        "mem_max_mhz": 3201,
        "source": "nvidia-smi",
    }
    assert (tmp_path / "args").read_text().split()[-2:] == ["-i", "3"]
    smi.write_text('#!/bin/sh\necho "[N/A], [N/A], 1980, 3201"\n')
    assert gpu_facts.gpu_clocks(index=3) is None


def test_clocks_are_left_out_without_nvml_or_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpu_facts.shutil, "which", lambda name: None)
    assert gpu_facts.gpu_clocks(index=0) is None


def test_cuda_visible_devices_maps_an_ordinal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_facts.visible_index(1) == (None, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert gpu_facts.visible_index(1) == (None, 5)
    assert gpu_facts.visible_index(2) == (None, None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert gpu_facts.visible_index(0) == ("GPU-abc", None)
    assert gpu_facts.nvml_uuid("abc") == "GPU-abc"
    assert gpu_facts.nvml_uuid("GPU-abc") == "GPU-abc"


# -- ONNX Runtime's CUDA provider, through a stand-in session ------------------------------------
class _Arg:
    def __init__(self, name: str) -> None:
        self.name, self.type, self.shape = name, "tensor(float)", [1, 4]


def _fake_ort(seen: dict[str, Any]) -> Any:
    class Session:
        def __init__(self, model: bytes, sess_options: Any, providers: list[Any]) -> None:
            seen["providers"] = providers
            self._options = dict(providers[0][1]) if isinstance(providers[0], tuple) else {}

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def get_provider_options(self) -> dict[str, dict[str, str]]:
            return {"CUDAExecutionProvider": {"device_id": "0", **self._options}}

        def get_inputs(self) -> list[_Arg]:
            return [_Arg("x")]

        def get_outputs(self) -> list[_Arg]:
            return [_Arg("y")]

    return types.SimpleNamespace(
        __version__="0.0-standin",
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        SessionOptions=types.SimpleNamespace,
        InferenceSession=Session,
    )


@pytest.mark.parametrize(("tf32", "use_tf32"), [(False, "0"), (True, "1")])
def test_ort_cuda_provider_gets_use_tf32_and_records_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tf32: bool, use_tf32: str
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: _fake_ort(seen))
    monkeypatch.setattr(ort_backend, "gpu_clocks", lambda **_: {"sm_mhz": 1, "source": "stand-in"})
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"stand-in")
    backend = open_backend(model, provider="cuda", tf32=tf32).load()
    assert seen["providers"][0] == ("CUDAExecutionProvider", {"use_tf32": use_tf32})
    extra = backend.info().extra
    assert extra["use_tf32"] == use_tf32 and extra["tf32"] is tf32
    assert extra["tf32_requested"] is tf32 and extra["gpu_clocks"]["source"] == "stand-in"


def test_ort_cpu_provider_records_no_cuda_facts(silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    assert not {"use_tf32", "tf32", "gpu_clocks"} & set(backend.info().extra)
