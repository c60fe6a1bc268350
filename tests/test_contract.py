"""The binding contract: schema, semantic checks, and the shipped contracts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.contract.model import contract_from_json, load_contract
from pytest_trtparity.errors import ContractError

from .conftest import REPO, SILERO_CONTRACT


def silero_raw() -> dict[str, Any]:
    return json.loads(SILERO_CONTRACT.read_text())


def test_schema_copy_in_contracts_is_identical() -> None:
    packaged = REPO / "pytest_trtparity" / "schemas" / "contract.schema.json"
    assert (REPO / "contracts" / "contract.schema.json").read_bytes() == packaged.read_bytes()


@pytest.mark.parametrize(
    "path", sorted((REPO / "contracts").glob("*.contract.json")), ids=lambda p: p.name
)
def test_shipped_contracts_are_valid(path: Path) -> None:
    assert load_contract(path).outputs


def test_silero_contract_reads_as_written() -> None:
    c = load_contract(SILERO_CONTRACT)
    assert c.input("state").shape == (2, "B", 128)
    assert c.input("sr").optional and c.input("sr").shape == ()
    assert [(p.output, p.input) for p in c.state] == [("stateN", "state")]
    tol = c.tolerance("output")
    assert (tol.chunk.warn, tol.chunk.fail) == (5e-4, 1e-3)  # type: ignore[union-attr]
    assert tol.within == 5e-4
    assert c.profiles["batched"].shapes["input"].max == (8, 576)


def _error(raw: Any) -> str:
    with pytest.raises(ContractError) as info:
        contract_from_json(raw, path=Path("c.json"))
    return str(info.value)


def test_misspelt_key_names_its_json_path() -> None:
    raw = silero_raw()
    raw["tolerances"]["output"]["chunck"] = raw["tolerances"]["output"].pop("chunk")
    msg = _error(raw)
    assert msg.startswith("c.json: at $.tolerances.output:")
    assert "'chunck' was unexpected" in msg


def test_wrong_type_names_its_json_path() -> None:
    raw = silero_raw()
    raw["inputs"][1]["shape"][0] = -2
    assert "at $.inputs[1].shape[0]" in _error(raw)


def test_negative_tolerance_is_an_error() -> None:
    raw = silero_raw()
    raw["tolerances"]["output"]["chunk"]["fail"] = -1e-3
    assert "$.tolerances.output.chunk.fail" in _error(raw)


def test_warn_above_fail_is_an_error() -> None:
    raw = silero_raw()
    raw["tolerances"]["output"]["chunk"] = {"warn": 1e-2, "fail": 1e-3}
    assert (
        _error(raw) == "c.json: $.tolerances.output.chunk: warn tier 0.01 is above fail tier 0.001"
    )


def test_pass_rate_tiers_run_the_other_way() -> None:
    raw = silero_raw()
    raw["tolerances"]["output"]["pass_rate"] = {"warn": 0.5, "fail": 0.8}
    assert "warn tier 0.5 is below fail tier 0.8 (lower is worse here)" in _error(raw)


def test_tolerance_that_checks_nothing_is_an_error() -> None:
    raw = silero_raw()
    raw["tolerances"]["output"] = {"metric": "max_abs"}
    assert "needs a chunk or p95 tier" in _error(raw)


def test_nan_tolerance_in_the_file_is_an_error(tmp_path: Path) -> None:
    text = SILERO_CONTRACT.read_text().replace('"fail": 1e-3}', '"fail": NaN}', 1)
    path = tmp_path / "c.json"
    path.write_text(text)
    line = text[: text.index("NaN")].count("\n") + 1
    with pytest.raises(
        ContractError,
        match=rf"c.json:{line}: at \$\.tolerances\.output\.chunk\.fail: non-standard JSON token NaN",
    ):
        load_contract(path)


def test_duplicate_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "model": "a",\n  "inputs": {"model": 1},\n  "model": "b"\n}')
    with pytest.raises(ContractError, match=r"c.json:4: duplicate key 'model'"):
        load_contract(path)


def test_overflowing_number_in_the_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "model": "a",\n  "x": "1e400 in a string is fine",\n  "y": 1e400\n}')
    with pytest.raises(
        ContractError, match=r"c.json:4: at \$\.y: number 1e400 overflows a 64-bit float"
    ):
        load_contract(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["state"].append({"output": "nope", "input": "state"}),
            "$.state[1].output: 'nope' is not an output",
        ),
        (
            lambda r: r["invariants"].append({"output": "x", "check": "finite"}),
            "$.invariants[3].output: 'x' is not an output",
        ),
        (
            lambda r: r["tolerances"].update(ghost=r["tolerances"]["output"]),
            "$.tolerances.ghost: 'ghost' is not an output",
        ),
        (
            lambda r: r["profiles"]["stream"]["shapes"]["input"].update(min=[1, 600]),
            "$.profiles.stream.shapes.input: needs min <= opt <= max",
        ),
        (
            lambda r: r["profiles"]["stream"]["shapes"]["state"].update(min=[2, 1]),
            "$.profiles.stream.shapes.state.min: rank 2 but input 'state' has rank 3",
        ),
        (
            lambda r: r["profiles"]["stream"]["shapes"]["state"].update(
                min=[3, 1, 128], opt=[3, 1, 128], max=[3, 1, 128]
            ),
            "dimension 0 is fixed at 2 in the input but 3..3 here",
        ),
        (
            lambda r: r["outputs"].append(dict(r["outputs"][0])),
            "$.outputs[2].name: duplicate output name 'output'",
        ),
        (
            lambda r: r["invariants"].append(
                {"output": "output", "check": "dim_equals", "axis": 5, "value": 1}
            ),
            "$.invariants[3].axis: 5 is out of range for rank 2",
        ),
    ],
)
def test_semantic_problems_name_the_field(mutate: Any, expected: str) -> None:
    raw = copy.deepcopy(silero_raw())
    mutate(raw)
    assert expected in _error(raw)


def test_invariant_without_its_value_fails_the_schema() -> None:
    raw = silero_raw()
    raw["invariants"].append({"output": "output", "check": "equals"})
    assert "at $.invariants[3]: 'value' is a required property" in _error(raw)


def test_missing_contract_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"nope.json: contract file not found"):
        load_contract(tmp_path / "nope.json")


def test_contract_json_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "model": "a",\n  "inputs": [\n}\n')
    with pytest.raises(ContractError, match=r"c.json:4: invalid JSON"):
        load_contract(path)


def test_the_run_loads_its_contract_once_and_keeps_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_trtparity.contract import model
    from pytest_trtparity.contract.once import ContractOnce

    loads: list[Path] = []
    real = model.load_contract

    def counted(path: Path) -> Any:
        loads.append(path)
        return real(path)

    monkeypatch.setattr(model, "load_contract", counted)
    once = ContractOnce()
    assert once.load(SILERO_CONTRACT) is once.load(SILERO_CONTRACT)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for _ in range(2):  # the same error, from the one parse
        with pytest.raises(ContractError, match=r"broken\.json:1"):
            once.load(broken)
    assert loads == [SILERO_CONTRACT, broken]
