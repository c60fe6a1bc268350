"""One pass over a pair of float tensors for every metric a comparison is asked for.

The whole-tensor way (widen both sides to float64, then one numpy call per metric) reads each output
about twenty times and allocates several float64 copies of it: 13 ms and 17x the tensor's size for a
262,144-element float32 output. Here the tensors are walked once, block by block; each block and its
temporaries stay in the core's cache, so memory is read once and the extra memory is a few blocks
(plus, only when a percentile is asked for, one float64 array of the differences to select from).

Results are those of the whole-tensor definitions (`compare._metrics`):

* `max_abs` and the worst index are exact. When only they are wanted, the difference is taken in
  float32 (rounding is monotonic, so the true maximum lies among the elements within one float32
  step of the float32 maximum) and those few candidates are recomputed in float64.
* `max_rel` and the percentiles are exact: they are maxima and order statistics of the same float64
  differences.
* `mean_abs`, `rmse` and `cosine` differ only by summation order: each block is summed pairwise and
  the block sums are added exactly (`math.fsum`), which is at least as accurate as one pairwise sum
  over the whole tensor. Cosine takes plain float64 sums of products instead of first scaling each
  vector by its largest magnitude: for float32 and narrower inputs no product or sum can overflow or
  underflow in float64, and float64 inputs outside a safe range fall back to the scaled form.

Anything non-finite (an inf or NaN on either side, or a float32 difference that overflows) returns
None: the caller's whole-tensor path then judges it with its policies and messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Elements per block: a float64 block is 128 KiB, so the three or four a pass uses fit in L2.
BLOCK = 1 << 14
#: float64 inputs whose largest magnitude lies inside [2**-SAFE_EXP, 2**SAFE_EXP] take unscaled
#: cosine sums: n * (2**480)**2 cannot overflow for n < 2**60, and a product that underflows is
#: below 2**-1000 of the largest one.
SAFE_EXP = 480
#: Elements per block of the max-only pass (512 KiB of float32): a handful of numpy calls a block,
#: so larger blocks than the exact pass's keep its per-call cost small against a 1 ms engine step.
MAX_BLOCK = 1 << 17
#: Elements per BLAS dot call (see `_dot`).
DOT_PART = 1 << 13
_EXACT_METRICS = frozenset(
    {"mean_abs", "p95_abs", "p99_abs", "max_rel", "rmse", "cosine", "cosine_distance"}
)


@dataclass(frozen=True)
class Metrics:
    values: dict[str, float]
    worst: int


def metrics(r: np.ndarray, g: np.ndarray, wanted: frozenset[str]) -> Metrics | None:
    """Metrics of flat, equally long, non-empty float arrays `r` (reference) and `g` (engine)."""
    if wanted & _EXACT_METRICS:
        return _exact_pass(r, g, wanted)
    return _max_pass(r, g)


def _max_pass(r: np.ndarray, g: np.ndarray) -> Metrics | None:
    """max |g - r| and its first index, reading each side once in its own precision.

    In float32 the worst element is among those within one float32 step of the block's maximum;
    they are picked out of the block's differences while still in cache (never recomputed), so the
    tensor is read once however many blocks hold a near-tie.
    """
    work = np.result_type(r.dtype, g.dtype, np.float32)
    n = r.size
    buf = np.empty(min(MAX_BLOCK, n), dtype=work)
    exact = work != np.float64
    best, first, top = -1.0, 0, -1.0  # top: the largest `work` difference so far
    for start in range(0, n, MAX_BLOCK):
        stop = min(start + MAX_BLOCK, n)
        d = buf[: stop - start]
        np.subtract(g[start:stop], r[start:stop], out=d, dtype=work)
        np.abs(d, out=d)
        if not exact:
            i = int(d.argmax())  # NaN, if any, is where argmax stops
            m = float(d[i])
            if not math.isfinite(m):
                return None
            if m > best:
                best, first = m, start + i
            continue
        m = float(d.max())  # NaN propagates
        if not math.isfinite(m):
            return None
        if m == 0.0:  # every element equal (float32 differences round to 0 only then)
            if best < 0.0:
                best, first = 0.0, start
            continue
        top = max(top, m)
        threshold = float(np.nextafter(work.type(top), work.type(0)))
        if m >= threshold:
            best, first = _near_ties(r, g, d, start, threshold, (best, first))
    return Metrics({"max_abs": best}, first)


def _near_ties(
    r: np.ndarray,
    g: np.ndarray,
    d: np.ndarray,
    start: int,
    threshold: float,
    so_far: tuple[float, int],
) -> tuple[float, int]:
    """The float64 maximum (and its first index) among this block's elements whose `work`
    difference is at least `threshold`, merged with `so_far` (the earlier blocks').

    An element whose float64 difference ties the true maximum may round to one step below it in
    float32 (a float32 rounding boundary between two values that round to one float64), so the
    threshold is one step below the running maximum, not the maximum itself. A block taken with a
    lower threshold than the final one only adds elements that cannot beat the true maximum. The
    candidates are gathered at most `BLOCK` at a time, so a block of ties stays small in memory.
    """
    best, first = so_far
    near = d >= threshold
    step = d.size if np.count_nonzero(near) <= BLOCK else BLOCK
    for lo in range(0, d.size, step):
        spots = np.flatnonzero(near[lo : lo + step])
        if spots.size == 0:
            continue
        spots += start + lo
        diff = np.abs(g[spots].astype(np.float64) - r[spots].astype(np.float64))
        j = int(diff.argmax())
        if float(diff[j]) > best:
            best, first = float(diff[j]), int(spots[j])
    return best, first


class _Sums:
    """Running block results of the exact pass."""

    def __init__(self) -> None:
        self.max_abs = -1.0
        self.worst = 0
        self.abs: list[float] = []
        self.sq: list[float] = []
        self.dot: list[float] = []
        self.rr: list[float] = []
        self.gg: list[float] = []
        self.max_rel = 0.0
        self.peak_r = 0.0
        self.peak_g = 0.0


def _exact_pass(r: np.ndarray, g: np.ndarray, wanted: frozenset[str]) -> Metrics | None:
    n = r.size
    size = min(BLOCK, n)
    full = np.empty(n) if wanted & {"p95_abs", "p99_abs"} else None
    rb, gb, db, tb = (np.empty(size) for _ in range(4))
    cosine = bool(wanted & {"cosine", "cosine_distance"})
    wide = r.dtype == np.float64 or g.dtype == np.float64
    s = _Sums()
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        k = stop - start
        rv = _as_f64(r[start:stop], rb[:k])
        gv = _as_f64(g[start:stop], gb[:k])
        d = full[start:stop] if full is not None else db[:k]
        np.subtract(gv, rv, out=d)
        np.abs(d, out=d)
        i = int(d.argmax())
        m = float(d[i])
        if not math.isfinite(m):
            return None
        if m > s.max_abs:
            s.max_abs, s.worst = m, start + i
        _block_sums(s, rv, gv, d, tb[:k], wanted, cosine, wide)
    return Metrics(_finish(s, r, g, full, n, wanted, wide), s.worst)


def _as_f64(block: np.ndarray, buf: np.ndarray) -> np.ndarray:
    if block.dtype == np.float64:
        return block
    np.copyto(buf, block)
    return buf


def _block_sums(
    s: _Sums,
    rv: np.ndarray,
    gv: np.ndarray,
    d: np.ndarray,
    t: np.ndarray,
    wanted: frozenset[str],
    cosine: bool,
    wide: bool,
) -> None:
    if "mean_abs" in wanted:
        s.abs.append(float(np.add.reduce(d)))
    if "rmse" in wanted:
        s.sq.append(_dot(d, d))
    if "max_rel" in wanted:
        # d / |r|: 0 / 0 is NaN where both are zero (a relative error of 0, which fmax skips),
        # d / 0 is inf, as in the whole-tensor definition.
        rel = float(np.fmax.reduce(np.divide(d, np.abs(rv, out=t), out=t)))
        if rel > s.max_rel:
            s.max_rel = rel
    if cosine:
        s.dot.append(_dot(rv, gv))
        s.rr.append(_dot(rv, rv))
        s.gg.append(_dot(gv, gv))
        if wide:
            s.peak_r = max(s.peak_r, float(np.max(np.abs(rv, out=t))))
            s.peak_g = max(s.peak_g, float(np.max(np.abs(gv, out=t))))


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """Sum of products, in parts of at most `DOT_PART` elements: BLAS computes each on this
    thread (OpenBLAS spreads a dot product over threads only above 10,000 elements, and threads
    would make a sub-millisecond comparison swing with machine load)."""
    n = x.size
    if n <= DOT_PART:
        return float(np.dot(x, y))
    return sum(
        float(np.dot(x[i : i + DOT_PART], y[i : i + DOT_PART])) for i in range(0, n, DOT_PART)
    )


def _finish(
    s: _Sums,
    r: np.ndarray,
    g: np.ndarray,
    full: np.ndarray | None,
    n: int,
    wanted: frozenset[str],
    wide: bool,
) -> dict[str, float]:
    out = {"max_abs": s.max_abs}
    if "mean_abs" in wanted:
        out["mean_abs"] = _total(s.abs) / n
    if "rmse" in wanted:
        out["rmse"] = math.sqrt(_total(s.sq) / n)
    if "max_rel" in wanted:
        out["max_rel"] = s.max_rel
    if full is not None:
        p95, p99 = percentiles(full, (95.0, 99.0))
        if "p95_abs" in wanted:
            out["p95_abs"] = p95
        if "p99_abs" in wanted:
            out["p99_abs"] = p99
    if wanted & {"cosine", "cosine_distance"}:
        cos = _cosine(s, r, g, wide)
        if "cosine" in wanted:
            out["cosine"] = cos
        if "cosine_distance" in wanted:
            out["cosine_distance"] = max(0.0, 1.0 - cos)
    return out


def _cosine(s: _Sums, r: np.ndarray, g: np.ndarray, wide: bool) -> float:
    if wide and not (_safe(s.peak_r) and _safe(s.peak_g)):
        return scaled_cosine(r.astype(np.float64, copy=False), g.astype(np.float64, copy=False))
    rr, gg = math.fsum(s.rr), math.fsum(s.gg)
    if rr == 0.0 and gg == 0.0:
        return 1.0
    if rr == 0.0 or gg == 0.0:
        return 0.0
    norms = rr * gg  # one root of the product: sqrt(x * x) == x, so cos(v, -v) is exactly -1
    root = math.sqrt(norms) if 2.0**-1000 < norms < math.inf else math.sqrt(rr) * math.sqrt(gg)
    return min(1.0, max(-1.0, math.fsum(s.dot) / root))


def scaled_cosine(rv: np.ndarray, gv: np.ndarray) -> float:
    """Cosine similarity without BLAS (whose threads make a sub-millisecond comparison swing with
    machine load) and without overflow: each vector is first scaled by its own largest magnitude."""
    mr = float(np.max(np.abs(rv), initial=0.0))
    mg = float(np.max(np.abs(gv), initial=0.0))
    if mr == 0.0 and mg == 0.0:
        return 1.0
    if mr == 0.0 or mg == 0.0:
        return 0.0
    a = rv / mr
    b = gv / mg
    dot = float(np.add.reduce(a * b))
    na = math.sqrt(float(np.add.reduce(a * a)))
    nb = math.sqrt(float(np.add.reduce(b * b)))
    return float(np.clip(dot / (na * nb), -1.0, 1.0))


def _total(parts: list[float]) -> float:
    """The exactly rounded sum of non-negative block sums; inf where it overflows (as numpy's sum
    would), where `math.fsum` raises instead."""
    try:
        return math.fsum(parts)
    except OverflowError:
        return math.inf


def _safe(peak: float) -> bool:
    return peak == 0.0 or 2.0**-SAFE_EXP <= peak <= 2.0**SAFE_EXP


def percentiles(flat: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles of `flat` (the pass's own array, reordered in place),
    without np.percentile's overhead; an infinite neighbour with any weight gives inf."""
    n = flat.size
    spots = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = math.floor(pos)
        spots.append((lo, min(lo + 1, n - 1), pos - lo))
    ranks = sorted({k for lo, hi, _ in spots for k in (lo, hi)})
    values = dict(zip(ranks, order_statistics(flat, ranks), strict=True))
    out = []
    for lo, hi, frac in spots:
        a, b = values[lo], values[hi]
        out.append(a if frac == 0.0 or a == b else a + (b - a) * frac)
    return out


#: Percentiles at or above this many elements select from the tail above a sampled threshold.
TAIL_MIN = 1 << 14
#: One element in this many is sampled to place the threshold.
TAIL_STRIDE = 32
#: A tail larger than 1 / TAIL_SHARE of the tensor (many ties at the threshold) is not gathered:
#: the whole array is partitioned in place instead, so memory stays one array and its mask.
TAIL_SHARE = 8


def order_statistics(flat: np.ndarray, ranks: list[int]) -> list[float]:
    """The values at `ranks` (ascending) of `flat` sorted, exactly.

    Partitioning a whole tensor costs twenty times a pass over it; the ranks a p95 and p99 need lie
    in the top few percent. A strided sample places a threshold a little below the lowest rank;
    every element at or above it (counted, then gathered) holds exactly the top ranks of the sorted
    array, ties included, and only those are partitioned. A sample that misplaces the threshold
    (too few elements above it, or too many) falls back to partitioning everything in place.
    """
    n = flat.size
    low = ranks[0]
    if n >= TAIL_MIN and low > 0:
        sample = np.sort(flat[::TAIL_STRIDE])
        margin = max(2, sample.size // 100)
        spot = max(0, int(low / (n - 1) * (sample.size - 1)) - margin)
        above = flat >= sample[spot]
        count = int(np.count_nonzero(above))
        skipped = n - count
        if skipped <= low and count <= n // TAIL_SHARE:
            tail = flat[above]
            tail.partition([k - skipped for k in ranks])
            return [float(tail[k - skipped]) for k in ranks]
    flat.partition(ranks)
    return [float(flat[k]) for k in ranks]
