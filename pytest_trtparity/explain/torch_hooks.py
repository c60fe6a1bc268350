"""PyTorch engines: module outputs captured by module path, matched to the source ONNX's tensors.

Python modules (`nn.Module`, a torch.export program's unflattened module) are observed with forward
hooks. TorchScript runs submodule calls inside its own interpreter, where Python hooks never fire
(`register_forward_hook is not supported on ScriptModules`), so a scripted method is run from a copy
of its graph that also returns the inputs and outputs of every submodule call (`prim::CallMethod`);
each called method is then run the same way on the inputs it received, down the module tree. The
values are those the model computes on its own device and settings (TF32 included).

A module's outputs are matched to the ONNX tensors of nodes the exporter named after that module or
its submodules (`/decoder/rnn/LSTM` for `decoder.rnn`): the tensor of the same size whose reference
value is nearest, the earliest of equal ones (an LSTM's state before the Squeeze that follows it).
Deeper modules are matched last, so the most specific module names a tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .intermediates import TensorNode

#: How deep method calls are followed in a TorchScript module.
MAX_DEPTH = 32
#: Values this close (relative to the nearest match's scale) count as the same tensor.
_TIE = 1e-6


def module_tensors(nodes: Sequence[TensorNode]) -> dict[str, str]:
    """Module path -> the reference tensor of the last node the exporter named after it."""
    return {node.module: node.tensor for node in nodes if node.module}


def flatten(value: Any) -> list[np.ndarray]:
    """The tensors in a module's output (tuples and lists flattened, in order) as float arrays."""
    if isinstance(value, tuple | list):
        return [a for v in value for a in flatten(v)]
    if hasattr(value, "detach") and getattr(value, "is_floating_point", lambda: False)():
        return [np.asarray(value.detach().float().cpu().numpy())]
    return []


def capture_modules(target: Any, args: Sequence[Any]) -> tuple[Any, dict[str, list[np.ndarray]]]:
    """Run `target(*args)` once; return its result and each submodule's outputs by module path."""
    if _is_script(target):
        return capture_script(target, args)
    return capture_hooks(target, args)


def _is_script(target: Any) -> bool:
    return hasattr(target, "graph") and (hasattr(target, "_c") or hasattr(target, "owner"))


def capture_hooks(module: Any, args: Sequence[Any]) -> tuple[Any, dict[str, list[np.ndarray]]]:
    """Forward hooks on every submodule of a Python `nn.Module`, removed after the call."""
    captured: dict[str, list[np.ndarray]] = {}
    handles = [
        sub.register_forward_hook(_hook(captured, path))
        for path, sub in module.named_modules()
        if path
    ]
    try:
        result = module(*args)
    finally:
        for handle in handles:
            handle.remove()
    return result, captured


def _hook(store: dict[str, list[np.ndarray]], path: str) -> Any:
    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        store[path] = flatten(output)

    return hook


def capture_script(target: Any, args: Sequence[Any]) -> tuple[Any, dict[str, list[np.ndarray]]]:
    """A TorchScript module (its forward) or method, run through graphs that expose submodule calls."""
    owner, method = (target, "forward") if hasattr(target, "_c") else (target.owner, target.name)
    captured: dict[str, list[np.ndarray]] = {}
    result = _run_script(owner, method, list(args), "", captured, 0)
    return result, captured


@dataclass(frozen=True)
class _Call:
    path: str  # the callee's module path relative to the caller ("" for the caller itself)
    method: str
    n_inputs: int
    n_outputs: int
    inside: bool = True  # inputs exposed too, so the callee's own submodules are followed


def _run_script(
    owner: Any,
    method: str,
    args: list[Any],
    path: str,
    store: dict[str, list[np.ndarray]],
    depth: int,
) -> Any:
    import torch

    graph = getattr(owner, method).graph.copy()
    calls = _expose_calls(graph)
    if not calls or depth >= MAX_DEPTH:
        return getattr(owner, method)(*args)
    fn = torch._C._create_function_from_graph(f"_trtparity_tap_{method}", graph)
    values = list(fn(owner, *args))
    result, at = values[0], 1
    for call in calls:
        inputs = values[at : at + call.n_inputs]
        outputs = values[at + call.n_inputs : at + call.n_inputs + call.n_outputs]
        at += call.n_inputs + call.n_outputs
        here = ".".join(p for p in (path, call.path) if p)
        if call.method == "forward" and call.path:
            store[here] = [a for o in outputs for a in flatten(o)]
        if call.inside:
            _run_script(_attr_path(owner, call.path), call.method, inputs, here, store, depth + 1)
    return result


def _expose_calls(graph: Any) -> list[_Call]:
    """Make `graph` return (its result, then each top-level submodule call's inputs and outputs)."""
    import torch

    self_value = next(iter(graph.inputs()))
    calls: list[_Call] = []
    extra: list[Any] = []
    for node in graph.nodes():
        if node.kind() == "prim::If":
            found, values = _if_calls(node, self_value)
            calls += found
            extra += values
            continue
        call = _call_of(node, self_value)
        if call is not None:
            calls.append(call[0])
            extra += call[1]
    if not calls:
        return []
    ret = graph.return_node()
    values = [ret.input(), *extra]
    tup = graph.create("prim::TupleConstruct", values)
    tup.output().setType(torch._C.TupleType([v.type() for v in values]))
    tup.insertBefore(ret)
    ret.replaceInput(0, tup.output())
    return calls


def _call_of(node: Any, self_value: Any) -> tuple[_Call, list[Any]] | None:
    """A submodule call reached by attributes from self: the call and its inputs and outputs."""
    if node.kind() != "prim::CallMethod":
        return None
    inputs = list(node.inputs())
    rel = _path_from(inputs[0], self_value)
    if rel is None:
        return None  # a module not reached by attributes from self (a loop variable, say)
    outputs = list(node.outputs())
    return _Call(rel, node.s("name"), len(inputs) - 1, len(outputs)), inputs[1:] + outputs


def _if_calls(node: Any, self_value: Any) -> tuple[list[_Call], list[Any]]:
    """Calls inside both branches of an `If`, their outputs made extra outputs of the `If`.

    Only where both branches call the same methods with outputs of the same types (Silero's
    decoder calls its LSTM cell in both, with and without a given state); the inputs too where
    their types also agree, else the callee's own submodules are not followed."""
    found = [
        [c for c in (_call_of(n, self_value) for n in block.nodes()) if c is not None]
        for block in node.blocks()
    ]
    if len(found) != 2 or not found[0] or [c for c, _ in found[0]] != [c for c, _ in found[1]]:
        return [], []
    calls = [c for c, _ in found[0]]
    ins = [[v for c, vs in f for v in vs[: c.n_inputs]] for f in found]
    outs = [[v for c, vs in f for v in vs[c.n_inputs :]] for f in found]
    if _types(outs[0]) != _types(outs[1]):
        return [], []
    inside = _types(ins[0]) == _types(ins[1])
    values = [[*i, *o] if inside else o for i, o in zip(ins, outs, strict=True)]
    for block, vals in zip(node.blocks(), values, strict=True):
        for value in vals:
            block.registerOutput(value)
    exposed = [node.addOutput().setType(v.type()) for v in values[0]]
    if not inside:
        calls = [_Call(c.path, c.method, 0, c.n_outputs, inside=False) for c in calls]
    return calls, exposed


def _types(values: Sequence[Any]) -> list[str]:
    return [str(v.type()) for v in values]


def _path_from(value: Any, root: Any) -> str | None:
    """The attribute path from `root` to `value` through `prim::GetAttr` nodes, or None."""
    parts: list[str] = []
    while value is not root:
        node = value.node()
        if node.kind() != "prim::GetAttr":
            return None
        parts.append(node.s("name"))
        value = node.input()
    return ".".join(reversed(parts))


def _attr_path(owner: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        owner = getattr(owner, part)
    return owner


def module_candidates(nodes: Sequence[TensorNode], path: str) -> list[TensorNode]:
    """The nodes the exporter named after module `path` or one of its submodules, in order."""
    return [n for n in nodes if n.module == path or n.module.startswith(path + ".")]


def match_module_outputs(
    captured: Mapping[str, Sequence[np.ndarray]],
    nodes: Sequence[TensorNode],
    reference: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Reference tensor name -> the engine's value, for each module output matched to a tensor of
    that module (same size, nearest reference value, earliest of ties); deeper modules win."""
    out: dict[str, np.ndarray] = {}
    for path in sorted(captured, key=lambda p: p.count(".")):
        candidates = [n for n in module_candidates(nodes, path) if n.tensor in reference]
        for array in captured[path]:
            hit = _nearest(array, candidates, reference)
            if hit is not None:
                out[hit] = array.reshape(np.shape(reference[hit]))
    return out


def _nearest(
    array: np.ndarray, candidates: Sequence[TensorNode], reference: Mapping[str, np.ndarray]
) -> str | None:
    scored: list[tuple[float, str]] = []
    flat = array.astype(np.float64).ravel()
    for node in candidates:
        ref = np.asarray(reference[node.tensor])
        if ref.size != flat.size or ref.dtype.kind != "f":
            continue
        diff = np.abs(ref.astype(np.float64).ravel() - flat)
        scored.append((float(np.nanmax(diff)) if diff.size else 0.0, node.tensor))
    if not scored:
        return None
    best = min(s for s, _ in scored)
    scale = max(float(np.nanmax(np.abs(flat))) if flat.size else 0.0, 1e-30)
    return next(t for s, t in scored if s <= best + _TIE * scale)


@dataclass
class TorchTaps:
    """A loaded PyTorch backend (`backends.torch.TorchBackend`) observed module by module.

    The engine's outputs come from the backend's own step; the intermediates from one more call of
    its entry on the same arguments, captured by module path (`capture_modules`).
    """

    backend: Any
    notes: tuple[str, ...] = field(default=(), init=False)

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        names: Sequence[str],
        outputs: Sequence[str],
        *,
        reference: Mapping[str, np.ndarray] | None = None,
        nodes: Sequence[TensorNode] = (),
    ) -> dict[str, np.ndarray]:
        import torch

        result = self.backend.run(feeds)
        with torch.inference_mode():
            _, captured = capture_modules(self.backend.target, self.backend.call_args(feeds))
        wanted = set(names)
        ref = {k: v for k, v in (reference or {}).items() if k in wanted}
        matched = match_module_outputs(captured, nodes, ref)
        how = "TorchScript graph taps" if _is_script(self.backend.target) else "forward hooks"
        self.notes = (
            f"engine tensors read from PyTorch {how} on {len(captured)} module(s), "
            f"{len(matched)} matched to source tensors by module path",
        )
        out = dict(matched)
        out.update({o: np.asarray(result[o]) for o in outputs})
        return out
