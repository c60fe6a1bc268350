"""The contract's mandatory assertions, evaluated on every engine output of every chunk."""

from __future__ import annotations

import numpy as np

from .model import Invariant


def violation(inv: Invariant, value: np.ndarray) -> str | None:
    """Why `value` breaks `inv`, or None. The reason names the offending element."""
    arr = np.asarray(value)
    if inv.check == "dim_equals":
        assert inv.axis is not None and inv.value is not None
        if not -arr.ndim <= inv.axis < arr.ndim:
            return f"shape {list(arr.shape)} has no axis {inv.axis}"
        got = arr.shape[inv.axis]
        return (
            None if got == int(inv.value) else f"shape {list(arr.shape)}: axis {inv.axis} is {got}"
        )
    if arr.size == 0:
        return None
    wide = arr.astype(np.float64)
    if inv.check == "finite":
        bad = ~np.isfinite(wide)
    elif inv.check == "equals":
        bad = ~(wide == float(inv.value if inv.value is not None else 0))
    else:  # in_range; NaN is outside every range
        bad = np.isnan(wide)
        if inv.min is not None:
            bad |= wide < inv.min
        if inv.max is not None:
            bad |= wide > inv.max
    if not np.any(bad):
        return None
    flat = int(np.flatnonzero(bad)[0])
    idx = tuple(int(i) for i in np.unravel_index(flat, arr.shape)) if arr.shape else ()
    return f"got {arr.reshape(-1)[flat].item()!r} at index {idx} ({int(bad.sum())} of {arr.size} elements)"
