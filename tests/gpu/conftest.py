"""GPU tests: they need cuda-python and a visible CUDA device, and skip with the reason otherwise."""

from __future__ import annotations

import pytest

from pytest_trtparity.errors import MissingDependencyError
from pytest_trtparity.trt import cuda


@pytest.fixture(scope="session")
def gpu() -> cuda.DeviceInfo:
    cuda.use_cudart(None)
    try:
        return cuda.require_device(0)
    except MissingDependencyError as exc:
        pytest.skip(f"cuda-python is not installed: {exc}")
    except cuda.CudaError as exc:
        pytest.skip(str(exc))
