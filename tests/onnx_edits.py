"""Faulty engines made by editing an ONNX graph: small, exact, and built at test time.

Each helper loads a model, changes one thing, checks the result with the ONNX checker and saves it.
The faults are the ones a gate must catch: an output off by a small factor or offset (a state that
drifts only in closed loop), or an input the engine silently ignores.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def _rename_producer(graph: onnx.GraphProto, name: str, new: str) -> None:
    """Point whatever produced `name` (a node output, or an input passed straight through) at `new`."""
    found = False
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == name:
                node.output[i] = new
                found = True
    if not found:
        raise ValueError(f"no node produces {name!r}")


def _unique(graph: onnx.GraphProto, stem: str) -> str:
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}
    name, k = stem, 0
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    return name


def _save(model: onnx.ModelProto, dst: Path) -> Path:
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def edit_output(src: Path, dst: Path, output: str, op: str, value: float) -> Path:
    """`output` becomes `op(output, value)` (op: Mul or Add), right before it leaves the graph."""
    if op not in ("Mul", "Add"):
        raise ValueError(f"op must be Mul or Add, got {op!r}")
    model = onnx.load(str(src))
    graph = model.graph
    if output not in {o.name for o in graph.output}:
        raise ValueError(f"{src}: no graph output {output!r}")
    elem = next(o.type.tensor_type.elem_type for o in graph.output if o.name == output)
    raw = _unique(graph, f"{output}_before_edit")
    const = _unique(graph, f"{output}_edit_{op.lower()}")
    _rename_producer(graph, output, raw)
    graph.initializer.append(helper.make_tensor(const, elem or TensorProto.FLOAT, [], [value]))
    graph.node.append(
        helper.make_node(op, [raw, const], [output], name=_unique(graph, f"edit_{op}"))
    )
    return _save(model, dst)


def scale_output(src: Path, dst: Path, output: str, factor: float) -> Path:
    """Every value of `output` multiplied by `factor` (e.g. 1 + 3e-6): a relative error per chunk."""
    return edit_output(src, dst, output, "Mul", factor)


def offset_output(src: Path, dst: Path, output: str, delta: float) -> Path:
    """Every value of `output` shifted by `delta`: an absolute error per chunk."""
    return edit_output(src, dst, output, "Add", delta)


def ignore_input(src: Path, dst: Path, input_name: str) -> Path:
    """The engine keeps `input_name` as an input but computes with zeros instead (ignores its state).

    Every use inside the graph, subgraphs of If and Loop nodes included, reads `input * 0`.
    """
    model = onnx.load(str(src))
    graph = model.graph
    if input_name not in {i.name for i in graph.input}:
        raise ValueError(f"{src}: no graph input {input_name!r}")
    elem = next(i.type.tensor_type.elem_type for i in graph.input if i.name == input_name)
    zeroed = _unique(graph, f"{input_name}_ignored")
    zero = _unique(graph, f"{input_name}_zero")
    _replace_uses(graph, input_name, zeroed)
    graph.initializer.append(helper.make_tensor(zero, elem or TensorProto.FLOAT, [], [0.0]))
    graph.node.insert(
        0, helper.make_node("Mul", [input_name, zero], [zeroed], name=_unique(graph, "ignore"))
    )
    return _save(model, dst)


def _replace_uses(graph: onnx.GraphProto, name: str, new: str) -> None:
    for node in graph.node:
        for i, inp in enumerate(node.input):
            if inp == name:
                node.input[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _replace_uses(attr.g, name, new)
            for sub in attr.graphs:
                _replace_uses(sub, name, new)
