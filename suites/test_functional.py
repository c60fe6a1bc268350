"""Gate: every reference chunk, reference state in, every output within its tolerance."""

import pytest

from pytest_trtparity.functional import run_functional


@pytest.mark.trtparity("functional")
def test_functional_parity(trt_engine, trt_contract, trt_reference, trt_gate):
    trt_gate.enforce(run_functional(trt_engine, trt_contract, trt_reference))
