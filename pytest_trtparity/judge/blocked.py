"""One pass over a pair of float tensors for every metric a comparison is asked for.

The whole-tensor way (widen both sides to float64, then one numpy call per metric) reads each output
about twenty times and allocates several float64 copies of it: 13 ms and 17x the tensor's size for a
262,144-element float32 output. Here the tensors are walked once, block by block; each block and its
temporaries stay in the core's cache, so memory is read once and the extra memory is a few blocks
(plus, for percentiles, the values in narrow bands around them: `Bands`).

Float32 and narrower outputs (`_narrow_pass`) are differenced in float32, as a bare
`np.abs(got - ref)` would be; float64 is used only where accumulation needs it. Against the
whole-tensor float64 definitions (`compare._metrics`):

* `max_abs` and the worst index are exact: rounding is monotonic, so the true maximum lies among the
  elements within one float32 step of the float32 maximum, and those few are recomputed in float64.
* `max_rel` and the percentiles are the float32 differences' (one rounding, at most 2**-24 relative,
  from the float64 values); `max_rel` is recomputed in float64 where float32 overflows, and no mean
  or percentile is reported above the exact maximum.
* `mean_abs` sums each block pairwise in float32 and the block sums exactly (`math.fsum`); `rmse` and
  cosine take BLAS dot products of at most `DOT_PART` elements (products of float32 values, summed in
  float32 within the part), parts summed exactly: a relative error of a few 1e-7 at most.
* `cosine_distance` comes from r.r, r.d and d.d (d the difference) by Lagrange's identity, so a
  distance of 1e-12 between near-equal outputs keeps its digits, where 1 - r.g / (|r| |g|) would
  lose them all; an engine output whose norm is under half the reference's, or values whose squares
  leave float32's range, take a float64 pass over the blocks instead.

Float64 outputs (`_exact_pass`, `_wide_max_pass`) are computed in float64, exactly as defined, up
to summation order.

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
_PERCENTILES = frozenset({"p95_abs", "p99_abs"})
_COSINES = frozenset({"cosine", "cosine_distance"})
#: Differences all under this take the float64 sum of squares: float32 squares lose up to 1.4e-45
#: each (subnormals), under 3e-8 of a sum holding a square of at least this for n <= 2**24.
SMALL_DIFF = 2.0**-50
#: r.r below this takes the float64 cosine: float32 squares of elements under 1.1e-19 lose digits,
#: at most n * 1.2e-38 in all, which is under 2.4e-10 of a sum this large for n <= 2**24.
TINY_SQUARES = 2.0**-70


@dataclass(frozen=True)
class Metrics:
    values: dict[str, float]
    worst: int


def metrics(r: np.ndarray, g: np.ndarray, wanted: frozenset[str]) -> Metrics | None:
    """Metrics of flat, equally long, non-empty float arrays `r` (reference) and `g` (engine)."""
    if np.result_type(r.dtype, g.dtype, np.float32) != np.float64:
        return _narrow_pass(r, g, wanted)
    if wanted & _EXACT_METRICS:
        return _exact_pass(r, g, wanted)
    return _wide_max_pass(r, g)


def _wide_max_pass(r: np.ndarray, g: np.ndarray) -> Metrics | None:
    """max |g - r| and its first index for float64 outputs, in blocks."""
    n = r.size
    buf = np.empty(min(MAX_BLOCK, n))
    best, first = -1.0, 0
    for start in range(0, n, MAX_BLOCK):
        stop = min(start + MAX_BLOCK, n)
        d = buf[: stop - start]
        np.subtract(g[start:stop], r[start:stop], out=d, dtype=np.float64)
        np.abs(d, out=d)
        i = int(d.argmax())  # NaN, if any, is where argmax stops
        m = float(d[i])
        if not math.isfinite(m):
            return None
        if m > best:
            best, first = m, start + i
    return Metrics({"max_abs": best}, first)


class _Worst:
    """The running maximum of |g - r| and its first index, exact although taken in float32.

    In float32 the worst element is among those within one float32 step of the largest float32
    difference so far (`top`). Usually a block's largest difference is the only such element: a
    second max over the rest of the block (a fast pass, no temporaries) shows it, and that one
    element is recomputed in float64. Otherwise the near-ties are picked out of the block's
    differences while still in cache (`_near_ties`), so the tensor is read once however many
    blocks hold one.
    """

    def __init__(self) -> None:
        self.best = -1.0
        self.first = 0
        self.top = -1.0

    def add(self, r: np.ndarray, g: np.ndarray, d: np.ndarray, start: int) -> bool:
        """Take block `d` (|g - r| in float32 from `start`); False if it holds a non-finite value."""
        i = int(d.argmax())  # NaN, if any, is where argmax stops
        m = float(d[i])
        if not math.isfinite(m):
            return False
        if m == 0.0:  # every element equal (float32 differences round to 0 only then)
            if self.best < 0.0:
                self.best, self.first = 0.0, start
            return True
        self.top = max(self.top, m)
        threshold = float(np.nextafter(np.float32(self.top), np.float32(0)))
        if m < threshold:
            return True
        others = max(float(d[:i].max(initial=-1.0)), float(d[i + 1 :].max(initial=-1.0)))
        if others >= threshold:
            self.best, self.first = _near_ties(r, g, d, start, threshold, (self.best, self.first))
            return True
        exact = abs(float(g[start + i]) - float(r[start + i]))  # Python floats are float64
        if exact > self.best:
            self.best, self.first = exact, start + i
        return True


def _near_ties(
    r: np.ndarray,
    g: np.ndarray,
    d: np.ndarray,
    start: int,
    threshold: float,
    so_far: tuple[float, int],
) -> tuple[float, int]:
    """The float64 maximum (and its first index) among this block's elements whose float32
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


class _NarrowSums:
    """Running block results of the float32 pass: partial sums, summed exactly at the end."""

    def __init__(self) -> None:
        self.abs: list[float] = []
        self.rr: list[float] = []
        self.rd: list[float] = []
        self.dd: list[float] = []
        self.max_rel = 0.0


def _narrow_pass(r: np.ndarray, g: np.ndarray, wanted: frozenset[str]) -> Metrics | None:
    """Every wanted metric of float32 (or narrower) outputs in one pass of float32 blocks."""
    n = r.size
    size = min(MAX_BLOCK, n)
    qs = _wanted_qs(wanted)
    want = Percentiles(n, tuple(qs.values())) if qs else None
    # percentiles of a large tensor are gathered from sampled bands block by block; a small one
    # keeps all its differences to select from
    bands = None
    if want is not None and n >= TAIL_MIN and want.ranks[0] > 0:
        sample = np.subtract(g[::TAIL_STRIDE], r[::TAIL_STRIDE], dtype=np.float32)
        bands = Bands(np.abs(sample, out=sample), n, want.ranks)
    full = np.empty(n, np.float32) if want is not None and bands is None else None
    buf = full if full is not None else np.empty(size, np.float32)
    cosine = bool(wanted & _COSINES)
    rbuf = np.empty(size, np.float32) if cosine and r.dtype != np.float32 else None
    tbuf = np.empty(size, np.float32) if "max_rel" in wanted else None
    worst = _Worst()
    s = _NarrowSums()
    for start in range(0, n, MAX_BLOCK):
        stop = min(start + MAX_BLOCK, n)
        d = buf[start:stop] if full is not None else buf[: stop - start]
        np.subtract(g[start:stop], r[start:stop], out=d, dtype=np.float32)
        if cosine:  # signed d: r.d needs it
            rv = r[start:stop] if rbuf is None else _copied(r[start:stop], rbuf)
            s.rr.extend(_dots(rv, rv))
            s.rd.extend(_dots(rv, d))
        np.abs(d, out=d)
        if not worst.add(r, g, d, start):
            return None
        if cosine or "rmse" in wanted:
            s.dd.extend(_dots(d, d))
        if "mean_abs" in wanted:
            s.abs.append(float(np.add.reduce(d)))
        if bands is not None:
            bands.take(d)
        if tbuf is not None:
            s.max_rel = max(s.max_rel, _block_max_rel(r[start:stop], g[start:stop], d, tbuf))
    values = _narrow_finish(s, r, g, wanted, worst.best)
    if want is not None:
        ranked = bands.values() if bands is not None else None
        if ranked is None:  # small tensor, or the sample misplaced a band: select from them all
            if full is None:
                full = np.subtract(g, r, dtype=np.float32)
                np.abs(full, out=full)
            ranked = _select(full, want.ranks)
        # a float32 difference may round above the exact maximum; no percentile lies above it
        values |= {k: min(v, worst.best) for k, v in zip(qs, want.interpolate(ranked), strict=True)}
    return Metrics(values, worst.first)


def _copied(block: np.ndarray, buf: np.ndarray) -> np.ndarray:
    out = buf[: block.size]
    np.copyto(out, block)
    return out


def _block_max_rel(r: np.ndarray, g: np.ndarray, d: np.ndarray, t: np.ndarray) -> float:
    """max |g - r| / |r| over a block: 0 / 0 is NaN where both are zero (a relative error of 0,
    which fmax skips), d / 0 is inf, as in the whole-tensor definition. Where float32 overflows
    (an error over a subnormal reference) the block is taken again in float64."""
    t = t[: d.size]
    np.abs(r, out=t)
    np.divide(d, t, out=t)
    rel = float(np.fmax.reduce(t))
    if rel == math.inf:
        r64 = r.astype(np.float64)
        rel = float(np.fmax.reduce(np.abs(g.astype(np.float64) - r64) / np.abs(r64)))
    return rel if rel == rel else 0.0  # all NaN: every element of the block exactly equal


def _dots(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Dot products of `x` and `y` in parts of at most `DOT_PART` elements: BLAS computes each on
    this thread (OpenBLAS spreads a dot product over threads only above 10,000 elements, and
    threads would make a sub-millisecond comparison swing with machine load), and float32 sums of
    a part this short stay within a few 1e-7 of the exact sum."""
    n = x.size
    if n <= DOT_PART:
        return [float(np.dot(x, y))]
    return [float(np.dot(x[i : i + DOT_PART], y[i : i + DOT_PART])) for i in range(0, n, DOT_PART)]


def _narrow_finish(
    s: _NarrowSums,
    r: np.ndarray,
    g: np.ndarray,
    wanted: frozenset[str],
    max_abs: float,
) -> dict[str, float]:
    n = r.size
    out = {"max_abs": max_abs}
    # float32 roundings may put a mean a hair above the exact maximum; no mean lies above it
    if "mean_abs" in wanted:
        out["mean_abs"] = min(max_abs, _total(s.abs) / n)
    if "rmse" in wanted:
        squares = _total(s.dd)
        if squares == math.inf or max_abs < SMALL_DIFF:  # float32 squares overflowed or lost digits
            squares = _wide_squares(r, g)
        out["rmse"] = min(max_abs, math.sqrt(squares / n))
    if "max_rel" in wanted:
        out["max_rel"] = s.max_rel
    if wanted & _COSINES:
        pair = _cosine_from_difference(_signed_total(s.rr), _signed_total(s.rd), _total(s.dd))
        cos, dist = pair if pair is not None else _wide_cosine(r, g)
        if "cosine" in wanted:
            out["cosine"] = cos
        if "cosine_distance" in wanted:
            out["cosine_distance"] = dist
    return out


def _cosine_from_difference(rr: float, rd: float, dd: float) -> tuple[float, float] | None:
    """(cosine, cosine distance) of r and g = r + d from r.r, r.d and d.d.

    |r|^2 |g|^2 - (r.g)^2 = |r|^2 |d|^2 - (r.d)^2 (Lagrange's identity), so near-parallel outputs
    have their distance from sums that do not cancel: 1 - cos = that / (|r||g| (|r||g| + r.g)).
    The sums' errors are relative to |d|^2 |r|^2 / |g|^2, which stays small while |g| >= |r| / 2;
    below that (and where squares leave float32's range) None asks for the float64 pass.
    """
    if not (math.isfinite(rr) and math.isfinite(rd) and math.isfinite(dd)) or rr < TINY_SQUARES:
        return None
    gg = rr + 2.0 * rd + dd
    if not gg >= rr / 4.0:
        return None
    rg = rr + rd
    norms = math.sqrt(rr) * math.sqrt(gg)
    if rg <= norms / 2.0:  # 60 degrees or more apart: nothing left to cancel
        cos = min(1.0, max(-1.0, rg / norms))
        return cos, 1.0 - cos
    dist = max(0.0, rr * dd - rd * rd) / (norms * (norms + rg))
    return 1.0 - dist, dist


def _wide_cosine(r: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """(cosine, cosine distance) in float64 blocks, each vector scaled by its largest magnitude."""
    n = r.size
    size = min(BLOCK, n)
    a, b = np.empty(size), np.empty(size)
    peaks = [0.0, 0.0]
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        for side, v in enumerate((r, g)):
            w = _as_f64(v[start:stop], a[: stop - start])
            peaks[side] = max(peaks[side], float(np.max(np.abs(w, out=a[: stop - start]))))
    mr, mg = peaks
    if mr == 0.0 and mg == 0.0:
        return 1.0, 0.0
    if mr == 0.0 or mg == 0.0:
        return 0.0, 1.0
    rg: list[float] = []
    rr: list[float] = []
    gg: list[float] = []
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        k = stop - start
        rv = _as_f64(r[start:stop], a[:k]) / mr
        gv = _as_f64(g[start:stop], b[:k]) / mg
        rg.extend(_dots(rv, gv))
        rr.extend(_dots(rv, rv))
        gg.extend(_dots(gv, gv))
    cos = min(1.0, max(-1.0, math.fsum(rg) / (math.sqrt(math.fsum(rr)) * math.sqrt(math.fsum(gg)))))
    return cos, max(0.0, 1.0 - cos)


def _wide_squares(r: np.ndarray, g: np.ndarray) -> float:
    """The sum of squared differences in float64 blocks."""
    n = r.size
    a, b = np.empty(min(BLOCK, n)), np.empty(min(BLOCK, n))
    parts: list[float] = []
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        d = np.subtract(
            _as_f64(g[start:stop], a[: stop - start]), r[start:stop], out=b[: stop - start]
        )
        parts.extend(_dots(d, d))
    return _total(parts)


def _signed_total(parts: list[float]) -> float:
    """The exactly rounded sum of block sums of any sign; NaN where they overflow."""
    try:
        return math.fsum(parts)
    except (OverflowError, ValueError):
        return math.nan


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
        s.sq.extend(_dots(d, d))
    if "max_rel" in wanted:
        # d / |r|: 0 / 0 is NaN where both are zero (a relative error of 0, which fmax skips),
        # d / 0 is inf, as in the whole-tensor definition.
        rel = float(np.fmax.reduce(np.divide(d, np.abs(rv, out=t), out=t)))
        if rel > s.max_rel:
            s.max_rel = rel
    if cosine:
        s.dot.extend(_dots(rv, gv))
        s.rr.extend(_dots(rv, rv))
        s.gg.extend(_dots(gv, gv))
        if wide:
            s.peak_r = max(s.peak_r, float(np.max(np.abs(rv, out=t))))
            s.peak_g = max(s.peak_g, float(np.max(np.abs(gv, out=t))))


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
        out |= _percentile_metrics(full, wanted)
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


def _percentile_metrics(flat: np.ndarray, wanted: frozenset[str]) -> dict[str, float]:
    """The percentile metrics asked for, and only those: a p95 widens what is selected from."""
    qs = _wanted_qs(wanted)
    return dict(zip(qs, percentiles(flat, tuple(qs.values())), strict=True))


def _wanted_qs(wanted: frozenset[str]) -> dict[str, float]:
    return {name: q for name, q in _PERCENTILE_QS if name in wanted}


_PERCENTILE_QS = (("p95_abs", 95.0), ("p99_abs", 99.0))


class Percentiles:
    """numpy's default (linear) percentiles `qs` of n values: the ranks each needs, and the
    interpolation between them; an infinite neighbour with any weight gives inf."""

    def __init__(self, n: int, qs: tuple[float, ...]) -> None:
        self.spots = []
        for q in qs:
            pos = q / 100.0 * (n - 1)
            lo = math.floor(pos)
            self.spots.append((lo, min(lo + 1, n - 1), pos - lo))
        self.ranks = sorted({k for lo, hi, _ in self.spots for k in (lo, hi)})

    def interpolate(self, values: list[float]) -> list[float]:
        at = dict(zip(self.ranks, values, strict=True))
        out = []
        for lo, hi, frac in self.spots:
            a, b = at[lo], at[hi]
            out.append(a if frac == 0.0 or a == b else a + (b - a) * frac)
        return out


def percentiles(flat: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles of `flat` (reordered in place), without
    np.percentile's overhead."""
    want = Percentiles(flat.size, qs)
    return want.interpolate(order_statistics(flat, want.ranks))


#: Percentiles of at least this many elements select from bands around a sampled estimate.
TAIL_MIN = 1 << 14
#: One element in this many is sampled to place the bands.
TAIL_STRIDE = 32
#: Bands holding more than 1 / TAIL_SHARE of the tensor (many ties) are not gathered: the values
#: are partitioned whole instead.
TAIL_SHARE = 8
#: Standard errors of a sampled quantile that a band reaches on each side of it.
BAND_SIGMAS = 5.0


def order_statistics(flat: np.ndarray, ranks: list[int]) -> list[float]:
    """The values at `ranks` (ascending) of `flat` sorted, exactly (`flat` reordered in place)."""
    if flat.size >= TAIL_MIN and ranks[0] > 0:
        bands = Bands(flat[::TAIL_STRIDE], flat.size, ranks)
        bands.take(flat)
        values = bands.values()
        if values is not None:
            return values
    return _select(flat, ranks)


class Bands:
    """Order statistics at given ranks, gathered block by block from bands of values.

    Partitioning a whole tensor costs twenty times a pass over it. A sorted sample (every
    `TAIL_STRIDE`-th value, taken before the pass) places each rank, with the neighbour a linear
    percentile also needs, within a band `BAND_SIGMAS` standard errors of the sampled quantile
    wide on either side. Each block of values then gives its count below each band and its values
    inside it, while the block is in cache; the bands (one or two percent of the tensor) and the
    counts give those ranks exactly, ties included. Bands kept narrow matter: gathering scattered
    elements costs a branch miss each, so gathering the whole top 6% for a p95 took longer than
    the rest of the comparison. A sample that misplaces a band (a rank outside it, or bands of many
    ties) makes `values` None, and the caller partitions all the values instead.
    """

    def __init__(self, sample: np.ndarray, n: int, ranks: list[int]) -> None:
        self.n = n
        self.groups = _groups(ranks)
        self.edges = _band_edges(sample, n, self.groups)
        self.below = [0] * len(self.groups)
        self.parts: list[list[np.ndarray]] = [[] for _ in self.groups]
        self.gathered = 0

    def take(self, block: np.ndarray) -> None:
        """Count and gather one block of the values (in order of the whole, any block size)."""
        if self.gathered > self.n // TAIL_SHARE:
            return
        for i, (lo, hi) in enumerate(self.edges):
            inside = np.greater_equal(block, lo)
            if hi is not None:
                self.below[i] += block.size - int(np.count_nonzero(inside))
                inside &= block <= hi
            part = np.compress(inside, block)
            if hi is None:  # everything at or above lo is in the band
                self.below[i] += block.size - part.size
            self.gathered += part.size
            self.parts[i].append(part)

    def values(self) -> list[float] | None:
        if self.gathered > self.n // TAIL_SHARE:
            return None
        out: list[float] = []
        for group, below, parts in zip(self.groups, self.below, self.parts, strict=True):
            band = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if not (below <= group[0] and group[-1] < below + band.size):
                return None
            out.extend(_select(band, [k - below for k in group]))
        return out


def _groups(ranks: list[int]) -> list[list[int]]:
    """Ranks split where they lie more than one apart (a percentile's two neighbours stay together)."""
    groups: list[list[int]] = [[ranks[0]]]
    for k in ranks[1:]:
        if k - groups[-1][-1] <= 1:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _band_edges(
    sample: np.ndarray, n: int, groups: list[list[int]]
) -> list[tuple[float, float | None]]:
    """(lowest, highest or None for no upper edge) value of the band holding each group of ranks,
    from the sample's order statistics (`sample` reordered in place)."""
    m = sample.size
    spots: list[tuple[int, int]] = []
    for ranks in groups:
        lo_q, hi_q = ranks[0] / (n - 1), ranks[-1] / (n - 1)
        lo_spot = max(0, int(lo_q * (m - 1)) - _margin(lo_q, m))
        hi_spot = int(hi_q * (m - 1)) + _margin(hi_q, m) + 1
        # no upper edge where the few values above the band cost less to gather than a compare
        spots.append((lo_spot, hi_spot if m - hi_spot > hi_spot - lo_spot else m))
    wanted = sorted({k for pair in spots for k in pair if 0 < k < m})
    at = dict(zip(wanted, _select(sample, wanted), strict=True)) if wanted else {}
    return [(at.get(lo, -math.inf), at.get(hi)) for lo, hi in spots]


def _margin(q: float, m: int) -> int:
    """Sample positions of `BAND_SIGMAS` standard errors of quantile `q` sampled `m` times (p99 of
    8,192: 47 positions, 0.6% of the tensor), and two more for rounding."""
    return 2 + math.ceil(BAND_SIGMAS * math.sqrt(q * (1.0 - q) * m))


def _select(a: np.ndarray, ranks: list[int]) -> list[float]:
    """The values at `ranks` (ascending) of `a` sorted, partitioning `a` in place one rank at a
    time, each on what lies above the last: numpy selects one rank with SIMD, but several at once
    by a scalar loop up to ten times slower."""
    out = []
    base = 0
    for k in ranks:
        part = a[base:]
        part.partition(k - base)
        out.append(float(part[k - base]))
        base = k
    return out
