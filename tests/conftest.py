"""Shared fixtures for the plugin's own tests."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_trtparity.util.paths import package_file

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
SILERO_CONTRACT = REPO / "contracts" / "silero_vad.contract.json"
SILERO_REF = REPO / "references" / "silero_vad_300.jsonl"


@pytest.fixture(autouse=True)
def _inner_runs_are_not_xdist_workers(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A pytest run inside a test (pytester) must not inherit this process's pytest-xdist worker
    variables (PYTEST_XDIST_WORKER, ...): with them, pytest-benchmark turns itself off and the
    inner run takes itself for a worker, so the suite would pass alone and fail under -n N."""
    if "pytester" in request.fixturenames:
        for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="session")
def silero_onnx() -> Path:
    return package_file("pkg:silero_vad/data/silero_vad.onnx")


@pytest.fixture(scope="session")
def silero_half_onnx() -> Path:
    return package_file("pkg:silero_vad/data/silero_vad_half.onnx")


@pytest.fixture
def gate_dir(pytester: pytest.Pytester) -> Path:
    """A pytester folder holding the gating suites, as a user's CI checkout would."""
    for suite in SUITES.glob("test_*.py"):
        shutil.copy(suite, pytester.path / suite.name)
    pytester.makeini("[pytest]\n")
    return pytester.path


def short_reference(dst: Path, n: int) -> Path:
    """The first `n` records of the committed reference, with a header that says so."""
    lines = SILERO_REF.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["records"] = n
    dst.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1 : n + 1]))
    return dst


@pytest.fixture
def loop_dir(pytester: pytest.Pytester) -> Path:
    """A pytester folder holding the contract, functional and closed-loop suites only."""
    for name in ("test_contract.py", "test_functional.py", "test_closed_loop.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    return pytester.path


def assert_gate_passed(result: pytest.RunResult) -> None:
    """Exit 0 with no failed or errored test (other suites may skip where they do not apply)."""
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0
    assert outcomes.get("passed", 0) >= 2
