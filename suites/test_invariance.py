"""Gate: the engine gives a chunk the same answer however it is run: twice, in a batch of copies,
beside other chunks in any position, at every batch size and profile it admits."""

import pytest

from pytest_trtparity.checks.invariance import run_invariance


@pytest.mark.trtparity("invariance")
@pytest.mark.trt_invariance  # deselect this suite alone: -m "not trt_invariance"
def test_invariance(trt_engine, trt_contract, trt_reference, trt_gate):
    trt_gate.enforce(run_invariance(trt_engine, trt_contract, trt_reference))
