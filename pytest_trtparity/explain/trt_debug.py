"""TensorRT engines: intermediates as debug tensors of a debug build, not as extra outputs.

Extra outputs change what TensorRT may fuse, which can hide or create the very error being looked
for. The documented way (TensorRT 10+) is to mark tensors for debugging and receive them at run
time through an `IDebugListener`:

- `INetworkDefinition.mark_unfused_tensors_as_debug_tensors()` marks what survives fusion without
  preventing any fusion (the engine stays as built); preferred where it exists;
- else `INetworkDefinition.mark_debug(tensor)` per named tensor, which keeps outputs as they are
  but may keep a marked tensor from being fused: said in the notes;
- else `mark_output(tensor)`: the engine changed, said in the notes.

At run time `IExecutionContext.set_debug_listener(listener)` and `set_all_tensors_debug_state(True)`
(or `set_tensor_debug_state(name, True)`) make TensorRT call
`listener.process_debug_tensor(addr, location, type, shape, name, stream)` for each marked tensor.
Only this module touches those calls; its tests run it against a fake network and context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Copies `nbytes` at device address `addr` to a host array of `dtype` and `shape` (the cuda layer).
CopyToHost = Callable[[int, int, np.dtype[Any], tuple[int, ...], Any], np.ndarray]


@dataclass(frozen=True)
class Marking:
    """Which tensors were marked and how; `note` says when the engine may differ."""

    mode: str  # "unfused" | "debug" | "output"
    marked: tuple[str, ...]
    note: str


def mark_intermediates(network: Any, names: Sequence[str]) -> Marking:
    """Mark `names` (tensors of `network`) for reading back, by the least intrusive API there is."""
    unfused = getattr(network, "mark_unfused_tensors_as_debug_tensors", None)
    if unfused is not None and unfused():
        return Marking(
            "unfused",
            (),
            "TensorRT debug tensors (unfused tensors marked): fusions as in the engine under test; fused tensors are not observed",
        )
    tensors = _tensors_by_name(network)
    found = [n for n in names if n in tensors]
    if hasattr(network, "mark_debug"):
        marked = tuple(n for n in found if network.mark_debug(tensors[n]))
        return Marking(
            "debug",
            marked,
            "TensorRT debug tensors marked by name: a marked tensor may stay unfused, so the debug engine can differ from the engine under test",
        )
    for n in found:
        network.mark_output(tensors[n])
    return Marking(
        "output",
        tuple(found),
        "this TensorRT has no debug tensors: intermediates were marked as extra outputs, which changed the engine (fusions)",
    )


def _tensors_by_name(network: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            out[tensor.name] = tensor
    return out


def make_listener(base: type, copy: CopyToHost, dtype_of: Callable[[Any], np.dtype[Any]]) -> Any:
    """An `IDebugListener` (subclass of `base`, i.e. `tensorrt.IDebugListener`) that copies each
    debug tensor to the host into its `tensors` dict."""

    class Listener(base):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.tensors: dict[str, np.ndarray] = {}

        def process_debug_tensor(
            self, addr: int, location: Any, type: Any, shape: Any, name: str, stream: Any
        ) -> bool:
            dims = tuple(int(d) for d in shape)
            dtype = dtype_of(type)
            nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize if dims else dtype.itemsize
            self.tensors[name] = copy(addr, nbytes, dtype, dims, stream)
            return True

    return Listener()


def attach(context: Any, listener: Any, names: Sequence[str] | None = None) -> None:
    """Ask `context` (an IExecutionContext) to report debug tensors to `listener`."""
    context.set_debug_listener(listener)
    if names is None and hasattr(context, "set_all_tensors_debug_state"):
        context.set_all_tensors_debug_state(True)
        return
    for name in names or ():
        context.set_tensor_debug_state(name, True)
