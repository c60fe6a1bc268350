"""The reference index: built once, reused while the file is unchanged, rebuilt when it is not, and
records read by key are exactly the records the streaming reader yields."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.errors import ConfigError, ReferenceFormatError
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter
from pytest_trtparity.reference import index as idx
from pytest_trtparity.reference.reader import ReferenceReader as _Reader


def write(path: Path, records: int = 6, *, streams: int = 2, size: int = 16) -> Path:
    """Records of `streams` interleaved streams; tensor values tell which record they came from."""
    with ReferenceWriter(path, metadata={"model": "t"}) as w:
        for i in range(records):
            w.write(
                inputs={"x": np.full((size,), i, dtype=np.float32)},
                outputs={"y": np.arange(3, dtype=np.int64) + i},
                stream=f"s{i % streams}",
            )
    return path


def same(a: object, b: object) -> bool:
    return (
        a.key == b.key
        and a.line == b.line
        and a.source == b.source  # type: ignore[attr-defined]
        and all(a.inputs[k].tobytes() == b.inputs[k].tobytes() for k in a.inputs)  # type: ignore[attr-defined]
        and all(a.outputs[k].tobytes() == b.outputs[k].tobytes() for k in a.outputs)
    )  # type: ignore[attr-defined]


@pytest.fixture(params=[".jsonl", ".jsonl.gz"])
def ref(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return write(tmp_path / f"r{request.param}")


def test_records_by_key_equal_the_streamed_ones(ref: Path) -> None:
    streamed = list(ReferenceReader(ref))
    reader = ReferenceReader(ref)
    keys = reader.index().record_keys()
    assert keys == [r.key for r in streamed]
    backwards = list(reader.records(reversed(keys)))
    assert all(same(a, b) for a, b in zip(reversed(streamed), backwards, strict=True))
    assert same(reader.get("s1", 1), streamed[3])


def test_index_knows_streams_positions_and_header(ref: Path) -> None:
    index = ReferenceReader(ref).index()
    assert index.streams() == ["s0", "s1"]
    assert [index.position(k) for k in [("s0", 0), ("s1", 0), ("s0", 1)]] == [0, 1, 2]
    assert index.header is not None and index.header["model"] == "t"
    assert [e.line for e in index.entries] == list(range(2, 8))


def test_unknown_key_names_the_stream_and_what_exists(ref: Path) -> None:
    reader = ReferenceReader(ref)
    with pytest.raises(
        ReferenceFormatError, match=r"no record for stream 's0' chunk 9 \(chunks 0\.\.2\)"
    ):
        reader.get("s0", 9)
    with pytest.raises(ReferenceFormatError, match=r"stream 'zz' chunk 0 \(no such stream\)"):
        reader.get("zz", 0)


def test_index_is_saved_and_reused_without_scanning(
    ref: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ReferenceReader(ref).index()
    saved = idx.index_path(ref)
    assert saved.is_file()
    assert json.loads(saved.read_text())["trtparity"] == idx.INDEX_FORMAT
    assert not [p for p in ref.parent.iterdir() if p.name.endswith(".tmp")]

    def no_scan(self: _Reader) -> object:
        raise AssertionError("the index was rebuilt although the reference did not change")

    monkeypatch.setattr(_Reader, "_build_index", no_scan)
    reader = ReferenceReader(ref)
    assert len(reader.index()) == 6
    assert reader.get("s0", 2).outputs["y"].tolist() == [4, 5, 6]


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    builds: list[int] = []
    original = _Reader._build_index

    def counting(self: _Reader) -> idx.ReferenceIndex:
        builds.append(1)
        return original(self)

    monkeypatch.setattr(_Reader, "_build_index", counting)
    return builds


def test_changed_reference_rebuilds_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = write(tmp_path / "r.jsonl", 6)
    ReferenceReader(ref).index()
    write(ref, 8)  # rewritten: new size and time
    builds = _count_builds(monkeypatch)
    reader = ReferenceReader(ref)
    assert len(reader.index()) == 8 and builds == [1]
    assert reader.get("s1", 3).inputs["x"][0] == 7


def test_edit_that_keeps_size_time_and_ends_is_caught_by_the_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A same-length edit in the middle of a file bigger than both hashed ends, with the modification
    time put back: the fingerprint matches, the record's CRC-32 does not, so the index is rebuilt."""
    ref = write(tmp_path / "r.jsonl", 40, size=8192)  # ~1.7 MB, far more than 2 x 64 KiB
    reader = ReferenceReader(ref)
    entry = reader.index().entry(("s0", 10))
    stat = ref.stat()
    data = bytearray(ref.read_bytes())
    line = bytes(data[entry.offset : entry.offset + entry.length])
    payload_at = line.index(b'"b64":"') + 7
    edited = line[:payload_at] + b"AACAPw" + line[payload_at + 6 :]  # first float: 1.0
    data[entry.offset : entry.offset + entry.length] = edited
    ref.write_bytes(bytes(data))
    os.utime(ref, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert idx.load(ref) is not None  # the fingerprint alone is fooled

    builds = _count_builds(monkeypatch)
    record = ReferenceReader(ref).get("s0", 10)
    assert record.inputs["x"][0] == 1.0 and builds == [1]


def test_corrupt_index_file_is_rebuilt(ref: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ReferenceReader(ref).index()
    for broken in ["{", "[]", '{"trtparity":"trtparity-index/1","stream":[1]}', ""]:
        idx.index_path(ref).write_text(broken)
        assert idx.load(ref) is None
        builds = _count_builds(monkeypatch)
        assert len(ReferenceReader(ref).index()) == 6 and builds == [1]
        monkeypatch.undo()


def test_index_pointing_elsewhere_is_never_trusted(tmp_path: Path) -> None:
    """An index whose offsets are wrong but whose fingerprint matches (hand-edited, or a bug): each
    read checks the line's CRC and key, so the index is rebuilt rather than a wrong record returned."""
    ref = write(tmp_path / "r.jsonl", 6)
    ReferenceReader(ref).index()
    path = idx.index_path(ref)
    raw = json.loads(path.read_text())
    raw["offset"][0], raw["offset"][2] = raw["offset"][2], raw["offset"][0]
    raw["length"][0], raw["length"][2] = raw["length"][2], raw["length"][0]
    raw["crc32"][0], raw["crc32"][2] = raw["crc32"][2], raw["crc32"][0]
    path.write_text(json.dumps(raw))
    record = ReferenceReader(ref).get("s0", 0)
    assert record.key == ("s0", 0) and record.inputs["x"][0] == 0


def test_unwritable_folder_still_gives_an_index(ref: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path, text: str) -> Path:
        raise ConfigError(f"{path.parent}: artifacts folder cannot be written: read-only")

    monkeypatch.setattr(idx, "write_text", refuse)
    reader = ReferenceReader(ref)
    assert len(reader.index()) == 6
    assert not idx.index_path(ref).exists()
    assert reader.get("s1", 0).key == ("s1", 0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.replace(b'"chunk_index":2,"stream":"s0"', b'"chunk_index":3,"stream":"s0"'),
            r":6: chunk_index: 3 in stream 's0' but 2 was expected \(gap\)",
        ),
        (
            lambda d: re.sub(rb'"records": *6', b'"records":5', d, count=1),
            r"header says 5 records but the file holds 6",
        ),
        (
            lambda d: d.replace(b'"stream":"s1"', b'"stream":""', 1),
            r":3: stream: must be a non-empty string",
        ),
        (lambda d: d + b"\n", r":8: blank line"),
    ],
)
def test_building_reports_what_streaming_reports(
    tmp_path: Path, edit: object, message: str
) -> None:
    ref = write(tmp_path / "r.jsonl", 6)
    ref.write_bytes(edit(ref.read_bytes()))  # type: ignore[operator]
    with pytest.raises(ReferenceFormatError, match=message) as streamed:
        list(ReferenceReader(ref))
    with pytest.raises(ReferenceFormatError) as indexed:
        ReferenceReader(ref).index()
    assert str(indexed.value) == str(streamed.value)


def test_a_broken_tensor_surfaces_when_its_record_is_read(tmp_path: Path) -> None:
    """The index checks keys, not tensors; reading the record by key is as strict as streaming."""
    ref = write(tmp_path / "r.jsonl", 6)
    data = ref.read_bytes()
    at = data.index(b'"b64":"', data.index(b'"chunk_index":1,"stream":"s0"')) + 7
    ref.write_bytes(data[:at] + b"!" + data[at + 1 :])
    reader = ReferenceReader(ref)
    assert len(reader.index()) == 6
    with pytest.raises(ReferenceFormatError, match=r"r\.jsonl:4: inputs\.x\.b64: invalid base64"):
        reader.get("s0", 1)
    assert reader.get("s0", 0).key == ("s0", 0)
