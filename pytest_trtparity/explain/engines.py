"""Engine intermediates: the same tensors as the reference, read out of the engine under test.

An `EngineTaps` runs one chunk and returns the engine's outputs and whichever of the named reference
tensors it can observe, keyed by the reference names. `OnnxTaps` does it for ONNX Runtime engines;
`torch_hooks.TorchTaps` and `trt_debug.TensorRTTaps` for the other backends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .graph import prepare_graph
from .intermediates import TensorNode, comparable, run_with_outputs, tensor_nodes
from .names import match_names


class EngineTaps(Protocol):
    """What localization needs from an engine."""

    #: Sentences for the diagnosis: how the tensors were observed, whether the engine was changed.
    notes: tuple[str, ...]

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        names: Sequence[str],
        outputs: Sequence[str],
        *,
        reference: Mapping[str, np.ndarray] | None = None,
        nodes: Sequence[TensorNode] = (),
    ) -> dict[str, np.ndarray]:
        """The engine's `outputs` and the observable ones of `names` (reference names) for one chunk.

        `reference` (the source's values) and `nodes` (its graph) are there for engines whose
        tensors are matched by module and value rather than by name (PyTorch)."""
        ...


@dataclass
class OnnxTaps:
    """An ONNX Runtime engine: its ONNX prepared with the chunk's feeds, tensors exposed as outputs.

    ONNX Runtime cannot fuse across a tensor it must return, so an exposed tensor may keep a node
    unfused that the plain session fuses; on the CPU that changes no result of a single op, and the
    engine's own outputs are compared as well.
    """

    model: Any  # onnx.ModelProto of the engine
    threads: int = 1
    notes: tuple[str, ...] = field(default=(), init=False)
    prepared: Any = field(default=None, init=False)

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        names: Sequence[str],
        outputs: Sequence[str],
        *,
        reference: Mapping[str, np.ndarray] | None = None,
        nodes: Sequence[TensorNode] = (),
    ) -> dict[str, np.ndarray]:
        if self.prepared is None:
            self.prepared = prepare_graph(self.model, feeds).model
        mine = [t.tensor for t in comparable(tensor_nodes(self.prepared))]
        mapping = match_names(list(names), mine)
        wanted = list(dict.fromkeys([*outputs, *mapping.values()]))
        values = run_with_outputs(self.prepared, feeds, wanted, threads=self.threads)
        out = {name: values[mapping[name]] for name in names if name in mapping}
        out.update({o: values[o] for o in outputs})
        self.notes = (
            f"engine tensors read from ONNX Runtime with {len(mapping)} of {len(names)} tensors exposed as outputs",
        )
        return out
