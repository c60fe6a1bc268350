"""Gate: the engine's real inputs and outputs match the binding contract."""

import pytest

from pytest_trtparity.checks.contract import contract_suite


@pytest.mark.trtparity("contract")
@pytest.mark.trt_contract  # deselect this suite alone: -m "not trt_contract"
def test_engine_matches_contract(trt_engine, trt_contract, trt_gate):
    trt_gate.enforce(contract_suite(trt_contract, trt_engine.inputs, trt_engine.outputs))
