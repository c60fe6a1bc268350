"""Probes: re-run the chunk with one setting changed and say whether that brings the output back.

Each probe returns a `Probe` with one sentence, e.g. "with TF32 off the error falls from 6.36e-3 to
2.5e-5, under the fail tier 5e-3: TF32 is the likely cause", or None when it does not apply (a
model with no fp16 node has no fp16 probe). A probe that changes the engine says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from .diagnosis import Probe
from .localize import tensor_error

#: Runs the chunk on a (possibly edited) engine ONNX and returns the failing output.
OnnxRunner = Callable[[Any], np.ndarray]


def sentence(setting: str, before: float, after: float, tier: float, cause: str) -> str:
    """The one sentence a probe reports."""
    if after <= tier < before:
        return f"with {setting} the error falls from {before:.3g} to {after:.3g}, under the fail tier {tier:.3g}: {cause} is the likely cause"
    if after < before and before <= tier:
        share = "the likely cause" if after * 10 <= before else "part of the cause"
        return f"with {setting} the error falls from {before:.3g} to {after:.3g} (the chunk was already under the fail tier {tier:.3g}): {cause} is {share} of the error"
    if after < before:
        return f"with {setting} the error falls from {before:.3g} to {after:.3g}, still above the fail tier {tier:.3g}: {cause} is not the whole cause"
    return f"with {setting} the error stays at {after:.3g} (was {before:.3g}, fail tier {tier:.3g}): {cause} is not the cause"


def _probe(
    setting: str, cause: str, before: float, after: float, tier: float, changed: bool
) -> Probe:
    return Probe(
        setting, before, after, tier, sentence(setting, before, after, tier, cause), changed
    )


def fp32_node_probe(
    engine_model: Any,
    node: str,
    run: OnnxRunner,
    expected: np.ndarray,
    before: float,
    tier: float,
    metric: str = "max_abs",
) -> Probe | None:
    """ONNX Runtime or TensorRT (strongly typed): the first diverging node, and the fp16/bf16
    nodes feeding it, computed in fp32 (None when it touches no fp16/bf16 tensor)."""
    from .onnx_edits import compute_in_fp32, low_precision_region

    region = low_precision_region(engine_model, node)
    if not region:
        return None
    after = tensor_error(expected, run(compute_in_fp32(engine_model, region)), metric)
    from .names import display_name

    setting = f"{display_name(node)} and the {len(region) - 1} fp16/bf16 node(s) feeding it computed in fp32"
    return _probe(setting, "fp16 precision", before, after, tier, True)


def source_weights_probe(
    engine_model: Any,
    source_model: Any,
    run: OnnxRunner,
    expected: np.ndarray,
    before: float,
    tier: float,
    metric: str = "max_abs",
) -> Probe | None:
    """The engine's constants that differ from the source's (same name up to If-inlining prefixes,
    same shape) replaced by the source's: a wrong or stale checkpoint shows here."""
    from .names import strip_inline
    from .onnx_edits import constants, replace_weights

    source = {strip_inline(k): v for k, v in constants(source_model).items()}
    differ = {}
    for name, value in constants(engine_model).items():
        theirs = source.get(strip_inline(name))
        if (
            theirs is not None
            and theirs.shape == value.shape
            and not np.array_equal(theirs.astype(value.dtype), value)
        ):
            differ[name] = theirs.astype(value.dtype)
    if not differ:
        return None
    after = tensor_error(expected, run(replace_weights(engine_model, differ)), metric)
    setting = f"the source model's values for the {len(differ)} constant(s) that differ"
    return _probe(setting, "a weight mismatch", before, after, tier, True)


@contextmanager
def tf32(enabled: bool, torch: Any = None) -> Iterator[None]:
    """PyTorch's TF32 switches (matmul, cuDNN convolutions and recurrences) set to `enabled` for the
    block, then restored; through the backend's own setter, which keeps PyTorch 2.9+'s per-operation
    precisions and the older flags in step."""
    from ..backends.torch_math import apply_tf32

    if torch is None:
        import torch as _torch

        torch = _torch
    restore = apply_tf32(torch, enabled)
    try:
        yield
    finally:
        restore()


def tf32_probe(
    run: Callable[[], Mapping[str, np.ndarray]],
    output: str,
    expected: np.ndarray,
    before: float,
    tier: float,
    metric: str = "max_abs",
    torch: Any = None,
) -> Probe:
    """PyTorch on CUDA: the chunk re-run with TF32 off (the engine itself is unchanged)."""
    with tf32(False, torch):
        after = tensor_error(expected, run()[output], metric)
    return _probe("TF32 off", "TF32", before, after, tier, False)
