"""The one-pass comparison gives the whole-tensor definitions' results, over many blocks.

`compare` takes the blocked pass for float tensors whose values are all finite and the whole-tensor
float64 path (`_compare_full`, pinned by test_compare_metrics and test_properties) otherwise; here
both run on the same arrays. `max_abs` and the worst index must be equal whatever the dtype.

Float64 outputs are compared in float64: max_rel and the percentiles equal, mean_abs, rmse and cosine
differing only by summation order (1e-12 relative). Float32 and narrower outputs are differenced in
float32: max_rel and the percentiles within two float32 roundings (2**-23 relative), mean_abs and rmse
within 1e-6 relative (float32 sums of at most 128K elements pairwise or 8K in BLAS parts, summed
exactly), cosine_distance within 1e-4 of itself: all far below any tolerance a contract can state.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from pytest_trtparity.contract.model import Tier, Tolerance
from pytest_trtparity.judge import blocked
from pytest_trtparity.judge.compare import METRICS, _compare_full, _wanted, compare

TOL = Tolerance(chunk=Tier(fail=1.0))
N = blocked.BLOCK * 3 + 17  # several blocks and a short last one


def both(ref: np.ndarray, got: np.ndarray, dtype: str, metrics: tuple[str, ...] | None = None):  # type: ignore[no-untyped-def]
    fast = compare("y", ref, got, expected_dtype=dtype, tolerance=TOL, metrics=metrics)
    full = _compare_full("y", ref, got, TOL, _wanted(metrics))
    return fast, full


@pytest.mark.parametrize(
    ("ref_dtype", "got_dtype"),
    [
        ("float32", "float32"),
        ("float64", "float64"),
        ("float16", "float16"),
        ("float32", "float16"),
        ("float64", "float32"),
    ],
)
@pytest.mark.parametrize("metrics", [None, ("max_abs",), ("mean_abs", "rmse"), ("p99_abs",)])
def test_blocked_pass_matches_the_whole_tensor_definitions(
    ref_dtype: str, got_dtype: str, metrics: tuple[str, ...] | None
) -> None:
    rng = np.random.default_rng(7)
    ref = (rng.standard_normal(N) * 3).astype(ref_dtype)
    got = (ref.astype(np.float64) + rng.standard_normal(N) * 1e-2).astype(got_dtype)
    got[5] = ref[5]  # an exact match, and a zero reference with an error: max_rel inf
    ref[9], got[9] = 0, 0.5
    fast, full = both(ref, got, got_dtype, metrics)
    assert fast.ok and full.ok
    assert set(fast.metrics) == set(full.metrics) == (set(metrics or METRICS) | {"max_abs"})
    assert fast.worst_index == full.worst_index
    wide = "float64" in (ref_dtype, got_dtype)
    for name, value in full.metrics.items():
        if name == "max_abs":
            assert fast.metrics[name] == value, name
        elif wide and name in ("mean_abs", "rmse", "cosine"):
            assert fast.metrics[name] == pytest.approx(value, rel=1e-12, abs=0), name
        elif wide and name == "cosine_distance":
            assert fast.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-15), name
        elif wide:
            assert fast.metrics[name] == value, name
        elif name in ("mean_abs", "rmse"):
            assert fast.metrics[name] == pytest.approx(value, rel=1e-6, abs=0), name
        elif name == "cosine":
            assert fast.metrics[name] == pytest.approx(value, rel=0, abs=1e-9), name
        elif name == "cosine_distance":
            assert fast.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-15), name
        else:
            assert fast.metrics[name] == pytest.approx(value, rel=2.0**-23, abs=0), name


def test_a_float32_tie_is_broken_by_the_exact_difference() -> None:
    """1 - (-2**-30) is 1 in float32, 1 + 2**-30 in float64: the true worst element comes second."""
    ref = np.zeros(N, np.float32)
    got = np.zeros(N, np.float32)
    got[3], ref[3] = 1.0, 0.0
    got[blocked.BLOCK + 3], ref[blocked.BLOCK + 3] = 1.0, -(2.0**-30)
    fast, full = both(ref, got, "float32", ("max_abs",))
    assert fast.metrics["max_abs"] == full.metrics["max_abs"] == 1.0 + 2.0**-30
    assert fast.worst_index == full.worst_index == (blocked.BLOCK + 3,)


def test_ties_report_the_first_worst_element() -> None:
    ref = np.zeros(N, np.float32)
    got = ref.copy()
    got[[blocked.BLOCK + 1, 2 * blocked.BLOCK + 5]] = 0.25
    for metrics in (("max_abs",), None):
        assert both(ref, got, "float32", metrics)[0].worst_index == (blocked.BLOCK + 1,)


def test_a_float32_overflow_falls_back_to_float64() -> None:
    ref = np.full(N, -3e38, np.float32)
    got = np.full(N, 3e38, np.float32)
    fast, full = both(ref, got, "float32", ("max_abs",))
    assert fast.ok and fast.metrics["max_abs"] == full.metrics["max_abs"] == pytest.approx(6e38)


def test_non_finite_values_in_a_late_block_are_problems() -> None:
    ref = np.ones(N, np.float32)
    got = ref.copy()
    got[N - 2] = np.nan
    for metrics in (("max_abs",), None):
        c = compare("y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=metrics)
        assert c.problem is not None and c.problem.startswith(f"NaN at index ({N - 2},)")


def test_signed_zero_is_still_checked_on_the_blocked_path() -> None:
    ref = np.zeros(N, np.float32)
    got = ref.copy()
    got[N - 1] = -0.0
    tol = Tolerance(chunk=Tier(fail=1.0), signed_zero=True)
    c = compare("y", ref, got, expected_dtype="float32", tolerance=tol, metrics=("max_abs",))
    assert c.problem == f"sign of zero differs at index ({N - 1},)"
    assert compare("y", ref, ref, expected_dtype="float32", tolerance=tol).ok


def test_unknown_metric_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        compare(
            "y", np.ones(2), np.ones(2), expected_dtype="float64", tolerance=TOL, metrics=("l2",)
        )


@pytest.mark.parametrize("sampled_high", [True, False])
def test_percentiles_are_exact_when_the_sample_misleads(sampled_high: bool) -> None:
    """Every 32nd element (the sample) large and the rest small, or the reverse: the tail selection
    must notice it holds too few elements and partition everything."""
    n = blocked.TAIL_MIN * 4
    flat = np.linspace(0.0, 1.0, n)
    spots = np.arange(0, n, blocked.TAIL_STRIDE)
    flat[spots] = 10.0 + flat[spots] if sampled_high else flat[spots] / 100
    expected = [float(np.percentile(flat, q)) for q in (95.0, 99.0)]
    assert blocked.percentiles(flat.copy(), (95.0, 99.0)) == expected


def test_extra_memory_is_a_few_blocks_and_bands() -> None:
    """Every metric at once on 16 MiB float32 outputs keeps blocks, the sample and the percentile
    bands (a few percent of the tensor), never a tensor-sized array; differences that are nearly
    all equal (bands of ties: the fallback) keep one float32 array of them."""
    n = 1 << 22  # 16 MiB of float32 a side
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(n).astype(np.float32)
    noisy = ref + (rng.standard_normal(n) * 1e-3).astype(np.float32)
    peaks = {}
    for key, got, metrics in (
        ("max", noisy, ("max_abs",)),
        ("sums", noisy, ("mean_abs", "rmse", "max_rel", "cosine")),
        ("all", noisy, None),
        ("ties", ref + np.float32(1e-3), ("p95_abs", "p99_abs")),
    ):
        tracemalloc.start()
        compare("y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=metrics)
        peaks[key] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["max"] < 1 << 20, peaks
    assert peaks["sums"] < 2 << 20, peaks
    assert peaks["all"] < 3 << 20, peaks  # the tensor is 16 MiB
    assert peaks["ties"] < n * 4 * 1.2 + (2 << 20), peaks


def cosines(ref: np.ndarray, got: np.ndarray):  # type: ignore[no-untyped-def]
    """`compare` of float32 outputs asked for the cosine and the cosine distance."""
    return compare(
        "y",
        ref,
        got,
        expected_dtype="float32",
        tolerance=TOL,
        metrics=("cosine", "cosine_distance"),
    )


def _exact_cosine_distance(ref: np.ndarray, got: np.ndarray) -> float:
    """1 - cos from exactly rounded sums of exact float64 products of float32 values, by Lagrange's
    identity (|r|^2 |d|^2 - (r.d)^2, d = got - ref exact in float64 for these magnitudes)."""
    r = ref.astype(np.float64)
    d = got.astype(np.float64) - r
    rr, rd, dd = (math.fsum((a * b).tolist()) for a, b in ((r, r), (r, d), (d, d)))
    gg = math.fsum((got.astype(np.float64) ** 2).tolist())
    norms = math.sqrt(rr * gg)
    return (rr * dd - rd * rd) / (norms * (norms + rr + rd))


@pytest.mark.parametrize("scale", [1e-3, 1e-5, 1e-7])
def test_cosine_distance_keeps_its_digits_between_near_equal_outputs(scale: float) -> None:
    """1 - r.g / (|r||g|) in float64 is noise below about 1e-16; from the difference it is not."""
    rng = np.random.default_rng(11)
    ref = rng.standard_normal(N).astype(np.float32)
    got = (ref + rng.standard_normal(N).astype(np.float32) * np.float32(scale)).astype(np.float32)
    c = compare(
        "y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=("cosine_distance",)
    )
    expected = _exact_cosine_distance(ref, got)
    assert expected > 0
    assert c.metrics["cosine_distance"] == pytest.approx(expected, rel=1e-4, abs=0)


@pytest.mark.parametrize(
    ("factor", "cosine"), [(1e-3, 1.0), (-1.0, -1.0), (0.0, 0.0), (-1e-3, -1.0), (1e3, 1.0)]
)
def test_cosine_of_scaled_outputs_takes_the_float64_pass_where_needed(
    factor: float, cosine: float
) -> None:
    """An engine output much smaller than the reference (or zero, or reversed) is where the
    difference form loses digits: the float64 pass gives the exact answer there."""
    ref = np.random.default_rng(5).standard_normal(N).astype(np.float32)
    got = (ref * np.float32(factor)).astype(np.float32)
    c = cosines(ref, got)
    assert c.metrics["cosine"] == pytest.approx(cosine, abs=1e-7)
    assert c.metrics["cosine_distance"] == pytest.approx(1.0 - cosine, abs=1e-7)


def test_squares_beyond_float32_take_the_float64_pass() -> None:
    ref = np.full(N, 1e20, np.float32)
    got = ref.copy()
    got[::2] = np.float32(-1e20)
    c = compare("y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=("rmse", "cosine"))
    full = _compare_full("y", ref, got, TOL, _wanted(("rmse", "cosine")))
    assert math.isfinite(c.metrics["rmse"])
    assert c.metrics["rmse"] == pytest.approx(full.metrics["rmse"], rel=1e-12)
    assert c.metrics["cosine"] == pytest.approx(full.metrics["cosine"], abs=1e-12)


def test_relative_error_over_a_subnormal_reference_is_not_an_overflow() -> None:
    ref = np.ones(N, np.float32)
    ref[7] = np.float32(1e-44)  # subnormal: 1 / 1e-44 overflows float32, not float64
    got = ref.copy()
    got[7] = 1.0
    c = compare("y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=("max_rel",))
    assert c.metrics["max_rel"] == pytest.approx(1.0 / float(ref[7]), rel=1e-12)


@pytest.mark.parametrize("qs", [(95.0,), (99.0,), (95.0, 99.0)])
@pytest.mark.parametrize("layout", ["random", "ties", "plateau", "sorted", "reversed"])
def test_percentiles_from_sampled_bands_are_numpys(qs: tuple[float, ...], layout: str) -> None:
    """Bands around each sampled rank, one per percentile; ties at a band's edge, a band holding
    most of the tensor (a plateau: the fallback), and ordered data (a strided sample of it is
    exact) all give numpy's linear percentiles."""
    n = blocked.TAIL_MIN * 8 + 3
    rng = np.random.default_rng(13)
    flat = np.abs(rng.standard_normal(n)).astype(np.float32)
    if layout == "ties":
        flat = np.round(flat * 8) / 8
    elif layout == "plateau":
        flat[: n * 9 // 10] = 0.5
    elif layout == "sorted":
        flat.sort()
    elif layout == "reversed":
        flat = np.sort(flat)[::-1].copy()
    expected = [float(np.percentile(flat.astype(np.float64), q)) for q in qs]
    assert blocked.percentiles(flat.copy(), qs) == pytest.approx(expected, rel=1e-15, abs=0)


@pytest.mark.parametrize(("ref_fill", "got_fill", "cosine"), [(0.0, 0.0, 1.0), (0.0, 0.5, 0.0)])
def test_cosine_with_a_zero_side(ref_fill: float, got_fill: float, cosine: float) -> None:
    """Both outputs zero: identical (cosine 1); a zero reference against anything else: 0."""
    ref = np.full(N, ref_fill, np.float32)
    got = np.full(N, got_fill, np.float32)
    c = cosines(ref, got)
    assert (c.metrics["cosine"], c.metrics["cosine_distance"]) == (cosine, 1.0 - cosine)


class _Spy:
    """Counts calls of a module function and the sizes it saw."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.sizes: list[int] = []
        real = getattr(blocked, name)

        def spy(*args: object) -> object:
            self.sizes.append(int(getattr(args[0], "size", 0)))
            return real(*args)

        monkeypatch.setattr(blocked, name, spy)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_the_fast_paths_are_taken_on_ordinary_outputs(
    monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """A fallback gives the same numbers, so only this shows the fast paths run: percentiles select
    from bands a few percent of the tensor, the cosine comes from the differences' sums."""
    select = _Spy(monkeypatch, "_select")
    wide = _Spy(monkeypatch, "_wide_cosine")
    rng = np.random.default_rng(21)
    n = blocked.MAX_BLOCK * 2 + 5
    ref = rng.standard_normal(n).astype(dtype)
    got = (ref.astype(np.float64) + rng.standard_normal(n) * 1e-2).astype(dtype)
    c = compare("y", ref, got, expected_dtype=dtype, tolerance=TOL)
    full = _compare_full("y", ref, got, TOL, _wanted(None))
    assert wide.sizes == []
    band = [size for size in select.sizes if size > 2 * blocked.TAIL_STRIDE]
    assert band and max(band) < n // 20, select.sizes  # bands, not the whole tensor
    for name in ("p95_abs", "p99_abs"):
        assert c.metrics[name] == pytest.approx(full.metrics[name], rel=2.0**-10), name


def test_fallbacks_are_taken_where_designed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plateau of ties (a band would hold most of the tensor) selects from all the differences; an
    engine output a thousandth of the reference takes the float64 cosine."""
    select = _Spy(monkeypatch, "_select")
    wide = _Spy(monkeypatch, "_wide_cosine")
    n = blocked.TAIL_MIN * 8
    ref = np.zeros(n, np.float32)
    got = np.full(n, 0.5, np.float32)
    got[::97] = 0.75
    compare("y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=("p95_abs",))
    assert n in select.sizes, select.sizes
    ref = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    compare(
        "y",
        ref,
        ref * np.float32(1e-3),
        expected_dtype="float32",
        tolerance=TOL,
        metrics=("cosine",),
    )
    assert wide.sizes == [n]


def test_bands_stop_gathering_past_their_share() -> None:
    """A plateau of ties puts most values inside the band: gathering stops once past
    1 / TAIL_SHARE of the tensor (memory stays bounded) and the caller is told to select from all."""
    n = blocked.TAIL_MIN * 8
    flat = np.full(n, 0.5, np.float32)
    flat[::7] = 1.0
    rank = int(0.95 * (n - 1))
    bands = blocked.Bands(flat[:: blocked.TAIL_STRIDE].copy(), n, [rank, rank + 1])
    blocks = np.array_split(flat, 16)
    for block in blocks:
        bands.take(block)
    gathered = sum(part.size for parts in bands.parts for part in parts)
    assert n // blocked.TAIL_SHARE < gathered <= n // blocked.TAIL_SHARE + blocks[0].size
    assert bands.values() is None
