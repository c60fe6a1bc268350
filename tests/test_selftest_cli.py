"""`trtparity selftest`: the catch table on a user's own engine, contract and reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trtparity.cli import main

from .conftest import SILERO_CONTRACT, SILERO_REF

#: Few timed steps: the table, not the statistics, is under test here. All 300 chunks, though: a
#: slow state drift needs a long loop to show (60 chunks miss it; the table says so).
QUICK = ("--latency-iterations", "8", "--latency-warmup", "1")


def selftest(
    engine: Path | str, *extra: str, contract: Path = SILERO_CONTRACT, ref: Path | str = SILERO_REF
) -> list[str]:
    return ["selftest", f"--engine={engine}", f"--contract={contract}", f"--ref={ref}", *extra]


def rows(out: str) -> dict[str, list[str]]:
    """fault -> the words of its table line."""
    table: dict[str, list[str]] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1] in ("yes", "NO", "n/a") and not line.startswith(" "):
            table[words[0]] = words
    return table


def test_silero_catalogue_is_caught_and_exit_zero(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path, tmp_path: Path
) -> None:
    report = tmp_path / "selftest.json"
    assert main(selftest(silero_onnx, *QUICK, "--json", str(report))) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert "clean" in table and "latency_regression" in table and "state_drift" in table
    assert {name: words[1] for name, words in table.items() if words[1] != "yes"} == {}
    assert out.splitlines()[1].split() == ["fault", "caught", "finding"]
    assert "  expected: fail max_abs on 'output' in functional saying 'above the fail tier'" in out
    assert (
        out.rstrip()
        .splitlines()[-1]
        .startswith("selftest: PASS: 16 of 16 faults caught for the right reason")
    )
    saved = json.loads(report.read_text())
    assert saved["passed"] is True
    assert [r["fault"] for r in saved["selftest"]] == list(table)
    assert all(r["caught"] is True for r in saved["selftest"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_short_loop_misses_a_slow_drift_and_says_so(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path
) -> None:
    assert (
        main(selftest(silero_onnx, "--no-latency", "--chunks", "60", "--only", "state_drift")) == 1
    )
    out = capsys.readouterr().out
    assert rows(out)["state_drift"][1] == "NO"
    assert "missing fail closed-loop * in closed_loop; first failure: no failure at all" in out


def test_non_blocking_tolerance_lets_faults_through_and_exits_one(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path, tmp_path: Path
) -> None:
    """A contract that only warns on the probability misses the faults that must fail on it."""
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["tolerances"]["output"]["blocking"] = False
    contract = tmp_path / "lenient.contract.json"
    contract.write_text(json.dumps(raw))
    code = main(
        selftest(
            silero_onnx,
            "--no-latency",
            "--only",
            "bias_above_fail,relative_noise,wrong_dtype",
            "--chunks",
            "60",
            contract=contract,
        )
    )
    out = capsys.readouterr().out
    assert code == 1
    table = rows(out)
    assert list(table) == ["clean", "bias_above_fail", "relative_noise", "wrong_dtype"]
    assert table["bias_above_fail"][1] == "NO" and table["relative_noise"][1] == "NO"
    assert (
        table["wrong_dtype"][1] == "yes"
    )  # a structural problem fails whatever the tolerance says
    assert "missing fail max_abs on 'output' in functional" in out
    assert out.rstrip().splitlines()[-1] == (
        "selftest: FAIL: missed: bias_above_fail, relative_noise "
        "(1 of 3 faults caught for the right reason, 0 n/a)"
    )


def test_a_failing_clean_engine_fails_the_selftest(
    capsys: pytest.CaptureFixture[str], silero_half_onnx: Path
) -> None:
    code = main(
        selftest(silero_half_onnx, "--no-latency", "--only", "wrong_shape", "--chunks", "40")
    )
    out = capsys.readouterr().out
    assert code == 1
    assert rows(out)["clean"][1] == "NO"
    last = out.rstrip().splitlines()[-1]
    assert last.startswith(
        "selftest: FAIL: the clean engine does not pass (output 'output': max_abs "
    )


def test_unknown_fault_name_is_an_error_naming_the_catalogue(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path
) -> None:
    assert (
        main(selftest(silero_onnx, "--no-latency", "--chunks", "20", "--only", "bias_abvoe_fail"))
        == 1
    )
    err = capsys.readouterr().err
    assert (
        "trtparity selftest: error: --only/--skip: no fault named bias_abvoe_fail; the catalogue has clean, "
        in err
    )


def test_missing_reference_is_an_error_naming_the_path(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path, tmp_path: Path
) -> None:
    assert main(selftest(silero_onnx, ref=tmp_path / "nope.jsonl")) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"trtparity selftest: error: {tmp_path / 'nope.jsonl'}: reference file not found"
    )


def test_bad_chunk_count_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(selftest(silero_onnx, "--chunks", "0"))
    assert exc.value.code == 2
    assert "argument --chunks: expected a positive integer, got '0'" in capsys.readouterr().err


def test_console_script_lists_and_runs_selftest(silero_onnx: Path) -> None:
    cmd = [sys.executable, "-m", "pytest_trtparity.cli"]
    helped = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    assert "selftest" in helped.stdout
    ran = subprocess.run(
        [
            *cmd,
            *selftest(silero_onnx, "--no-latency", "--chunks", "30", "--only", "missing_output"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert rows(ran.stdout)["missing_output"][1] == "yes"


def test_one_chunk_reference_counts_unbuildable_faults_as_na(
    capsys: pytest.CaptureFixture[str], silero_onnx: Path, tmp_path: Path
) -> None:
    """docs/faults.md: a fault that cannot be built is n/a, never caught and never missed. On one
    chunk there is no previous chunk to repeat and no loop to drift in; every other fault still is
    built (the inf lands on the one chunk there is) and caught."""
    ref = tmp_path / "one.jsonl"
    ref.write_bytes(SILERO_REF.read_bytes().split(b"\n")[1] + b"\n")
    report = tmp_path / "one.json"
    assert main(selftest(silero_onnx, *QUICK, "--json", str(report), ref=ref)) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert {name: words[1] for name, words in table.items() if words[1] != "yes"} == {
        "stuck_previous": "n/a",
        "state_drift": "n/a",
    }
    assert (
        "not applicable: the reference has one chunk: there is no previous value to repeat" in out
    )
    assert "not applicable: the closed loop is one chunk long: nothing can drift" in out
    assert out.rstrip().splitlines()[-1] == (
        "selftest: PASS: 14 of 14 faults caught for the right reason, 2 n/a; "
        "the clean engine passes"
    )
    saved = {r["fault"]: r["caught"] for r in json.loads(report.read_text())["selftest"]}
    assert saved["stuck_previous"] is None and saved["state_drift"] is None


def test_verdict_line_counts_na_apart_from_caught_and_missed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pytest_trtparity.commands.selftest import _verdict
    from pytest_trtparity.faults import Catch

    rows_ = [
        Catch("clean", "", True, "every suite passed"),
        Catch("a", "", True, "caught"),
        Catch("b", "", None, "not applicable: why"),
        Catch("c", "", False, "missing"),
    ]
    assert _verdict(rows_) == 1
    assert capsys.readouterr().out.strip() == (
        "selftest: FAIL: missed: c (1 of 2 faults caught for the right reason, 1 n/a)"
    )
    assert _verdict(rows_[:3]) == 0
    assert capsys.readouterr().out.strip() == (
        "selftest: PASS: 1 of 1 faults caught for the right reason, 1 n/a; the clean engine passes"
    )
