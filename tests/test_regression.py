"""Sign-off against a previous run, on summaries written by the gate itself (pytester on Silero).

The regressed engine scales `output` by 1 - 5e-5: every functional and closed-loop statistic stays
inside every absolute tier of the Silero contract (the gate passes it), yet its error is tens of times
the clean engine's, so only the regression check can fail it.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.signoff.regression import (
    PreviousRunError,
    compare_runs,
    load_previous,
    regression_check,
    render_markdown,
)

from .conftest import SILERO_CONTRACT, SILERO_REF, SUITES
from .onnx_edits import scale_output

#: Far above the clean engine's output error (p95 2.4e-7, worst 1.4e-6 on this reference), far below
#: the contract's output tiers (p95 warn 1e-4, chunk warn 5e-4).
REGRESSION = 1 - 5e-5  # down, so that a probability stays inside [0, 1]


def _gate(pytester: pytest.Pytester, engine: Path, name: str) -> dict[str, Any]:
    out = pytester.path / name
    result = pytester.runpytest(
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass"  # inside every absolute tier
    return summary


#: The three gate runs take a while: made once per module, by whichever test asks first.
_RUNS: dict[str, Path] = {}


@pytest.fixture
def runs(pytester: pytest.Pytester, silero_onnx: Path) -> dict[str, Path]:
    if _RUNS:
        return _RUNS
    for name in ("test_contract.py", "test_functional.py", "test_closed_loop.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    regressed = scale_output(silero_onnx, pytester.path / "regressed.onnx", "output", REGRESSION)
    _gate(pytester, silero_onnx, "released")
    _gate(pytester, silero_onnx, "clean")
    _gate(pytester, regressed, "regressed")
    _RUNS.update({k: pytester.path / k for k in ("released", "clean", "regressed")})
    return _RUNS


def test_previous_release(runs: dict[str, Path]) -> None:
    contract = load_contract(SILERO_CONTRACT)
    clean = json.loads((runs["clean"] / "summary.json").read_text())
    same = regression_check(clean, runs["released"], contract)
    assert same.result.verdict is Level.PASS, [f.message for f in same.result.findings]
    assert same.result.complete and same.rows
    assert not any(c.changed for c in same.identity)

    regressed = json.loads((runs["regressed"] / "summary.json").read_text())
    report = regression_check(regressed, runs["released"] / "summary.json", contract)
    assert report.result.verdict is Level.FAIL
    fails = report.result.failures()
    assert {f.output for f in fails} == {"output"}, [f.message for f in fails]
    worst = max(fails, key=lambda f: f.value or 0)
    assert worst.value is not None and worst.value > 10
    assert "the previous release's" in worst.message and "above the fail tier 10x" in worst.message
    sha = next(c for c in report.identity if c.key == "engine_sha256")
    assert sha.changed
    text = "\n".join(render_markdown(report))
    assert "engine sha256 (changed)" in text and "| functional | output | max_abs p95 |" in text


def test_refusals(runs: dict[str, Path], tmp_path: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    good, _ = load_previous(runs["clean"])
    with pytest.raises(PreviousRunError, match=r"summary\.json: previous run's summary not found"):
        load_previous(tmp_path)
    bad = tmp_path / "bad" / "summary.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(PreviousRunError, match="unreadable"):
        load_previous(bad)
    running = {**good, "status": "in_progress", "verdict": "running"}
    bad.write_text(json.dumps(running))
    with pytest.raises(PreviousRunError, match="field 'status' is 'in_progress'"):
        load_previous(bad)
    other = copy.deepcopy(good)
    other["thresholds"] = {"logits": other["thresholds"]["output"]}
    with pytest.raises(PreviousRunError, match="field 'thresholds' judges outputs"):
        compare_runs(good, other, contract, previous_path=bad)
    named = tmp_path / "other.contract.json"
    named.write_text(json.dumps({**json.loads(SILERO_CONTRACT.read_text()), "model": "other"}))
    renamed = {**good, "inputs": {**good["inputs"], "contract": str(named)}}
    with pytest.raises(PreviousRunError, match="names model 'other'"):
        compare_runs(good, renamed, contract, previous_path=bad)


def _with_latency(summary: dict[str, Any], p95: float, outcome: str) -> dict[str, Any]:
    out = copy.deepcopy(summary)
    out["suites"]["latency"] = {
        "extra": {"p50_ms": p95 / 2, "p95_ms": p95, "stability": {"outcome": outcome}}
    }
    return out


def test_latency_growth_judged_only_when_stable(runs: dict[str, Path]) -> None:
    contract = load_contract(SILERO_CONTRACT)
    base, _ = load_previous(runs["clean"])
    prev = _with_latency(base, 1.0, "stable")
    slow = compare_runs(_with_latency(base, 2.0, "stable"), prev, contract)
    assert [f.criterion for f in slow.result.failures()] == [
        "latency p50_ms growth",
        "latency p95_ms growth",
    ]
    assert slow.result.failures()[1].message == (
        "latency p95_ms 2 is 2x the previous release's 1, above the fail tier 1.5x"
    )
    unstable = compare_runs(_with_latency(base, 2.0, "unstable"), prev, contract)
    assert unstable.result.verdict is Level.PASS
    row = next(r for r in unstable.rows if r.statistic == "p95_ms")
    assert not row.judged and "unstable" in row.note
    a_bit = compare_runs(_with_latency(base, 1.3, "stable"), prev, contract)
    assert a_bit.result.verdict is Level.WARN
