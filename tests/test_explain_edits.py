"""Engines with one known fault, made by editing an ONNX graph at test time, for the explain tests.

`perturb` scales or offsets one intermediate tensor wherever it lives, inside nested `If` branches
included, and keeps its name: the producer writes `<name>_raw`, a Mul/Add writes `<name>`, so every
consumer sees the perturbed value under the original name. `conv_in_fp16` makes one Conv compute in
float16 (inputs and weights cast down, result cast back up under the original name).
(The gate's own ONNX edit helpers in tests/onnx_edits.py only edit graph outputs and inputs.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def silero(name: str = "silero_vad.onnx") -> Path:
    silero_vad = pytest.importorskip("silero_vad")
    return Path(os.path.dirname(silero_vad.__file__)) / "data" / name


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _producer(model: onnx.ModelProto, tensor: str) -> tuple[onnx.GraphProto, int]:
    for graph in _graphs(model.graph):
        for i, node in enumerate(graph.node):
            if tensor in node.output:
                return graph, i
    raise ValueError(f"no node produces {tensor!r}")


def perturb(model: onnx.ModelProto, tensor: str, op: str, value: float) -> onnx.ModelProto:
    """A copy of `model` where `tensor` becomes `op(tensor, value)` (op: Mul or Add), same name."""
    if op not in ("Mul", "Add"):
        raise ValueError(f"op must be Mul or Add, got {op!r}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph, index = _producer(copy, tensor)
    node = graph.node[index]
    raw, const = f"{tensor}_raw", f"{tensor}_perturb"
    node.output[list(node.output).index(tensor)] = raw
    graph.node.insert(
        index + 1,
        helper.make_node(
            "Constant", [], [const], value=helper.make_tensor(const, TensorProto.FLOAT, [], [value])
        ),
    )
    graph.node.insert(index + 2, helper.make_node(op, [raw, const], [tensor], name=f"perturb_{op}"))
    onnx.checker.check_model(copy)
    return copy


def conv_in_fp16(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """A copy where the Conv producing `tensor` reads and writes float16; `tensor` stays float32."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph, index = _producer(copy, tensor)
    node = graph.node[index]
    assert node.op_type == "Conv", node.op_type
    casts = []
    for i, name in enumerate(node.input):
        casts.append(
            helper.make_node("Cast", [name], [f"{name}_fp16"], name=f"{name}_to_fp16", to=10)
        )
        node.input[i] = f"{name}_fp16"
    node.output[0] = f"{tensor}_fp16"
    back = helper.make_node("Cast", [f"{tensor}_fp16"], [tensor], name=f"{tensor}_to_fp32", to=1)
    for k, cast in enumerate(casts):
        graph.node.insert(index + k, cast)
    graph.node.insert(index + len(casts) + 1, back)
    onnx.checker.check_model(copy)
    return copy


def run_model(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]
) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(names, feeds)]


def _silero_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input": (rng.standard_normal((1, 576)) * 0.1).astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, np.int64),
    }


# The helpers themselves: an edit that silently did nothing would make every explain test vacuous.

NESTED = "If_0_then_branch__Inline_0__/decoder/rnn/LSTM_output_1"  # inside If_0 > decoder/If_1


def test_perturb_inside_nested_if_changes_the_output_and_keeps_the_name() -> None:
    src = onnx.load(str(silero()))
    bad = perturb(src, NESTED, "Mul", 1.5)
    graph, index = _producer(bad, NESTED)
    assert graph is not bad.graph and graph.node[index].op_type == "Mul"
    feeds = _silero_feeds()
    (clean,) = run_model(src, feeds, ["stateN"])
    (moved,) = run_model(bad, feeds, ["stateN"])
    assert np.abs(clean - moved).max() > 1e-3


def test_perturb_rejects_unknown_ops_and_tensors() -> None:
    src = onnx.load(str(silero()))
    with pytest.raises(ValueError, match="Mul or Add"):
        perturb(src, NESTED, "Sub", 1.0)
    with pytest.raises(ValueError, match="no node produces"):
        perturb(src, "no_such_tensor", "Mul", 1.0)


def test_conv_in_fp16_rounds_but_keeps_float32_outside() -> None:
    src = onnx.load(str(silero()))
    name = "If_0_then_branch__Inline_0__/encoder/1/reparam_conv/Conv_output_0"
    half = conv_in_fp16(src, name)
    feeds = _silero_feeds()
    (clean,) = run_model(src, feeds, ["stateN"])
    (rounded,) = run_model(half, feeds, ["stateN"])
    assert rounded.dtype == np.float32
    assert np.abs(clean - rounded).max() > 0


def test_numpy_helper_is_the_one_used() -> None:
    """numpy_helper round-trips the perturbation constant exactly (the tests compare errors to it)."""
    t = helper.make_tensor("c", TensorProto.FLOAT, [], [1.5])
    assert float(numpy_helper.to_array(t)) == 1.5
