"""The renderers' one input (RunView), the one JSON float encoder and the one number formatter."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.artifacts import plots, report, terminal
from pytest_trtparity.artifacts.model import RunView
from pytest_trtparity.artifacts.summary import build_summary
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.util import fmt, jsonfloat

from .conftest import SILERO_CONTRACT

INPUTS = {"engine": "e", "contract": None, "reference": None, "mode": "auto", "backend": None}


def _run(results: list[SuiteResult], environment: dict[str, Any] | None = None) -> RunView:
    summary = build_summary(
        results=results,
        environment=environment or {},
        inputs=INPUTS,
        contract_raw=None,
        aggregates={},
    )
    return RunView.from_summary(json.loads(json.dumps(summary, allow_nan=False)))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.0, -1.5e-300, 3.0])
def test_json_floats_round_trip_through_standard_json(value: float) -> None:
    text = json.dumps(jsonfloat.clean({"v": [value]}), allow_nan=False)  # raises on bare NaN
    back = jsonfloat.decode(json.loads(text)["v"][0])
    assert back is not None
    assert (math.isnan(back) and math.isnan(value)) or back == value


def test_json_float_spelling_and_what_is_not_a_number() -> None:
    assert jsonfloat.clean([math.nan, math.inf, -math.inf]) == ["NaN", "Infinity", "-Infinity"]
    assert jsonfloat.decode(True) is None and jsonfloat.decode("nan") is None
    assert math.isnan(jsonfloat.decode_number("garbage"))


def test_each_surface_keeps_its_number_style() -> None:
    assert (fmt.cell(math.nan), fmt.short(math.nan), fmt.prop(math.nan)) == ("NaN", "nan", "NaN")
    assert (fmt.cell(None), fmt.short(None), fmt.cell(True)) == ("-", "-", "true")
    assert fmt.cell(0.000123456) == "0.000123" and fmt.prop(0.000123456) == "0.000123456"
    assert (fmt.ratio(4.0), fmt.ratio_short(4.0), fmt.ratio_short(None)) == ("4\u00d7", "4x", "-")
    assert fmt.pair(0.0010000001, 0.001) == ("0.0010000001", "0.001")
    assert (fmt.ms(123.4), fmt.ms(0.1234), fmt.nbytes(3 << 20)) == ("123", "0.123", "3.0 MiB")
    assert fmt.signed(1.9e-07) == "+1.9e-07"


def _latency(outcome: str, verdict_warn: bool = False) -> SuiteResult:
    from pytest_trtparity.judge.payloads import Payload
    from pytest_trtparity.judge.tiers import Finding, Level

    result = SuiteResult(
        "latency",
        complete=True,
        chunks_run=300,
        payload=Payload(
            other={
                "p95_ms": 0.2,
                "stability": {"outcome": outcome},
                "inconclusive": ["p95_ms 0.2 ms: inconclusive, not judged"]
                if outcome == "inconclusive"
                else [],
            }
        ),
    )
    if verdict_warn:
        result.findings.append(Finding(Level.WARN, "latency", "*", "p95_ms", "p95 slow"))
    return result


def test_an_inconclusive_latency_is_not_called_pass() -> None:
    run = _run([_latency("inconclusive")])
    assert "latency: inconclusive (300 chunks)" in terminal.summary_lines(run, None)
    page = report.render(run)
    assert "inconclusive, not judged: p95_ms 0.2 ms: inconclusive, not judged" in page
    warned = _run([_latency("inconclusive", verdict_warn=True)])
    assert "latency: warn, inconclusive (300 chunks)" in terminal.summary_lines(warned, None)


def test_a_stable_latency_stays_pass() -> None:
    run = _run([_latency("stable")])
    assert "latency: pass (300 chunks)" in terminal.summary_lines(run, None)
    assert "inconclusive" not in report.render(run)


def test_environment_shows_numerics_and_clocks_readably() -> None:
    env = {
        "backend": "torch",
        "tf32": False,
        "tf32_ops": {"matmul": "ieee", "cudnn_conv": "tf32"},
        "cudnn": "9.10.2",
        "cublas": "12.8.4",
        "gpu_clocks": {
            "sm_mhz": 345,
            "mem_mhz": 3201,
            "sm_max_mhz": 1980,
            "mem_max_mhz": 3201,
            "source": "nvml",
        },
    }
    rows = report.environment_lines(_run([_latency("stable")], env))
    for row in (
        "| tf32 | `false` |",
        "| tf32_ops | `matmul ieee, cudnn_conv tf32` |",
        "| cudnn | `9.10.2` |",
        "| cublas | `12.8.4` |",
        "| gpu_clocks | `SM 345 MHz (max 1980), memory 3201 MHz (max 3201), from nvml` |",
    ):
        assert row in rows
    assert rows.index("| tf32 | `false` |") < rows.index(
        "| gpu_clocks | `SM 345 MHz (max 1980), memory 3201 MHz (max 3201), from nvml` |"
    )


def test_each_plot_is_drawn_once_per_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = load_contract(SILERO_CONTRACT)
    loop = SuiteResult("closed_loop")
    for k in range(30):
        loop.series("stateN").add(f"s#{k}", {"max_abs": 1e-6 * (k + 1)})
        loop.series("output").add(f"s#{k}", {"max_abs": 1e-7})
        loop.chunk_done("s")
    loop.finish()
    summary = build_summary(
        results=[loop],
        environment={},
        inputs=INPUTS,
        contract_raw=contract.raw,
        aggregates={},
        contract=contract,
    )
    drawn: list[str] = []
    real = plots.render
    monkeypatch.setattr(plots, "render", lambda data: drawn.append(data.output) or real(data))
    cache: dict[str, bytes] = {}
    first = plots.draw(RunView.from_summary(summary), (), cache)
    again = plots.draw(RunView.from_summary(summary), (), cache)
    assert sorted(drawn) == ["output", "stateN"]  # the second call reused both pictures
    assert {o: d.png for o, d in first.items()} == {o: d.png for o, d in again.items()}
    plots.draw(RunView.from_summary(summary), ("a new note",), cache)
    assert len(drawn) == 4  # changed content: drawn again
    written = plots.write_plots(tmp_path, first)
    assert (tmp_path / written["stateN"]).read_bytes() == first["stateN"].png


def test_channels_do_not_import_the_session() -> None:
    import ast

    import pytest_trtparity.artifacts.channels as channels

    tree = ast.parse(Path(channels.__file__).read_text())
    names = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [n for n in names if n.endswith("session")]
