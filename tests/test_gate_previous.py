"""--trt-previous through the gate as users run it (pytester on the bundled suites and Silero).

The regression check joins the run's results: the same engine against its own earlier run passes; an
engine whose `output` is scaled by 1 - 5e-5 (inside every absolute tier, tens of times the clean
error) fails only through it; a previous run that cannot be used fails the gate with one sentence.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.artifacts.summary import schema

from .conftest import SILERO_CONTRACT, SILERO_REF
from .onnx_edits import scale_output
from .test_regression import REGRESSION

_RELEASED: dict[str, Path] = {}


def _gate(
    pytester: pytest.Pytester, engine: Path, name: str, *extra: str
) -> tuple[pytest.RunResult, dict[str, Any], Path]:
    out = pytester.path / name
    result = pytester.runpytest(
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
        *extra,
    )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(summary, schema())
    return result, summary, out


@pytest.fixture
def released(loop_dir: Path, pytester: pytest.Pytester, silero_onnx: Path) -> Path:
    """A clean run's artifacts, as the last release's CI left them (made once per module)."""
    if "released" not in _RELEASED:
        keep = Path(str(pytester.path)).parent / "released-artifacts"
        result, summary, out = _gate(pytester, silero_onnx, "released")
        assert result.ret == pytest.ExitCode.OK and summary["verdict"] == "pass"
        assert summary["not_run"]["regression"].startswith("no --trt-previous given")
        out.rename(keep)
        _RELEASED["released"] = keep
    return _RELEASED["released"]


def test_the_same_engine_against_its_own_previous_run_passes(
    released: Path, pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    result, summary, out = _gate(pytester, silero_onnx, "now", f"--trt-previous={released}")
    assert result.ret == pytest.ExitCode.OK and summary["verdict"] == "pass"
    regression = summary["suites"]["regression"]
    assert regression["verdict"] == "pass" and regression["complete"]
    assert regression["extra"]["rows"] and "regression" not in summary["not_run"]
    report = (out / "report.md").read_text()
    assert "## Against the previous release" in report and "| identity | previous |" in report


def test_a_regressed_engine_fails_only_through_the_regression_check(
    released: Path, pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    engine = scale_output(silero_onnx, pytester.path / "regressed.onnx", "output", REGRESSION)
    result, summary, out = _gate(pytester, engine, "now", f"--trt-previous={released}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED and summary["verdict"] == "fail"
    for suite in ("contract", "functional", "closed_loop"):
        assert summary["suites"][suite]["verdict"] == "pass", suite  # inside every absolute tier
    failed = [f["message"] for f in summary["suites"]["regression"]["findings"]]
    growth = r"output 'output': \w+ max_abs \w+ \S+ is (\d+)x the previous release's"
    ratios = [int(m.group(1)) for m in map(re.compile(growth).match, failed) if m]
    assert ratios and max(ratios) >= 10, failed  # the contract's fail tier for growth is 10x
    assert "diagnosis" not in summary  # no output is over its own fail tier: nothing to localize
    assert "## Against the previous release" in (out / "report.md").read_text()
    assert any("the previous release's" in line for line in result.outlines)


@pytest.mark.parametrize("case", ["missing", "in_progress", "other_contract"])
def test_a_previous_run_that_cannot_be_used_fails_with_a_sentence(
    released: Path, pytester: pytest.Pytester, silero_onnx: Path, case: str
) -> None:
    previous = pytester.path / f"previous-{case}"
    previous.mkdir()
    raw = json.loads((released / "summary.json").read_text())
    expected = {
        "missing": "previous run's summary not found",
        "in_progress": "field 'status' is 'in_progress'",
        "other_contract": "field 'thresholds' judges outputs",
    }[case]
    if case == "in_progress":
        raw["status"] = "in_progress"
    if case == "other_contract":
        raw["thresholds"] = {"logits": raw["thresholds"]["output"]}
    if case != "missing":
        (previous / "summary.json").write_text(json.dumps(raw))
    result, summary, out = _gate(pytester, silero_onnx, "now", f"--trt-previous={previous}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED and summary["verdict"] == "fail"
    assert summary["status"] == "complete" and (out / "report.md").is_file()
    error = summary["suites"]["regression"]["error"]
    assert error.startswith(str(previous / "summary.json")) and expected in error
    assert summary["suites"]["functional"]["verdict"] == "pass"
    assert any(expected in line for line in result.outlines)
    assert "Traceback" not in result.stdout.str()
