"""Gate: TensorRT builds the model under the contract's profiles, and the plan fits its budget.

Runs wherever a TensorRT builder is installed, GPU or not (TensorRT-RTX builds ahead of time for
--trt-compute-capability): the contract against the network TensorRT parsed, the build itself
(a failure is TensorRT's own sentence, naming the file and the node), the plan's size against the
contract's memory.engine_bytes (2 GB when it sets none), and the build time in the summary.
"""

import pytest

from pytest_trtparity.checks.build import build_suite, summary
from pytest_trtparity.errors import MissingDependencyError
from pytest_trtparity.judge.payloads import BuildPayload
from pytest_trtparity.trt.build import BuildOptions

BUILDERS = ("tensorrt", "tensorrt-rtx")


@pytest.mark.trtparity("build")
def test_build(trt_settings, trt_contract, trt_gate):
    engine, builder = trt_settings.engine, trt_settings.backend
    if engine is None or engine.suffix.lower() != ".onnx" or builder not in BUILDERS:
        pytest.skip(
            "the build check builds an ONNX model with TensorRT: pass --trt-engine M.onnx "
            "--trt-backend tensorrt-rtx (or tensorrt)"
        )
    options = BuildOptions(
        precision=trt_settings.precision,
        builder=builder,
        compute_capabilities=trt_settings.compute_capability,
    )
    try:
        result = build_suite(engine, trt_contract, options, cache_dir=trt_settings.cache_dir)
    except MissingDependencyError as exc:
        pytest.skip(f"no TensorRT builder here: {exc}")
    result.typed(BuildPayload).table = [summary(result)]
    trt_gate.enforce(result)
