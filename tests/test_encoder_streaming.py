"""The streaming-encoder workflow of the integration checklist, end to end on the small encoder.

The real contract (parakeet-tdt-0.6b-v3's streaming encoder) is checked for what the checklist says;
the small encoder under references/encoder_streaming/ has the same bindings, and the gate runs on it
with ONNX Runtime as users run it. Two committed exports carry the classic cache-handling bugs, and
the gate must name them. Nothing here imports torch: the ONNX files and references are committed.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend
from pytest_trtparity.contract.bindings import engine_problems, record_feeds
from pytest_trtparity.contract.model import Contract, load_contract
from pytest_trtparity.errors import BindingError
from pytest_trtparity.reference.reader import Record, ReferenceReader

from .conftest import REPO, SUITES

ENCODER = REPO / "references" / "encoder_streaming"
SMALL_ONNX = ENCODER / "encoder_streaming_small.onnx"
BUGGY_CACHE_LEN = ENCODER / "buggy_cache_len.onnx"
BUGGY_TIME_SHIFT = ENCODER / "buggy_time_shift.onnx"
REAL_CONTRACT = REPO / "contracts" / "encoder_streaming.contract.json"
SMALL_CONTRACT = REPO / "contracts" / "encoder_streaming_small.contract.json"
REF_50 = REPO / "references" / "encoder_streaming_small_50.jsonl"
REF_300 = REPO / "references" / "encoder_streaming_small_300.jsonl"

INPUTS = (
    "audio_signal",
    "length",
    "cache_last_channel",
    "cache_last_time",
    "cache_last_channel_len",
)
OUTPUTS = (
    "encoder_output",
    "encoded_lengths",
    "cache_last_channel_out",
    "cache_last_time_out",
    "cache_last_channel_len_out",
)
STATE = {
    "cache_last_channel_out": "cache_last_channel",
    "cache_last_time_out": "cache_last_time",
    "cache_last_channel_len_out": "cache_last_channel_len",
}
FIRST, LATER = 592, 584

needs_closed_loop = pytest.mark.skipif(
    importlib.util.find_spec("pytest_trtparity.checks.closed_loop") is None
    or not (SUITES / "test_closed_loop.py").is_file(),
    reason="closed-loop mode (pytest_trtparity/checks/closed_loop.py, suites/test_closed_loop.py) is not in this checkout",
)


@pytest.fixture(scope="module")
def real() -> Contract:
    return load_contract(REAL_CONTRACT)


@pytest.fixture(scope="module")
def small() -> Contract:
    return load_contract(SMALL_CONTRACT)


def records(path: Path, n: int | None = None) -> Iterator[Record]:
    return islice(iter(ReferenceReader(path)), n)


# -- the contracts ------------------------------------------------------------------------------


def test_real_contract_states_the_checklist(real: Contract) -> None:
    assert real.input_names == INPUTS
    assert real.output_names == OUTPUTS
    assert {t.name: (t.dtype, t.shape) for t in real.inputs} == {
        "audio_signal": ("float32", ("B", 128, "T")),
        "length": ("int64", ("B",)),
        "cache_last_channel": ("float32", (24, "B", 256, 1024)),
        "cache_last_time": ("float32", (24, "B", 1024, 4)),
        "cache_last_channel_len": ("int64", ("B",)),
    }
    audio = {name: p.shapes["audio_signal"] for name, p in real.profiles.items()}
    assert (audio["A"].min, audio["A"].opt, audio["A"].max) == ((1, 128, 592),) * 3
    assert (audio["B"].min, audio["B"].opt, audio["B"].max) == ((1, 128, 584),) * 3
    assert (audio["C"].min, audio["C"].opt, audio["C"].max) == (
        (1, 128, 584),
        (1, 128, 592),
        (8, 128, 592),
    )
    assert {p.output: p.input for p in real.state} == STATE
    checks = {(i.output, i.check, i.axis, i.value) for i in real.invariants}
    assert {
        ("encoded_lengths", "equals", None, 1.0),
        ("encoder_output", "dim_equals", -1, 1.0),
        ("cache_last_channel_len_out", "equals", None, 0.0),
    } <= checks


def test_real_contract_tolerances_and_targets(real: Contract) -> None:
    enc = real.tolerance("encoder_output")
    assert enc.chunk is not None and (enc.chunk.warn, enc.chunk.fail) == (5e-4, 1e-3)
    assert enc.p95 is not None and enc.p95.fail == 5e-4
    assert enc.pass_rate is not None and enc.pass_rate.fail == 0.8 and enc.within == 5e-4
    time = real.tolerance("cache_last_time_out")
    assert time.chunk is not None and time.chunk.fail == 0.1 and time.blocking
    exact = real.tolerance("cache_last_channel_len_out").chunk
    assert exact is not None and exact.fail == 0
    drift = real.closed_loop.for_output("encoder_output")
    assert (
        drift is not None
        and drift.max is not None
        and drift.mean is not None
        and drift.trend is not None
    )
    assert (drift.max.fail, drift.mean.fail) == (1e-3, 2e-4)
    assert real.closed_loop.chunks == 300
    assert real.latency.tiers["p50_ms"].fail == real.latency.tiers["p95_ms"].fail == 21.0
    assert real.memory.tiers["engine_bytes"].fail == 2e9


def _skeleton(shape: tuple[int | str, ...]) -> tuple[int | str | None, ...]:
    """A shape with its fixed sizes blanked: what the small contract must share with the real one."""
    return tuple(d if isinstance(d, str) else None for d in shape)


def test_small_contract_is_the_real_one_scaled_down(real: Contract, small: Contract) -> None:
    for side in ("inputs", "outputs"):
        got = [(t.name, t.dtype, _skeleton(t.shape)) for t in getattr(small, side)]
        assert got == [(t.name, t.dtype, _skeleton(t.shape)) for t in getattr(real, side)]
    assert small.state == real.state
    assert [(i.output, i.check, i.axis, i.value) for i in small.invariants] == [
        (i.output, i.check, i.axis, i.value) for i in real.invariants
    ]
    for name in OUTPUTS:
        a, b = small.tolerance(name), real.tolerance(name)
        assert (a.metric, a.chunk, a.p95, a.pass_rate, a.blocking) == (
            b.metric,
            b.chunk,
            b.p95,
            b.pass_rate,
            b.blocking,
        )
    assert small.closed_loop == real.closed_loop
    assert (small.latency, small.memory) == (real.latency, real.memory)
    assert small.profiles.keys() == real.profiles.keys()
    for name, profile in small.profiles.items():
        for point in ("min", "opt", "max"):
            s = getattr(profile.shapes["audio_signal"], point)
            r = getattr(real.profiles[name].shapes["audio_signal"], point)
            assert (s[0], s[2]) == (r[0], r[2]), (
                f"profile {name} {point}: B and T must match the real contract"
            )


# -- the committed ONNX files -------------------------------------------------------------------


@pytest.mark.parametrize(
    "onnx_file", [SMALL_ONNX, BUGGY_CACHE_LEN, BUGGY_TIME_SHIFT], ids=lambda p: p.stem
)
def test_onnx_files_are_small_and_bind_like_the_contract(small: Contract, onnx_file: Path) -> None:
    assert onnx_file.stat().st_size < 1 << 20
    with OnnxRuntimeBackend(onnx_file) as backend:
        assert list(engine_problems(small, backend.inputs, backend.outputs)) == []
        audio = backend.input_info("audio_signal")
        assert audio is not None and isinstance(audio.shape[2], str), "T must be a dynamic axis"


def test_buggy_exports_are_real_graph_changes() -> None:
    good = SMALL_ONNX.read_bytes()
    assert BUGGY_CACHE_LEN.read_bytes() != good
    assert BUGGY_TIME_SHIFT.read_bytes() != good


# -- the references -----------------------------------------------------------------------------


def test_reference_is_the_pytorch_closed_loop() -> None:
    """Chunk 0 has 592 frames and zero caches, every later one 584 frames and the previous chunk's
    cache outputs, bit for bit; the contract's assertions hold on every chunk of the reference."""
    reader = ReferenceReader(REF_300)
    previous: Record | None = None
    count = 0
    for record in reader:
        frames = record.inputs["audio_signal"].shape[2]
        assert frames == (FIRST if record.chunk_index == 0 else LATER)
        assert record.inputs["length"].tolist() == [frames]
        assert record.outputs["encoded_lengths"].tolist() == [1]
        assert record.outputs["encoder_output"].shape[-1] == 1
        assert record.outputs["cache_last_channel_len_out"].tolist() == [0]
        for out, inp in STATE.items():
            fed = record.inputs[inp]
            if previous is None:
                assert not fed.any(), f"chunk 0: {inp} must start at zero"
            else:
                np.testing.assert_array_equal(
                    fed, previous.outputs[out], err_msg=f"chunk {record.chunk_index}: {inp}"
                )
        previous = record
        count += 1
    assert count == 300
    assert reader.header is not None and reader.header.records == 300


def test_functional_reference_is_the_first_50_chunks() -> None:
    pairs = list(zip(records(REF_50), records(REF_300, 50), strict=True))
    assert len(pairs) == 50
    for a, b in pairs:
        for name in INPUTS:
            np.testing.assert_array_equal(a.inputs[name], b.inputs[name])
        for name in OUTPUTS:
            np.testing.assert_array_equal(a.outputs[name], b.outputs[name])


def test_references_stay_small_enough_to_commit() -> None:
    assert REF_50.stat().st_size < 1_500_000
    assert REF_300.stat().st_size < 6_000_000


# -- a chunk length that changes once: 592, then 584 --------------------------------------------


def test_onnxruntime_switches_chunk_length_in_closed_loop(small: Contract) -> None:
    first, second, third = records(REF_300, 3)
    with OnnxRuntimeBackend(SMALL_ONNX) as backend:
        carry = dict(zip(STATE.values(), STATE.keys(), strict=True))
        for i, record in enumerate((first, second, third)):
            feeds = record_feeds(small, record.inputs, backend.inputs, record.where)
            if i:
                for inp in carry:
                    del feeds[inp]
            got = backend.run(feeds, carry=carry if i else None)
            assert got["encoder_output"].shape == (1, 16, 1)
            for name in OUTPUTS:
                err = np.max(
                    np.abs(got[name].astype(np.float64) - record.outputs[name].astype(np.float64))
                )
                assert err <= 1e-5, (
                    f"chunk {i} (T={record.inputs['audio_signal'].shape[2]}): {name} off by {err:g}"
                )


def test_contract_check_takes_each_chunk_length_on_its_own(small: Contract) -> None:
    """T is bound per chunk, so 592 then 584 is fine; within one chunk it must agree."""
    first, second = records(REF_50, 2)
    with OnnxRuntimeBackend(SMALL_ONNX) as backend:
        engine_inputs = backend.inputs
    assert (
        record_feeds(small, first.inputs, engine_inputs, first.where)["audio_signal"].shape[2]
        == FIRST
    )
    assert (
        record_feeds(small, second.inputs, engine_inputs, second.where)["audio_signal"].shape[2]
        == LATER
    )
    mixed = dict(second.inputs, length=np.array([LATER, LATER]))
    with pytest.raises(BindingError, match=r"inputs\.length: dimension 0 \(B\) is 2 but B = 1"):
        record_feeds(small, mixed, engine_inputs, "ref.jsonl:3")


@pytest.mark.parametrize(
    "argv",
    [
        ["contract", "check", str(REAL_CONTRACT)],
        ["contract", "check", str(SMALL_CONTRACT), "--onnx", str(SMALL_ONNX)],
        ["reference", "check", str(REF_300), "--contract", str(SMALL_CONTRACT)],
    ],
    ids=["real-contract", "small-contract-onnx", "reference-300"],
)
def test_walkthrough_review_commands_succeed(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Phase 1 of docs/walkthrough-encoder.md: the 592-then-584 reference and both contracts pass."""
    from pytest_trtparity.cli import main

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out
    if argv[0] == "reference":
        assert "300 records in 1 stream(s)" in out


def _profiles() -> Any:
    spec = importlib.util.find_spec("pytest_trtparity.trt.profiles")
    if spec is None:
        pytest.skip(
            "TensorRT profile choice (pytest_trtparity/trt/profiles.py) is not in this checkout"
        )
    import pytest_trtparity.trt.profiles as profiles

    return profiles


def test_tensorrt_profile_choice_switches_once_from_a_to_b(small: Contract) -> None:
    profiles = _profiles()
    planned = profiles.plan_profiles(small, ["A", "B"])
    ranges = [p.shapes for p in planned]
    chosen = [
        profiles.choose_profile(ranges, {k: v.shape for k, v in r.inputs.items()})
        for r in records(REF_300, 6)
    ]
    assert chosen == [0, 1, 1, 1, 1, 1]


def test_tensorrt_profile_choice_with_the_unified_profile(real: Contract) -> None:
    profiles = _profiles()
    planned = profiles.plan_profiles(real)
    assert [p.name for p in planned] == ["A", "B", "C"]
    ranges = [p.shapes for p in planned]
    names = [p.name for p in planned]

    def shapes(batch: int, frames: int) -> dict[str, tuple[int, ...]]:
        return {
            "audio_signal": (batch, 128, frames),
            "length": (batch,),
            "cache_last_channel": (24, batch, 256, 1024),
            "cache_last_time": (24, batch, 1024, 4),
            "cache_last_channel_len": (batch,),
        }

    choose = profiles.choose_profile
    assert names[choose(ranges, shapes(1, 592), names=names)] == "A"
    assert names[choose(ranges, shapes(1, 584), names=names)] == "B"
    assert names[choose(ranges, shapes(4, 584), names=names)] == "C"
    assert names[choose(ranges, shapes(1, 588), names=names)] == "C"
    with pytest.raises(BindingError, match="no optimization profile admits"):
        choose(ranges, shapes(1, 600), names=names)


# -- the gate, as users run it ------------------------------------------------------------------


def _gate(
    pytester: pytest.Pytester, engine: Path, ref: Path, mode: str
) -> tuple[pytest.RunResult, dict[str, Any]]:
    """The gate on the small encoder. In functional or closed-loop mode only that suite and the
    contract suite are collected, so the verdict is theirs alone; `auto` runs every suite."""
    out = pytester.path / "artifacts"
    files = {
        "functional": ["test_contract.py", "test_functional.py"],
        "closed_loop": ["test_contract.py", "test_closed_loop.py"],
    }.get(mode, [])
    result = pytester.runpytest_subprocess(
        *files,
        f"--trt-engine={engine}",
        f"--trt-contract={SMALL_CONTRACT}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={out}",
        f"--trt-mode={mode}",
        "-p",
        "no:cacheprovider",
    )
    summary = json.loads((out / "summary.json").read_text())
    return result, summary


def _failing(summary: dict[str, Any], suite: str) -> set[tuple[str, str]]:
    findings = summary["suites"][suite]["findings"]
    return {(f["output"], f["criterion"]) for f in findings if f["level"] == "fail"}


def test_small_encoder_passes_functional_parity(pytester: pytest.Pytester, gate_dir: Path) -> None:
    result, summary = _gate(pytester, SMALL_ONNX, REF_50, "functional")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["functional: pass (50 chunks)", "*encoder_output*max_abs*100%", "verdict: PASS*"]
    )
    assert summary["verdict"] == "pass"


@needs_closed_loop
def test_small_encoder_passes_closed_loop_over_300_chunks(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    result, summary = _gate(pytester, SMALL_ONNX, REF_300, "closed_loop")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["closed_loop: pass (300 chunks)", "verdict: PASS*"])
    assert summary["suites"]["closed_loop"]["chunks_run"] == 300


def test_cache_length_bug_fails_on_the_chunk_isolation_invariant(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    result, summary = _gate(pytester, BUGGY_CACHE_LEN, REF_50, "functional")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "output 'cache_last_channel_len_out': invariant cache_last_channel_len_out == 0 "
            "(chunk-isolated contract) violated on chunk default#0: got 1 at index (0,)*",
        ]
    )
    assert {out for out, _ in _failing(summary, "functional")} == {"cache_last_channel_len_out"}


def test_time_cache_shift_fails_functional_on_the_time_cache(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    """Reference caches in, so encoder_output is right on every chunk; only the cache out is wrong."""
    result, summary = _gate(pytester, BUGGY_TIME_SHIFT, REF_50, "functional")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["output 'cache_last_time_out': max_abs * on chunk default#0 is above the fail tier 0.1"]
    )
    assert _failing(summary, "functional") == {("cache_last_time_out", "max_abs")}


@needs_closed_loop
@pytest.mark.parametrize("engine", [BUGGY_TIME_SHIFT, BUGGY_CACHE_LEN], ids=lambda p: p.stem)
def test_cache_bugs_drift_in_closed_loop(
    pytester: pytest.Pytester, gate_dir: Path, engine: Path
) -> None:
    """On its own caches the engine's encoder_output leaves the reference: the drift is named."""
    result, summary = _gate(pytester, engine, REF_300, "closed_loop")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["closed_loop parity failed: * finding(s)"])
    drift = [
        f["message"]
        for f in summary["suites"]["closed_loop"]["findings"]
        if f["level"] == "fail" and f["output"] == "encoder_output"
    ]
    assert any(
        m.startswith("output 'encoder_output': closed-loop max of max_abs ")
        and m.endswith(" is above the fail tier 0.001")
        for m in drift
    ), drift
    assert any(
        m.startswith("output 'encoder_output': closed-loop mean of max_abs ") for m in drift
    ), drift
    report = pytester.path / "artifacts" / "report.md"
    if report.is_file():  # the sign-off report refuses it too
        assert "FAIL" in report.read_text(encoding="utf-8").splitlines()[0]
    if engine == BUGGY_CACHE_LEN:
        assert ("cache_last_channel_len_out", "invariant") in _failing(summary, "closed_loop")
    if engine == BUGGY_TIME_SHIFT:  # the drift is the only thing wrong: no invariant breaks
        result.stdout.fnmatch_lines(
            ["output 'encoder_output': closed-loop max of max_abs * is above the fail tier 0.001"]
        )
        assert "invariant" not in {c for _, c in _failing(summary, "closed_loop")}


# -- the sign-off ---------------------------------------------------------------------------------


@needs_closed_loop
def test_full_gate_run_signs_off(pytester: pytest.Pytester, gate_dir: Path) -> None:
    """The walkthrough's main command: every suite in auto mode, then the sign-off report."""
    pytest.importorskip("pytest_benchmark", reason="the latency suite needs pytest-benchmark")
    result, summary = _gate(pytester, SMALL_ONNX, REF_300, "auto")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["closed_loop: pass (300 chunks)", "functional: pass (300 chunks)"])
    assert {"contract", "functional", "closed_loop", "latency"} <= set(summary["suites"])
    assert summary["suites"]["latency"]["verdict"] == "pass"
    report = pytester.path / "artifacts" / "report.md"
    if not report.is_file():
        pytest.skip("the sign-off report (report.md) is not written by this checkout's plugin")
    head = report.read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith("# TensorRT parity sign-off") and "PASS" in head, head
