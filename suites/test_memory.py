"""Gate: engine file size, peak device memory and peak host RSS within the contract's limits."""

import pytest

from pytest_trtparity.checks.memory import run_memory


@pytest.mark.trtparity("memory")
@pytest.mark.trt_memory  # deselect this suite alone: -m "not trt_memory"
def test_memory(trt_engine, trt_contract, trt_reference, trt_gate):
    trt_gate.enforce(run_memory(trt_engine, trt_contract, trt_reference))
