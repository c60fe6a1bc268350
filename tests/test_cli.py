"""The `trtparity` console script as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trtparity.cli import main

from .conftest import SILERO_CONTRACT, SILERO_REF


def test_contract_init_writes_a_valid_starter(
    tmp_path: Path, silero_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "starter.json"
    assert main(["contract", "init", "--onnx", str(silero_onnx), "-o", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert raw["trtparity"] == "contract/1"
    assert raw["state"] == [{"output": "stateN", "input": "state", "initial": "reference"}]
    assert main(["contract", "check", str(out), "--onnx", str(silero_onnx)]) == 0
    assert "I/O matches the contract" in capsys.readouterr().out


def test_contract_init_refuses_to_overwrite(
    tmp_path: Path, silero_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "starter.json"
    out.write_text("{}")
    assert main(["contract", "init", "--onnx", str(silero_onnx), "-o", str(out)]) == 1
    assert "starter.json: already exists (pass --force to overwrite)" in capsys.readouterr().err


def test_contract_check_reports_an_engine_mismatch(
    tmp_path: Path, silero_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["outputs"][0]["dtype"] = "float16"
    raw["tolerances"].pop("output")
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps(raw))
    assert main(["contract", "check", str(bad), "--onnx", str(silero_onnx)]) == 1
    assert "output 'output': engine dtype float32, contract says float16" in capsys.readouterr().out


def test_contract_check_names_the_json_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "c.json"
    bad.write_text(
        json.dumps({"trtparity": "contract/1", "model": "m", "inputs": [], "outputs": []})
    )
    assert main(["contract", "check", str(bad)]) == 1
    assert "c.json: at $.inputs: [] should be non-empty" in capsys.readouterr().err


def test_reference_check_against_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reference", "check", str(SILERO_REF), "--contract", str(SILERO_CONTRACT)]) == 0
    assert "300 records in 1 stream(s)" in capsys.readouterr().out


def test_gate_passes_pytest_options_through(tmp_path: Path, silero_onnx: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_trtparity.cli",
            "gate",
            "-q",
            "--trt-mode",
            "functional",
            "-k",
            "functional",
            f"--trt-engine={silero_onnx}",
            f"--trt-contract={SILERO_CONTRACT}",
            f"--trt-ref={SILERO_REF}",
            f"--trt-artifacts={tmp_path / 'a'}",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (
        json.loads((tmp_path / "a" / "summary.json").read_text())["suites"]["functional"]["verdict"]
        == "pass"
    )


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "contract" in capsys.readouterr().out


def test_gate_help_lists_the_gate_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["gate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--trt-engine PATH", "--trt-contract PATH", "--trt-ref PATH", "--trt-strict"):
        assert flag in text, text
    assert "pytest --help" in text


def _gate_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_trtparity.cli", "gate", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )


def test_gate_takes_no_config_from_this_repository(tmp_path: Path, silero_onnx: Path) -> None:
    """From an editable install the suites sit in this repository, whose pyproject.toml names the
    Silero contract: a user's folder without one must not get it."""
    proc = _gate_in(tmp_path, f"--trt-engine={silero_onnx}", f"--trt-ref={SILERO_REF}")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no contract given: pass --trt-contract PATH" in proc.stdout
    assert f"rootdir: {tmp_path}" in proc.stdout
    summary = json.loads((tmp_path / "trtparity-artifacts" / "summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["inputs"]["contract"] is None


def test_gate_reads_the_ini_of_the_users_folder(tmp_path: Path, silero_onnx: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n"
        f"trt_engine = {silero_onnx}\n"
        f"trt_contract = {SILERO_CONTRACT}\n"
        f"trt_ref = {SILERO_REF}\n"
        "trt_mode = functional\n"
        "trt_artifacts = from-ini\n"
    )
    proc = _gate_in(tmp_path, "-q")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "from-ini" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["suites"]["functional"]["chunks_run"] == 300
