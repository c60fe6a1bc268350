"""Bad references, engines, options and paths: each stops the gate with one message naming file, line
and field; pytest reports a failure or an error, never a pass; no artifact is left half-written.
Reliability catalogue items 14-23 are here; 11-13 are in test_bad_contracts.py."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends.base import Backend
from pytest_trtparity.errors import EngineLoadError, ReferenceFormatError
from pytest_trtparity.reference.codec import encode_tensor
from pytest_trtparity.reference.reader import ReferenceReader

from .conftest import SILERO_CONTRACT, SILERO_REF, SUITES

LINES = SILERO_REF.read_bytes().split(b"\n")
HEADER, R0, R1, R2 = LINES[:4]


def body(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def edit(line: bytes, fn: Callable[[dict[str, Any]], object]) -> bytes:
    obj = json.loads(line)
    fn(obj)
    return json.dumps(obj, separators=(",", ":")).encode()


def put(side: str, name: str, array: np.ndarray) -> Callable[[dict[str, Any]], object]:
    return lambda obj: obj[side].__setitem__(name, encode_tensor(array))


def values(*items: object) -> Callable[[dict[str, Any]], object]:
    return lambda obj: obj["outputs"].__setitem__(
        "output", {"dtype": "float32", "shape": [1, 1], "values": [list(items)]}
    )


def b64(fn: Callable[[str], str]) -> Callable[[dict[str, Any]], object]:
    return lambda obj: obj["inputs"]["input"].__setitem__("b64", fn(obj["inputs"]["input"]["b64"]))


def field(name: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda obj: obj["inputs"]["input"].__setitem__(name, value)


def utf8_broken() -> bytes:
    return R1[:50] + b"\xff\xfe" + R1[50:]


#: id -> (file content, the message after "PATH:" — with `*` as a wildcard).
REFERENCE_CASES: dict[str, tuple[bytes, str]] = {
    "truncated_last_line": (body(R0, R1) + R2[:200], "3: invalid JSON at column *"),
    "invalid_utf8": (body(R0, utf8_broken(), R2), "2: invalid UTF-8 at byte 50 of the line"),
    "blank_line_in_the_middle": (
        body(R0, b"", R1),
        "2: blank line (a record or the header was expected)",
    ),
    "duplicate_key": (
        body(R0, R1.replace(b'{"chunk_index":1,', b'{"chunk_index":1,"chunk_index":1,')),
        "2: duplicate key 'chunk_index'*",
    ),
    "base64_wrong_length": (
        body(R0, edit(R1, b64(lambda s: s[:-8]))),
        "2: inputs.input.b64: 2298 bytes, but shape [1, 576] of float32 needs 2304",
    ),
    "base64_bad_alphabet": (
        body(R0, edit(R1, b64(lambda s: "*" + s[1:]))),
        "2: inputs.input.b64: invalid base64*",
    ),
    "unknown_dtype": (
        body(R0, edit(R1, field("dtype", "float128"))),
        "2: inputs.input.dtype: unknown dtype 'float128'; expected one of float64, float32, *",
    ),
    "shape_does_not_match_bytes": (
        body(R0, edit(R1, field("shape", [1, 577]))),
        "2: inputs.input.b64: 2304 bytes, but shape [1, 577] of float32 needs 2308",
    ),
    "negative_dim": (
        body(R0, edit(R1, field("shape", [1, -576]))),
        "2: inputs.input.shape[1]: must be a non-negative integer, got -576",
    ),
    "chunk_out_of_order": (
        body(R0, R2, R1),
        "2: chunk_index: chunks out of order in stream 'default': "
        "chunk 2 on line 2 comes before chunk 1 on line 3",
    ),
    "chunk_gap": (
        body(R0, R2),
        "2: chunk_index: 2 in stream 'default' but 1 was expected (gap)",
    ),
    "chunk_duplicate": (
        body(R0, R0),
        "2: chunk_index: 0 in stream 'default' but 1 was expected "
        "(duplicate: chunk 0 was already read on line 1)",
    ),
    "utf8_bom": (
        body(b"\xef\xbb\xbf" + HEADER, R0),
        "1: the file starts with a UTF-8 byte-order mark; save it without BOM",
    ),
    "huge_integer_chunk_index": (
        body(R0, R1.replace(b'"chunk_index":1', b'"chunk_index":' + b"1" * 5000)),
        "2: chunk_index: integer of 5000 digits overflows a 64-bit float",
    ),
    "huge_integer_in_values": (
        body(R0, edit(R1, values(0.5)).replace(b"[[0.5]]", b"[[" + b"7" * 5000 + b"]]")),
        "2: outputs.output.values[0][0]: integer of 5000 digits overflows a 64-bit float",
    ),
    "huge_integer_record_count": (
        body(HEADER.replace(b"                 300", b"1" * 5000), R0),
        "1: records: integer of 5000 digits overflows a 64-bit float",
    ),
    "empty_reference": (b"", "the reference holds no records"),
    "header_only": (body(HEADER.replace(b"300", b"  0")), "the reference holds no records"),
    "cut_at_a_line_boundary": (
        body(HEADER, R0, R1),
        "header says 300 records but the file holds 2 (cut short or appended to?)",
    ),
    "nan_token": (
        body(R0, R1.replace(b'"chunk_index":1', b'"chunk_index":1,"meta":{"gain":NaN}')),
        "2: meta.gain: non-standard JSON token NaN*",
    ),
    "infinity_token": (
        body(R0, R1.replace(b'"chunk_index":1', b'"chunk_index":1,"meta":{"gain":Infinity}')),
        "2: meta.gain: non-standard JSON token Infinity*",
    ),
    "1e400_token": (
        body(R0, R1.replace(b'"chunk_index":1', b'"chunk_index":1,"meta":{"gain":1e400}')),
        "2: meta.gain: number 1e400 overflows a 64-bit float*",
    ),
    "null_in_values": (
        body(R0, edit(R1, values(None))),
        "2: outputs.output.values: element 0 is None; a float32 tensor takes numbers only",
    ),
    "true_in_values": (
        body(R0, edit(R1, values(True))),
        "2: outputs.output.values: element 0 is True; a float32 tensor takes numbers only",
    ),
    "string_in_values": (
        body(R0, edit(R1, values("1.5"))),
        "2: outputs.output.values: element 0 is '1.5'; a float32 tensor takes numbers only",
    ),
    "1e39_in_float32": (
        body(R0, edit(R1, values(1e39))),
        "2: outputs.output.values: element 0 = 1e+39 overflows float32",
    ),
    "deeply_nested": (
        body(R0, b'{"chunk_index":1,"meta":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "2: JSON nested too deeply*",
    ),
    "input_dtype_not_the_contracts": (
        body(R0, edit(R1, put("inputs", "input", np.zeros((1, 576), np.float64)))),
        "2: inputs.input: dtype float64, contract says float32",
    ),
    "input_rank_not_the_contracts": (
        body(R0, edit(R1, put("inputs", "state", np.zeros((2, 128), np.float32)))),
        "2: inputs.state: shape [2, 128], contract says [2, 'B', 128]",
    ),
    "named_dim_inconsistent": (
        body(R0, edit(R1, put("inputs", "state", np.zeros((2, 2, 128), np.float32)))),
        "2: inputs.state: dimension 1 (B) is 2 but B = 1 elsewhere in this chunk",
    ),
    "input_not_in_the_contract": (
        body(R0, edit(R1, put("inputs", "gain", np.ones(1, np.float32)))),
        "2: inputs.gain: not an input of the contract",
    ),
    "output_missing": (
        body(R0, edit(R1, lambda o: o["outputs"].pop("stateN"))),
        "2: outputs.stateN: missing from the reference record",
    ),
    "output_dtype_not_the_contracts": (
        body(R0, edit(R1, put("outputs", "output", np.zeros((1, 1), np.float16)))),
        "2: outputs.output: dtype float16, contract says float32",
    ),
    "output_shape_not_the_contracts": (
        body(R0, edit(R1, put("outputs", "output", np.zeros((1, 2), np.float32)))),
        "2: outputs.output: dimension 1 is 2, contract says 1",
    ),
}


def glob_match(text: str, pattern: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), text) is not None


def expected_message(path: Path, tail: str) -> str:
    return f"{path}:{tail}" if tail[0].isdigit() else f"{path}: {tail}"


@pytest.fixture(scope="module")
def engine(silero_onnx: Path) -> Iterator[Backend]:
    from pytest_trtparity.backends import open_backend

    with open_backend(silero_onnx) as backend:
        yield backend


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_reader_or_binding_message_names_file_line_field(
    case: str, tmp_path: Path, engine: Backend
) -> None:
    """The message itself, exactly, and what ran before it is kept (fast: no pytest run)."""
    from pytest_trtparity.checks.functional import run_functional
    from pytest_trtparity.contract.model import load_contract
    from pytest_trtparity.judge.tiers import Level

    data, tail = REFERENCE_CASES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(data)
    result = run_functional(engine, load_contract(SILERO_CONTRACT), ReferenceReader(path))
    assert not result.complete and result.verdict is Level.FAIL and result.error is not None
    assert "\n" not in result.error
    assert glob_match(result.error, expected_message(path, tail)), result.error
    line = int(tail.split(":")[0]) if tail[0].isdigit() else None
    if line is not None:
        assert (
            result.chunks_run == line - 1
        )  # every good record before the bad line was run and kept


@pytest.fixture
def quick_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw each plot as a 1-pixel PNG: these runs test messages and exit codes, and matplotlib
    rendering costs a second per run. The plots are still written, atomically, where they belong."""
    from pytest_trtparity.artifacts import plots

    if hasattr(plots, "render"):
        monkeypatch.setattr(plots, "render", lambda data: TINY_PNG)


TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000b49444154789c6360000200000500017a5eab3f0000000049454e44ae426082"
)


#: In-process pytest runs forget every module first imported during the run; importing these once
#: here keeps each run from paying for them again (hypothesis' plugin alone costs seconds).
WARM = (
    "hypothesis",
    "onnxruntime",
    "matplotlib.pyplot",
    "pytest_trtparity.session",
    "pytest_trtparity.checks.functional",
    "pytest_trtparity.checks.closed_loop",
    "pytest_trtparity.checks.latency",
    "pytest_trtparity.artifacts.plots",
    "pytest_trtparity.artifacts.report",
    "pytest_trtparity.backends.onnxruntime",
)


@pytest.fixture(scope="session")
def warm_imports() -> None:
    """Session-scoped, so it runs before pytester snapshots sys.modules for the test."""
    import importlib

    for name in WARM:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@pytest.fixture
def functional_gate(warm_imports: None, pytester: pytest.Pytester, quick_plots: None) -> Path:
    """A pytester folder with the contract and functional suites: the reference is read there."""
    for name in ("test_contract.py", "test_functional.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    return pytester.path


def run_gate(
    pytester: pytest.Pytester,
    *,
    engine: Path | str,
    ref: Path | str = SILERO_REF,
    contract: Path | str = SILERO_CONTRACT,
    artifacts: Path | None = None,
    extra: tuple[str, ...] = (),
) -> pytest.RunResult:
    out = artifacts or pytester.path / "artifacts"
    return pytester.runpytest(
        f"--trt-engine={engine}",
        f"--trt-contract={contract}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
        *extra,
    )


def assert_nothing_half_written(folder: Path) -> None:
    if not folder.exists():
        return
    assert not [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]
    summary = folder / "summary.json"
    if summary.exists():
        assert json.loads(summary.read_text())["verdict"] == "fail"


@pytest.mark.parametrize("case", list(REFERENCE_CASES))
def test_gate_on_a_bad_reference_fails_with_the_message(
    case: str, pytester: pytest.Pytester, functional_gate: Path, silero_onnx: Path
) -> None:
    data, tail = REFERENCE_CASES[case]
    path = pytester.path / f"{case}.jsonl"
    path.write_bytes(data)
    result = run_gate(pytester, engine=silero_onnx, ref=path)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(
        passed=1, failed=1
    )  # the contract suite passes; the functional suite fails
    result.stdout.fnmatch_lines([f"functional: {expected_message(path, tail).replace('[', '[[]')}"])
    assert_nothing_half_written(pytester.path / "artifacts")


# -- 23: a truncated .gz fails as a whole, after its first records were read ------------------------


def truncated_gz(tmp_path: Path) -> Path:
    whole = gzip.compress(body(R0, R1, R2) * 1, mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) - 40])
    return path


def test_23_truncated_gz_yields_first_then_fails_the_whole_file(
    tmp_path: Path, silero_onnx: Path
) -> None:
    from pytest_trtparity.backends import open_backend
    from pytest_trtparity.checks.functional import run_functional
    from pytest_trtparity.contract.model import load_contract
    from pytest_trtparity.judge.tiers import Level

    path = truncated_gz(tmp_path)
    seen: list[int] = []
    with pytest.raises(ReferenceFormatError) as exc:
        for record in ReferenceReader(path):
            seen.append(record.chunk_index)
    assert seen, "the truncation is found only after records were yielded"
    assert glob_match(
        str(exc.value),
        f"{path}:*: compressed stream is corrupt or truncated (*); the whole reference is rejected",
    )
    with open_backend(silero_onnx) as engine:
        result = run_functional(engine, load_contract(SILERO_CONTRACT), ReferenceReader(path))
    assert result.chunks_run == len(seen) and not result.complete and result.verdict is Level.FAIL


def test_23_gate_on_a_truncated_gz_fails(
    pytester: pytest.Pytester, functional_gate: Path, silero_onnx: Path
) -> None:
    path = truncated_gz(pytester.path)
    result = run_gate(pytester, engine=silero_onnx, ref=path)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [f"functional: {path}:*: compressed stream is corrupt or truncated*"]
    )
    assert_nothing_half_written(pytester.path / "artifacts")


# -- 22: bounded reads -------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_22_an_overlong_line_is_refused_by_number(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "long.jsonl"
    padded = R1.replace(
        b'"chunk_index":1', b'"chunk_index":1,"meta":{"pad":"' + b"x" * 1000 + b'"}'
    )
    path.write_bytes(body(R0, padded))
    limit = len(R0) + 100
    reader = ReferenceReader(path, max_line_bytes=limit, fast=fast)
    with pytest.raises(
        ReferenceFormatError,
        match=rf"^{re.escape(str(path))}:2: line too long \(over {limit} bytes\)$",
    ):
        list(reader)


# -- 20: the writer is bit-exact ---------------------------------------------------------------------


def test_20_writer_round_trip_keeps_every_bit(tmp_path: Path) -> None:
    from pytest_trtparity.reference import ReferenceWriter

    nan_payload = np.array([0x7FC12345, 0xFFC00001, 0x7F800001], dtype=np.uint32).view(np.float32)
    f32 = np.concatenate(
        [nan_payload, np.float32([-0.0, 0.0, 1e-45, -1.4e-45, 1.17e-38, np.inf, -np.inf])]
    )
    f16 = np.array([0x7E01, 0x8000, 0x0001, 0x03FF, 0x7C00], dtype=np.uint16).view(np.float16)
    f64 = np.array([0x7FF8000000000ABC, 0x8000000000000000, 1], dtype=np.uint64).view(np.float64)
    ints = {
        "i8": np.int8([-128, 127]),
        "u8": np.uint8([0, 255]),
        "i64": np.int64([-(2**63), 2**63 - 1]),
    }
    path = tmp_path / "bits.jsonl"
    with ReferenceWriter(path) as w:
        w.write(
            inputs={"f32": f32, "f16": f16, "f64": f64, **ints},
            outputs={"b": np.array([True, False])},
        )
    (record,) = list(ReferenceReader(path))
    for name, want in {"f32": f32, "f16": f16, "f64": f64, **ints}.items():
        got = record.inputs[name]
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name
    assert record.outputs["b"].tolist() == [True, False]
    assert not list(tmp_path.glob(".*.tmp"))


def test_20_writer_refuses_non_finite_values_as_json_numbers(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="non-finite values cannot be written as JSON numbers; use b64"
    ):
        encode_tensor(np.float32([np.nan]), encoding="values")


# -- engines ------------------------------------------------------------------------------------------


ENGINE_CASES: dict[str, tuple[bytes | None, str]] = {
    "corrupt.onnx": (
        b"\x08\x07this is not a protobuf" * 10,
        "{path}: onnxruntime cannot load this model (sha256 *): *INVALID_PROTOBUF*",
    ),
    "empty.onnx": (b"", "{path}: engine file is empty"),
    "folder.onnx": (None, "{path}: is a directory, not an engine file"),
    "missing.onnx": (None, "{path}: engine file not found"),
}


@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_bad_engine_file_is_an_error_naming_the_path(name: str, tmp_path: Path) -> None:
    from pytest_trtparity.backends import open_backend

    data, said = ENGINE_CASES[name]
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    elif name == "folder.onnx":
        path.mkdir()
    with pytest.raises(EngineLoadError) as exc:
        open_backend(path).load()
    assert glob_match(str(exc.value), said.format(path=path)), str(exc.value)


@pytest.mark.parametrize("name", ["corrupt.onnx", "empty.onnx"])
def test_gate_on_a_bad_engine_errors(
    name: str, pytester: pytest.Pytester, functional_gate: Path
) -> None:
    data, said = ENGINE_CASES[name]
    path = pytester.path / name
    path.write_bytes(data or b"")
    result = run_gate(pytester, engine=path)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([said.format(path=path).replace("[", "[[]")])
    assert_nothing_half_written(pytester.path / "artifacts")


def test_engine_from_another_tensorrt_version_names_both_versions(tmp_path: Path) -> None:
    """The TensorRT backend decides from the build report before it asks TensorRT (which only logs)."""
    from pytest_trtparity.trt import compat

    engine = tmp_path / "model.plan"
    meta = compat.EngineMeta(
        trt_version="10.3.0", compute_capability="8.9", gpu="NVIDIA L4", engine_sha256="ab" * 32
    )
    with pytest.raises(EngineLoadError) as exc:
        compat.check_before_load(
            engine,
            meta,
            installed_version="10.8.0",
            device_cc="8.9",
            device_name="NVIDIA L4",
            engine_sha256="ab" * 32,
        )
    assert str(exc.value) == (
        f"{engine}: built by TensorRT 10.3.0, but this runtime is TensorRT 10.8.0; "
        "rebuild the engine with 10.8.0"
    )
    with pytest.raises(
        EngineLoadError,
        match=re.escape(
            "sha256 cdcdcdcdcdcdcdcd… differs from abababababababab… "
            "recorded in model.plan.build.json at build time"
        ),
    ):
        compat.check_before_load(
            engine,
            meta,
            installed_version="10.3.0",
            device_cc="8.9",
            device_name="NVIDIA L4",
            engine_sha256="cd" * 32,
        )
    with pytest.raises(
        EngineLoadError,
        match=r"built for GPU compute capability 8\.9 \(NVIDIA L4\), but this GPU "
        r"\(NVIDIA H100\) is 9\.0; rebuild on this GPU",
    ):
        compat.check_before_load(
            engine,
            meta,
            installed_version="10.3.0",
            device_cc="9.0",
            device_name="NVIDIA H100",
            engine_sha256="ab" * 32,
        )
    text = compat.deserialize_failure(
        engine,
        "ef" * 32,
        installed_version="10.8.0",
        meta=meta,
        log=["Serialization assertion magicTagRead == kMAGIC_TAG failed"],
    )
    assert text.startswith(
        f"{engine}: TensorRT 10.8.0 could not deserialize this engine (sha256 efefefefefefefef…, "
        "built by TensorRT 10.3.0)"
    )
    assert text.endswith(
        "; TensorRT said: Serialization assertion magicTagRead == kMAGIC_TAG failed"
    )
    bare = compat.deserialize_failure(engine, "ef" * 32, installed_version="10.8.0", meta=None)
    assert "built by TensorRT unknown (no build report beside the engine)" in bare


# -- options and paths ---------------------------------------------------------------------------------


def test_option_without_its_value_is_a_usage_error(
    pytester: pytest.Pytester, functional_gate: Path
) -> None:
    result = pytester.runpytest(
        "-p", "no:cacheprovider", f"--trt-contract={SILERO_CONTRACT}", "--trt-ref"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --trt-ref: expected one argument*"])


def test_empty_option_value_is_no_value(
    pytester: pytest.Pytester, functional_gate: Path, silero_onnx: Path
) -> None:
    result = run_gate(pytester, engine=silero_onnx, ref="")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*no ref given: pass --trt-ref PATH or set trt_ref in your ini file*"]
    )


def test_directory_where_the_reference_should_be(
    pytester: pytest.Pytester, functional_gate: Path, silero_onnx: Path
) -> None:
    folder = pytester.path / "ref.jsonl"
    folder.mkdir()
    result = run_gate(pytester, engine=silero_onnx, ref=folder)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "passed" not in result.parseoutcomes() or result.parseoutcomes()["passed"] == 1
    result.stdout.fnmatch_lines([f"*{folder}: *"])
    assert_nothing_half_written(pytester.path / "artifacts")


def test_unreadable_reference(
    pytester: pytest.Pytester, functional_gate: Path, silero_onnx: Path
) -> None:
    path = pytester.path / "locked.jsonl"
    path.write_bytes(body(R0, R1))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip(
                "running as root: chmod 000 does not stop reads (the directory case covers unreadable paths)"
            )
        result = run_gate(pytester, engine=silero_onnx, ref=path)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [f"functional: {path}: cannot read reference: Permission denied"]
        )
    finally:
        path.chmod(0o644)


def test_artifacts_folder_that_cannot_be_written(
    pytester: pytest.Pytester, functional_gate: Path, silero_onnx: Path
) -> None:
    blocker = pytester.path / "not-a-folder"
    blocker.write_text("a regular file\n")
    out = blocker / "artifacts"
    result = run_gate(pytester, engine=silero_onnx, artifacts=out)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, (
        "suites that passed must not make a run without its summary pass"
    )
    result.stdout.fnmatch_lines(
        [f"ERROR: {out}*: artifacts folder cannot be written: Not a directory"]
    )
    assert blocker.read_text() == "a regular file\n"
    assert not [p.name for p in pytester.path.iterdir() if p.name.endswith(".tmp")]
