"""Compare one engine output with its reference: structural checks first, then error metrics.

The order matters. A naive `max(abs(a - b)) > tol` passes NaN (comparisons with NaN are False),
broadcasts (1,) against (5,), wraps int8 subtraction, and hides one outlier behind a mean. Here a
shape, dtype, emptiness or non-finite mismatch is a `problem` that fails regardless of tolerance,
and metrics are computed in float64 on upcast values only when the structure agrees.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from ..contract import dtypes
from ..contract.model import Tolerance
from . import blocked
from .blocked import scaled_cosine as _cosine

METRICS = (
    "max_abs",
    "mean_abs",
    "p95_abs",
    "p99_abs",
    "max_rel",
    "rmse",
    "cosine",
    "cosine_distance",
)


@dataclass(frozen=True)
class Comparison:
    output: str
    metrics: dict[str, float] = field(default_factory=dict)
    worst_index: tuple[int, ...] | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return _index(int(np.flatnonzero(mask)[0]), mask.shape)


def _dtype_problem(got: np.ndarray, expected_dtype: str) -> str | None:
    try:
        got_name = dtypes.name_of(got.dtype)
    except dtypes.UnknownDtypeError:
        return f"dtype {got.dtype} is not a supported tensor dtype, contract says {expected_dtype}"
    if got_name == expected_dtype or (expected_dtype == "bfloat16" and got_name == "float32"):
        return None
    return f"dtype {got_name}, contract says {expected_dtype}"


def compare(
    name: str,
    expected: np.ndarray,
    got: np.ndarray,
    *,
    expected_dtype: str,
    tolerance: Tolerance,
    allow_empty: bool = False,
    metrics: Collection[str] | None = None,
) -> Comparison:
    """Compare `got` (engine) with `expected` (reference) for output `name`.

    `metrics` names the metrics wanted (None: all of `METRICS`); `max_abs` and the worst index come
    with every comparison, since the pass that finds them also proves every element finite. A gate
    asks only for what its contract judges: each metric left out is work not done on every chunk.
    """
    ref = np.asarray(expected)
    out = np.asarray(got)
    problem = _dtype_problem(out, expected_dtype)
    if problem:
        return Comparison(name, problem=problem)
    if ref.shape != out.shape:
        return Comparison(name, problem=f"shape {list(out.shape)}, reference has {list(ref.shape)}")
    wanted = _wanted(metrics)
    if ref.size == 0:
        if allow_empty:
            return Comparison(name, metrics=_only(_empty_metrics(), wanted))
        return Comparison(name, problem="empty tensor (the contract does not allow empty outputs)")
    if ref.dtype.kind == "f" and out.dtype.kind == "f":
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            fast = blocked.metrics(ref.reshape(-1), out.reshape(-1), wanted)
        if fast is not None:  # every element finite on both sides (else the full path judges them)
            if tolerance.signed_zero and (problem := _zero_sign_problem(ref, out)):
                return Comparison(name, problem=problem)
            return Comparison(name, metrics=fast.values, worst_index=_index(fast.worst, ref.shape))
    return _compare_full(name, ref, out, tolerance, wanted)


def _wanted(metrics: Collection[str] | None) -> frozenset[str]:
    if metrics is None:
        return frozenset(METRICS)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; expected some of {METRICS}")
    return frozenset(metrics) | {"max_abs"}


def _only(values: dict[str, float], wanted: frozenset[str]) -> dict[str, float]:
    return {k: v for k, v in values.items() if k in wanted}


def _zero_sign_problem(ref: np.ndarray, out: np.ndarray) -> str | None:
    zero_sign = (ref == 0) & (out == 0) & (np.signbit(ref) != np.signbit(out))
    if np.any(zero_sign):
        return f"sign of zero differs at index {_first(zero_sign)}"
    return None


def _compare_full(
    name: str, ref: np.ndarray, out: np.ndarray, tolerance: Tolerance, wanted: frozenset[str]
) -> Comparison:
    """Whole-tensor float64 comparison: integers (exact 64-bit distances), non-finite values and
    their policies, and finite floats whose difference overflows the blocked path's float32."""
    r = _widen(ref)
    g = _widen(out)
    both: np.ndarray | None = None  # None: every element finite on both sides
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        problem = _nonfinite_problem(r, g, tolerance)
        if problem:
            return Comparison(name, problem=problem)
        both = np.isfinite(r) & np.isfinite(g)
    if both is None:
        diff = np.subtract(g, r, out=np.empty_like(r))  # an array even at rank 0
    else:
        diff = np.zeros(r.shape, dtype=np.float64)
        np.subtract(g, r, out=diff, where=both)
    absdiff = np.abs(diff, out=diff)
    if ref.dtype.kind in "iu" and out.dtype.kind in "iu":
        absdiff = _int_absdiff(ref, out)
    if tolerance.signed_zero and (problem := _zero_sign_problem(r, g)):
        return Comparison(name, problem=problem)
    return Comparison(
        name,
        metrics=_only(_metrics(r, g, absdiff, both), wanted),
        worst_index=_index(int(np.argmax(absdiff)), absdiff.shape),
    )


def _int_absdiff(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """|out - ref| of integer tensors, exact in 64 bits before the one rounding to float64.

    float64 has one value for 2**62 and 2**62 + 3, so subtracting widened values would call an
    error of 3 an error of 0. The difference of two int64 values always fits a uint64: subtract
    modulo 2**64 and take the wrapped value or its negation, whichever is the true distance.
    """
    a = out.astype(np.int64)
    b = ref.astype(np.int64)
    with np.errstate(
        over="ignore"
    ):  # rank-0 tensors subtract as numpy scalars, which warn on wrapping
        wrapped = a.view(np.uint64) - b.view(np.uint64)
        distance = np.where(a >= b, wrapped, np.uint64(0) - wrapped)
    return distance.astype(np.float64)


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64)


def _nonfinite_problem(r: np.ndarray, g: np.ndarray, tol: Tolerance) -> str | None:
    r_nan, g_nan = np.isnan(r), np.isnan(g)
    bad = g_nan & ~r_nan
    if np.any(bad):
        idx = _first(bad)
        return f"NaN at index {idx} where the reference is {r[idx]:.6g} ({int(bad.sum())} such elements)"
    if np.any(r_nan):
        if tol.nan == "fail":
            return f"reference holds NaN at index {_first(r_nan)} (set nan: match in the contract if that is expected)"
        missing = r_nan & ~g_nan
        if np.any(missing):
            idx = _first(missing)
            return f"{g[idx]:.6g} at index {idx} where the reference is NaN"
    r_inf, g_inf = np.isinf(r), np.isinf(g)
    bad = g_inf & ~r_inf
    if np.any(bad):
        idx = _first(bad)
        return f"{g[idx]} at index {idx} where the reference is {r[idx]:.6g} ({int(bad.sum())} such elements)"
    if np.any(r_inf):
        if tol.inf == "fail":
            return f"reference holds {r[_first(r_inf)]} at index {_first(r_inf)} (inf: fail in the contract)"
        differ = r_inf & (g != r)
        if np.any(differ):
            idx = _first(differ)
            return f"{g[idx]:.6g} at index {idx} where the reference is {r[idx]}"
    return None


def _metrics(
    r: np.ndarray, g: np.ndarray, absdiff: np.ndarray, both: np.ndarray | None
) -> dict[str, float]:
    flat = absdiff.ravel()
    ref_abs = np.abs(r.ravel())
    rel = np.zeros_like(flat)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # x/0 and overflow are inf
        np.divide(flat, ref_abs, out=rel, where=flat != 0)
    rv = r.ravel() if both is None else np.where(both, r, 0.0).ravel()
    gv = g.ravel() if both is None else np.where(both, g, 0.0).ravel()
    cosine = _cosine(rv, gv)
    p95, p99 = _percentiles(flat, (95.0, 99.0))
    return {
        "max_abs": float(flat.max()),
        "mean_abs": float(flat.mean()),
        "p95_abs": p95,
        "p99_abs": p99,
        "max_rel": float(rel.max()),
        "rmse": float(np.sqrt(np.mean(flat * flat))),
        "cosine": cosine,
        "cosine_distance": max(0.0, 1.0 - cosine),
    }


def _percentiles(flat: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles from one partial sort of a copy, without
    np.percentile's overhead (a third of a small comparison's time); the ranks and the
    interpolation are the blocked pass's (`blocked.Percentiles`)."""
    want = blocked.Percentiles(flat.size, qs)
    part = np.partition(flat, want.ranks)
    return want.interpolate([float(part[k]) for k in want.ranks])


def _empty_metrics() -> dict[str, float]:
    return {m: 0.0 for m in METRICS} | {"cosine": 1.0}
