"""Any ONNX model gates with `trtparity contract init` plus a v1 reference and no code.

The model under test passes every listed dtype through (rank 0 included), so the whole path is
exercised: contract written from the model, reference written by the writer API, gate run by pytest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.cli import main as cli
from pytest_trtparity.contract import dtypes
from pytest_trtparity.reference import ReferenceWriter

from .conftest import assert_gate_passed

onnx = pytest.importorskip(
    "onnx", reason="the onnx package builds the test model (pip install onnx)"
)

ONNX_TYPES = {
    "float64": 11,
    "float32": 1,
    "float16": 10,
    "bfloat16": 16,
    "int64": 7,
    "int32": 6,
    "int16": 5,
    "int8": 3,
    "uint8": 2,
    "bool": 9,
}
SHAPES = {"float32": [], "int64": [], "bool": ["m"]}  # rank 0 for two of them


def build_model(path: Path) -> None:
    from onnx import helper

    inputs, outputs, nodes = [], [], []
    for name, code in ONNX_TYPES.items():
        shape = SHAPES.get(name, ["n", 3])
        inputs.append(helper.make_tensor_value_info(f"x_{name}", code, shape))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", code, shape))
        nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]))
    model = helper.make_model(
        helper.make_graph(nodes, "all_dtypes", inputs, outputs),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.save(model, str(path))


def sample(name: str, rng: np.random.Generator, rank0: bool) -> np.ndarray:
    shape: tuple[int, ...] = () if rank0 else (2, 3)
    if name == "bool":
        return rng.integers(0, 2, (4,)).astype(bool)
    if name in dtypes.INT_DTYPES:
        info = np.iinfo(dtypes.host_dtype(name))
        return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtypes.host_dtype(name))
    values = rng.normal(0, 3, shape)
    if name == "bfloat16":
        return dtypes.bfloat16_bits_to_float32(
            dtypes.float32_to_bfloat16_bits(values.astype(np.float32))
        )
    return values.astype(dtypes.host_dtype(name))


@pytest.fixture
def any_model(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = tmp_path / "all_dtypes.onnx"
    build_model(model)
    contract = tmp_path / "all_dtypes.contract.json"
    assert cli(["contract", "init", "--onnx", str(model), "-o", str(contract)]) == 0
    ref = tmp_path / "all_dtypes.jsonl"
    rng = np.random.default_rng(0)
    with ReferenceWriter(ref, dtypes={"x_bfloat16": "bfloat16", "y_bfloat16": "bfloat16"}) as w:
        for _ in range(4):
            xs = {f"x_{n}": sample(n, rng, rank0=SHAPES.get(n) == []) for n in ONNX_TYPES}
            w.write(inputs=xs, outputs={f"y_{n[2:]}": v for n, v in xs.items()})
    return model, contract, ref


def test_starter_contract_declares_every_dtype_and_rank0(
    any_model: tuple[Path, Path, Path],
) -> None:
    _, contract, _ = any_model
    raw = json.loads(contract.read_text())
    assert {t["dtype"] for t in raw["inputs"]} == set(ONNX_TYPES)
    assert next(t for t in raw["inputs"] if t["name"] == "x_float32")["shape"] == []
    assert raw["tolerances"]["y_int8"] == {
        "metric": "max_abs",
        "chunk": {"fail": 0},
        "note": "integer and bool outputs must match exactly",
    }


def test_any_model_passes_the_gate(
    pytester: pytest.Pytester, gate_dir: Path, any_model: tuple[Path, Path, Path]
) -> None:
    model, contract, ref = any_model
    result = pytester.runpytest_subprocess(
        f"--trt-engine={model}",
        f"--trt-contract={contract}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={pytester.path / 'out'}",
        "-p",
        "no:cacheprovider",
    )
    assert_gate_passed(result)
    summary = json.loads((pytester.path / "out" / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    assert set(summary["suites"]["functional"]["outputs"]) == {f"y_{n}" for n in ONNX_TYPES}


def test_any_model_fails_when_one_int8_element_differs(
    pytester: pytest.Pytester, gate_dir: Path, any_model: tuple[Path, Path, Path]
) -> None:
    model, contract, ref = any_model
    bad = ref.with_name("bad.jsonl")
    from pytest_trtparity.reference import read_records

    records = list(read_records(ref))
    with ReferenceWriter(bad, dtypes={"x_bfloat16": "bfloat16", "y_bfloat16": "bfloat16"}) as w:
        for i, r in enumerate(records):
            outs = dict(r.outputs)
            if i == 2:
                y = outs["y_int8"].copy()
                y[0, 0] = np.int8(-128) if y[0, 0] == 0 else np.int8(0)
                outs["y_int8"] = y
            w.write(inputs=r.inputs, outputs=outs)
    result = pytester.runpytest_subprocess(
        f"--trt-engine={model}",
        f"--trt-contract={contract}",
        f"--trt-ref={bad}",
        f"--trt-artifacts={pytester.path / 'out'}",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*output 'y_int8': max_abs * on chunk default#2 is above the fail tier 0*"]
    )
