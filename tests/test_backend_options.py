"""Typed backend options built in one place, and optional backend features asked for by protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import (
    DeviceMemoryReporter,
    DeviceTimed,
    NamedProfiles,
    OnGpu,
    ProfileSelectable,
)
from pytest_trtparity.backends.factory import backend_options, plain_options
from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend, cuda_ep_options
from pytest_trtparity.backends.options import (
    OnnxRuntimeOptions,
    TensorRTOptions,
    TorchOptions,
    from_keywords,
)
from pytest_trtparity.backends.tensorrt import TensorRTBackend, TensorRTRTXBackend
from pytest_trtparity.backends.torch import TorchBackend
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import BindingError, ConfigError
from pytest_trtparity.settings import resolve_settings

from .conftest import SILERO_CONTRACT


def _settings(tmp_path: Path, cli: dict[str, Any]) -> Any:
    return resolve_settings(cli, {}, cli_base=tmp_path, ini_base=tmp_path)


def test_keywords_become_the_backends_typed_options(silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx, threads=1, tf32=True)
    assert backend.options == OnnxRuntimeOptions(threads=1, tf32=True)


def test_an_unknown_keyword_is_a_config_error_naming_it(silero_onnx: Path) -> None:
    with pytest.raises(ConfigError, match=r"the onnxruntime backend has no option 'cuda_graph'"):
        open_backend(silero_onnx, cuda_graph=True)
    with pytest.raises(ConfigError, match=r"no option 'provider'.*device, entry"):
        from_keywords(TorchOptions, {"provider": "cpu"}, backend="torch")


def test_lists_become_tuples_so_options_stay_frozen() -> None:
    options = from_keywords(TorchOptions, {"input_names": ["a", "b"]}, backend="torch")
    assert options.input_names == ("a", "b")


def test_options_of_another_backend_are_refused(silero_onnx: Path) -> None:
    with pytest.raises(ConfigError, match="takes OnnxRuntimeOptions, not TorchOptions"):
        OnnxRuntimeBackend(silero_onnx, TorchOptions())
    with pytest.raises(ConfigError, match="options or keywords, not both"):
        open_backend(silero_onnx, None, OnnxRuntimeOptions(), threads=1)
    with pytest.raises(ConfigError, match="onnxruntime backend has no option 'device'"):
        OnnxRuntimeBackend(silero_onnx, device=0)
    assert OnnxRuntimeBackend(silero_onnx, threads=2).options == OnnxRuntimeOptions(threads=2)


def test_the_factory_builds_each_backends_options(tmp_path: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    settings = _settings(
        tmp_path,
        {"trt_threads": 2, "trt_cuda_graphs": True, "trt_torch_entry": "_model", "trt_tf32": True},
    )
    ort = backend_options(settings, "onnxruntime")
    assert ort == OnnxRuntimeOptions(threads=2, tf32=True)
    torch = backend_options(settings, "torch", contract)
    assert isinstance(torch, TorchOptions)
    assert (torch.entry, torch.device, torch.threads) == ("_model", "cpu", 2)
    assert torch.input_names == tuple(contract.input_names)
    assert torch.specs.keys() == {t.name for t in (*contract.inputs, *contract.outputs)}
    trt = backend_options(settings, "tensorrt-rtx", contract)
    assert trt == TensorRTOptions(threads=2, tf32=True, contract=contract, cuda_graphs=True)
    baseline = backend_options(settings, "tensorrt", contract, role="baseline")
    assert baseline == TensorRTOptions(threads=2, tf32=True)
    with pytest.raises(ConfigError, match="backend 'nope'"):
        backend_options(settings, "nope")


def test_plain_options_give_each_backend_only_what_it_takes() -> None:
    assert plain_options("onnxruntime", provider="cuda", threads=3) == OnnxRuntimeOptions(
        provider="cuda", threads=3
    )
    assert plain_options("torch", provider="cuda", threads=3) == TorchOptions(threads=3)
    assert plain_options("tensorrt-rtx", provider="cuda") == TensorRTOptions()
    with pytest.raises(ConfigError, match="backend 'nope'"):
        plain_options("nope")


def test_cuda_provider_device_id_reaches_the_provider_only_when_not_the_first() -> None:
    assert cuda_ep_options(OnnxRuntimeOptions()) == {"use_tf32": "0"}
    assert cuda_ep_options(OnnxRuntimeOptions(device_id=1, tf32=True)) == {
        "use_tf32": "1",
        "device_id": "1",
    }


def test_backends_declare_their_optional_features(tmp_path: Path, silero_onnx: Path) -> None:
    plan = tmp_path / "x.plan"
    ort = OnnxRuntimeBackend(silero_onnx)
    trt = TensorRTRTXBackend(plan, TensorRTOptions(device=1))
    torch = TorchBackend(tmp_path / "x.pt", TorchOptions(device="cuda:2"))
    assert not isinstance(ort, ProfileSelectable | DeviceTimed | DeviceMemoryReporter)
    assert not isinstance(trt, DeviceTimed)  # ProfileSelectable: test_trt_backend_logic, loaded
    assert isinstance(torch, DeviceTimed) and isinstance(torch, DeviceMemoryReporter)
    assert all(isinstance(b, OnGpu) for b in (ort, trt, torch))
    assert not isinstance(ort, NamedProfiles)
    assert (ort.gpu_index(), trt.gpu_index(), torch.gpu_index()) == (None, 1, 2)
    assert TorchBackend(plan, TorchOptions()).gpu_index() is None
    cuda = OnnxRuntimeBackend(silero_onnx, OnnxRuntimeOptions(provider="cuda", device_id=3))
    assert cuda.gpu_index() == 3
    assert TensorRTBackend(plan).gpu_index() == 0


def test_carrying_before_any_step_is_refused_and_reset_forgets(silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    feeds: dict[str, np.ndarray] = {
        "input": np.zeros((1, 512), np.float32),
        "sr": np.array(16000, np.int64),
    }
    with pytest.raises(BindingError, match="carry state before any step produced it"):
        backend.run(feeds, carry={"state": "stateN"})
    backend.run({**feeds, "state": np.zeros((2, 1, 128), np.float32)})
    out = backend.run(feeds, carry={"state": "stateN"}, fetch=["output"])
    assert set(out) == {"output"}
    backend.reset_state()
    with pytest.raises(BindingError, match="carry state before any step produced it"):
        backend.run_timed(feeds, carry={"state": "stateN"})
