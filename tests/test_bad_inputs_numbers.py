"""Huge integers, byte-order marks, swapped chunks and run-time counts: each stops the reader or the
contract loader with one sentence naming file, line and field, on every path a reference is read by
(fast and strict, plain and `.gz`, streamed and through the index), and the gate's verdict is fail."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_trtparity.contract.model import SCHEMA_ID, contract_from_json, load_contract, schema
from pytest_trtparity.errors import ContractError, ReferenceFormatError
from pytest_trtparity.reference import fastpath
from pytest_trtparity.reference.reader import ReferenceReader, read_header
from pytest_trtparity.util import strictjson

from .conftest import SILERO_CONTRACT, SILERO_REF
from .test_bad_inputs import HEADER, R0, R1, R2, body, quick_plots, warm_imports  # noqa: F401

HUGE = b"1" * 5000  # past Python's 4,300-digit limit for int(): a bare ValueError before the fix
R3 = SILERO_REF.read_bytes().split(b"\n")[4]


def count(n: int) -> bytes:
    """The header, saying it holds `n` records (same line length as the committed one)."""
    return HEADER.replace(b"                 300", str(n).rjust(20).encode())


def with_meta(line: bytes, meta: bytes) -> bytes:
    return line.replace(b',"meta":{"sample_offset"', b',"meta":{' + meta + b',"sample_offset"')


def streams(line: bytes, name: bytes) -> bytes:
    return line.replace(b'{"chunk_index":', b'{"stream":"' + name + b'","chunk_index":')


#: id -> (file content, the message after "PATH:").
CASES: dict[str, tuple[bytes, str]] = {
    "huge_chunk_index": (
        body(count(2), R0, R1.replace(b'"chunk_index":1', b'"chunk_index":' + HUGE)),
        "3: chunk_index: integer of 5000 digits overflows a 64-bit float",
    ),
    "huge_record_count": (
        body(HEADER.replace(b"                 300", HUGE), R0),
        "1: records: integer of 5000 digits overflows a 64-bit float",
    ),
    "huge_integer_in_meta": (
        body(R0, with_meta(R1, b'"gain":' + HUGE)),
        "2: meta.gain: integer of 5000 digits overflows a 64-bit float",
    ),
    "integer_beyond_float64_in_meta": (  # 400 digits: Python converts it, float() would not
        body(R0, with_meta(R1, b'"gain":' + b"9" * 400)),
        "2: meta.gain: integer of 400 digits overflows a 64-bit float",
    ),
    "huge_shape_dim": (
        body(R0, R1.replace(b'"shape":[1,576]', b'"shape":[1,' + HUGE + b"]", 1)),
        "2: inputs.input.shape[1]: integer of 5000 digits overflows a 64-bit float",
    ),
    "shape_dim_beyond_int64": (
        body(R0, R1.replace(b'"shape":[1,576]', b'"shape":[1,' + str(1 << 63).encode() + b"]", 1)),
        "2: inputs.input.shape[1]: 9223372036854775808 is larger than any tensor (2**63 - 1)",
    ),
    "shape_product_beyond_int64": (
        body(
            R0,
            R1.replace(b'"shape":[1,576]', b'"shape":[' + b",".join([b"4294967296"] * 3) + b"]", 1),
        ),
        "2: inputs.input.shape: its 3 sizes multiply to more than 2**63 - 1 elements",
    ),
    "chunk_index_beyond_int64": (
        body(R0, R1.replace(b'"chunk_index":1', b'"chunk_index":' + str(1 << 63).encode())),
        "2: chunk_index: must be an integer from 0 to 2**63 - 1, got 9223372036854775808",
    ),
    "bom_before_header": (
        body(b"\xef\xbb\xbf" + HEADER, R0),
        "1: the file starts with a UTF-8 byte-order mark; save it without BOM",
    ),
    "bom_before_first_record": (
        body(b"\xef\xbb\xbf" + R0, R1),
        "1: the file starts with a UTF-8 byte-order mark; save it without BOM",
    ),
    "bom_inside_the_file": (
        body(R0, b"\xef\xbb\xbf" + R1),
        "2: the line starts with a UTF-8 byte-order mark; save it without BOM",
    ),
    "chunks_swapped": (
        body(count(4), R0, R1, R3, R2),
        "4: chunk_index: chunks out of order in stream 'default': "
        "chunk 3 on line 4 comes before chunk 2 on line 5",
    ),
    "chunks_swapped_between_other_streams": (
        body(
            streams(R0, b"a"),
            streams(R0, b"b"),
            streams(R2, b"a"),
            streams(R1, b"b"),
            streams(R1, b"a"),
        ),
        "3: chunk_index: chunks out of order in stream 'a': "
        "chunk 2 on line 3 comes before chunk 1 on line 5",
    ),
    "chunk_missing": (
        body(R0, R1, R3),
        "3: chunk_index: 3 in stream 'default' but 2 was expected (gap)",
    ),
    "chunk_repeated": (
        body(R0, R1, R1),
        "3: chunk_index: 1 in stream 'default' but 2 was expected "
        "(duplicate: chunk 1 was already read on line 2)",
    ),
}

Read = Callable[[Path], object]

#: Every way the plugin reads a reference: streamed (fast path, strict path) and by index.
MODES: dict[str, Read] = {
    "fast": lambda p: list(ReferenceReader(p)),
    "strict": lambda p: list(ReferenceReader(p, fast=False)),
    "index": lambda p: _by_index(ReferenceReader(p)),
}


def _by_index(reader: ReferenceReader) -> object:
    """Build the index (keys and order are checked there), then read every record through it
    (tensors are checked there), as a shard does."""
    return list(reader.records(reader.index().record_keys()))


@pytest.fixture
def every_payload_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed records' payloads are short enough to stay in the JSON; cutting every one makes
    the fast path take each line, so a fault must come back through it to the strict path."""
    monkeypatch.setattr(fastpath, "MIN_PAYLOAD", 0)


def write(tmp_path: Path, name: str, data: bytes, gz: bool) -> Path:
    path = tmp_path / (f"{name}.jsonl.gz" if gz else f"{name}.jsonl")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.mark.usefixtures("every_payload_cut")
@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "gz"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(CASES))
def test_every_read_path_names_file_line_and_field(
    tmp_path: Path, case: str, mode: str, gz: bool
) -> None:
    data, tail = CASES[case]
    path = write(tmp_path, case, data, gz)
    with pytest.raises(ReferenceFormatError) as info:
        MODES[mode](path)
    assert str(info.value) == f"{path}:{tail}"


@pytest.mark.usefixtures("every_payload_cut")
@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "gz"])
@pytest.mark.parametrize("mode", list(MODES))
def test_the_same_paths_read_a_clean_file(tmp_path: Path, mode: str, gz: bool) -> None:
    """The control: records as large and as interleaved as the faulty ones read without error."""
    data = body(count(4), R0, R1, R2, R3)
    path = write(tmp_path, "clean", data, gz)
    MODES[mode](path)
    assert [r.chunk_index for r in ReferenceReader(path)] == [0, 1, 2, 3]
    assert ReferenceReader(path).get("default", 2).chunk_index == 2


def test_read_header_names_the_bom_and_the_huge_count(tmp_path: Path) -> None:
    for case in ("bom_before_header", "huge_record_count"):
        data, tail = CASES[case]
        path = write(tmp_path, case, data, gz=False)
        with pytest.raises(ReferenceFormatError) as info:
            read_header(path)
        assert str(info.value) == f"{path}:{tail}"


# -- the strict parser itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "path"),
    [
        ('{"a": [1, {"b": ' + "1" * 5000 + "}]}", "integer of 5000 digits", ("a", 1, "b")),
        ('{"a": -' + "9" * 309 + "}", "integer of 309 digits", ("a",)),
        ('{"m": {"g": 1e400}, "m": 1}', "number 1e400 overflows", ("m", "g")),
        ('{"m": {"g": 1, "g": 2}}', "duplicate key 'g'", ("m",)),
        ("[0, [NaN]]", "non-standard JSON token NaN", (1, 0)),
        ("\ufeff{}", "starts with a UTF-8 byte-order mark", ()),
    ],
)
def test_strict_json_refuses_with_the_path(
    text: str, reason: str, path: tuple[object, ...]
) -> None:
    with pytest.raises(strictjson.StrictJSONError) as info:
        strictjson.loads(text)
    assert str(info.value).startswith(reason) and info.value.path == path


def test_strict_json_keeps_integers_a_float_can_hold() -> None:
    biggest = str(int(1.7976931348623157e308))
    assert len(biggest) == 309
    assert strictjson.loads(f"[{biggest}, -{'9' * 308}, 9223372036854775807]")[0] == int(biggest)


def test_line_of_follows_keys_and_indices() -> None:
    text = '{\n "a": [1,\n  {"b": "x,}]\\"",\n   "c": [[],\n    7]}],\n "d": {}\n}'
    assert strictjson.line_of(text, ("a", 1, "c", 1)) == 5
    assert strictjson.line_of(text, ("a", 1, "b")) == 3
    assert strictjson.line_of(text, ("d",)) == 6
    assert strictjson.line_of(text, ("e",)) is None


# -- contracts -----------------------------------------------------------------------------------------


def contract_text(old: str, new: str) -> str:
    text = SILERO_CONTRACT.read_text()
    assert text.count(old) == 1
    return text.replace(old, new)


def line_of_text(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


#: id -> (contract text, the text the value is found by, the message after "PATH:LINE: ").
CONTRACT_CASES: dict[str, tuple[str, str, str]] = {
    "huge_integer_iterations": (
        contract_text('"iterations": 300,', f'"iterations": {HUGE.decode()},'),
        '"iterations"',
        "at $.latency.iterations: integer of 5000 digits overflows a 64-bit float",
    ),
    "huge_integer_tolerance": (
        contract_text(
            '"chunk": {"warn": 5e-4, "fail": 5e-3}',
            f'"chunk": {{"warn": 5e-4, "fail": {HUGE.decode()}}}',
        ),
        f'"fail": {HUGE.decode()}',
        "at $.tolerances.stateN.chunk.fail: integer of 5000 digits overflows a 64-bit float",
    ),
    "iterations_beyond_the_bound": (
        contract_text('"iterations": 300,', '"iterations": 300000000,'),
        '"iterations"',
        "at $.latency.iterations: 300000000 is greater than the maximum of 100000",
    ),
}


def contract_message(path: Path) -> str:
    with pytest.raises(ContractError) as info:
        load_contract(path)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("case", list(CONTRACT_CASES))
def test_contract_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, needle, said = CONTRACT_CASES[case]
    path = tmp_path / "c.json"
    path.write_text(text)
    line = line_of_text(text, needle)
    got = contract_message(path)
    if "maximum" in said:  # schema errors: file, path, message, then the line
        assert got == f"{path}: {said} (line {line})"
    else:
        assert got == f"{path}:{line}: {said}"


def test_contract_with_a_bom_names_it(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + SILERO_CONTRACT.read_bytes())
    assert contract_message(path) == (
        f"{path}:1: the file starts with a UTF-8 byte-order mark; save it without BOM"
    )


#: Every contract count that sets how long a run takes: its JSON path and its bound.
RUN_TIME_COUNTS = [
    ("warmup", 10_000),
    ("iterations", 100_000),
    ("chunks", 10_000),
    ("throughput_iterations", 10_000),
    ("throughput_batches[0]", 65_536),
]


@pytest.mark.parametrize(("field", "bound"), RUN_TIME_COUNTS)
def test_run_time_counts_are_bounded(field: str, bound: int) -> None:
    raw = json.loads(SILERO_CONTRACT.read_text())
    key = field.removesuffix("[0]")

    def put(value: int) -> None:
        raw["latency"][key] = [value] if key != field else value

    put(bound)
    contract_from_json(raw)  # the bound itself is allowed
    put(bound + 1)
    with pytest.raises(ContractError) as info:
        contract_from_json(raw)
    assert str(info.value) == (
        f"contract: at $.latency.{field}: {bound + 1} is greater than the maximum of {bound}"
    )


def test_both_schema_copies_bound_the_same_counts() -> None:
    shipped = Path(__file__).resolve().parents[1] / "contracts" / "contract.schema.json"
    assert json.loads(shipped.read_text()) == schema()
    latency = schema()["$defs"]["latency"]["properties"]
    assert all("maximum" in latency[k] for k in ("warmup", "iterations", "chunks"))


# -- the starter contract's $schema ------------------------------------------------------------------


def test_starter_names_the_packaged_schema_and_loads_anywhere(
    tmp_path: Path, silero_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_trtparity.commands.contract import write_starter

    monkeypatch.chdir(tmp_path)  # nowhere near the repository's contracts/ folder
    out = write_starter(silero_onnx, tmp_path / "starter.json")
    raw = json.loads(out.read_text())
    assert raw["$schema"] == SCHEMA_ID == schema()["$id"]
    assert load_contract(out).model == "silero_vad"


def test_a_schema_id_of_another_version_is_refused() -> None:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["$schema"] = "urn:pytest-trtparity:contract:2"
    with pytest.raises(ContractError) as info:
        contract_from_json(raw)
    assert str(info.value) == (
        "contract: at $.$schema: 'urn:pytest-trtparity:contract:2' is not a schema this version "
        "reads ('urn:pytest-trtparity:contract:1')"
    )
    raw["$schema"] = "./contract.schema.json"  # a path for an editor stays a hint
    contract_from_json(raw)


# -- through the whole gate, as users run it -----------------------------------------------------------

ENGINE = "pkg:silero_vad/data/silero_vad.onnx"


def run_whole_gate(pytester: pytest.Pytester, contract: Path, ref: Path) -> pytest.RunResult:
    return pytester.runpytest(
        f"--trt-engine={ENGINE}",
        f"--trt-contract={contract}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={pytester.path / 'artifacts'}",
        "-p",
        "no:cacheprovider",
    )


def assert_failed_with(result: pytest.RunResult, folder: Path, message: str) -> None:
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines([f"*{message.replace('[', '[[]')}*"])
    assert "Traceback" not in result.stdout.str()
    summary = json.loads((folder / "artifacts" / "summary.json").read_text())
    assert summary["verdict"] == "fail"


@pytest.mark.usefixtures("warm_imports", "quick_plots")
def test_gate_on_a_reference_with_a_5000_digit_integer(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    ref = pytester.path / "ref.jsonl"
    ref.write_bytes(CASES["huge_chunk_index"][0])
    result = run_whole_gate(pytester, SILERO_CONTRACT, ref)
    assert_failed_with(result, gate_dir, f"{ref}:{CASES['huge_chunk_index'][1]}")


@pytest.mark.usefixtures("warm_imports", "quick_plots")
@pytest.mark.parametrize("case", ["huge_integer_iterations", "iterations_beyond_the_bound"])
def test_gate_on_a_contract_with_a_bad_count(
    pytester: pytest.Pytester, gate_dir: Path, case: str
) -> None:
    text, _needle, said = CONTRACT_CASES[case]
    contract = pytester.path / "c.json"
    contract.write_text(text)
    result = run_whole_gate(pytester, contract, SILERO_REF)
    assert_failed_with(result, gate_dir, said)
    assert result.parseoutcomes().get("errors", 0) >= 1


@pytest.mark.usefixtures("warm_imports", "quick_plots")
def test_gate_on_a_contract_with_a_bom(pytester: pytest.Pytester, gate_dir: Path) -> None:
    contract = pytester.path / "c.json"
    contract.write_bytes(b"\xef\xbb\xbf" + SILERO_CONTRACT.read_bytes())
    result = run_whole_gate(pytester, contract, SILERO_REF)
    assert_failed_with(
        result, gate_dir, f"{contract}:1: the file starts with a UTF-8 byte-order mark"
    )
