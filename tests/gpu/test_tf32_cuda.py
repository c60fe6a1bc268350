"""TF32 on a real GPU: the backends' default really computes in fp32, `tf32=True` really does not,
and the environment block names cuDNN, cuBLAS and the clocks. Skips naming why without CUDA.

Run: python3 -m pytest tests/gpu/test_tf32_cuda.py -v
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend

torch = pytest.importorskip("torch", reason="needs PyTorch with CUDA")
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)

N = 1024
#: Relative error of an fp32 product of N-term sums of standard normals, against float64: IEEE fp32
#: stays near 1e-6; TF32 keeps 10 mantissa bits of each input (2**-11 = 4.9e-4 relative rounding),
#: which lands near 1e-3. 1e-4 sits between the two with an order of magnitude either side.
SPLIT = 1e-4


class MatMul(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, N)).astype(np.float32)
    w = rng.standard_normal((N, N)).astype(np.float32)
    path = tmp_path_factory.mktemp("tf32") / "matmul.pt"
    torch.jit.save(torch.jit.script(MatMul(torch.from_numpy(w))), str(path))
    want = x.astype(np.float64) @ w.astype(np.float64)
    return path, x, want


def _relative_error(case: tuple[Path, np.ndarray, np.ndarray], **options: Any) -> float:
    path, x, want = case
    backend = open_backend(
        path,
        device="cuda",
        input_names=("x",),
        output_names=("y",),
        specs={"x": ("float32", (N, N)), "y": ("float32", (N, N))},
        **options,
    ).load()
    try:
        got = backend.run({"x": x})["y"].astype(np.float64)
    finally:
        backend.close()
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_default_is_fp32_and_tf32_is_only_taken_when_allowed(
    case: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    if torch.cuda.get_device_capability(0) < (8, 0):
        pytest.skip("TF32 needs compute capability 8.0 or newer")
    fp32 = _relative_error(case)
    tf32 = _relative_error(case, tf32=True)
    assert fp32 < SPLIT < tf32, (fp32, tf32)
    assert _relative_error(case) < SPLIT  # and closing the TF32 backend gave fp32 back


def test_environment_block_names_cudnn_cublas_and_clocks(
    case: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path = case[0]
    backend = open_backend(
        path,
        device="cuda",
        input_names=("x",),
        output_names=("y",),
        specs={"x": ("float32", (N, N)), "y": ("float32", (N, N))},
    ).load()
    backend.run({"x": case[1]})
    extra = backend.info().extra
    backend.close()
    assert extra["tf32"] is False and set(extra["tf32_ops"].values()) == {"ieee"}
    assert extra["cudnn"].count(".") == 2 and extra["cublas"]
    clocks = extra["gpu_clocks"]
    assert clocks["source"] in ("nvml", "nvidia-smi")
    assert 0 < clocks["sm_mhz"] <= clocks["sm_max_mhz"]
    assert clocks["mem_max_mhz"] > 0


def test_onnxruntime_cuda_provider_follows_tf32(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (onnxruntime-gpu)")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, N)).astype(np.float32)
    w = rng.standard_normal((N, N)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, N])],
        [numpy_helper.from_array(w, "w")],
    )
    model = tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    want = x.astype(np.float64) @ w.astype(np.float64)
    errors = {}
    for tf32 in (False, True):
        backend = open_backend(model, provider="cuda", tf32=tf32).load()
        assert backend.info().extra["use_tf32"] == ("1" if tf32 else "0")
        got = backend.run({"x": x})["y"].astype(np.float64)
        errors[tf32] = float(np.abs(got - want).max() / np.abs(want).max())
    assert errors[False] < SPLIT < errors[True], errors
