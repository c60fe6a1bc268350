"""Gate: latency and throughput at every batch size the contract allows, batched outputs still correct."""

import pytest

from pytest_trtparity.checks.throughput import run_throughput


@pytest.mark.trtparity("throughput")
@pytest.mark.trt_throughput  # deselect this suite alone: -m "not trt_throughput"
def test_throughput(trt_engine, trt_contract, trt_reference, trt_gate):
    trt_gate.enforce(run_throughput(trt_engine, trt_contract, trt_reference))
