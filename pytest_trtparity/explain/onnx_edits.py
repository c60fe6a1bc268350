"""ONNX edits the probes make: a node computed in fp32, weights taken from the source model.

TensorRT 11 is strongly typed (no precision flags), so "keep this layer in fp32" means casting the
node's inputs up and its outputs back down in the ONNX it is built from; ONNX Runtime runs the same
edited graph. Each edit returns a new model and leaves the given one untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: ONNX element types float16 and bfloat16.
LOW_PRECISION = frozenset({10, 16})
FLOAT = 1


def low_precision_nodes(model: Any, names: Iterable[str]) -> list[str]:
    """Those of node `names` that read or write a float16/bfloat16 tensor."""
    types = _types(model)
    wanted = set(names)
    hits = []
    for node in model.graph.node:
        if node.name in wanted and any(
            types.get(t) in LOW_PRECISION for t in (*node.input, *node.output)
        ):
            hits.append(node.name)
    return hits


def _types(model: Any) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    }
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


def low_precision_region(model: Any, node_name: str) -> list[str]:
    """`node_name` and every node feeding it through float16/bfloat16 tensors: the part of the
    graph whose rounding reaches that node. Empty when the node touches no such tensor."""
    types = _types(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    start = by_name.get(node_name)
    if start is None or not low_precision_nodes(model, [node_name]):
        return []
    region: dict[str, None] = {}
    stack = [start]
    while stack:
        node = stack.pop()
        if node.name in region:
            continue
        region[node.name] = None
        for name in node.input:
            if types.get(name) in LOW_PRECISION and name in producer:
                stack.append(producer[name])
    return [n.name for n in model.graph.node if n.name in region]


def compute_in_fp32(model: Any, node_names: Iterable[str]) -> Any:
    """A copy of `model` where the named nodes compute in fp32.

    Inside the region every float16/bfloat16 tensor gets an fp32 twin: low-precision inputs from
    outside (weights included) are cast up, a Cast down to fp16 becomes a Cast to fp32, and each
    low-precision tensor the region produces is cast back under its own name for the rest of the
    graph, which is unchanged.
    """
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    types = _types(copy)
    region = set(node_names)
    produced = {o for n in copy.graph.node if n.name in region for o in n.output}
    nodes = list(copy.graph.node)
    del copy.graph.node[:]
    casted: set[str] = set()
    for node in nodes:
        if node.name not in region:
            copy.graph.node.append(node)
            continue
        for i, name in enumerate(node.input):
            if types.get(name) not in LOW_PRECISION:
                continue
            twin = f"{name}__fp32"
            if name not in produced and name not in casted:
                copy.graph.node.append(
                    helper.make_node("Cast", [name], [twin], name=f"{twin}_up", to=FLOAT)
                )
                casted.add(name)
            node.input[i] = twin
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i in LOW_PRECISION:
                    attr.i = FLOAT
        downs = []
        for i, name in enumerate(node.output):
            elem = types.get(name)
            if elem in LOW_PRECISION:
                node.output[i] = f"{name}__fp32"
                downs.append(
                    helper.make_node(
                        "Cast", [f"{name}__fp32"], [name], name=f"{name}__fp32_down", to=elem
                    )
                )
        copy.graph.node.append(node)
        copy.graph.node.extend(downs)
    return copy


def constants(model: Any) -> dict[str, Any]:
    """Every constant float tensor of the main graph (initializers and Constant nodes), as numpy."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return {k: v for k, v in out.items() if v.dtype.kind == "f"}


def replace_weights(model: Any, weights: dict[str, Any]) -> Any:
    """A copy of `model` with the constants named in `weights` (name -> numpy array) replaced."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    for node in copy.graph.node:
        if node.op_type == "Constant" and node.output[0] in weights:
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(weights[node.output[0]], attr.t.name))
    return copy
