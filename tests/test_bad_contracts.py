"""Contracts that must not load (reliability catalogue 11-13), each with one message naming the file
and the JSON path of the offending field; through the gate, an error, never a pass."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.contract.model import contract_from_json, load_contract, schema
from pytest_trtparity.errors import ContractError

from .conftest import SILERO_CONTRACT, SILERO_REF
from .test_bad_inputs import quick_plots, warm_imports  # noqa: F401 - fixtures used by name

SILERO: dict[str, Any] = json.loads(SILERO_CONTRACT.read_text())

Edit = Callable[[dict[str, Any]], object]


def edited(edit: Edit) -> dict[str, Any]:
    raw = copy.deepcopy(SILERO)
    edit(raw)
    return raw


def write(tmp_path: Path, raw: dict[str, Any] | str, name: str = "bad.contract.json") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw, indent=2))
    return path


def message(path: Path) -> str:
    with pytest.raises(ContractError) as exc:
        load_contract(path)
    text = str(exc.value)
    assert "\n" not in text, "one sentence, one line"
    return text


SCHEMA_CASES: list[tuple[str, Edit, str]] = [
    (
        "misspelt tier key",
        lambda r: r["tolerances"]["output"]["chunk"].update(fial=1e-3),
        "at $.tolerances.output.chunk: Additional properties are not allowed ('fial' was unexpected)",
    ),
    (
        "misspelt tolerance key",
        lambda r: r["tolerances"]["output"].update(pass_rat={"fail": 0.8}),
        "at $.tolerances.output: Additional properties are not allowed ('pass_rat' was unexpected)",
    ),
    (
        "misspelt top-level key",
        lambda r: r.update(tolerance=r.pop("tolerances")),
        "at $: Additional properties are not allowed ('tolerance' was unexpected)",
    ),
    (
        "negative tolerance",
        lambda r: r["tolerances"]["stateN"]["chunk"].update(fail=-1e-3),
        "at $.tolerances.stateN.chunk.fail: -0.001 is less than the minimum of 0",
    ),
    (
        "tolerance as a string",
        lambda r: r["tolerances"]["output"]["p95"].update(warn="1e-4"),
        "at $.tolerances.output.p95.warn: '1e-4' is not of type 'number'",
    ),
    (
        "tolerance as a bool",
        lambda r: r["tolerances"]["output"]["chunk"].update(fail=True),
        "at $.tolerances.output.chunk.fail: True is not of type 'number'",
    ),
    (
        "unknown dtype",
        lambda r: r["outputs"][1].update(dtype="float128"),
        "at $.outputs[1].dtype: 'float128' is not one of ['float64', 'float32', *",
    ),
    (
        "unknown invariant",
        lambda r: r["invariants"][2].update(check="positive"),
        "at $.invariants[2].check: 'positive' is not one of ['equals', 'dim_equals', 'in_range', 'finite']",
    ),
    (
        "in_range without bounds",
        lambda r: [r["invariants"][0].pop(k) for k in ("min", "max")],
        "at $.invariants[0]: * is not valid under any of the given schemas",
    ),
    (
        "empty tier",
        lambda r: r["tolerances"]["output"].update(chunk={}),
        "at $.tolerances.output.chunk: {} should be non-empty",
    ),
    ("missing outputs", lambda r: r.pop("outputs"), "at $: 'outputs' is a required property"),
    (
        "wrong format tag",
        lambda r: r.update(trtparity="contract/2"),
        "at $.trtparity: 'contract/1' was expected",
    ),
    (
        "alpha of zero",
        lambda r: r["closed_loop"]["default"]["trend"].update(alpha=0),
        "at $.closed_loop.default.trend.alpha: 0 is less than or equal to the minimum of 0",
    ),
    (
        "bad dim name",
        lambda r: r["inputs"][0].update(shape=["B", "T-1"]),
        "at $.inputs[0].shape[1]: 'T-1' is not valid under any of the given schemas",
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"), [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES]
)
def test_schema_failure_names_file_and_json_path(tmp_path: Path, edit: Edit, expected: str) -> None:
    path = write(tmp_path, edited(edit))
    text = message(path)
    head = f"{path}: "
    assert text.startswith(head), text
    pattern = (
        re.escape(expected).replace(r"\*", ".*")
        + r" \(line (\d+)\)( \(and \d+ more schema errors\))?"
    )
    match = re.fullmatch(pattern, text[len(head) :])
    assert match, text
    assert 1 <= int(match.group(1)) <= path.read_text().count("\n") + 1, text


SEMANTIC_CASES: list[tuple[str, Edit, str]] = [
    (
        "warn above fail",
        lambda r: r["tolerances"]["output"]["chunk"].update(warn=2e-3),
        "$.tolerances.output.chunk: warn tier 0.002 is above fail tier 0.001",
    ),
    (
        "pass rate warn below fail",
        lambda r: r["tolerances"]["stateN"]["pass_rate"].update(warn=0.5),
        "$.tolerances.stateN.pass_rate: warn tier 0.5 is below fail tier 0.8 (lower is worse here)",
    ),
    (
        "pass rate above one",
        lambda r: r["tolerances"]["stateN"]["pass_rate"].update(warn=1.5),
        "$.tolerances.stateN.pass_rate.warn: a share of chunks must be <= 1, got 1.5",
    ),
    (
        "latency warn above fail",
        lambda r: r["latency"]["p95_ms"].update(warn=30.0),
        "$.latency.p95_ms: warn tier 30 is above fail tier 21",
    ),
    (
        "drift warn above fail",
        lambda r: r["closed_loop"]["outputs"]["stateN"]["mean"].update(warn=1.0),
        "$.closed_loop.outputs.stateN.mean: warn tier 1 is above fail tier 0.001",
    ),
    (
        "tolerance for no output",
        lambda r: r["tolerances"].update(outptu=r["tolerances"]["output"]),
        "$.tolerances.outptu: 'outptu' is not an output",
    ),
    (
        "state pair for no output",
        lambda r: r["state"][0].update(output="stateX"),
        "$.state[0].output: 'stateX' is not an output",
    ),
    (
        "invariant axis out of range",
        lambda r: r["invariants"][1].update(axis=2),
        "$.invariants[1].axis: 2 is out of range for rank 2",
    ),
    (
        "duplicate output name",
        lambda r: r["outputs"].append(dict(r["outputs"][0])),
        "$.outputs[2].name: duplicate output name 'output'",
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"), [c[1:] for c in SEMANTIC_CASES], ids=[c[0] for c in SEMANTIC_CASES]
)
def test_contradiction_the_schema_cannot_see_names_file_and_path(
    tmp_path: Path, edit: Edit, expected: str
) -> None:
    path = write(tmp_path, edited(edit))
    assert message(path) == f"{path}: {expected}"


# -- 11: NaN tolerances ------------------------------------------------------------------------------


def test_11_json_schema_minimum_accepts_nan_so_the_loader_checks_itself() -> None:
    from jsonschema import Draft202012Validator

    assert Draft202012Validator({"type": "number", "minimum": 0}).is_valid(float("nan"))
    for label in ("warn", "fail"):
        raw = edited(
            lambda r, label=label: r["tolerances"]["output"]["chunk"].update({label: float("nan")})
        )  # type: ignore[misc]
        with pytest.raises(
            ContractError,
            match=rf"^contract 'silero_vad': \$\.tolerances\.output\.chunk\.{label} must be finite, got nan$",
        ):
            contract_from_json(raw)
    raw = edited(lambda r: r["latency"]["p95_ms"].update(fail=float("inf")))
    with pytest.raises(ContractError, match=r"\$\.latency\.p95_ms\.fail must be finite, got inf"):
        contract_from_json(raw)


@pytest.mark.parametrize(
    ("token", "said"),
    [
        ("NaN", "non-standard JSON token NaN (NaN and Infinity are not JSON)"),
        ("Infinity", "non-standard JSON token Infinity (NaN and Infinity are not JSON)"),
        ("-Infinity", "non-standard JSON token -Infinity (NaN and Infinity are not JSON)"),
        ("1e400", "number 1e400 overflows a 64-bit float"),
    ],
)
def test_11_nan_and_overflow_tokens_in_the_file_are_refused(
    tmp_path: Path, token: str, said: str
) -> None:
    text = SILERO_CONTRACT.read_text().replace('"fail": 1e-3}', f'"fail": {token}}}', 1)
    path = write(tmp_path, text)
    line = text[: text.index(f'"fail": {token}')].count("\n") + 1
    assert message(path) == f"{path}:{line}: at $.tolerances.output.chunk.fail: {said}"


# -- 12: the file itself -----------------------------------------------------------------------------


def test_12_duplicate_key_is_refused(tmp_path: Path) -> None:
    text = SILERO_CONTRACT.read_text().replace(
        '"model": "silero_vad",', '"model": "silero_vad",\n  "model": "other",'
    )
    path = write(tmp_path, text)
    line = text[: text.index('"model": "other"')].count("\n") + 1
    assert message(path) == f"{path}:{line}: duplicate key 'model'"


def test_12_truncated_contract_names_the_line(tmp_path: Path) -> None:
    text = SILERO_CONTRACT.read_text()
    path = write(tmp_path, text[:500])
    line = text[:500].count("\n") + 1
    assert message(path).startswith(f"{path}:{line}: invalid JSON at column ")


def test_12_not_utf8_names_the_byte(tmp_path: Path) -> None:
    data = SILERO_CONTRACT.read_bytes()
    path = tmp_path / "latin1.contract.json"
    path.write_bytes(data[:123] + b"\xe9" + data[123:])
    assert message(path) == f"{path}: not UTF-8 (byte 123)"


def test_12_directory_where_the_contract_should_be(tmp_path: Path) -> None:
    folder = tmp_path / "contract.json"
    folder.mkdir()
    assert message(folder) == f"{folder}: cannot read contract: Is a directory"


def test_12_missing_contract(tmp_path: Path) -> None:
    assert message(tmp_path / "nope.json") == f"{tmp_path / 'nope.json'}: contract file not found"


def test_12_unreadable_contract(tmp_path: Path) -> None:
    path = write(tmp_path, SILERO)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip(
                "running as root: chmod 000 does not stop reads (the directory case covers it)"
            )
        assert message(path) == f"{path}: cannot read contract: Permission denied"
    finally:
        path.chmod(0o644)


# -- 13: `format` is not checked without a FormatChecker: the schema must not lean on it --------------


def _keys(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_13_schema_relies_on_no_format_keyword() -> None:
    assert "format" not in set(_keys(schema()))
    shipped = Path(__file__).resolve().parents[1] / "contracts" / "contract.schema.json"
    assert json.loads(shipped.read_text()) == schema(), (
        "contracts/contract.schema.json must copy the packaged schema"
    )


# -- through the gate ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("warm_imports", "quick_plots")
def test_gate_with_a_bad_contract_errors_and_names_the_path(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    path = write(
        pytester.path, edited(lambda r: r["tolerances"]["output"]["chunk"].update(fial=1e-3))
    )
    out = pytester.path / "artifacts"
    result = pytester.runpytest(
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={path}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1 and "passed" not in outcomes
    result.stdout.fnmatch_lines(
        [
            f"*{path}: at $.tolerances.output.chunk: Additional properties are not allowed ('fial' was unexpected)*",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "fail"
    assert any("'fial' was unexpected" in e for e in summary["errors"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
