"""Gate: the engine against a baseline engine (--trt-baseline) on the same chunks: latency, error, memory."""

import pytest

from pytest_trtparity.checks.baseline import run_baseline


@pytest.mark.trtparity("baseline")
@pytest.mark.trt_baseline  # deselect this suite alone: -m "not trt_baseline"
def test_baseline(trt_engine, trt_baseline, trt_contract, trt_reference, trt_gate):
    if trt_baseline is None:
        pytest.skip("no baseline engine: pass --trt-baseline PATH (a .pt/.jit/.pt2 or .onnx model)")
    trt_gate.enforce(run_baseline(trt_engine, trt_baseline, trt_contract, trt_reference))
