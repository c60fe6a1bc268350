"""A memory-mapped reference stays out of resident memory while its records are decoded.

Mapped pages count in the process's resident set once touched. The reader used to touch a whole
line before decoding it (searching each payload for its closing quote, summing the CRC-32 of a line
read by key), so a 100 MB line was resident in full beside the tensors decoded from it. Payload ends
now come from the tensor's dtype and shape, and the CRC is summed as the line is decoded, each page
handed back once read; these tests pin that down, and that every shortcut still reads exactly what
the strict path reads.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.errors import ReferenceFormatError
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter, codec, fastpath
from pytest_trtparity.reference import index as idx
from pytest_trtparity.reference.codec import FastPathMiss

ELEMENTS = 1 << 20  # 4 MiB float32 tensors: 5.6 MB payloads, far above MIN_PAYLOAD
MiB = 1 << 20


def write(path: Path, records: int = 3, elements: int = ELEMENTS) -> Path:
    with ReferenceWriter(path, metadata={"model": "t"}) as w:
        for i in range(records):
            x = np.arange(elements, dtype=np.float32) + i
            w.write(inputs={"x": x, "n": np.array([i])}, outputs={"y": -x, "z": 2 * x})
    return path


def plain(record: Any) -> tuple[object, ...]:
    return (
        record.key,
        record.line,
        [(k, v.dtype.str, v.shape, v.tobytes()) for k, v in record.inputs.items()],
        [(k, v.dtype.str, v.shape, v.tobytes()) for k, v in record.outputs.items()],
    )


def mapped_rss(path: Path) -> int:
    """Resident bytes of this process's mappings of `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as fh:
        for row in fh:
            head = row.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                inside = len(head) > 5 and head[5] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


needs_smaps = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/smaps").exists(),
    reason="reads the mapping's resident size from /proc/self/smaps",
)


@pytest.fixture
def resident_at_decode(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[int], list[Path]]]:
    """(the mapping's resident bytes when each payload starts decoding, the file to watch)."""
    seen: list[int] = []
    watched: list[Path] = []
    decode = codec.Base64Span.decode

    def spying(span: codec.Base64Span) -> np.ndarray:
        seen.append(mapped_rss(watched[0]))
        return decode(span)

    monkeypatch.setattr(codec.Base64Span, "decode", spying)
    yield seen, watched


@needs_smaps
@pytest.mark.parametrize("by_key", [False, True], ids=["streamed", "by key"])
def test_a_line_is_not_resident_while_it_is_decoded(
    tmp_path: Path, resident_at_decode: tuple[list[int], list[Path]], by_key: bool
) -> None:
    seen, watched = resident_at_decode
    path = write(tmp_path / "r.jsonl")
    watched.append(path.resolve())
    reader = ReferenceReader(path)
    if by_key:
        keys = reader.index().record_keys()
        seen.clear()  # building the index reads every line once
        records = list(reader.records(list(reversed(keys))))
    else:
        records = list(reader)
    line = max(len(row) for row in path.read_bytes().split(b"\n"))
    assert len(records) == 3 and len(seen) == 9 and line > 16 * MiB
    # before: the whole line (17 MB) was resident when its first payload started decoding
    assert max(seen) < 2 * fastpath.SCAN_BLOCK, [f"{s / MiB:.1f} MiB" for s in seen]


def test_records_by_key_equal_the_streamed_ones_with_large_payloads(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl")
    streamed = [plain(r) for r in ReferenceReader(path)]
    reader = ReferenceReader(path)
    keys = reader.index().record_keys()
    assert [plain(r) for r in reader.records(keys)] == streamed
    assert [plain(r) for r in ReferenceReader(path).records(keys[::-1])] == streamed[::-1]


def test_a_line_whose_outputs_come_first_is_summed_in_file_order(tmp_path: Path) -> None:
    """Payloads are decoded inputs first; with outputs first in the file the CRC still covers the
    line in order (an earlier payload is summed when a later one is released)."""
    src = write(tmp_path / "src.jsonl", 2)
    rows = src.read_bytes().split(b"\n")
    swapped = [rows[0]]
    for row in rows[1:]:
        if row:
            obj = json.loads(row)
            obj = {"outputs": obj.pop("outputs"), **obj}
            swapped.append(json.dumps(obj, separators=(",", ":")).encode())
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(swapped) + b"\n")
    streamed = [plain(r) for r in ReferenceReader(path)]
    reader = ReferenceReader(path)
    assert [plain(r) for r in reader.records(reader.index().record_keys())] == streamed


def test_an_index_pointing_into_a_line_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    """The CRC is checked after the line is decoded: whatever the wrong bytes decoded to (here an
    error, a line cut in the middle of a payload), a mismatch rebuilds the index and reads again."""
    path = write(tmp_path / "r.jsonl")
    reader = ReferenceReader(path)
    want = plain(next(iter(ReferenceReader(path))))
    reader.index()
    saved = idx.index_path(path)
    raw = json.loads(saved.read_text())
    raw["offset"][0] += 1000
    saved.write_text(json.dumps(raw))
    assert plain(ReferenceReader(path).get("default", 0)) == want


def test_an_index_crc_mismatch_on_a_decodable_line_is_rebuilt(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl")
    ReferenceReader(path).index()
    saved = idx.index_path(path)
    raw = json.loads(saved.read_text())
    raw["crc32"][1] ^= 1
    saved.write_text(json.dumps(raw))
    reader = ReferenceReader(path)
    assert plain(reader.get("default", 1)) == plain(list(ReferenceReader(path))[1])
    assert json.loads(saved.read_text())["crc32"][1] == raw["crc32"][1] ^ 1  # rebuilt


# -- payload ends from dtype and shape ---------------------------------------------------------


class Spy:
    """A line buffer that records the bytes each `find` read: up to the match, or the whole span."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.searched: list[tuple[int, int]] = []

    def find(self, sub: bytes, start: int = 0, end: int | None = None, /) -> int:
        stop = len(self.data) if end is None else end
        found = self.data.find(sub, start, stop)
        self.searched.append((start, stop if found < 0 else found + len(sub)))
        return found

    def __getitem__(self, index: Any, /) -> Any:
        return self.data[index]


def _line(tmp_path: Path, **kw: Any) -> bytes:
    return write(tmp_path / "one.jsonl", 1, **kw).read_bytes().split(b"\n")[1]


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "json.dumps spacing"])
def test_payload_ends_are_not_searched_for(tmp_path: Path, spaced: bool) -> None:
    line = _line(tmp_path)
    if spaced:
        line = json.dumps(json.loads(line)).encode()
    spy = Spy(line)
    scan = fastpath.scan_line(spy, 0, len(line), 1 << 30)
    assert scan is not None and len(scan.cuts) == 3
    for begin, stop in scan.cuts:
        assert line[begin - 1] == line[stop] == ord('"') and line.find(b'"', begin) == stop
        assert not any(lo < stop - 1 and hi > begin + 1 for lo, hi in spy.searched)


def test_an_unpredictable_payload_is_searched_a_block_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shape after b64 (another writer's order): the end is searched for, each block released."""
    monkeypatch.setattr(fastpath, "SCAN_BLOCK", 1 << 16)
    line = _line(tmp_path, elements=1 << 14).replace(b'"shape":[1],', b"")
    line = line.replace(b'"dtype":"float32","shape":[16384],', b'"dtype":"float32",')
    released: list[tuple[int, int]] = []
    scan = fastpath.scan_line(line, 0, len(line), 1 << 30, lambda a, b: released.append((a, b)))
    assert scan is not None and len(scan.cuts) == 3
    assert [line.find(b'"', b) for b, _ in scan.cuts] == [e for _, e in scan.cuts]
    assert len(released) >= 3 * 21848 // (1 << 16)
    assert all(b - a <= 1 << 16 for a, b in released)


def _short_payload(line: bytes) -> bytes:
    """The first payload cut short so that a `"` sits where its shape says it ends: the predicted
    span then holds the real end and the text after it."""
    begin = line.index(b'"b64":"') + 7
    end = line.index(b'"', begin)
    length = end - begin
    for kept in range(length - 4, 0, -4):
        if line[end + length - kept] == ord('"'):
            return line[: begin + kept] + line[end:]
    raise AssertionError("no cut lands on a quote")


def test_a_predicted_end_over_a_short_payload_reads_as_the_strict_path_reads(
    tmp_path: Path,
) -> None:
    rows = write(tmp_path / "r.jsonl", 2, elements=1 << 14).read_bytes().split(b"\n")
    rows[1] = _short_payload(rows[1])
    path = tmp_path / "short.jsonl"
    path.write_bytes(b"\n".join(rows))
    scan = fastpath.scan_line(rows[1], 0, len(rows[1]), 1 << 30)
    assert scan is not None and b'"' in rows[1][scan.cuts[0][0] : scan.cuts[0][1]]  # predicted

    def outcome(**kw: Any) -> object:
        try:
            return [plain(r) for r in ReferenceReader(path, **kw)]
        except ReferenceFormatError as exc:
            return str(exc)

    assert outcome(fast=True) == outcome(fast=False)
    assert "inputs.x.b64" in str(outcome(fast=False))

    def keys(**kw: Any) -> object:
        try:
            return [
                (e.key, e.line, e.offset, e.length)
                for e in ReferenceReader(path, **kw)._build_index().entries
            ]
        except ReferenceFormatError as exc:
            return str(exc)

    assert keys(fast=True) == keys(fast=False)


def test_check_cuts_refuses_a_span_holding_a_quote() -> None:
    line = b'{"b64":"QUFB","x":"QUFB"}'
    fastpath.check_cuts(line, ((8, 12),))
    with pytest.raises(FastPathMiss):
        fastpath.check_cuts(line, ((8, 23),))
