"""The TensorRT-RTX runtime on a real GPU: a plan built ahead of time loads and runs where the
runtime supports the GPU, and is refused in one sentence (ExecutionUnavailable, so the gate's
execution checks skip) where it does not, such as an H200 (compute capability 9.0).

Needs a GPU, cuda-python and the TensorRT-RTX wheels; skips naming what is missing. Each load runs
in a subprocess so that a crash fails the test instead of killing the run. How to run it on a GPU
machine: docs/tensorrt.md, "TensorRT-RTX on a GPU".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import MissingDependencyError
from pytest_trtparity.trt import api, compat, cuda
from pytest_trtparity.trt.build import BuildOptions, build_engine
from pytest_trtparity.util.paths import package_file

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "contracts" / "silero_vad.contract.json"
#: What the TensorRT-RTX 1.7 runtime supports (its own refusal message lists these).
SUPPORTED = {"8.0", "8.6", "8.9", "12.0", "12.1"}

LOAD = r"""
import json, sys
import numpy as np
from pytest_trtparity.backends.tensorrt import TensorRTRTXBackend
from pytest_trtparity.errors import TrtParityError
try:
    backend = TensorRTRTXBackend(sys.argv[1]).load()
    feeds = {"input": np.zeros((1, 576), np.float32), "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.array(16000, np.int64)}
    out = backend.run(feeds)
    print(json.dumps({"loaded": True, "output": float(out["output"].ravel()[0])}))
except TrtParityError as exc:
    print(json.dumps({"loaded": False, "type": type(exc).__name__, "error": str(exc)}))
"""


@pytest.fixture(scope="module")
def rtx(gpu: cuda.DeviceInfo) -> str:
    try:
        trt = api.import_runtime("tensorrt-rtx")
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    return api.version(trt)


def _load(plan: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, str(plan)],
        # the checkout first, then whatever the caller's path holds (wheels installed with --target)
        env=dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"the load crashed ({proc.returncode}): {proc.stderr[-2000:]}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _plan(tmp: Path, targets: tuple[str, ...]) -> Path:
    onnx = package_file("pkg:silero_vad/data/silero_vad_op18_ifless.onnx")
    options = BuildOptions(
        builder="tensorrt-rtx", compute_capabilities=targets, profiles=("stream",)
    )
    out = tmp / "vad.plan"
    build_engine(onnx, load_contract(CONTRACT), options, output=out, cache_dir=tmp / "cache")
    return out


def test_rtx_plan_runs_or_is_refused_in_one_sentence(
    gpu: cuda.DeviceInfo, rtx: str, tmp_path: Path
) -> None:
    supported = gpu.compute_capability in SUPPORTED
    target = gpu.compute_capability if supported else "8.9"
    plan = _plan(tmp_path, (target,))
    compat.report_path(plan).unlink()  # no sidecar: the runtime itself must decide
    result = _load(plan)
    if supported:
        assert result["loaded"] is True, result
        assert 0.0 <= float(str(result["output"])) <= 1.0
        return
    assert result["loaded"] is False
    assert result["type"] == "ExecutionUnavailable"
    error = str(result["error"])
    assert error.startswith(f"{plan}: TensorRT-RTX {rtx} refuses to run on this GPU: ")
    assert f"compute capability {gpu.compute_capability}" in error and "\n" not in error
    print(f"refusal: {error}")  # the sentence users see, kept in the run's log (-rP)


def test_plan_for_another_target_is_refused_from_its_build_report(
    gpu: cuda.DeviceInfo, rtx: str, tmp_path: Path
) -> None:
    other = "12.0" if gpu.compute_capability != "12.0" else "8.9"
    result = _load(_plan(tmp_path, (other,)))
    assert result["loaded"] is False and result["type"] == "ExecutionUnavailable"
    assert f"built ahead of time for compute capability {other}, but this GPU" in str(
        result["error"]
    )
    print(f"refusal: {result['error']}")
