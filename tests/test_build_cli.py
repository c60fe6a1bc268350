"""`trtparity build` as users run it, on a machine without TensorRT (as CI is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trtparity.cli import main

from .conftest import SILERO_CONTRACT, SILERO_REF


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("tensorrt", "tensorrt_bindings", "tensorrt_lean", "tensorrt_lean_bindings"):
        monkeypatch.setitem(sys.modules, name, None)


def build(onnx: Path, out: Path, *extra: str) -> int:
    return main(
        ["build", "--onnx", str(onnx), "--contract", str(SILERO_CONTRACT), "-o", str(out), *extra]
    )


def test_without_tensorrt_it_says_what_to_install(
    no_tensorrt: None, silero_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(silero_onnx, tmp_path / "e.plan", "--cache-dir", str(tmp_path / "c")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(
        "trtparity build: error: building engines needs the full TensorRT library"
    )
    assert "pip install tensorrt-cu12" in err and "tensorrt-cu13" in err
    assert not (tmp_path / "e.plan").exists()


def test_console_script_exits_non_zero(silero_onnx: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['tensorrt'] = sys.modules['tensorrt_bindings'] = None; "
        "from pytest_trtparity.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "build",
            "--onnx",
            str(silero_onnx),
            "--contract",
            str(SILERO_CONTRACT),
            "-o",
            str(tmp_path / "e.plan"),
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "needs the full TensorRT library" in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--profile", "nope"], "no profile named 'nope' (profiles: stream, batched)"),
        (
            ["--precision", "int8"],
            "--precision int8 calibrates from reference inputs: pass --reference REF.jsonl",
        ),
        (["--workspace", "lots"], "--workspace 'lots': expected a size like 4GiB"),
    ],
)
def test_bad_requests_fail_before_anything_is_built(
    no_tensorrt: None,
    silero_onnx: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert build(silero_onnx, tmp_path / "e.plan", "--cache-dir", str(tmp_path), *extra) == 1
    assert message in capsys.readouterr().err


def test_missing_onnx(
    no_tensorrt: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(tmp_path / "none.onnx", tmp_path / "e.plan") == 1
    assert "none.onnx: ONNX file not found" in capsys.readouterr().err


def test_int8_with_reference_gets_as_far_as_the_builder(
    no_tensorrt: None, silero_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        build(
            silero_onnx,
            tmp_path / "e.plan",
            "--precision",
            "int8",
            "--reference",
            str(SILERO_REF),
            "--cache-dir",
            str(tmp_path),
        )
        == 1
    )
    assert "needs the full TensorRT library" in capsys.readouterr().err


def test_precision_choices_are_checked_by_argparse(silero_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        build(silero_onnx, tmp_path / "e.plan", "--precision", "fp64")
    assert exc.value.code == 2


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--onnx",
        "--contract",
        "--precision",
        "--workspace",
        "--profile",
        "--timing-cache",
        "--cache-dir",
        "--reference",
        "--version-compatible",
    ):
        assert flag in out
