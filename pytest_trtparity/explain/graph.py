"""Graph preparation: the ONNX a chunk actually runs, with its `If` branches inlined.

Exporters put whole models inside `If` branches (Silero VAD: one branch per sample rate, and the
LSTM's optional-state logic nested below that). ONNX Runtime can only expose tensors of the main
graph, so a localizer that stops at the `If` sees nothing. Here each `If` whose condition the
chunk's recorded inputs decide is replaced by the branch they select:

1. every main-graph `If` condition is evaluated on ONNX Runtime with the chunk's feeds;
2. the condition becomes a constant, and onnxscript's constant folder (a maintained optimizer whose
   `If` rule inlines the selected branch, keeping the branch's tensor names) does the inlining;
3. repeat until no `If` is left in the main graph (nested ones surface one level per round).

The prepared graph is valid for inputs that select the same branches, which the replayed chunk does
by construction. `Loop` and `Scan` stay opaque and are named in `notes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BackendError, MissingDependencyError

#: Nested `If`s surface one level per round; more rounds than this means a cycle or a huge model.
MAX_ROUNDS = 32


@dataclass(frozen=True)
class Prepared:
    """A prepared model and what preparation did to it."""

    model: Any  # onnx.ModelProto
    selected: tuple[tuple[str, str], ...]  # (If node name, "then_branch" | "else_branch")
    opaque: tuple[str, ...]  # control-flow nodes left in place (Loop, Scan)

    @property
    def notes(self) -> tuple[str, ...]:
        out = []
        if self.selected:
            out.append(f"{len(self.selected)} If node(s) inlined on the branch this chunk selects")
        if self.opaque:
            out.append(
                f"tensors inside {', '.join(self.opaque)} are not compared (Loop/Scan stay opaque)"
            )
        return tuple(out)


def import_tools() -> tuple[Any, Any, Any]:
    try:
        import onnx
        import onnx_ir as ir
        from onnxscript import optimizer
    except ImportError as exc:
        raise MissingDependencyError(
            f"explaining a failure needs onnx and onnxscript: pip install 'pytest-trtparity[explain]' ({exc})"
        ) from None
    return onnx, ir, optimizer


def prepare_graph(model: Any, feeds: Mapping[str, np.ndarray]) -> Prepared:
    """`model` (an onnx.ModelProto, not modified) with every `If` the feeds decide inlined."""
    onnx, _, _ = import_tools()
    current = onnx.ModelProto()
    current.CopyFrom(model)
    selected: list[tuple[str, str]] = []
    for _ in range(MAX_ROUNDS):
        current = _fold(current)
        _restore_node_names(current, [name for name, _ in selected])
        ifs = [n for n in current.graph.node if n.op_type == "If"]
        if not ifs:
            break
        conditions = _evaluate(current, [n.input[0] for n in ifs], feeds)
        for node in ifs:
            value = bool(np.asarray(conditions[node.input[0]]).reshape(-1)[0])
            _pin_condition(current, node, value)
            _adopt_branch_names(current, node, "then_branch" if value else "else_branch")
            selected.append((node.name, "then_branch" if value else "else_branch"))
    else:
        raise BackendError(
            f"graph preparation: If nodes still left after {MAX_ROUNDS} rounds of inlining"
        )
    opaque = tuple(n.name or n.op_type for n in current.graph.node if n.op_type in ("Loop", "Scan"))
    return Prepared(model=current, selected=tuple(selected), opaque=opaque)


def _fold(model: Any) -> Any:
    """One pass of onnxscript's constant folder (which inlines constant-condition Ifs), then dead
    nodes out. Only folding: no fusions or rewrites, so every remaining tensor is one the source
    computes."""
    _, ir, optimizer = import_tools()
    import onnx_ir.passes.common as common

    ir_model = ir.serde.deserialize_model(model)
    for _ in range(4):
        folded = optimizer.fold_constants(ir_model, should_fold=_keep_casts)
        common.RemoveUnusedNodesPass()(ir_model)
        if not folded.modified:
            break
    return ir.serde.serialize_model(ir_model)


def _restore_node_names(model: Any, inlined: list[str]) -> None:
    """The folder names an inlined node `<If name>_<node name>`; give it back its own name (the
    exporter's scope, e.g. `/decoder/rnn/LSTM`, is where the module path comes from)."""
    prefixes = sorted((f"{name}_" for name in inlined if name), key=len, reverse=True)
    taken = {n.name for n in model.graph.node}
    for node in model.graph.node:
        for prefix in prefixes:
            bare = node.name[len(prefix) :]
            if node.name.startswith(prefix) and bare and bare not in taken:
                taken.add(bare)
                node.name = bare
                break


def _keep_casts(node: Any) -> bool | None:
    """Casts stay: a weight cast to fp16 is numerics the engine performs, and the fp32 probe needs
    the cast to undo it. Everything else follows the folder's own rules."""
    return False if node.op_type == "Cast" else None


def _evaluate(model: Any, names: list[str], feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The values of main-graph tensors `names` for this chunk, on ONNX Runtime."""
    from .intermediates import run_with_outputs

    return run_with_outputs(model, feeds, names, optimize=False)


def _pin_condition(model: Any, node: Any, value: bool) -> None:
    import_tools()
    from onnx import numpy_helper

    taken = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node for o in n.output
    }
    name, k = f"{node.input[0]}__selected", 0
    while name in taken:
        k += 1
        name = f"{node.input[0]}__selected_{k}"
    model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.bool_), name))
    node.input[0] = name


def _adopt_branch_names(model: Any, node: Any, branch: str) -> None:
    """Rename the If's outputs to the names the selected branch gives them, so the inlined tensors
    keep the names the branch computed them under (a perturbed or reported tensor stays findable).
    Graph outputs keep their names."""
    graph_outputs = {o.name for o in model.graph.output}
    sub = next(a.g for a in node.attribute if a.name == branch)
    made_inside = {o for n in sub.node for o in n.output}
    taken = {o for n in model.graph.node for o in n.output}
    for i, (actual, formal) in enumerate(
        zip(node.output, [o.name for o in sub.output], strict=True)
    ):
        if actual and actual not in graph_outputs and formal in made_inside and formal not in taken:
            _rename_uses(model.graph, actual, formal)
            node.output[i] = formal


def _rename_uses(graph: Any, old: str, new: str) -> None:
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
        for attr in n.attribute:
            if attr.HasField("g"):
                _rename_uses(attr.g, old, new)
            for g in attr.graphs:
                _rename_uses(g, old, new)
