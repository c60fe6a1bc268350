"""Gate: per-chunk engine latency over real reference chunks, within the contract's latency tiers."""

import pytest

from pytest_trtparity.checks.latency import latency_suite


@pytest.mark.trtparity("latency")
@pytest.mark.trt_latency  # deselect this suite alone: -m "not trt_latency"
def test_latency(request, trt_engine, trt_contract, trt_reference, trt_settings, trt_gate):
    trt_gate.enforce(
        latency_suite(request, trt_engine, trt_contract, trt_reference, settings=trt_settings)
    )
