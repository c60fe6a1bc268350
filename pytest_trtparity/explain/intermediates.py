"""Intermediate tensors of an ONNX model on ONNX Runtime: every one exposed as a graph output.

ONNX Runtime returns only graph outputs, so each intermediate tensor we want is added to the
graph's outputs (`onnx.helper.make_tensor_value_info`, element type from shape inference). The
nodes of an ONNX graph are stored in topological order, which is the order localization walks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BackendError
from .names import module_path

#: Element types compared: float32, float16, double, bfloat16.
FLOAT_TYPES = frozenset({1, 10, 11, 16})


@dataclass(frozen=True)
class TensorNode:
    """A tensor and the node that produced it."""

    tensor: str
    node: str
    op_type: str
    module: str
    inputs: tuple[str, ...]
    elem_type: int


def tensor_nodes(model: Any) -> list[TensorNode]:
    """Every node output of the main graph, in topological order, with its element type."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # shape inference is best effort: types fall back to "unknown"
        inferred = model
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    }
    out = []
    for node in model.graph.node:
        for name in node.output:
            if name:
                out.append(
                    TensorNode(
                        tensor=name,
                        node=node.name,
                        op_type=node.op_type,
                        module=module_path(node),
                        inputs=tuple(i for i in node.input if i),
                        elem_type=types.get(name, 0),
                    )
                )
    return out


def comparable(nodes: Iterable[TensorNode]) -> list[TensorNode]:
    """The computed floating-point tensors: shapes and indices have no error to localize, and a
    Constant node's output is a weight, not a result."""
    return [n for n in nodes if n.elem_type in FLOAT_TYPES and n.op_type != "Constant"]


def expose(model: Any, names: Sequence[str]) -> Any:
    """A copy of `model` whose graph outputs also include `names` (existing outputs kept first)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in names:
        if name not in have:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))  # type left to the runtime
            have.add(name)
    return copy


def run_with_outputs(
    model: Any,
    feeds: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    optimize: bool = True,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Run `model` once on the ONNX Runtime CPU provider and return the tensors `names`.

    `optimize=False` is the reference: every node computed as written, no fusions.
    """
    import onnxruntime as ort

    exposed = expose(model, names)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            exposed.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        wanted = {i.name for i in session.get_inputs()}
        values = session.run(list(names), {k: v for k, v in feeds.items() if k in wanted})
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendError(
            f"{model.graph.name or 'model'}: onnxruntime run failed: {first}"
        ) from None
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
