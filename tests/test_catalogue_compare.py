"""Reliability catalogue, comparison and verdict items (1-10, 33, 34): each fault a naive comparator
passes is a failure here, with a message that names the element."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.contract.model import Tier, Tolerance
from pytest_trtparity.judge import tiers as gate
from pytest_trtparity.judge.compare import Comparison, compare
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.judge.tiers import Level, judge, judge_series

from .test_bad_inputs import warm_imports  # noqa: F401 - fixture used by name

TOL = Tolerance(metric="max_abs", chunk=Tier(warn=1e-4, fail=1e-3))


def cmp(
    expected: object, got: object, dtype: str = "float32", tol: Tolerance = TOL, **kw: bool
) -> Comparison:
    return compare(
        "y", np.asarray(expected), np.asarray(got), expected_dtype=dtype, tolerance=tol, **kw
    )


def naive_passes(expected: np.ndarray, got: np.ndarray, tol: float = 1e-3) -> bool:
    """The comparator the catalogue warns about: it passes every case below marked `naive`."""
    with np.errstate(invalid="ignore", over="ignore"):
        return not bool(np.max(np.abs(got - expected)) > tol)


# -- 1-3: NaN and Inf -------------------------------------------------------------------------------


def test_1_nan_in_the_engine_output_fails_where_naive_passes() -> None:
    ref, out = np.float32([0.5, 0.25]), np.float32([0.5, np.nan])
    assert naive_passes(ref, out)
    c = cmp(ref, out)
    assert c.problem == "NaN at index (1,) where the reference is 0.25 (1 such elements)"
    assert not c.ok and c.metrics == {}


def test_2_nan_on_both_sides_fails_unless_the_contract_says_match() -> None:
    ref = out = np.float32([1.0, np.nan])
    np.testing.assert_allclose(out, ref)  # numpy's own check passes it (equal_nan=True)
    assert cmp(ref, out).problem == (
        "reference holds NaN at index (1,) (set nan: match in the contract if that is expected)"
    )
    matched = cmp(ref, out, tol=Tolerance(chunk=Tier(fail=1e-3), nan="match"))
    assert matched.ok and matched.metrics["max_abs"] == 0.0
    moved = cmp(
        np.float32([np.nan, 1.0]),
        np.float32([1.0, np.nan]),
        tol=Tolerance(chunk=Tier(fail=1e-3), nan="match"),
    )
    assert moved.problem == "NaN at index (1,) where the reference is 1 (1 such elements)"
    healed = cmp(
        np.float32([np.nan]), np.float32([0.0]), tol=Tolerance(chunk=Tier(fail=1e-3), nan="match")
    )
    assert healed.problem == "0 at index (0,) where the reference is NaN"


@pytest.mark.parametrize(
    ("ref", "out", "policy", "problem"),
    [
        ([np.inf], [np.inf], "match", None),
        ([-np.inf], [-np.inf], "match", None),
        ([np.inf], [-np.inf], "match", "-inf at index (0,) where the reference is inf"),
        ([np.inf], [3.0e38], "match", "3e+38 at index (0,) where the reference is inf"),
        (
            [np.inf],
            [np.nan],
            "match",
            "NaN at index (0,) where the reference is inf (1 such elements)",
        ),
        ([1.0], [np.inf], "match", "inf at index (0,) where the reference is 1 (1 such elements)"),
        (
            [np.inf],
            [np.inf],
            "fail",
            "reference holds inf at index (0,) (inf: fail in the contract)",
        ),
    ],
)
def test_3_infinity_has_an_explicit_policy(
    ref: list[float], out: list[float], policy: str, problem: str | None
) -> None:
    r, o = np.float32(ref), np.float32(out)
    if policy == "fail" or np.isnan(o).any():
        assert naive_passes(r, o)  # inf - inf is NaN, and NaN > tol is False
    c = cmp(r, o, tol=Tolerance(chunk=Tier(fail=1e-3), inf=policy))  # type: ignore[arg-type]
    assert c.problem == problem
    if problem is None:
        assert c.metrics["max_abs"] == 0.0


# -- 4-7: shapes, integers, dtypes, emptiness ------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "out", "problem"),
    [
        (np.zeros((1,), np.float32), np.zeros((5,), np.float32), "shape [5], reference has [1]"),
        (
            np.zeros((5, 1), np.float32),
            np.zeros((1, 5), np.float32),
            "shape [1, 5], reference has [5, 1]",
        ),
        (np.zeros((), np.float32), np.zeros((1,), np.float32), "shape [1], reference has []"),
    ],
)
def test_4_shapes_never_broadcast(ref: np.ndarray, out: np.ndarray, problem: str) -> None:
    assert np.allclose(ref, out)  # broadcasts, and passes
    assert cmp(ref, out).problem == problem


@pytest.mark.parametrize(
    ("dtype", "ref", "out", "err"),
    [
        ("int8", 0, -128, 128.0),
        ("int8", 127, -128, 255.0),
        ("uint8", 0, 255, 255.0),
        ("int16", -32768, 32767, 65535.0),
        ("int32", -(2**31), 2**31 - 1, 2.0**32 - 1),
        (
            "int64",
            2**62,
            2**62 + 1,
            1.0,
        ),  # float64 cannot tell them apart; an exact mismatch is still >= 1
        ("int64", -(2**63), 2**63 - 1, 2.0**64),
    ],
)
def test_5_integer_errors_never_wrap(dtype: str, ref: int, out: int, err: float) -> None:
    r, o = np.array([ref], dtype=dtype), np.array([out], dtype=dtype)
    c = cmp(r, o, dtype=dtype, tol=Tolerance(chunk=Tier(fail=0.0)))
    assert c.metrics["max_abs"] == err
    assert judge(Tier(fail=0.0), c.metrics["max_abs"])[0] is Level.FAIL
    if (dtype, ref, out) == ("int8", 0, -128):
        with np.errstate(over="ignore"):
            assert naive_passes(r, o)  # -128 - 0 stays -128 and np.abs(-128) wraps to -128


@pytest.mark.parametrize(
    ("contract", "got", "problem"),
    [
        ("float32", np.float16, "dtype float16, contract says float32"),
        ("float32", np.float64, "dtype float64, contract says float32"),
        ("float16", np.float32, "dtype float32, contract says float16"),
        ("int64", np.int32, "dtype int32, contract says int64"),
        ("bool", np.uint8, "dtype uint8, contract says bool"),
        (
            "float32",
            np.complex64,
            "dtype complex64 is not a supported tensor dtype, contract says float32",
        ),
    ],
)
def test_6_a_narrower_or_other_dtype_fails(contract: str, got: type, problem: str) -> None:
    ref = np.ones(3, dtype=np.float32 if contract == "float32" else contract)
    assert cmp(ref, np.ones(3, dtype=got), dtype=contract).problem == problem


def test_6_bfloat16_outputs_arrive_as_float32() -> None:
    assert cmp(np.float32([1.0]), np.float32([1.0]), dtype="bfloat16").ok


def test_7_empty_tensors_fail_unless_allowed() -> None:
    empty = np.zeros((1, 0), np.float32)
    c = cmp(empty, empty)
    assert c.problem == "empty tensor (the contract does not allow empty outputs)"
    allowed = cmp(empty, empty, allow_empty=True)
    assert allowed.ok and allowed.metrics["max_abs"] == 0.0 and allowed.metrics["cosine"] == 1.0
    assert (
        cmp(empty, np.zeros((1, 1), np.float32), allow_empty=True).problem
        == "shape [1, 1], reference has [1, 0]"
    )


# -- 8-10: outliers, missing outputs, signed zero ---------------------------------------------------


def test_8_one_outlier_in_a_million_fails() -> None:
    ref = np.zeros(1_000_000, np.float32)
    out = ref.copy()
    out[765_432] = 0.01
    c = cmp(ref, out)
    assert c.metrics["mean_abs"] < 1e-7  # a mean-error gate passes it
    assert c.metrics["max_abs"] == pytest.approx(0.01)
    assert c.worst_index == (765_432,)
    f = judge_series([c.metrics["max_abs"]], ["s#0"], TOL, suite="functional", output="y")
    assert [x.level for x in f] == [Level.FAIL]
    assert f[0].message == "output 'y': max_abs 0.01 on chunk s#0 is above the fail tier 0.001"


def test_9_a_missing_output_fails_and_never_counts_as_compared(tmp_path: Path) -> None:
    from pytest_trtparity.checks.loop import check_chunk
    from pytest_trtparity.contract.model import contract_from_json
    from pytest_trtparity.reference.reader import Record

    contract = contract_from_json(
        {
            "trtparity": "contract/1",
            "model": "m",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [1]}],
            "outputs": [
                {"name": "y", "dtype": "float32", "shape": [1]},
                {"name": "z", "dtype": "float32", "shape": [1]},
            ],
            "default_tolerance": {"chunk": {"fail": 1e-3}},
        }
    )
    record = Record(
        "s",
        0,
        {"x": np.zeros(1, np.float32)},
        {"y": np.zeros(1, np.float32), "z": np.zeros(1, np.float32)},
    )
    result = SuiteResult("functional")
    check_chunk(
        result,
        contract,
        record,
        {"y": np.zeros(1, np.float32), "z_renamed": np.zeros(1, np.float32)},
        suite="functional",
    )
    assert [f.message for f in result.failures()] == [
        "output 'z': the engine returned no such output on chunk s#0"
    ]
    assert "z" not in result.outputs  # no metric was invented for it


def test_10_signed_zero_is_equal_unless_the_contract_says_it_matters() -> None:
    ref, out = np.float32([0.0, 1.0]), np.float32([-0.0, 1.0])
    assert cmp(ref, out).metrics["max_abs"] == 0.0
    signed = Tolerance(chunk=Tier(fail=1e-3), signed_zero=True)
    assert cmp(ref, out, tol=signed).problem == "sign of zero differs at index (0,)"
    assert cmp(ref, ref, tol=signed).ok


# -- 33: non-numbers in the verdict ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tier", [Tier(fail=1e-3), Tier(warn=1e-4), Tier(warn=0.9, fail=0.8, higher_is_worse=False)]
)
def test_33_nan_is_never_within_a_tier(tier: Tier) -> None:
    assert judge(tier, math.nan)[0] is Level.FAIL


def test_33_nan_from_chunk_150_on_fails_every_criterion() -> None:
    values = [1e-6] * 150 + [math.nan] * 150
    chunks = [f"s#{i}" for i in range(300)]
    tol = Tolerance(
        chunk=Tier(warn=5e-4, fail=1e-3),
        p95=Tier(fail=5e-4),
        pass_rate=Tier(warn=0.95, fail=0.8, higher_is_worse=False),
    )
    findings = judge_series(values, chunks, tol, suite="functional", output="y")
    assert [(f.criterion, f.level) for f in findings] == [
        ("max_abs", Level.FAIL),
        ("p95 over chunks of max_abs", Level.FAIL),
        ("pass rate (chunks with max_abs <= 0.0005)", Level.FAIL),
    ]
    assert findings[0].message == "output 'y': max_abs is NaN on chunk s#150 (limit 0.001)"
    assert findings[2].value == 0.5  # NaN chunks count as outside, never as passed


def test_33_a_trend_of_nan_and_a_zero_over_zero_ratio_fail() -> None:
    from pytest_trtparity.judge import drift

    assert math.isnan(drift.trend([1e-6] * 10 + [math.nan] * 10).slope)
    assert judge(Tier(fail=0.5), drift.trend([math.nan] * 30).slope)[0] is Level.FAIL
    with np.errstate(invalid="ignore"):
        ratio = float(np.float64(0.0) / np.float64(0.0))
    assert judge(Tier(warn=1.0, fail=1.5), ratio)[0] is Level.FAIL


def test_33_a_crash_part_way_is_never_a_partial_pass() -> None:
    partial = SuiteResult(
        "closed_loop", chunks_run=120, error="engine crashed at chunk default#120"
    )
    assert partial.verdict is Level.FAIL
    assert SuiteResult("closed_loop", chunks_run=120).verdict is Level.FAIL  # not marked complete
    assert (
        gate.verdict_of([]) is Level.PASS and SuiteResult("x", complete=True).verdict is Level.PASS
    )


# -- 34: nothing ran ------------------------------------------------------------------------------


@pytest.mark.usefixtures("warm_imports")
def test_34_every_gate_test_skipped_fails_the_run(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    from .conftest import SILERO_CONTRACT, SILERO_REF

    pytester.makepyfile(
        test_gpu_only="""
        import pytest

        @pytest.mark.trtparity("functional")
        def test_functional(trt_gate):
            pytest.skip("no GPU on this runner")

        @pytest.mark.trtparity("closed_loop")
        def test_closed_loop(trt_gate):
            pytest.skip("no GPU on this runner")
    """
    )
    result = pytester.runpytest(
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={pytester.path / 'a'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["ERROR: no gating suite produced a result", "verdict: FAIL*"])


def test_34_nothing_collected_is_not_a_pass(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert result.ret != 0


# -- exact behaviour, pinned (each test below kills mutants named in docs/mutation.md) ----------------


def test_every_comparison_names_its_output() -> None:
    cases = [
        cmp(np.float32([1]), np.float16([1])),  # dtype
        cmp(np.float32([1]), np.float32([1, 1])),  # shape
        cmp(np.zeros(0, np.float32), np.zeros(0, np.float32)),  # empty, refused
        cmp(np.zeros(0, np.float32), np.zeros(0, np.float32), allow_empty=True),
        cmp(np.float32([1]), np.float32([np.nan])),  # non-finite
        cmp(
            np.float32([0.0]),
            np.float32([-0.0]),
            tol=Tolerance(chunk=Tier(fail=1.0), signed_zero=True),
        ),
        cmp(np.float32([1]), np.float32([2])),  # metrics
    ]
    assert [c.output for c in cases] == ["y"] * len(cases)


def test_matched_non_finite_elements_are_left_out_of_the_cosine() -> None:
    both_inf = Tolerance(chunk=Tier(fail=1.0), inf="match", nan="match")
    c = cmp(
        np.float64([np.inf, np.nan, 3.0, 4.0]),
        np.float64([np.inf, np.nan, 3.0, 4.0]),
        dtype="float64",
        tol=both_inf,
    )
    assert c.metrics["cosine"] == 1.0 and c.metrics["max_abs"] == 0.0
    c = cmp(
        np.float64([np.inf, 1.0, 0.0]),
        np.float64([np.inf, 0.0, 1.0]),
        dtype="float64",
        tol=both_inf,
    )
    assert c.metrics["cosine"] == 0.0  # only the finite [1, 0] and [0, 1] count: orthogonal


@pytest.mark.parametrize(
    ("ref", "out", "cosine"),
    [
        ([0.0, 0.0], [0.0, 0.0], 1.0),  # both zero: identical
        ([0.0, 0.0], [1.0, 0.0], 0.0),  # one zero: nothing in common
        ([1.0, 0.0], [0.0, 0.0], 0.0),
        ([3.0, 4.0], [6.0, 8.0], 1.0),
        ([1.0, 0.0], [1.0, 1.0], 1 / math.sqrt(2)),
    ],
)
def test_cosine_of_degenerate_and_plain_vectors(
    ref: list[float], out: list[float], cosine: float
) -> None:
    c = cmp(np.float64(ref), np.float64(out), dtype="float64", tol=Tolerance(chunk=Tier(fail=10.0)))
    assert c.metrics["cosine"] == pytest.approx(cosine, abs=1e-15)
    assert c.metrics["cosine_distance"] == pytest.approx(1 - cosine, abs=1e-15)


def test_cosine_is_clipped_to_minus_one() -> None:
    """For these values the dot product of the unit vectors, summed in order in IEEE float64 (not
    by BLAS, whose kernels round differently from one CPU to another), is below -1."""
    v = np.float64([-1.46, 1.39, 1.06, -0.98])
    unit = [x / math.sqrt(math.fsum(x * x for x in v.tolist())) for x in v.tolist()]
    assert sum(a * -a for a in unit) < -1.0
    c = cmp(v, -v, dtype="float64", tol=Tolerance(chunk=Tier(fail=10.0)))
    assert c.metrics["cosine"] == -1.0 and c.metrics["cosine_distance"] == 2.0


def test_percentiles_are_the_95th_and_99th() -> None:
    ref = np.zeros(101)
    out = np.arange(101, dtype=np.float64)
    m = cmp(ref, out, dtype="float64", tol=Tolerance(chunk=Tier(fail=1.0))).metrics
    assert (m["p95_abs"], m["p99_abs"], m["max_abs"]) == (95.0, 99.0, 100.0)


def test_metrics_raise_no_numpy_warnings() -> None:
    """0/0 and x/0 in max_rel, and rank-0 integer wrap-around, are handled, not warned about."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = cmp(np.float32([0.0, 0.0, 1.0]), np.float32([0.0, 0.5, 1.0]))
        assert c.metrics["max_rel"] == math.inf
        assert (
            cmp(np.array(-128, np.int8), np.array(127, np.int8), dtype="int8").metrics["max_abs"]
            == 255.0
        )
        assert (
            cmp(np.array(127, np.int8), np.array(-128, np.int8), dtype="int8").metrics["max_abs"]
            == 255.0
        )


def test_rank0_worst_index_is_empty() -> None:
    assert cmp(np.float32(1.0), np.float32(1.5)).worst_index == ()
    assert cmp(
        np.float32([[1.0, 1.0], [1.0, 1.0]]), np.float32([[1.0, 1.0], [3.0, 1.0]])
    ).worst_index == (1, 0)


@pytest.mark.parametrize(
    ("value", "limit", "printed"),
    [
        (0.00123, 0.001, ("0.00123", "0.001")),
        (0.0012345, 0.001, ("0.00123", "0.001")),
        (0.0010001, 0.001, ("0.0010001", "0.001")),  # more digits until they differ
        (0.1234567, 0.1234567, ("0.123", "0.123")),  # equal: three digits are enough
        (math.nan, math.nan, ("nan", "nan")),  # never equal, never different: the fallback
    ],
)
def test_fmt_pair_prints_just_enough_digits(
    value: float, limit: float, printed: tuple[str, str]
) -> None:
    assert gate.fmt_pair(value, limit) == printed


def test_nan_fails_against_whichever_limit_the_tier_has() -> None:
    assert judge(Tier(warn=1e-3), math.nan) == (Level.FAIL, 1e-3)
    assert judge(Tier(warn=1e-3, fail=2e-3), math.nan) == (Level.FAIL, 2e-3)
    assert judge(Tier(), math.nan) == (Level.FAIL, None)
    assert (
        gate.tier_finding(Tier(), math.nan, suite="s", output="o", criterion="c") is None
    )  # a tier with no limit judges nothing


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "output 'y': max_abs 2 is above the fail tier 1"),
        ({"chunk": "s#4"}, "output 'y': max_abs 2 on chunk s#4 is above the fail tier 1"),
        ({"note": "known issue"}, "output 'y': max_abs 2 is above the fail tier 1 (known issue)"),
        ({"level": Level.WARN}, "output 'y': max_abs 2 is above the warn tier 1"),
        (
            {"higher_is_worse": False, "value": 0.5},
            "output 'y': max_abs 0.5 is below the fail tier 1",
        ),
        ({"value": math.nan, "chunk": "s#2"}, "output 'y': max_abs is NaN on chunk s#2 (limit 1)"),
    ],
)
def test_describe_says_one_sentence(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "output": "y",
        "criterion": "max_abs",
        "value": 2.0,
        "limit": 1.0,
        "level": Level.FAIL,
        "higher_is_worse": True,
        **kw,
    }
    assert gate.describe(**args) == message  # type: ignore[arg-type]


def test_tier_finding_carries_every_field() -> None:
    f = gate.tier_finding(
        Tier(warn=0.5, fail=1.0),
        2.0,
        suite="functional",
        output="y",
        criterion="max_abs",
        chunk="s#3",
    )
    assert f == gate.Finding(
        Level.FAIL,
        "functional",
        "y",
        "max_abs",
        "output 'y': max_abs 2 on chunk s#3 is above the fail tier 1",
        value=2.0,
        limit=1.0,
        chunk="s#3",
    )
    assert (
        gate.tier_finding(Tier(warn=0.5, fail=1.0), 0.5, suite="s", output="y", criterion="c")
        is None
    )
    assert gate.tier_finding(None, math.nan, suite="s", output="y", criterion="c") is None


@pytest.mark.parametrize(
    ("value", "blocking", "note", "level", "tail"),
    [
        (2.0, False, "", Level.WARN, "is above the fail tier 1 (non-blocking)"),
        (2.0, False, "known", Level.WARN, "is above the fail tier 1 (non-blocking: known)"),
        (
            2.0,
            True,
            "known",
            Level.FAIL,
            "is above the fail tier 1",
        ),  # the note explains exceptions only
        (0.7, False, "known", Level.WARN, "is above the warn tier 0.5 (known)"),
        (0.7, True, "known", Level.WARN, "is above the warn tier 0.5"),
    ],
)
def test_non_blocking_fail_only_warns_and_says_so(
    value: float, blocking: bool, note: str, level: Level, tail: str
) -> None:
    f = gate.tier_finding(
        Tier(warn=0.5, fail=1.0),
        value,
        suite="s",
        output="y",
        criterion="m",
        blocking=blocking,
        note=note,
    )
    assert f is not None and f.level is level
    assert f.message == f"output 'y': m {value:g} {tail}"


def test_tier_finding_blocks_by_default() -> None:
    f = gate.tier_finding(Tier(fail=1.0), 2.0, suite="s", output="y", criterion="m")
    assert (
        f is not None
        and f.level is Level.FAIL
        and f.message == "output 'y': m 2 is above the fail tier 1"
    )


def test_judge_series_findings_carry_suite_output_and_note() -> None:
    tol = Tolerance(
        chunk=Tier(warn=0.5, fail=1.0),
        p95=Tier(fail=0.8),
        pass_rate=Tier(warn=0.95, fail=0.9, higher_is_worse=False),
        blocking=False,
        note="accepted",
    )
    values = [2.0] * 3
    found = judge_series(values, ["s#0", "s#1", "s#2"], tol, suite="closed_loop", output="z")
    assert [(f.suite, f.output, f.level) for f in found] == [("closed_loop", "z", Level.WARN)] * 3
    assert all(f.message.endswith("(non-blocking: accepted)") for f in found)
    assert [f.criterion for f in found] == [
        "max_abs",
        "p95 over chunks of max_abs",
        "pass rate (chunks with max_abs <= 0.5)",
    ]
    assert found[0].chunk == "s#0" and found[1].chunk is None


def test_judge_series_blocking_findings_fail_without_the_note() -> None:
    tol = Tolerance(
        chunk=Tier(warn=0.5, fail=1.0),
        p95=Tier(fail=0.8),
        pass_rate=Tier(warn=0.95, fail=0.9, higher_is_worse=False),
        note="accepted",
    )
    found = judge_series([2.0, 2.0], ["s#0", "s#1"], tol, suite="functional", output="z")
    assert [f.level for f in found] == [Level.FAIL] * 3
    assert not any("accepted" in f.message for f in found)


def test_judge_series_worst_chunk_and_exact_p95() -> None:
    tol = Tolerance(chunk=Tier(fail=1.0), p95=Tier(fail=0.5))
    values = [i / 100 for i in range(101)]  # p95 = 0.95, p96 = 0.96
    chunks = [f"s#{i}" for i in range(101)]
    found = judge_series(values, chunks, tol, suite="functional", output="y")
    assert [(f.criterion, f.value) for f in found] == [
        ("p95 over chunks of max_abs", pytest.approx(0.95, abs=1e-12))
    ]
    worst = judge_series(
        [2.0, math.inf, 3.0, math.nan], chunks[:4], tol, suite="functional", output="y"
    )[0]
    assert (
        worst.chunk == "s#1" and worst.value == math.inf
    )  # the first non-finite chunk, NaN counting as inf


def test_pass_rate_needs_a_chunk_tier() -> None:
    tol = Tolerance(p95=Tier(fail=5.0), pass_rate=Tier(fail=0.9, higher_is_worse=False))
    assert tol.within is None
    assert judge_series([0.5, 2.0], ["s#0", "s#1"], tol, suite="functional", output="y") == []


# -- invariants -------------------------------------------------------------------------------------


def _inv(check: str, **kw: float) -> object:
    from pytest_trtparity.contract.model import Invariant

    return Invariant(output="y", check=check, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inv", "value", "why"),
    [
        (("equals", {"value": 1}), np.int64([1, 1, 2]), "got 2 at index (2,) (1 of 3 elements)"),
        (("equals", {"value": 0}), np.float32([0.0, -0.0]), None),
        (
            ("equals", {"value": 1}),
            np.float32([[1.0, 0.0], [0.0, 1.0]]),
            "got 0.0 at index (0, 1) (2 of 4 elements)",
        ),
        (("equals", {"value": 0}), np.float32([np.nan]), "got nan at index (0,) (1 of 1 elements)"),
        (("dim_equals", {"axis": -1, "value": 1}), np.zeros((3, 1)), None),
        (("dim_equals", {"axis": -1, "value": 1}), np.zeros((3, 2)), "shape [3, 2]: axis -1 is 2"),
        (("dim_equals", {"axis": 0, "value": 3}), np.zeros((3, 2)), None),
        (("dim_equals", {"axis": 1, "value": 3}), np.zeros((3, 2)), "shape [3, 2]: axis 1 is 2"),
        (("dim_equals", {"axis": 2, "value": 1}), np.zeros((3, 2)), "shape [3, 2] has no axis 2"),
        (("dim_equals", {"axis": -3, "value": 1}), np.zeros((3, 2)), "shape [3, 2] has no axis -3"),
        (("dim_equals", {"axis": -2, "value": 3}), np.zeros((3, 2)), None),
        (("dim_equals", {"axis": 0, "value": 0}), np.zeros((0, 2)), None),
        (
            ("finite", {}),
            np.float32([1.0, np.inf, np.nan]),
            "got inf at index (1,) (2 of 3 elements)",
        ),
        (("finite", {}), np.float32([1.0, -2.0]), None),
        (("finite", {}), np.zeros((0,), np.float32), None),
        (("in_range", {"min": 0.0, "max": 1.0}), np.float32([0.0, 1.0, 0.5]), None),
        (
            ("in_range", {"min": 0.0, "max": 1.0}),
            np.float32([0.5, 1.5]),
            "got 1.5 at index (1,) (1 of 2 elements)",
        ),
        (
            ("in_range", {"min": 0.0, "max": 1.0}),
            np.float32([-0.5, 0.5]),
            "got -0.5 at index (0,) (1 of 2 elements)",
        ),
        (
            ("in_range", {"min": 0.0, "max": 1.0}),
            np.float32([np.nan]),
            "got nan at index (0,) (1 of 1 elements)",
        ),
        (
            ("in_range", {"min": 0.0}),
            np.float32([1e30, -1.0]),
            "got -1.0 at index (1,) (1 of 2 elements)",
        ),
        (
            ("in_range", {"max": 0.0}),
            np.float32([-1e30, 1.0]),
            "got 1.0 at index (1,) (1 of 2 elements)",
        ),
        (("in_range", {"max": 1.0}), np.float32(2.0), "got 2.0 at index () (1 of 1 elements)"),
        (("in_range", {"min": 0.0, "max": 1.0}), np.zeros((0,), np.float32), None),
    ],
)
def test_invariant_violations_name_the_first_bad_element(
    inv: tuple[str, dict[str, float]], value: np.ndarray, why: str | None
) -> None:
    from pytest_trtparity.contract.invariants import violation

    check, kw = inv
    assert violation(_inv(check, **kw), value) == why  # type: ignore[arg-type]


def test_equals_without_a_value_means_zero() -> None:
    from pytest_trtparity.contract.invariants import violation

    assert violation(_inv("equals"), np.zeros(3)) is None  # type: ignore[arg-type]
    assert violation(_inv("equals"), np.ones(1)) == "got 1.0 at index (0,) (1 of 1 elements)"  # type: ignore[arg-type]


# -- findings travel as JSON (xdist workers, summary.json) --------------------------------------------


@pytest.mark.parametrize("value", [0.25, math.nan, math.inf, -math.inf, None])
def test_finding_json_round_trip(value: float | None) -> None:
    f = gate.Finding(
        Level.WARN,
        "functional",
        "y",
        "max_abs",
        "output 'y': ...",
        value=value,
        limit=0.5,
        chunk="s#1",
    )
    raw = f.to_json()
    assert raw == {
        "level": "warn",
        "suite": "functional",
        "output": "y",
        "criterion": "max_abs",
        "value": {0.25: 0.25, math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
        if value is not None and not math.isnan(value)
        else ("NaN" if value is not None else None),
        "limit": 0.5,
        "chunk": "s#1",
        "message": "output 'y': ...",
    }
    import json

    back = gate.Finding.from_json(json.loads(json.dumps(raw)))
    assert (
        back.level,
        back.suite,
        back.output,
        back.criterion,
        back.message,
        back.limit,
        back.chunk,
    ) == (f.level, f.suite, f.output, f.criterion, f.message, f.limit, f.chunk)
    if value is None:
        assert back.value is None
    elif math.isnan(value):
        assert back.value is not None and math.isnan(back.value)
    else:
        assert back.value == value  # infinities travel as "Infinity" / "-Infinity" and come back


def test_finding_from_json_without_optional_fields() -> None:
    back = gate.Finding.from_json(
        {"level": "fail", "suite": "s", "output": "o", "criterion": "c", "message": "m"}
    )
    assert back == gate.Finding(Level.FAIL, "s", "o", "c", "m")
    assert (
        gate.Finding.from_json(
            {
                "level": "PASS",
                "suite": "s",
                "output": "o",
                "criterion": "c",
                "message": "m",
                "value": 3,
            }
        ).value
        == 3.0
    )


def test_an_integer_reference_against_a_float_output_is_not_truncated() -> None:
    """compare() checks the output's dtype, not the reference's: a reference read as int64 for a
    float32 output must be compared as numbers, not by casting the output to an integer."""
    c = cmp(np.int64([1, 2]), np.float32([1.5, 2.0]), dtype="float32")
    assert c.metrics["max_abs"] == 0.5


def test_non_blocking_without_a_note_says_only_non_blocking() -> None:
    f = gate.tier_finding(
        Tier(warn=0.5, fail=1.0), 2.0, suite="s", output="y", criterion="m", blocking=False
    )
    assert f is not None and f.message == "output 'y': m 2 is above the fail tier 1 (non-blocking)"
    w = gate.tier_finding(
        Tier(warn=0.5, fail=1.0), 0.7, suite="s", output="y", criterion="m", blocking=False
    )
    assert w is not None and w.message == "output 'y': m 0.7 is above the warn tier 0.5"


def test_percentile_interpolates_in_float64() -> None:
    """float32 inputs (a metric series straight from numpy) are widened before interpolating."""
    values = [np.float32(0.1), np.float32(0.7)]
    assert gate.percentile(values, 95) == float(
        np.float64(values[0]) + 0.95 * (np.float64(values[1]) - np.float64(values[0]))
    )
    assert math.isnan(gate.percentile([], 95)) and math.isnan(gate.pass_rate([], 1.0))


def test_dim_equals_needs_an_axis_and_a_value() -> None:
    from pytest_trtparity.contract.invariants import violation

    for kw in ({"axis": 0}, {"value": 1.0}):
        with pytest.raises(AssertionError):
            violation(_inv("dim_equals", **kw), np.zeros((1, 2)))  # type: ignore[arg-type]
