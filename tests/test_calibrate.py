"""Tolerances from evidence: calibrate on two clean ONNX exports of Silero, then judge others.

A third clean export (opset 18, If-less) must pass under the calibrated contract; the half-precision
model and the fault catalogue must fail it; a contract under which a fault would pass is refused.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.checks.closed_loop import run_closed_loop
from pytest_trtparity.checks.functional import run_functional
from pytest_trtparity.commands import calibrate as command
from pytest_trtparity.contract.model import Tier, contract_from_json, load_contract
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.reference.reader import ReferenceReader
from pytest_trtparity.signoff.calibration import (
    CalibrationError,
    Measured,
    calibrate,
    calibrated_tier,
    check_catalogue,
)
from pytest_trtparity.util.paths import package_file

from .conftest import SILERO_CONTRACT, SILERO_REF

CALIBRATE_ON = ("silero_vad.onnx", "silero_vad_16k_op15.onnx")


def _pkg(name: str) -> str:
    return f"pkg:silero_vad/data/{name}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trtparity contract")
    command.add_parser(parser.add_subparsers(dest="verb"))
    return parser


def _verdict(engine: str, contract_path: Path) -> Level:
    contract = load_contract(contract_path)
    backend = open_backend(package_file(_pkg(engine)), "onnxruntime").load()
    records = list(ReferenceReader(SILERO_REF))
    levels = [run_functional(backend, contract, records).verdict]
    backend.reset_state()
    levels.append(run_closed_loop(backend, contract, records).verdict)
    return max(levels)


def test_calibrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calibrated.json"
    argv = ["calibrate", "--contract", str(SILERO_CONTRACT), "--ref", str(SILERO_REF)]
    argv += [x for e in CALIBRATE_ON for x in ("--engine", _pkg(e))] + ["-o", str(out)]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    assert "none passed" in capsys.readouterr().out
    calibrated = load_contract(out)  # valid against the schema and itself
    assert calibrated.calibration is not None
    assert calibrated.calibration.engines == tuple(_pkg(e) for e in CALIBRATE_ON)
    original = load_contract(SILERO_CONTRACT)
    for name in original.output_names:  # never looser than the input contract
        for stat in ("chunk", "p95"):
            old, new = (
                getattr(original.tolerance(name), stat),
                getattr(calibrated.tolerance(name), stat),
            )
            assert new.fail <= old.fail and new.warn <= old.warn
    # the clean engines agree with the reference to ~1e-6: calibrated tiers are far tighter
    new_fail, old_fail = (_pair(c.tolerance("output").chunk)[1] for c in (calibrated, original))
    assert new_fail is not None and old_fail is not None and new_fail < old_fail / 10
    assert _verdict("silero_vad_op18_ifless.onnx", out) is Level.PASS  # not used, equally correct
    assert _verdict("silero_vad_half.onnx", out) is Level.FAIL
    # a second run refuses to overwrite
    with pytest.raises(Exception, match="exists"):
        args.func(args)


def _pair(tier: Tier | None) -> tuple[float | None, float | None]:
    assert tier is not None
    return tier.warn, tier.fail


def test_headroom_rule() -> None:
    tight, loose = Tier(warn=1e-3, fail=1e-2), Tier(warn=1e-5, fail=2e-5)
    assert _pair(calibrated_tier(tight, 1e-5, loosen=False)) == pytest.approx((3e-5, 1e-4))
    # never looser than the input unless asked
    assert _pair(calibrated_tier(loose, 1e-5, loosen=False)) == pytest.approx((1e-5, 2e-5))
    assert _pair(calibrated_tier(loose, 1e-5, loosen=True)) == pytest.approx((3e-5, 1e-4))
    assert _pair(calibrated_tier(Tier(fail=1.0), 0.0, loosen=False)) == (None, 1e-6)  # floor
    assert calibrated_tier(None, 1.0, loosen=False) is None


def test_refuses_a_contract_a_fault_passes(silero_onnx: Path) -> None:
    """Tiers as loose as the schema allows: the catalogue's small faults would pass, so refuse."""
    raw = json.loads(SILERO_CONTRACT.read_text())
    loose_tol = {"metric": "max_abs", "chunk": {"warn": 1e3, "fail": 1e4}}
    raw["tolerances"] = {"output": loose_tol, "stateN": loose_tol}
    raw["closed_loop"] = {"default": {"max": {"fail": 1e4}}}
    contract = contract_from_json(raw)
    records = list(itertools.islice(ReferenceReader(SILERO_REF), 60))
    backend = open_backend(silero_onnx, "onnxruntime").load()
    with pytest.raises(
        CalibrationError, match=r"these catalogue faults pass: stuck_previous .*state_drift"
    ):
        check_catalogue(backend, contract, lambda: records)


def test_refuses_when_an_accepted_engine_fails_the_input(silero_half_onnx: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    records = list(itertools.islice(ReferenceReader(SILERO_REF), 40))
    engines = {"half": open_backend(silero_half_onnx, "onnxruntime").load()}
    with pytest.raises(CalibrationError, match=r"engine half: output '.*' .* above the input"):
        calibrate(engines, contract, lambda: records, reference="ref")
    assert Measured().values == {}
