"""The plain functions around TensorRT: dtypes and bytes, profiles, compatibility, inspector JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.contract.model import contract_from_json
from pytest_trtparity.errors import BindingError, ConfigError, EngineLoadError
from pytest_trtparity.trt import compat, report, tensors
from pytest_trtparity.trt.profiles import choose_profile, match_profile_names, plan_profiles

from .test_trt_backend_logic import fake_contract


# -- dtypes and bytes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trt_name", "ours"),
    [
        ("FLOAT", "float32"),
        ("DataType.HALF", "float16"),
        ("BF16", "bfloat16"),
        ("INT64", "int64"),
        ("BOOL", "bool"),
        ("UINT8", "uint8"),
        ("INT8", "int8"),
    ],
)
def test_trt_dtype_names_map_to_contract_names(trt_name: str, ours: str) -> None:
    assert tensors.dtype_name(trt_name) == ours
    assert tensors.trt_dtype_member(ours) == trt_name.rsplit(".", 1)[-1]


def test_fp8_io_is_refused_with_the_tensor_named() -> None:
    with pytest.raises(EngineLoadError, match="tensor 'logits' is FP8 at the engine's boundary"):
        tensors.dtype_name("FP8", tensor="logits")
    with pytest.raises(EngineLoadError, match="unknown to this version"):
        tensors.dtype_name("COMPLEX64")


def test_bytes_per_tensor() -> None:
    assert tensors.nbytes("float32", (24, 1, 256, 1024)) == 24 * 256 * 1024 * 4
    assert tensors.nbytes("bfloat16", (3, 5)) == 30
    assert tensors.nbytes("int64", ()) == 8  # rank 0 holds one element
    assert tensors.nbytes("float16", (0, 7)) == 0
    with pytest.raises(ValueError, match="dynamic"):
        tensors.nbytes("float32", (-1, 4))


def test_device_layout_round_trips_every_dtype() -> None:
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16", "int32", "int64", "int8", "uint8", "bool"):
        host = rng.integers(0, 2, (3, 4)).astype(np.dtype(dtype if dtype != "bool" else "?"))
        raw = tensors.to_device_layout(host, dtype).reshape(-1).view(np.uint8)
        back = tensors.from_device_layout(raw, dtype, (3, 4))
        np.testing.assert_array_equal(back, host)
        assert back.dtype == host.dtype
    values = np.array([[1.0, -2.5, np.nan]], np.float32)
    bits = tensors.to_device_layout(values, "bfloat16")
    assert bits.dtype == np.uint16 and bits.nbytes == 6
    back = tensors.from_device_layout(bits.view(np.uint8), "bfloat16", (1, 3))
    assert back[0, 0] == 1.0 and back[0, 1] == -2.5 and np.isnan(back[0, 2])


def test_dims_of_marks_dynamic_dims() -> None:
    assert tensors.dims_of((-1, 128, -1)) == (None, 128, None)


# -- profiles -----------------------------------------------------------------------------------------
def encoder_contract(**profiles: dict) -> object:
    """The checklist's streaming encoder: profile A (T=592), B (T=584) and the unified C."""

    def shapes(t: tuple[int, int, int], b: tuple[int, int, int] = (1, 1, 1)) -> dict:
        return {
            "shapes": {
                "audio_signal": {
                    "min": [b[0], 128, t[0]],
                    "opt": [b[1], 128, t[1]],
                    "max": [b[2], 128, t[2]],
                },
                "length": {"min": [b[0]], "opt": [b[1]], "max": [b[2]]},
            }
        }

    raw = {
        "trtparity": "contract/1",
        "model": "encoder",
        "inputs": [
            {"name": "audio_signal", "dtype": "float32", "shape": ["B", 128, "T"]},
            {"name": "length", "dtype": "int64", "shape": ["B"]},
            {"name": "cache_last_time", "dtype": "float32", "shape": [24, 1, 1024, 4]},
        ],
        "outputs": [{"name": "encoder_output", "dtype": "float32", "shape": ["B", 1024, 1]}],
        "profiles": profiles
        or {
            "A": shapes((592, 592, 592)),
            "B": shapes((584, 584, 584)),
            "C": shapes((584, 592, 592), (1, 1, 8)),
        },
        "default_tolerance": {"chunk": {"fail": 1e-3}},
    }
    return contract_from_json(raw)


def test_profiles_are_planned_in_contract_order_with_fixed_inputs_filled() -> None:
    planned = plan_profiles(encoder_contract())  # type: ignore[arg-type]
    assert [p.name for p in planned] == ["A", "B", "C"]
    fixed = (24, 1, 1024, 4)
    assert planned[0].shapes["cache_last_time"] == (fixed, fixed, fixed)
    assert planned[2].shapes["audio_signal"] == ((1, 128, 584), (1, 128, 592), (8, 128, 592))
    assert planned[2].to_json()["length"] == {"min": [1], "opt": [1], "max": [8]}
    assert [p.name for p in plan_profiles(encoder_contract(), ["C", "A"])] == ["C", "A"]  # type: ignore[arg-type]


def test_unknown_profile_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"no profile named 'D' \(profiles: A, B, C\)"):
        plan_profiles(encoder_contract(), ["D"])  # type: ignore[arg-type]


def test_a_dynamic_input_without_shapes_is_an_error() -> None:
    contract = encoder_contract(
        X={"shapes": {"audio_signal": {"min": [1, 128, 5], "opt": [1, 128, 5], "max": [1, 128, 5]}}}
    )
    with pytest.raises(
        ConfigError,
        match=r"\$\.profiles\.X\.shapes: dynamic input 'length' \['B'\] has no min/opt/max",
    ):
        plan_profiles(contract)  # type: ignore[arg-type]


def test_a_named_dim_with_two_values_is_an_error() -> None:
    contract = encoder_contract(
        X={
            "shapes": {
                "audio_signal": {"min": [1, 128, 5], "opt": [2, 128, 5], "max": [2, 128, 5]},
                "length": {"min": [1], "opt": [1], "max": [2]},
            }
        }
    )
    with pytest.raises(
        ConfigError, match=r"dimension B is 2 in 'audio_signal' but 1 in 'length' at the opt shapes"
    ):
        plan_profiles(contract)  # type: ignore[arg-type]


def test_a_profile_that_is_exactly_right_wins_over_the_first_that_fits() -> None:
    planned = [p.shapes for p in plan_profiles(encoder_contract())]  # type: ignore[arg-type]
    order_c_first = [planned[2], planned[0], planned[1]]
    chunk = {"audio_signal": (1, 128, 584), "length": (1,), "cache_last_time": (24, 1, 1024, 4)}
    assert choose_profile(planned, chunk) == 1  # B: opt is exactly 584
    assert choose_profile(order_c_first, chunk) == 2
    batch = {"audio_signal": (4, 128, 590), "length": (4,), "cache_last_time": (24, 1, 1024, 4)}
    assert choose_profile(planned, batch) == 2  # only C admits it


def test_no_admitting_profile_lists_every_range() -> None:
    planned = [p.shapes for p in plan_profiles(encoder_contract(), ["A", "B"])]  # type: ignore[arg-type]
    chunk = {"audio_signal": (1, 128, 600), "length": (1,), "cache_last_time": (24, 1, 1024, 4)}
    with pytest.raises(BindingError) as err:
        choose_profile(planned, chunk, names=["A", "B"])
    assert "audio_signal [1, 128, 600]" in str(err.value)
    assert "A: audio_signal [1, 128, 592]..[1, 128, 592]" in str(err.value)
    assert "B: audio_signal [1, 128, 584]..[1, 128, 584]" in str(err.value)


def test_engine_profiles_are_matched_to_contract_names_by_shape() -> None:
    planned = plan_profiles(encoder_contract())  # type: ignore[arg-type]
    engine = [planned[1].shapes, planned[0].shapes]
    assert match_profile_names(planned, engine) == {"B": 0, "A": 1}


# -- compatibility ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("built", "installed", "vc", "ok"),
    [
        ("10.16.1.11", "10.16.1.11", False, True),
        ("10.16.1.11", "10.16.1.20", False, True),  # build number only
        ("10.16.0.72", "10.16.1.11", False, False),
        ("10.3.0.26", "11.4.0.106", False, False),
        ("11.0.0.114", "11.4.0.106", True, True),  # version compatible: forward within a major
        ("11.4.0.106", "11.0.0.114", True, False),  # never backwards
        ("10.16.1.11", "11.4.0.106", True, False),
    ],
)
def test_version_rules(built: str, installed: str, vc: bool, ok: bool) -> None:
    assert (compat.version_problem(built, installed, version_compatible=vc) is None) is ok


def test_device_rules() -> None:
    assert compat.device_problem("9.0", "9.0", hardware_compatibility="NONE") is None
    assert "built for GPU compute capability 8.6" in str(
        compat.device_problem("8.6", "9.0", hardware_compatibility="NONE")
    )
    assert compat.device_problem("8.6", "9.0", hardware_compatibility="AMPERE_PLUS") is None
    assert "Ampere and newer" in str(
        compat.device_problem("8.6", "7.5", hardware_compatibility="AMPERE_PLUS")
    )
    with pytest.raises(EngineLoadError, match=r"MAJOR\.MINOR"):
        compat.cc_tuple("sm90")


def test_meta_is_read_from_the_build_report(tmp_path: Path) -> None:
    engine = tmp_path / "e.plan"
    assert compat.read_meta(engine) is None
    compat.report_path(engine).write_text(
        json.dumps(
            {
                "tensorrt": {"version": "10.16.1.11"},
                "device": {"name": "H100", "compute_capability": "9.0"},
                "engine": {"sha256": "ab"},
                "options": {"version_compatible": True},
                "profiles": [{"name": "A"}],
            }
        )
    )
    meta = compat.read_meta(engine)
    assert (
        meta is not None
        and meta.version_compatible
        and meta.profile_names == ("A",)
        and meta.gpu == "H100"
    )
    compat.report_path(engine).write_text("{")
    with pytest.raises(EngineLoadError, match="build report is unreadable"):
        compat.read_meta(engine)
    compat.report_path(engine).write_text(json.dumps({"device": {}}))
    with pytest.raises(EngineLoadError, match="build report lacks"):
        compat.read_meta(engine)


def test_deserialize_failure_sentence() -> None:
    text = compat.deserialize_failure(
        Path("/e.plan"),
        "f" * 64,
        installed_version="11.4.0.106",
        meta=None,
        log=["ERROR: magic tag"],
        lean=True,
    )
    assert text.startswith(
        "/e.plan: TensorRT 11.4.0.106 could not deserialize this engine (sha256 ffffffffffffffff…"
    )
    assert "version-compatible" in text and text.endswith("TensorRT said: ERROR: magic tag")


# -- inspector JSON -------------------------------------------------------------------------------------
def test_inspector_json_of_10x_11x_and_names_only() -> None:
    v10 = {
        "Layers": [
            {
                "Name": "conv1",
                "LayerType": "CaskConvolution",
                "Outputs": [{"Name": "a", "Format/Datatype": "Row major linear FP32"}],
            },
            {
                "Name": "mm",
                "LayerType": "Gemm",
                "Outputs": [
                    {
                        "Name": "b",
                        "Format/Datatype": "Channel major FP16 format where channel % 8 == 0",
                    }
                ],
            },
        ],
        "Bindings": ["x", "y"],
    }
    parsed = report.parse_inspector(json.dumps(v10))
    assert (
        parsed.precisions == {"fp16": 1, "fp32": 1}
        and parsed.io_tensors == ("x", "y")
        and parsed.detailed
    )
    v11 = {
        "Layers": [
            {
                "Name": "l",
                "LayerType": "Reformat",
                "Outputs": [{"Format": "Row major linear", "Datatype": "BF16"}],
            }
        ],
        "I/O Tensors": ["x"],
    }
    assert report.parse_inspector(json.dumps(v11)).to_json()["layers"] == [
        {"name": "l", "type": "Reformat", "precision": "bf16"}
    ]
    names_only = report.parse_inspector(json.dumps({"Layers": ["a", "b"], "Bindings": []}))
    assert names_only.precisions == {"unknown": 2} and not names_only.detailed
    mixed = {"Layers": [{"Name": "q", "Outputs": [{"Datatype": "INT8"}, {"Datatype": "FP32"}]}]}
    assert report.parse_inspector(json.dumps(mixed)).layers[0].precision == "mixed:fp32+int8"
    with pytest.raises(ValueError, match="invalid JSON"):
        report.parse_inspector("not json")


def test_fake_contract_is_valid() -> None:
    assert fake_contract().input("x").value_range == (-1.0, 1.0)
