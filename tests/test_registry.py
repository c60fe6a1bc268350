"""The checks registry: every check has its suite file and marker, modes select from it, and the
sharding, fault catalogue and not-run list read it rather than keeping lists of their own."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pytest_trtparity.artifacts import not_run
from pytest_trtparity.checks import registry
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import ConfigError
from pytest_trtparity.faults.run import default_runners
from pytest_trtparity.settings import GateSettings, resolve_settings
from pytest_trtparity.sharding.parts import judge_for

from .conftest import SILERO_CONTRACT, SUITES

PACKAGE = Path(registry.__file__).resolve().parents[1]


def settings(tmp_path: Path, mode: str, contract: Path | None = SILERO_CONTRACT) -> GateSettings:
    cli = {"trt_artifacts": str(tmp_path), "trt_mode": mode}
    if contract is not None:
        cli["trt_contract"] = str(contract)
    return resolve_settings(cli, {}, cli_base=tmp_path, ini_base=tmp_path)


def _suite_markers(path: Path) -> tuple[set[str], set[str]]:
    """The suite names given to `trtparity(...)` and the `trt_*` markers in one suite file."""
    names: set[str] = set()
    markers: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "trtparity":
            names |= {a.value for a in node.args if isinstance(a, ast.Constant)}
        if isinstance(node, ast.Attribute) and node.attr.startswith("trt_"):
            markers.add(node.attr)
    return names, markers


def test_every_registered_check_has_a_suite_file_with_its_marker() -> None:
    declared: dict[str, set[str]] = {}
    for path in SUITES.glob("test_*.py"):
        names, markers = _suite_markers(path)
        for name in names:
            declared[name] = markers
    assert set(declared) == {c.name for c in registry.CHECKS if not c.at_end}
    for check in registry.CHECKS:
        assert check.marker == f"trt_{check.name}"
        # build adds its marker from trtparity("build") at collection, as users' copies do
        assert check.name == "build" or check.at_end or check.marker in declared[check.name]


def test_registry_names_are_unique_and_titled() -> None:
    assert len(registry.SUITES) == len(set(registry.SUITES)) == len(registry.CHECKS)
    assert all(c.title and c.modes for c in registry.CHECKS)
    assert registry.get("no such check") is None


@pytest.mark.parametrize(
    ("mode", "contract", "left_out"),
    [
        ("both", SILERO_CONTRACT, set()),
        ("functional", SILERO_CONTRACT, {"closed_loop"}),
        ("closed_loop", SILERO_CONTRACT, {"functional"}),
        ("auto", SILERO_CONTRACT, set()),  # Silero declares state pairs
        ("auto", None, set()),
    ],
)
def test_modes_select_from_the_registry(
    tmp_path: Path, mode: str, contract: Path | None, left_out: set[str]
) -> None:
    wanted = registry.selected_suites(settings(tmp_path, mode, contract))
    if not left_out:
        assert wanted is None
    else:
        assert wanted == set(registry.SUITES) - left_out


def test_auto_without_state_leaves_out_the_checks_that_need_it(tmp_path: Path) -> None:
    wanted = registry.selected_suites(settings(tmp_path, "auto", _stateless(tmp_path)))
    assert wanted == set(registry.SUITES) - {"closed_loop"}


def test_sharding_reads_the_registry() -> None:
    assert set(registry.shardable()) == {"functional", "closed_loop"}
    assert judge_for("functional") is registry.shardable()["functional"].judge
    with pytest.raises(ConfigError, match="'latency' cannot be sharded"):
        judge_for("latency")


def _stateless(tmp_path: Path) -> Path:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["state"] = []
    raw.pop("closed_loop", None)
    path = tmp_path / "stateless.contract.json"
    path.write_text(json.dumps(raw))
    return path


def test_fault_runners_follow_the_contract(tmp_path: Path) -> None:
    silero = load_contract(SILERO_CONTRACT)
    assert set(default_runners(silero)) >= {"functional", "closed_loop"}
    assert "latency" not in default_runners(silero, latency=False)
    stateless = load_contract(_stateless(tmp_path))
    assert set(registry.fault_runners(stateless, registry.FaultOptions(latency=False))) == {
        "functional"
    }


def test_the_not_run_list_is_the_registrys() -> None:
    assert list(not_run.NAMES) == [c.name for c in registry.CHECKS if c.listed]
    assert not_run.NAMES["functional"] == registry.get("functional").title  # type: ignore[union-attr]
    assert set(not_run.NEEDS) == {"baseline", "profiles", "regression"}


def test_suite_names_are_spelled_only_in_their_checks_and_the_registry() -> None:
    allowed = {"checks/registry.py", "checks/functional.py", "checks/closed_loop.py"}
    scanned = ("checks", "faults", "sharding")
    spelled = sorted(
        str(path.relative_to(PACKAGE))
        for area in scanned
        for path in (PACKAGE / area).rglob("*.py")
        if ('"functional"' in path.read_text() or '"closed_loop"' in path.read_text())
        and str(path.relative_to(PACKAGE)) not in allowed
    )
    assert spelled == []
