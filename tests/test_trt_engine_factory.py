"""On-demand building: --trt-engine model.onnx --trt-backend tensorrt."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_trtparity.backends.factory import open_engine
from pytest_trtparity.checks.profiles import onnx_source
from pytest_trtparity.errors import ConfigError, MissingDependencyError
from pytest_trtparity.settings import resolve_settings

from .conftest import SILERO_CONTRACT


def settings(tmp_path: Path, **cli: str):  # type: ignore[no-untyped-def]
    return resolve_settings(
        {f"trt_{k}": v for k, v in cli.items()}, {}, cli_base=tmp_path, ini_base=tmp_path
    )


def test_onnx_with_tensorrt_backend_builds_and_needs_the_builder(
    tmp_path: Path, silero_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("tensorrt", "tensorrt_bindings"):
        monkeypatch.setitem(sys.modules, name, None)
    s = settings(
        tmp_path,
        engine=str(silero_onnx),
        backend="tensorrt",
        contract=str(SILERO_CONTRACT),
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(
        MissingDependencyError, match="building engines needs the full TensorRT library"
    ):
        open_engine(s)
    assert onnx_source(s) == silero_onnx  # the profile sweep compares against the same ONNX


def test_building_needs_the_contract(tmp_path: Path, silero_onnx: Path) -> None:
    s = settings(tmp_path, engine=str(silero_onnx), backend="tensorrt")
    with pytest.raises(
        ConfigError, match="building a TensorRT engine needs the contract's optimization profiles"
    ):
        open_engine(s)


def test_new_options_parse(tmp_path: Path) -> None:
    s = settings(tmp_path, onnx="m.onnx", precision="fp16", cuda_graphs="true", cache_dir="c")
    assert (
        s.onnx == tmp_path / "m.onnx"
        and s.precision == "fp16"
        and s.cuda_graphs
        and s.cache_dir == tmp_path / "c"
    )
    assert settings(tmp_path).precision == "fp32" and settings(tmp_path).onnx is None
