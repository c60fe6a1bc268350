"""The TensorRT runtime (the lean one from its wheel, or the full library) refusing bad engines with
a clear error, never a crash. Each load runs in a subprocess so that a segfault fails the test
instead of killing the run.

Needs a GPU, cuda-python and `tensorrt_lean` / `tensorrt_lean_bindings` (tensorrt-lean-cu13 wheels)
or `tensorrt`; skips naming what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trtparity.errors import MissingDependencyError
from pytest_trtparity.trt import api, compat, cuda

ROOT = Path(__file__).resolve().parents[2]

LOAD = r"""
import json, sys
from pytest_trtparity.backends.tensorrt import TensorRTBackend
from pytest_trtparity.errors import TrtParityError
try:
    TensorRTBackend(sys.argv[1]).load()
    print(json.dumps({"loaded": True}))
except TrtParityError as exc:
    print(json.dumps({"loaded": False, "type": type(exc).__name__, "error": str(exc)}))
"""


@pytest.fixture(scope="module")
def runtime(gpu: cuda.DeviceInfo) -> str:
    try:
        trt = api.import_runtime()
    except MissingDependencyError as exc:
        pytest.skip(f"no TensorRT runtime importable: {exc}")
    return api.version(trt)


def load(path: Path) -> dict[str, object]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"loading {path.name} crashed the process (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_empty_engine_file(runtime: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.plan"
    path.write_bytes(b"")
    result = load(path)
    assert result == {
        "loaded": False,
        "type": "EngineLoadError",
        "error": f"{path}: engine file is empty",
    }


@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), b"ftrt" + os.urandom(2048), b"\x00" * 65536],
    ids=["random", "magic-then-random", "zeros"],
)
def test_corrupt_engine_names_path_checksum_and_versions(
    runtime: str, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "corrupt.plan"
    path.write_bytes(content)
    result = load(path)
    assert result["loaded"] is False and result["type"] == "EngineLoadError"
    error = str(result["error"])
    assert error.startswith(
        f"{path}: TensorRT {runtime} could not deserialize this engine (sha256 "
    )
    assert "built by TensorRT unknown (no build report beside the engine)" in error


def test_foreign_file_that_is_not_a_plan(runtime: str, tmp_path: Path) -> None:
    path = tmp_path / "model.plan"
    path.write_bytes((ROOT / "contracts" / "silero_vad.contract.json").read_bytes())
    result = load(path)
    assert result["loaded"] is False and "could not deserialize" in str(result["error"])


def test_engine_from_another_version_and_gpu_is_refused_before_loading(
    runtime: str, gpu: cuda.DeviceInfo, tmp_path: Path
) -> None:
    import hashlib

    path = tmp_path / "foreign.plan"
    data = os.urandom(4096)
    path.write_bytes(data)
    report = {
        "tensorrt": {"version": "8.6.1"},
        "device": {"name": "Tesla T4", "compute_capability": "7.5"},
        "engine": {"sha256": hashlib.sha256(data).hexdigest()},
        "options": {},
    }
    compat.report_path(path).write_text(json.dumps(report))
    result = load(path)
    assert result["loaded"] is False
    assert f"built by TensorRT 8.6.1, but this runtime is TensorRT {runtime}" in str(
        result["error"]
    )
    report["tensorrt"] = {"version": runtime}
    compat.report_path(path).write_text(json.dumps(report))
    result = load(path)
    assert (
        f"built for GPU compute capability 7.5 (Tesla T4), but this GPU ({gpu.name}) is {gpu.compute_capability}"
        in str(result["error"])
    )
