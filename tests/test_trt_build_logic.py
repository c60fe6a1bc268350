"""Build decisions made without TensorRT: precision per version, sizes, caches, ONNX sidecars."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import ConfigError
from pytest_trtparity.trt import onnx_files
from pytest_trtparity.trt.build import BuildOptions, calibration_batches, parse_size, precision_plan
from pytest_trtparity.trt.cache import EngineCache, cache_key, default_cache_dir, timing_cache_name
from pytest_trtparity.trt.compat import report_path
from pytest_trtparity.trt.profiles import plan_profiles

from .conftest import SILERO_CONTRACT, SILERO_REF

onnx = pytest.importorskip("onnx", reason="the onnx package is needed to write test models")


def has(*flags: str):  # type: ignore[no-untyped-def]
    return lambda name: name in flags


@pytest.mark.parametrize(
    ("text", "value"),
    [("4GiB", 4 << 30), ("512MiB", 512 << 20), ("1.5G", 1_500_000_000), ("1000", 1000)],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["4 parsecs", "", "-1GiB", "0"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match="--workspace"):
        parse_size(text)


def test_precision_on_10x_uses_builder_flags() -> None:
    assert precision_plan("fp32", "10.16.1.11", has("FP16")).flags == ()
    plan = precision_plan("fp16", "10.16.1.11", has("FP16"))
    assert plan.flags == ("FP16",) and not plan.strongly_typed and not plan.calibrate
    assert precision_plan("int8", "10.16.1.11", has("INT8")).calibrate
    assert precision_plan("graph", "10.16.1.11", has()).strongly_typed
    with pytest.raises(ConfigError, match=r"TensorRT 10\.0\.1 has no BuilderFlag\.BF16"):
        precision_plan("bf16", "10.0.1", has("FP16"))


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_precision_flags_on_11x_are_an_error_never_a_silent_fp32_build(precision: str) -> None:
    with pytest.raises(ConfigError) as err:
        precision_plan(precision, "11.4.0.106", has("FP16", "BF16", "INT8"))
    text = str(err.value)
    assert f"--precision {precision}: TensorRT 11.4.0.106 has no BuilderFlag." in text
    assert "--precision graph" in text


def test_fp32_on_11x_is_strongly_typed() -> None:
    plan = precision_plan("fp32", "11.4.0.106", has())
    assert plan.strongly_typed and plan.flags == () and plan.source == "onnx graph (strongly typed)"


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="--precision 'fp64'"):
        BuildOptions(precision="fp64")
    with pytest.raises(ConfigError, match="hardware compatibility 'ANY'"):
        BuildOptions(hardware_compatibility="ANY")


KEY = {
    "model_digest": "m",
    "profiles": [{"name": "A"}],
    "options": {"precision": "fp32"},
    "trt_version": "10.16.1.11",
    "compute_capability": "9.0",
}


def test_cache_key_changes_with_everything_that_shapes_the_plan() -> None:
    base = cache_key(**KEY)  # type: ignore[arg-type]
    assert base == cache_key(**KEY)  # type: ignore[arg-type]
    for field, other in [
        ("model_digest", "n"),
        ("profiles", [{"name": "B"}]),
        ("options", {"precision": "fp16"}),
        ("trt_version", "10.16.1.12"),
        ("compute_capability", "8.9"),
    ]:
        assert cache_key(**{**KEY, field: other}) != base, field  # type: ignore[arg-type]


def test_engine_cache_store_lookup_copy(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "c")
    key = cache_key(**KEY)  # type: ignore[arg-type]
    assert cache.lookup(key) is None
    stored = cache.store(key, b"PLAN", {"engine": {"sha256": "x"}})
    assert cache.lookup(key) == stored and stored.read_bytes() == b"PLAN"
    report_path(stored).unlink()
    assert cache.lookup(key) is None  # a plan without its report is not trusted
    cache.store(key, b"PLAN", {"engine": {"sha256": "x"}})
    out = cache.copy_to(stored, tmp_path / "out" / "e.plan")
    assert out.read_bytes() == b"PLAN" and json.loads(report_path(out).read_text()) == {
        "engine": {"sha256": "x"}
    }
    assert (
        cache.timing_cache("10.16.1.11", "9.0").name
        == timing_cache_name("10.16.1.11", "9.0")
        == "timing-trt10.16.1.11-sm90.cache"
    )


def test_default_cache_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRTPARITY_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("TRTPARITY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "trtparity"


def external_model(folder: Path, *, location: str = "weights.bin") -> Path:
    """A tiny ONNX model (y = x + w) whose initializer lives in an external-data sidecar."""
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.arange(1024, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])],
        [w],
    )
    model = helper.make_model(graph)
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def test_sidecars_are_found_and_staged_so_they_resolve(tmp_path: Path) -> None:
    model = external_model(tmp_path / "src")
    assert onnx_files.external_data(model) == {"weights.bin": ["w"]}
    files = onnx_files.sidecars(model)
    assert not onnx_files.needs_staging(model, files)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "model.onnx").symlink_to(model)
    os.link(tmp_path / "src" / "weights.bin", tmp_path / "linked" / "weights.bin")
    assert onnx_files.needs_staging(
        tmp_path / "linked" / "model.onnx", onnx_files.sidecars(tmp_path / "linked" / "model.onnx")
    )
    staged = onnx_files.stage(model, tmp_path / "stage")
    assert staged.parent == tmp_path / "stage" and (tmp_path / "stage" / "weights.bin").is_file()
    loaded = onnx.load(str(staged))  # external data resolves from the staged folder
    assert onnx.numpy_helper.to_array(loaded.graph.initializer[0])[5] == 5.0


def test_missing_sidecar_names_the_tensor_and_file(tmp_path: Path) -> None:
    model = external_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(
        ConfigError, match=r"tensor 'w' is stored in 'weights.bin', which is missing"
    ):
        onnx_files.sidecars(model)


def test_model_digest_covers_the_sidecar(tmp_path: Path) -> None:
    model = external_model(tmp_path)
    before = onnx_files.model_digest(model)
    with open(tmp_path / "weights.bin", "r+b") as fh:
        fh.write(b"\x01")
    assert onnx_files.model_digest(model) != before


def test_sidecar_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    model = external_model(tmp_path / "m", location="w.bin")
    m = onnx.load(str(model), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../escape.bin"
    onnx.save_model(m, str(model))
    with pytest.raises(ConfigError, match="must stay inside the model's folder"):
        onnx_files.sidecars(model)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(ConfigError, match="not a readable ONNX model"):
        onnx_files.external_data(bad)


def test_int8_calibration_batches_come_from_the_reference() -> None:
    contract = load_contract(SILERO_CONTRACT)
    stream = plan_profiles(contract, ["stream"])[0]
    batches = list(calibration_batches(contract, SILERO_REF, stream, limit=5))
    assert len(batches) == 5
    assert set(batches[0]) == {"input", "state", "sr"} and batches[0]["input"].shape == (1, 576)
