"""The profile sweep: corners of every profile, inputs from the reference or the contract's ranges,
ONNX Runtime on the same ONNX as the reference. Runs for real on the CPU (ONNX Runtime as engine)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend
from pytest_trtparity.checks.profiles import gather_feeds, run_sweep, sweep_points
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import BackendError
from pytest_trtparity.reference.reader import ReferenceReader
from pytest_trtparity.trt.profiles import plan_profiles

from .conftest import SILERO_CONTRACT, SILERO_REF
from .test_trt_backend_logic import fake_contract

CONTRACT = load_contract(SILERO_CONTRACT)


class RightOnlyAtOpt(OnnxRuntimeBackend):
    """An engine tuned for batch 4 that is off everywhere else (NVIDIA/TensorRT#4450's shape)."""

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super()._infer(feeds)
        if feeds["input"].shape[0] != 4:
            out["output"] = out["output"] * np.float32(0.9)
        return out


class Pinned(OnnxRuntimeBackend):
    profile_names: ClassVar[list[str]] = ["stream", "batched"]
    pins: ClassVar[list[str | None]] = []

    def pin_profile(self, name: str | None) -> None:
        self.pins.append(name)


def test_corners_with_equal_shapes_run_once() -> None:
    points = sweep_points(fake_contract(), plan_profiles(fake_contract()))
    assert [p.label for p in points] == ["one@min/opt/max", "many@min", "many@opt", "many@max"]
    assert points[3].shapes == {"x": (8, 4), "state": (2, 8, 3)}


def test_inputs_from_the_reference_where_it_has_them_else_from_ranges() -> None:
    points = sweep_points(CONTRACT, plan_profiles(CONTRACT))
    feeds = gather_feeds(CONTRACT, points, ReferenceReader(SILERO_REF), seed=3)
    assert feeds["stream@min/opt/max"].sources == {
        k: "reference chunk default#0" for k in ("input", "state", "sr")
    }
    big = feeds["batched@max"]
    assert (
        big.sources["input"] == "uniform in [-1, 1]"
        and big.sources["sr"] == "reference chunk default#0"
    )
    assert big.feeds["input"].shape == (8, 576) and big.feeds["input"].dtype == np.float32
    assert big.feeds["input"].min() >= -1 and big.feeds["input"].max() <= 1
    again = gather_feeds(CONTRACT, points, ReferenceReader(SILERO_REF), seed=3)
    np.testing.assert_array_equal(
        again["batched@max"].feeds["state"], big.feeds["state"]
    )  # reproducible
    no_ref = gather_feeds(CONTRACT, points, (), seed=3)
    assert no_ref["stream@min/opt/max"].sources["sr"] == "integers in [16000, 16000]"
    assert int(no_ref["stream@min/opt/max"].feeds["sr"]) == 16000


def test_onnxruntime_against_itself_passes_every_corner(silero_onnx: Path) -> None:
    with OnnxRuntimeBackend(silero_onnx) as engine, OnnxRuntimeBackend(silero_onnx) as reference:
        result = run_sweep(engine, reference, CONTRACT, ReferenceReader(SILERO_REF))
    assert result.complete and result.error is None and result.findings == []
    assert result.chunks_run == 4 and result.streams == ["stream", "batched"]
    assert result.outputs["output"].series("max_abs") == [0.0] * 4


def test_an_engine_right_only_at_opt_fails_at_the_other_corners(silero_onnx: Path) -> None:
    with RightOnlyAtOpt(silero_onnx) as engine, OnnxRuntimeBackend(silero_onnx) as reference:
        result = run_sweep(engine, reference, CONTRACT, ReferenceReader(SILERO_REF))
    series = dict(
        zip(
            result.outputs["output"].chunks, result.outputs["output"].series("max_abs"), strict=True
        )
    )
    assert series["batched@opt"] == 0.0
    assert all(v > 1e-3 for k, v in series.items() if k != "batched@opt")
    [finding] = [f for f in result.failures() if f.output == "output"]
    assert finding.criterion == "max_abs" and finding.chunk != "batched@opt"
    assert (
        finding.message.startswith("output 'output': max_abs ")
        and "is above the fail tier 0.001" in finding.message
    )


def test_half_precision_model_fails_the_sweep(silero_onnx: Path, silero_half_onnx: Path) -> None:
    with (
        OnnxRuntimeBackend(silero_half_onnx) as engine,
        OnnxRuntimeBackend(silero_onnx) as reference,
    ):
        result = run_sweep(engine, reference, CONTRACT, ())
    assert result.complete and {f.output for f in result.failures()} == {"output", "stateN"}


def test_each_corner_runs_under_its_own_profile(silero_onnx: Path) -> None:
    Pinned.pins = []
    with Pinned(silero_onnx) as engine, OnnxRuntimeBackend(silero_onnx) as reference:
        run_sweep(engine, reference, CONTRACT, ())
    assert Pinned.pins == ["stream", "batched", "batched", "batched", None]


def test_a_corner_that_cannot_run_ends_the_sweep_incomplete(silero_onnx: Path) -> None:
    class Breaks(OnnxRuntimeBackend):
        def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            if feeds["input"].shape[0] == 8:
                raise BackendError("out of profile")
            return super()._infer(feeds)

    with Breaks(silero_onnx) as engine, OnnxRuntimeBackend(silero_onnx) as reference:
        result = run_sweep(engine, reference, CONTRACT, ())
    assert not result.complete and result.error == "at batched@max: out of profile"
    assert result.chunks_run == 3 and len(result.outputs["output"].chunks) == 3


def test_engine_without_the_contract_profiles_is_an_error(silero_onnx: Path) -> None:
    class Other(OnnxRuntimeBackend):
        profile_names: ClassVar[list[str]] = ["profile 0"]

    with Other(silero_onnx) as engine, OnnxRuntimeBackend(silero_onnx) as reference:
        result = run_sweep(engine, reference, CONTRACT, ())
    assert (
        not result.complete
        and "none of the contract's profiles (stream, batched) is in the engine"
        in str(result.error)
    )


def test_suite_runs_with_trt_onnx_and_skips_without(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path, silero_half_onnx: Path
) -> None:
    base = [
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        "-p",
        "no:cacheprovider",
        f"--trt-artifacts={pytester.path / 'a'}",
        "test_profiles.py",
        "-rs",
    ]
    result = pytester.runpytest(f"--trt-engine={silero_onnx}", *base)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*profile sweep needs the ONNX the engine came from: pass --trt-onnx PATH*"]
    )
    result = pytester.runpytest(f"--trt-engine={silero_onnx}", f"--trt-onnx={silero_onnx}", *base)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["profiles: pass (4 chunks)"])
    result = pytester.runpytest(
        f"--trt-engine={silero_half_onnx}", f"--trt-onnx={silero_onnx}", *base
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*output 'output': max_abs * on chunk * is above the fail tier 0.001*"]
    )
    assert result.ret == 1


def test_inputs_of_one_point_come_from_one_chunk() -> None:
    """A chunk's `length` belongs to its own audio: mixing chunks would fake a failure."""
    from pytest_trtparity.checks.profiles import SweepPoint
    from pytest_trtparity.reference.reader import Record

    contract = load_contract(SILERO_CONTRACT)
    first = Record(
        "s",
        0,
        {"input": np.zeros((1, 576), np.float32), "state": np.ones((2, 1, 128), np.float32)},
        {},
    )
    second = Record(
        "s",
        1,
        {"input": np.full((1, 576), 2, np.float32), "state": np.full((2, 1, 128), 3, np.float32)},
        {},
    )
    odd = Record(
        "s",
        2,
        {"input": np.zeros((1, 512), np.float32), "state": np.full((2, 1, 128), 9, np.float32)},
        {},
    )
    point = SweepPoint("stream", ("min",), {"input": (1, 576), "state": (2, 1, 128)})
    feeds = gather_feeds(contract, [point], [odd, first, second])[point.label]
    assert feeds.sources == {"input": "reference chunk s#0", "state": "reference chunk s#0"}
    assert feeds.feeds["state"][0, 0, 0] == 1.0
