"""ONNX Runtime's TensorRT execution provider: its options, and the silent CPU fallback caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from pytest_trtparity.backends import onnxruntime as ort_backend
from pytest_trtparity.backends.factory import backend_options
from pytest_trtparity.backends.options import OnnxRuntimeOptions
from pytest_trtparity.errors import BackendError
from pytest_trtparity.settings import resolve_settings


def test_ep_options_enable_caches_and_follow_the_precision(tmp_path: Path) -> None:
    opts = ort_backend.tensorrt_ep_options(
        OnnxRuntimeOptions(trt_cache_dir=tmp_path, precision="fp16", workspace=1 << 30)
    )
    assert opts == {
        "trt_engine_cache_enable": "True",
        "trt_timing_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_path": str(tmp_path),
        "trt_fp16_enable": "True",
        "trt_max_workspace_size": str(1 << 30),
    }
    assert "trt_fp16_enable" not in ort_backend.tensorrt_ep_options(OnnxRuntimeOptions())
    assert (
        ort_backend.tensorrt_ep_options(OnnxRuntimeOptions(precision="int8"))["trt_int8_enable"]
        == "True"
    )


def test_gate_settings_reach_the_ep(tmp_path: Path) -> None:
    settings = resolve_settings(
        {"trt_provider": "tensorrt", "trt_cache_dir": str(tmp_path), "trt_precision": "bf16"},
        {},
        cli_base=tmp_path,
        ini_base=tmp_path,
    )
    opts = backend_options(settings, "onnxruntime")
    assert isinstance(opts, OnnxRuntimeOptions)
    assert opts.trt_cache_dir == tmp_path / "ort-tensorrt" and opts.precision == "bf16"
    # a baseline is opened plainly: no provider engine cache, the default precision
    plain = backend_options(settings, "onnxruntime", role="baseline")
    assert plain == OnnxRuntimeOptions(provider="tensorrt")


class FallbackSession:
    """What onnxruntime does when the TensorRT EP cannot start: it runs on the CPU, warning only."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: bytes, sess_options: Any = None, providers: Any = None) -> None:
        FallbackSession.seen = {"providers": providers}

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


def test_silent_cpu_fallback_is_an_error(
    monkeypatch: pytest.MonkeyPatch, silero_onnx: Path, tmp_path: Path
) -> None:
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", FallbackSession)
    backend = ort_backend.OnnxRuntimeBackend(
        silero_onnx, OnnxRuntimeOptions(provider="tensorrt", trt_cache_dir=tmp_path / "ep")
    )
    with pytest.raises(
        BackendError,
        match="asked for TensorrtExecutionProvider but onnxruntime runs on CPUExecutionProvider",
    ):
        backend.load()
    providers = FallbackSession.seen["providers"]
    assert providers[0][0] == "TensorrtExecutionProvider"
    assert (
        providers[0][1]["trt_engine_cache_path"] == str(tmp_path / "ep")
        and (tmp_path / "ep").is_dir()
    )
    assert providers[1] == "CPUExecutionProvider"


def test_provider_missing_from_this_onnxruntime(silero_onnx: Path) -> None:
    import onnxruntime

    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT execution provider")
    with pytest.raises(BackendError, match="has no TensorrtExecutionProvider"):
        ort_backend.OnnxRuntimeBackend(silero_onnx, OnnxRuntimeOptions(provider="tensorrt")).load()
