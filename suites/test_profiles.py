"""Gate: parity at every optimization profile's min, opt and max shapes, against ONNX Runtime
running the ONNX the engine was built from (--trt-onnx, or the .onnx built on demand)."""

import pytest

from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend
from pytest_trtparity.checks.profiles import onnx_source, run_sweep
from pytest_trtparity.reference.reader import ReferenceReader


@pytest.mark.trtparity("profiles")
@pytest.mark.trt_profiles  # deselect this suite alone: -m "not trt_profiles"
def test_profile_sweep(trt_engine, trt_contract, trt_settings, trt_gate):
    onnx = onnx_source(trt_settings)
    if onnx is None:
        pytest.skip("profile sweep needs the ONNX the engine came from: pass --trt-onnx PATH")
    if not trt_contract.profiles:
        pytest.skip(f"profile sweep: {trt_contract.where} declares no optimization profiles")
    ref = trt_settings.ref
    records = ReferenceReader(ref) if ref is not None and ref.is_file() else ()
    with OnnxRuntimeBackend(onnx, provider="cpu", threads=trt_settings.threads) as reference:
        trt_gate.enforce(run_sweep(trt_engine, reference, trt_contract, records))
