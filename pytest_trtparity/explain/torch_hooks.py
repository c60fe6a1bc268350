"""PyTorch engines: module outputs captured with forward hooks, keyed by module path.

A module's output is the tensor of the last ONNX node the exporter emitted for that module
(`encoder.1.activation` -> `/encoder/1/activation/Relu`), so each reference tensor is matched to
the module whose path its producing node carries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .intermediates import TensorNode


def module_tensors(nodes: Sequence[TensorNode]) -> dict[str, str]:
    """Module path -> the reference tensor its forward returns (its last node's first output)."""
    out: dict[str, str] = {}
    seen_nodes: set[str] = set()
    for node in nodes:
        if node.module and node.node not in seen_nodes:
            out[node.module] = node.tensor
            seen_nodes.add(node.node)
    return out


def _to_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    if value is None or not hasattr(value, "detach"):
        return None
    return np.asarray(value.detach().float().cpu().numpy())


@dataclass
class TorchTaps:
    """Hooks on the modules of `model` (a torch.nn.Module) named in the reference graph.

    `step(feeds)` runs the model once and returns its outputs by name, as the PyTorch backend does.
    """

    model: Any
    step: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
    nodes: Sequence[TensorNode]
    notes: tuple[str, ...] = field(default=(), init=False)

    def run(
        self, feeds: Mapping[str, np.ndarray], names: Sequence[str], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        wanted = set(names)
        targets = {m: t for m, t in module_tensors(self.nodes).items() if t in wanted}
        captured: dict[str, np.ndarray] = {}
        handles = []
        for path, module in self.model.named_modules():
            if path in targets:
                handles.append(module.register_forward_hook(_hook(captured, targets[path])))
        try:
            result = self.step(feeds)
        finally:
            for handle in handles:
                handle.remove()
        self.notes = (
            f"engine tensors read from {len(handles)} PyTorch module forward hooks (by module path)",
        )
        out = dict(captured)
        out.update({o: np.asarray(result[o]) for o in outputs})
        return out


def _hook(store: dict[str, np.ndarray], tensor: str) -> Callable[..., None]:
    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        array = _to_numpy(output)
        if array is not None:
            store[tensor] = array

    return hook
