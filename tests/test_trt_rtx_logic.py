"""The plain decisions around TensorRT-RTX: targets, refusals, cache keys, network checks (no TensorRT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.checks.build import dynamic_problems, profile_problems
from pytest_trtparity.contract.model import TensorSpec
from pytest_trtparity.errors import ConfigError, EngineLoadError, ExecutionUnavailable
from pytest_trtparity.trt import api
from pytest_trtparity.trt.build import BuildOptions, choose_target, precision_plan
from pytest_trtparity.trt.cache import cache_key
from pytest_trtparity.trt.compat import EngineMeta, check_before_load, gpu_refusal
from pytest_trtparity.trt.cuda import CudaError, DeviceInfo, NoDevice
from pytest_trtparity.trt.profiles import PlannedProfile
from pytest_trtparity.trt.report import NetworkTensor

OFFERED = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
H200_REFUSAL = (
    "ERROR: The engine cannot run on this GPU, which has compute capability 9.0. Supported compute "
    "capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0. TensorRT-RTX does not support this compute capability, "
    "so the engine cannot be rebuilt for it."
)


def _no_gpu() -> Any:
    raise NoDevice("no usable CUDA device: cudaErrorNoDevice (100)")


def test_named_targets_need_no_gpu_and_are_deduplicated() -> None:
    options = BuildOptions(builder="tensorrt-rtx", compute_capabilities=("8.9", "12.0", "8.9"))
    target = choose_target(options, OFFERED, "TensorRT-RTX 1.7.1.116", _no_gpu)
    assert target.targets == ("8.9", "12.0") and target.compute_capability == ""
    assert target.label == "8.9+12.0"


def test_no_targets_and_no_gpu_names_the_option_and_the_offered_targets() -> None:
    with pytest.raises(ConfigError) as err:
        choose_target(BuildOptions(builder="tensorrt-rtx"), OFFERED, "TensorRT-RTX 1.7", _no_gpu)
    assert "has no GPU to build for (no usable CUDA device" in str(err.value)
    assert "--compute-capability X.Y (repeatable; TensorRT-RTX 1.7 offers 7.5, 8.0" in str(
        err.value
    )


def test_tensorrt_without_gpu_points_at_tensorrt_rtx() -> None:
    with pytest.raises(ConfigError, match=r"--builder tensorrt-rtx --compute-capability X\.Y"):
        choose_target(BuildOptions(), (), "TensorRT 11.4.0", _no_gpu)


def test_targets_need_a_builder_that_offers_them() -> None:
    with pytest.raises(ConfigError, match="builds only for the GPU it runs on"):
        choose_target(BuildOptions(compute_capabilities=("8.9",)), (), "TensorRT 11.4", _no_gpu)
    with pytest.raises(ConfigError, match=r"--compute-capability 9\.0: .* targets only 7\.5"):
        choose_target(
            BuildOptions(builder="tensorrt-rtx", compute_capabilities=("9.0",)),
            OFFERED,
            "TensorRT-RTX",
            _no_gpu,
        )


def test_with_a_gpu_and_no_targets_the_build_is_for_that_gpu() -> None:
    gpu = DeviceInfo(0, "NVIDIA RTX 4090", "8.9", 24 << 30)
    target = choose_target(BuildOptions(builder="tensorrt-rtx"), OFFERED, "x", lambda: gpu)
    assert (target.gpu_name, target.compute_capability, target.targets) == (
        "NVIDIA RTX 4090",
        "8.9",
        (),
    )


def test_options_validate_builder_and_target_spelling() -> None:
    with pytest.raises(ConfigError, match="--builder 'tensorrt-llm'"):
        BuildOptions(builder="tensorrt-llm")
    with pytest.raises(ConfigError, match=r"--compute-capability 'sm89': expected MAJOR\.MINOR"):
        BuildOptions(builder="tensorrt-rtx", compute_capabilities=("sm89",))
    assert BuildOptions(builder="tensorrt-rtx", compute_capabilities=("12.0",)).to_json()[
        "compute_capabilities"
    ] == ["12.0"]


def test_rtx_is_strongly_typed_although_its_version_is_1x() -> None:
    with pytest.raises(ConfigError, match="no weak typing"):
        precision_plan("fp16", "1.7.1.116", lambda _: False, strongly_typed_only=True)
    assert precision_plan(
        "fp32", "1.7.1.116", lambda _: False, strongly_typed_only=True
    ).strongly_typed


KEY: dict[str, Any] = {
    "model_digest": "m",
    "profiles": [],
    "options": {},
    "trt_version": "1.7.1.116",
    "compute_capability": "",
}


def test_cache_key_includes_flavour_and_targets() -> None:
    base = cache_key(**KEY, flavour="tensorrt-rtx", targets=("8.9",))
    assert base == cache_key(**KEY, flavour="tensorrt-rtx", targets=("8.9",))
    assert base != cache_key(**KEY, flavour="tensorrt", targets=("8.9",))
    assert base != cache_key(**KEY, flavour="tensorrt-rtx", targets=("8.6",))
    assert base != cache_key(**KEY, flavour="tensorrt-rtx", targets=("8.9", "12.0"))


class _Logger:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines


def test_last_error_skips_the_no_driver_noise_that_follows_the_real_error() -> None:
    noise = (
        "ERROR: [checkMacros.cpp::catchCudaError::250] Error Code 1: Cuda Runtime (cudaError 35)"
    )
    real = "ERROR: [graphScope.cpp::analyze::471] Error Code 2: Internal Error (Assertion failed)"
    assert api.last_error(_Logger([real, noise])) == real.removeprefix("ERROR: ")
    assert api.last_error(_Logger([noise])) == noise.removeprefix("ERROR: ")
    assert api.last_error(_Logger(["WARNING: only this"])) == "WARNING: only this"
    assert api.last_error(_Logger([])) == "no message from TensorRT"


def test_gpu_refusal_is_one_sentence_naming_engine_runtime_and_reason() -> None:
    text = gpu_refusal(Path("vad.plan"), "TensorRT-RTX 1.7.1.116", ["WARNING: x", H200_REFUSAL])
    assert text == (
        "vad.plan: TensorRT-RTX 1.7.1.116 refuses to run on this GPU: The engine cannot run on this "
        "GPU, which has compute capability 9.0. Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 "
        ">12.0. TensorRT-RTX does not support this compute capability, so the engine cannot be "
        "rebuilt for it."
    )
    assert gpu_refusal(Path("vad.plan"), "TensorRT-RTX", ["ERROR: magic number mismatch"]) is None


AOT_REPORT: dict[str, Any] = {
    "tensorrt": {"version": "1.7.1.116", "flavour": "tensorrt-rtx"},
    "targets": ["8.9"],
    "device": {"name": "none (ahead-of-time build)", "compute_capability": None},
    "engine": {"sha256": "ab" * 32},
}


def test_aot_report_is_read_with_flavour_and_targets() -> None:
    meta = EngineMeta.from_report(AOT_REPORT, "r.json")
    assert (meta.flavour, meta.targets, meta.compute_capability) == ("tensorrt-rtx", ("8.9",), "")
    with pytest.raises(EngineLoadError, match=r"lacks 'device\.compute_capability'"):
        EngineMeta.from_report({**AOT_REPORT, "targets": []}, "r.json")


def _load(meta: EngineMeta, cc: str) -> None:
    check_before_load(
        Path("vad.plan"),
        meta,
        installed_version="1.7.1.116",
        device_cc=cc,
        device_name="NVIDIA H200",
        engine_sha256="ab" * 32,
    )


def test_plan_built_for_other_targets_is_unavailable_here_not_broken() -> None:
    meta = EngineMeta.from_report(AOT_REPORT, "r.json")
    _load(meta, "8.9")  # the target GPU: loads
    with pytest.raises(ExecutionUnavailable) as err:
        _load(meta, "9.0")
    assert str(err.value) == (
        "vad.plan: built ahead of time for compute capability 8.9, but this GPU (NVIDIA H200) has "
        "compute capability 9.0; rebuild with --compute-capability 9.0 where the builder offers it"
    )


def test_no_device_is_both_a_cuda_error_and_execution_unavailable() -> None:
    assert issubclass(NoDevice, CudaError) and issubclass(NoDevice, ExecutionUnavailable)
    assert not issubclass(CudaError, ExecutionUnavailable)


def _spec(name: str, *shape: Any) -> TensorSpec:
    return TensorSpec(name=name, dtype="float32", shape=tuple(shape))


def test_dynamic_contract_dim_fixed_in_the_network_is_named() -> None:
    tensors = [NetworkTensor("x", "FLOAT", (1, -1)), NetworkTensor("y", "FLOAT", (-1, 4))]
    problems = list(dynamic_problems([_spec("x", "B", "T"), _spec("y", "B", 4)], tensors, "input"))
    assert problems == [
        "input 'x': dimension 0 is fixed at 1 in the network TensorRT parsed, contract says dynamic 'B'"
    ]
    assert list(dynamic_problems([_spec("x", 1, "T")], tensors, "input")) == []


def test_profile_shapes_checked_against_the_parsed_inputs() -> None:
    tensors = [NetworkTensor("x", "FLOAT", (-1, 576))]
    ok = PlannedProfile("p", {"x": ((1, 576), (4, 576), (8, 576))})
    assert list(profile_problems([ok], tensors)) == []
    changes_fixed = PlannedProfile("p", {"x": ((1, 576), (4, 512), (8, 576))})
    assert list(profile_problems([changes_fixed], tensors)) == [
        "profile 'p': input 'x' opt [4, 512] changes dimension 1, fixed at 576 in the parsed network"
    ]
    unknown = PlannedProfile("q", {"z": ((1,), (1,), (1,))})
    assert list(profile_problems([unknown], tensors)) == [
        "profile 'q': input 'z' is not an input of the parsed network"
    ]
