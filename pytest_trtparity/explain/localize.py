"""Localization: walk the tensors in topological order and name the first one that diverges.

A tensor diverges when its error exceeds the failing output's tier, or when it jumps by `jump`
(10x) or more over the largest error of its inputs. The jump rule finds the cause even when its
error is still small in absolute terms and only grows past the tier further down; errors under
`floor` (a small fraction of the tier) are rounding noise and never count as a jump.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from .diagnosis import FirstDivergence, LayerError
from .intermediates import TensorNode

#: A node's error this many times its inputs' error marks it as the origin.
JUMP = 10.0
#: Errors under this fraction of the tier are noise for the jump rule.
FLOOR_FRACTION = 1e-2


def tensor_error(reference: np.ndarray, got: np.ndarray, metric: str = "max_abs") -> float:
    """The error of one tensor in the failing output's metric (float64; NaN or a shape mismatch is inf)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(got, dtype=np.float64)
    if ref.shape != out.shape:
        return math.inf
    if ref.size == 0:
        return 0.0
    if not np.array_equal(np.isfinite(ref), np.isfinite(out)):
        return math.inf
    finite = np.isfinite(ref)
    diff = np.abs(ref[finite] - out[finite])
    if diff.size == 0:
        return 0.0
    if metric == "mean_abs":
        return float(diff.mean())
    if metric == "rmse":
        return float(np.sqrt(np.mean(diff * diff)))
    if metric == "max_rel":
        return float(np.max(diff / np.maximum(np.abs(ref[finite]), 1e-12)))
    return float(diff.max())


def layer_errors(
    nodes: Sequence[TensorNode],
    reference: Mapping[str, np.ndarray],
    engine: Mapping[str, np.ndarray],
    input_errors: Mapping[str, float],
    metric: str = "max_abs",
) -> list[LayerError]:
    """Each compared tensor's error and its inputs' largest error, in the order of `nodes`.

    Tensors missing on either side are skipped; their consumers see the error of the nearest
    compared ancestors through `known`, so a skipped shape op does not hide an error.
    """
    known: dict[str, float] = dict(input_errors)
    out: list[LayerError] = []
    for node in nodes:
        before = max((known.get(i, 0.0) for i in node.inputs), default=0.0)
        if node.tensor in reference and node.tensor in engine:
            error = tensor_error(reference[node.tensor], engine[node.tensor], metric)
            known[node.tensor] = error
            out.append(LayerError(node.tensor, node.node, node.op_type, node.module, error, before))
        else:
            known[node.tensor] = before
    return out


def first_divergence(
    layers: Sequence[LayerError],
    tier: float,
    inputs_of: Mapping[str, Sequence[str]],
    errors: Mapping[str, float],
    *,
    jump: float = JUMP,
) -> FirstDivergence | None:
    """The first layer over the tier or jumping `jump`x over its inputs; None if none does."""
    floor = tier * FLOOR_FRACTION
    for layer in layers:
        over = layer.error > tier
        jumped = layer.error > floor and layer.error >= jump * layer.inputs_error
        if not (over or jumped):
            continue
        reason = _reason(layer, tier, jumped)
        return FirstDivergence(
            tensor=layer.tensor,
            node=layer.node,
            op_type=layer.op_type,
            module=layer.module,
            error=layer.error,
            tier=tier,
            inputs_error=layer.inputs_error,
            reason=reason,
            inputs={i: errors[i] for i in inputs_of.get(layer.tensor, ()) if i in errors},
        )
    return None


def _reason(layer: LayerError, tier: float, jumped: bool) -> str:
    if not jumped:
        return f"error {layer.error:.3g} exceeds the tier {tier:.3g}"
    if layer.inputs_error <= 0:
        return f"error {layer.error:.3g} where its inputs agree exactly"
    return f"error {layer.error:.3g} is {layer.error / layer.inputs_error:.3g}x its inputs' {layer.inputs_error:.3g}"


def chain(nodes: Sequence[TensorNode], start: str, output: str) -> tuple[str, ...]:
    """The shortest path of tensors from `start` to `output` through the graph's consumers."""
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for i in node.inputs:
            consumers.setdefault(i, []).append(node.tensor)
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == output:
            path = []
            step: str | None = here
            while step is not None:
                path.append(step)
                step = parent[step]
            return tuple(reversed(path))
        for nxt in consumers.get(here, ()):
            if nxt not in parent:
                parent[nxt] = here
                queue.append(nxt)
    return (start,)
