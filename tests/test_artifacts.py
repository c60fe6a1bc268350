"""summary.json, the stability plots and report.md: written on every run, passing, failing or broken."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.artifacts import plots, report
from pytest_trtparity.artifacts.model import RunView
from pytest_trtparity.artifacts.summary import build_summary, comparison, schema
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.judge.payloads import Payload
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.judge.tiers import Finding, Level

from .conftest import REPO, SILERO_CONTRACT, SILERO_REF, short_reference
from .onnx_edits import scale_output

PNG = b"\x89PNG\r\n\x1a\n"


def validate(summary: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    errors = sorted(
        Draft202012Validator(schema()).iter_errors(summary), key=lambda e: list(e.absolute_path)
    )
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def run_gate(
    pytester: pytest.Pytester, engine: Path | str, *extra: str, ref: Path = SILERO_REF
) -> tuple[Any, Path]:
    out = pytester.path / "artifacts"
    result = pytester.runpytest(
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
        *extra,
    )
    return result, out


def check_artifacts(out: Path, verdict: str) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    validate(summary)
    assert summary["verdict"] == verdict
    assert summary["artifacts"]["plots"] == {
        "output": "plots/stability-output.png",
        "stateN": "plots/stability-stateN.png",
    }
    for rel in summary["artifacts"]["plots"].values():
        assert (out / rel).read_bytes().startswith(PNG)
    text = (out / "report.md").read_text()
    assert text.startswith("# TensorRT parity sign-off: ")
    assert "(plots/stability-stateN.png)" in text
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries
    return summary


# -- every run leaves the artifacts --------------------------------------------------------------


def test_passing_run(pytester: pytest.Pytester, loop_dir: Path, silero_onnx: Path) -> None:
    result, out = run_gate(
        pytester, silero_onnx, ref=short_reference(pytester.path / "ref.jsonl", 60)
    )
    result.assert_outcomes(passed=3)
    summary = check_artifacts(out, "pass")
    assert summary["trtparity"] == "trtparity-summary/1"
    env = summary["environment"]
    assert env["backend"] == "onnxruntime" and env["device"] and env["version"]
    assert len(env["engine_sha256"]) == 64
    assert summary["thresholds"]["stateN"]["closed_loop"]["max"] == {"warn": 5e-4, "fail": 5e-3}
    comp = summary["comparison"]["stateN"]
    assert comp["functional"]["worst"] < comp["closed_loop"]["worst"] < 1e-3
    text = (out / "report.md").read_text()
    assert "# TensorRT parity sign-off: \u2705 PASS" in text
    assert (
        "\u2705 **No monotonic error growth in closed loop; error bounded, mean stable (60 chunks)**"
        in text
    )
    assert (
        "\u2796 **Performance meets targets (p95_ms warn 10, fail 21" in text
    )  # no latency suite here
    assert "latency not measured in this run" in text


def test_failing_run(pytester: pytest.Pytester, loop_dir: Path, silero_onnx: Path) -> None:
    drifting = scale_output(silero_onnx, pytester.path / "drift.onnx", "stateN", 1 + 1e-4)
    result, out = run_gate(pytester, drifting, ref=short_reference(pytester.path / "ref.jsonl", 60))
    result.assert_outcomes(passed=1, failed=2)
    summary = check_artifacts(out, "fail")
    assert summary["suites"]["closed_loop"]["verdict"] == "fail"
    text = (out / "report.md").read_text()
    assert "\u274c **No monotonic error growth in closed loop" in text
    assert "\u274c **Output errors within tolerance" in text
    assert "\u2705 **All contract assertions pass (60 chunks)**" in text
    assert "closed-loop max of max_abs" in text


def test_run_whose_reference_breaks_mid_way(
    pytester: pytest.Pytester, loop_dir: Path, silero_onnx: Path
) -> None:
    ref = short_reference(pytester.path / "ref.jsonl", 40)
    data = ref.read_bytes()
    ref.write_bytes(data[: len(data) - 500])  # the last record cut short
    result, out = run_gate(pytester, silero_onnx, ref=ref)
    result.assert_outcomes(passed=1, failed=2)
    summary = check_artifacts(out, "fail")
    for suite in ("functional", "closed_loop"):
        body = summary["suites"][suite]
        assert body["complete"] is False and body["chunks_run"] == 39 and ":41:" in body["error"]
    text = (out / "report.md").read_text()
    assert "stopped early" in text and "\u274c" in text


def test_run_whose_engine_cannot_load(pytester: pytest.Pytester, loop_dir: Path) -> None:
    result, out = run_gate(pytester, pytester.path / "missing.onnx")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    summary = json.loads((out / "summary.json").read_text())
    validate(summary)
    assert summary["verdict"] == "fail" and "missing.onnx" in summary["errors"][0]
    assert (
        (out / "plots" / "stability-output.png").read_bytes().startswith(PNG)
    )  # "no chunk measured"
    assert "missing.onnx" in (out / "report.md").read_text()


def test_a_suite_that_crashes_still_fails_the_summary(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    pytester.makepyfile(
        test_boom="""
        import pytest

        @pytest.mark.trtparity("closed_loop")
        def test_loop(trt_engine, trt_contract):
            raise RuntimeError("device lost at chunk 120")
    """
    )
    pytester.makeini("[pytest]\n")
    result, out = run_gate(pytester, silero_onnx)
    result.assert_outcomes(failed=1)
    summary = json.loads((out / "summary.json").read_text())
    validate(summary)
    assert summary["verdict"] == "fail"
    assert "device lost at chunk 120" in summary["suites"]["closed_loop"]["error"]


def test_schema_copies_are_identical_and_the_contract_stays_valid() -> None:
    ours = REPO / "pytest_trtparity" / "schemas"
    assert (ours / "summary.schema.json").read_bytes() == (
        REPO / "contracts" / "summary.schema.json"
    ).read_bytes()
    assert (ours / "contract.schema.json").read_bytes() == (
        REPO / "contracts" / "contract.schema.json"
    ).read_bytes()
    load_contract(SILERO_CONTRACT)


def test_schema_rejects_a_summary_that_lies() -> None:
    from jsonschema import Draft202012Validator

    result = SuiteResult("functional", error="reader stopped")
    summary = build_summary(
        results=[result], environment={}, inputs=_inputs(), contract_raw=None, aggregates={}
    )
    validate(summary)
    summary["suites"]["functional"]["verdict"] = "pass"  # an errored suite can never pass
    assert list(Draft202012Validator(schema()).iter_errors(summary))


# -- plots ---------------------------------------------------------------------------------------


def _view(results: list[SuiteResult], contract: Any) -> RunView:
    """The run as every renderer reads it: through the summary those results make."""
    return RunView.from_summary(
        build_summary(
            results=results,
            environment={},
            inputs=_inputs(),
            contract_raw=contract.raw,
            aggregates={},
            contract=contract,
        )
    )


def test_plot_with_zeros_nan_and_two_streams(tmp_path: Path) -> None:
    """Exact zeros go on a labelled floor, NaN chunks are shaded; the PNG is written and sane."""
    contract = load_contract(SILERO_CONTRACT)
    rng = np.random.default_rng(0)
    func, loop = SuiteResult("functional", complete=True), SuiteResult("closed_loop", complete=True)
    for stream in ("a", "b"):
        for k in range(60):
            label = f"{stream}#{k}"
            f = 0.0 if k % 7 == 0 else float(1e-6 * rng.lognormal())
            c = (
                math.nan
                if stream == "b" and 40 <= k < 45
                else 1e-6 * (1 + k / 5) * float(rng.lognormal())
            )
            func.series("stateN").add(label, {"max_abs": f})
            loop.series("stateN").add(label, {"max_abs": c})
    from pytest_trtparity.checks.closed_loop import judge_closed_loop

    judge_closed_loop(loop, contract)
    data = plots.plot_data(_view([func, loop], contract), "stateN")
    assert [line.suite for line in data.lines] == ["functional", "closed_loop"]
    assert [name for _, name in data.streams] == ["a", "b"]
    assert len(data.trends) == 1  # stream b has NaN: no trend line, its verdict fails instead
    assert {lim.label for lim in data.limits} == {"warn 0.0005", "fail 0.005"}
    png = plots.render(data)
    assert png.startswith(PNG) and len(png) > 20_000
    (tmp_path / "p.png").write_bytes(png)


def test_write_plots_replaces_stale_pictures(tmp_path: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    stale = tmp_path / "plots" / "stability-old_output.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG)
    mine = tmp_path / "plots" / "mine.png"
    mine.write_bytes(PNG)
    written = plots.write_plots(tmp_path, plots.draw(_view([], contract)))
    assert set(written) == {"output", "stateN"}
    assert not stale.exists() and mine.exists()


def test_plot_file_names_are_safe() -> None:
    assert plots.file_name("enc/out:0") == "stability-enc_out_0.png"


# -- report --------------------------------------------------------------------------------------


def _inputs() -> dict[str, Any]:
    return {
        "engine": "e.plan",
        "contract": "c.json",
        "reference": "r.jsonl",
        "mode": "both",
        "backend": None,
    }


def test_report_renders_latency_when_a_latency_suite_ran() -> None:
    contract = load_contract(SILERO_CONTRACT)
    latency = SuiteResult(
        "latency",
        complete=True,
        payload=Payload(other={"p50_ms": 4.2, "p95_ms": 25.0, "device": "H100"}),
    )
    latency.findings.append(
        Finding(
            Level.FAIL, "latency", "*", "p95_ms", "latency p95 25 ms is above the fail tier 21 ms"
        )
    )
    summary = build_summary(
        results=[latency],
        environment={},
        inputs=_inputs(),
        contract_raw=contract.raw,
        aggregates={},
        contract=contract,
    )
    validate(summary)
    text = report.render(RunView.from_summary(summary))
    assert "\u274c **Performance meets targets (p95_ms warn 10, fail 21" in text
    assert "latency: p50_ms 4.2, p95_ms 25" in text
    assert "latency p95 25 ms is above the fail tier 21 ms" in text
    assert "\u2796 **No monotonic error growth in closed loop" in text  # did not run


def test_comparison_reports_the_loop_factor() -> None:
    aggs = {
        "functional": {"o": {"metric": "max_abs", "worst": 1e-6, "p95": 5e-7, "mean": 2e-7}},
        "closed_loop": {"o": {"metric": "max_abs", "worst": 4e-6, "p95": 1e-6, "mean": 0.0}},
    }
    comp = comparison(aggs)["o"]
    assert comp["loop_factor"]["worst"] == pytest.approx(4.0)
    assert comp["loop_factor"]["mean"] == 0.0
    assert comparison(
        {"functional": {"o": {"metric": "m", "worst": 0.0, "p95": 0.0, "mean": 0.0}}}
    )["o"]["loop_factor"] == {"worst": None, "mean": None}


def _pixels_of(png: bytes, color: str) -> int:
    """Pixels of `color` inside the axes (labels sit outside them, to the right)."""
    import io

    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    image = imread(io.BytesIO(png))[:, :, :3]
    axes = image[:, : int(image.shape[1] * 0.74)]
    return int((np.abs(axes - np.array(to_rgb(color))).max(axis=2) < 0.05).sum())


def test_a_one_chunk_reference_is_drawn_as_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = load_contract(SILERO_CONTRACT)
    loop = SuiteResult("closed_loop")
    loop.series("stateN").add("s#0", {"max_abs": 3e-6})
    loop.chunk_done("s")
    loop.finish()
    data = plots.plot_data(_view([loop], contract), "stateN")
    png = plots.render(data)
    (tmp_path / "one.png").write_bytes(png)
    assert _pixels_of(png, plots.COLORS["closed_loop"]) > 30
    monkeypatch.setattr(plots, "_isolated", lambda drawable, streams: drawable & False)
    assert _pixels_of(plots.render(data), plots.COLORS["closed_loop"]) < 5  # a line alone: empty


def test_isolated_points_are_those_no_line_can_show() -> None:
    drawable = np.array([True, False, True, True, False, True])
    assert plots._isolated(drawable, ("a",) * 6).tolist() == [
        True,
        False,
        False,
        False,
        False,
        True,
    ]
    # a stream boundary cuts the line too
    assert plots._isolated(np.array([True, True]), ("a", "b")).tolist() == [True, True]
