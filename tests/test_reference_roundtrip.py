"""The writer and reader agree, bit for bit, on every dtype, encoding and file kind."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.contract import dtypes
from pytest_trtparity.errors import ReferenceFormatError
from pytest_trtparity.reference import ReferenceWriter, encode_tensor, read_records
from pytest_trtparity.reference.reader import read_header

SPECIAL = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-45, -3.5], dtype=np.float32)


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out: dict[str, np.ndarray] = {}
    for name in dtypes.SUPPORTED:
        if name == "bool":
            out[name] = rng.integers(0, 2, (2, 3)).astype(bool)
        elif name in dtypes.INT_DTYPES:
            info = np.iinfo(dtypes.host_dtype(name))
            out[name] = np.array([[info.min, 0, info.max]], dtype=dtypes.host_dtype(name))
        elif name == "bfloat16":
            # exactly representable: 1.0, -2.5 and the largest finite bfloat16
            out[name] = dtypes.bfloat16_bits_to_float32(
                np.array([0x3F80, 0xC020, 0x7F7F], dtype=np.uint16)
            )
        else:
            out[name] = rng.normal(size=(3,)).astype(dtypes.host_dtype(name))
    out["rank0"] = np.array(7, dtype=np.int64)
    out["empty"] = np.zeros((0, 4), dtype=np.float32)
    return out


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_every_dtype_round_trips_bit_exact(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"r{suffix}"
    data = arrays()
    with ReferenceWriter(path, metadata={"model": "m"}, dtypes={"bfloat16": "bfloat16"}) as w:
        w.write(inputs=data, outputs={"special": SPECIAL})
        w.write(inputs=data, outputs={"special": SPECIAL}, stream="b")
    records = list(read_records(path))
    assert [(r.stream, r.chunk_index) for r in records] == [("default", 0), ("b", 0)]
    for name, value in data.items():
        got = records[0].inputs[name]
        assert got.shape == value.shape and got.dtype == value.dtype, name
        assert got.tobytes() == value.tobytes(), name
    assert (
        records[1].outputs["special"].view(np.uint32).tolist() == SPECIAL.view(np.uint32).tolist()
    )


def test_values_encoding_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    data = {k: v for k, v in arrays().items() if k != "bfloat16"}
    with ReferenceWriter(path, encoding="values") as w:
        w.write(inputs=data, outputs={})
    (record,) = read_records(path)
    for name, value in data.items():
        np.testing.assert_array_equal(record.inputs[name], value)
        assert record.inputs[name].dtype == value.dtype


def test_npy_sidecar_is_memory_mapped(tmp_path: Path) -> None:
    big = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "big.npy", big)
    line = '{"chunk_index": 0, "inputs": {"x": {"dtype": "float32", "shape": [2, 3, 4], "npy": "big.npy"}}, "outputs": {}}\n'
    (tmp_path / "r.jsonl").write_text(line)
    (record,) = read_records(tmp_path / "r.jsonl")
    np.testing.assert_array_equal(record.inputs["x"], big)


def test_header_records_count_catches_a_file_cut_at_a_line_boundary(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with ReferenceWriter(path) as w:
        for i in range(3):
            w.write(inputs={"x": np.float32([i])}, outputs={})
    header = read_header(path)
    assert header is not None and header.records == 3
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(
        ReferenceFormatError, match=r"r.jsonl: header says 3 records but the file holds 2"
    ):
        list(read_records(path))


def test_writer_leaves_nothing_when_the_harness_crashes(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError), ReferenceWriter(path) as w:
        w.write(inputs={"x": np.float32([1])}, outputs={})
        raise RuntimeError("harness died")
    assert list(tmp_path.iterdir()) == []


def test_gz_writer_output_is_a_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    with ReferenceWriter(path) as w:
        w.write(inputs={"x": np.float32([1])}, outputs={})
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 2


def test_encode_refuses_nan_as_values() -> None:
    with pytest.raises(ValueError, match="use b64"):
        encode_tensor(np.float32([np.nan]), encoding="values")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"chunk_index": 0, "inputs": {}, "outputs": {}',
            "r.jsonl:1: invalid JSON at column 47: Expecting ',' delimiter (truncated or not JSON?)",
        ),
        (
            '{"chunk_index": 0, "chunk_index": 1, "inputs": {}, "outputs": {}}',
            "r.jsonl:1: duplicate key 'chunk_index'",
        ),
        (
            '{"chunk_index": NaN, "inputs": {}, "outputs": {}}',
            "r.jsonl:1: chunk_index: non-standard JSON token NaN (NaN and Infinity are not JSON)",
        ),
    ],
)
def test_only_syntax_errors_are_called_possibly_truncated(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ReferenceFormatError) as info:
        list(read_records(path))
    assert str(info.value).endswith(message)
