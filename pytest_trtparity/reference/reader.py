"""Streaming reader for v1 references: one record in memory at a time, every fault an error.

A gate that reads 20 GB of reference must not hold it, and a gate must never pass because a reader
skipped a bad line: a truncated last line, invalid UTF-8, a blank line, a duplicate key, a chunk index
out of order, a short `.gz` — each stops the run with file, line and field named.

Lines with `b64` payloads take the fast path (`fastpath.py`: the JSON skeleton parsed strictly, the
payloads decoded in place from the memory-mapped file); any line it is unsure of is read by the strict
path below, which is the only place errors come from. `index()` and `records(keys)` read chosen
records without scanning the file (`index.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ReferenceFormatError
from ..util import strictjson
from . import index as _index
from .codec import FastPathMiss, decode_tensor
from .fastpath import (
    LineSource,
    RawLine,
    attach_payloads,
    check_cuts,
    open_binary,
    open_lines,
    parse_skeleton,
    read_lines,
)

FORMAT_TAG = "reference/1"
DEFAULT_STREAM = "default"
#: Longest line accepted; a bigger one is almost certainly not a reference (or needs npy sidecars).
MAX_LINE_BYTES = 8 << 30
_RECORD_KEYS_REQUIRED = ("chunk_index", "inputs", "outputs")
#: Largest chunk index or record count (int64, what every consumer of the number can hold).
MAX_INDEX = (1 << 63) - 1


@dataclass(frozen=True)
class Header:
    metadata: dict[str, Any]
    records: int | None = None


@dataclass(frozen=True)
class Record:
    stream: str
    chunk_index: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    source: str = ""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.stream, self.chunk_index)

    @property
    def nbytes(self) -> int:
        """Bytes its decoded tensors hold: what keeping the record in memory costs (the loop reads
        ahead and queues checks only while this stays small)."""
        return sum(a.nbytes for a in self.inputs.values()) + sum(
            a.nbytes for a in self.outputs.values()
        )


def _lines(stream: IO[bytes], path: Path, limit: int) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, bytes without the newline); errors for over-long lines and short gzip."""
    for lineno, _offset, data, _newline in read_lines(stream, path, limit):
        yield lineno, data


def parse_line(data: bytes, where: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReferenceFormatError(
            f"{where}: invalid UTF-8 at byte {exc.start} of the line"
        ) from None
    if not text.strip():
        raise ReferenceFormatError(f"{where}: blank line (a record or the header was expected)")
    if text.startswith(strictjson.BOM_TEXT):
        # a byte-order mark is valid UTF-8 but not JSON; left to the parser it reads as garbage
        what = "the file" if where.endswith(":1") else "the line"
        raise ReferenceFormatError(f"{where}: {what} {strictjson.BOM_MESSAGE}")
    try:
        return strictjson.loads(text)
    except strictjson.StrictJSONError as exc:
        hint = " (truncated or not JSON?)" if str(exc).startswith("invalid JSON") else ""
        field = f"{strictjson.dotted(exc.path)}: " if exc.path else ""
        raise ReferenceFormatError(f"{where}: {field}{exc}{hint}") from None


def record_key(obj: Any, where: str) -> tuple[str, int]:
    """A record's (stream, chunk_index), checked; the first checks of `parse_record`."""
    if not isinstance(obj, dict):
        raise ReferenceFormatError(
            f"{where}: a record must be a JSON object, got {type(obj).__name__}"
        )
    for key in _RECORD_KEYS_REQUIRED:
        if key not in obj:
            raise ReferenceFormatError(f"{where}: {key}: missing")
    chunk = obj["chunk_index"]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 0 <= chunk <= MAX_INDEX:
        raise ReferenceFormatError(
            f"{where}: chunk_index: must be an integer from 0 to 2**63 - 1, got {chunk!r}"
        )
    stream = obj.get("stream", DEFAULT_STREAM)
    if not isinstance(stream, str) or not stream:
        raise ReferenceFormatError(f"{where}: stream: must be a non-empty string, got {stream!r}")
    return stream, chunk


def parse_record(obj: Any, *, source: str, line: int, base_dir: Path | None) -> Record:
    where = f"{source}:{line}"
    stream, chunk = record_key(obj, where)
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ReferenceFormatError(f"{where}: meta: must be an object, got {type(meta).__name__}")
    sides: dict[str, dict[str, np.ndarray]] = {}
    for side in ("inputs", "outputs"):
        tensors = obj[side]
        if not isinstance(tensors, dict):
            raise ReferenceFormatError(f"{where}: {side}: must be an object of tensors")
        sides[side] = {
            name: decode_tensor(t, where=where, field=f"{side}.{name}", base_dir=base_dir)
            for name, t in tensors.items()
        }
    return Record(stream, chunk, sides["inputs"], sides["outputs"], meta, line, source)


def parse_header(obj: Any, where: str) -> Header | None:
    if not isinstance(obj, dict) or "trtparity" not in obj:
        return None
    tag = obj["trtparity"]
    if tag != FORMAT_TAG:
        raise ReferenceFormatError(
            f"{where}: trtparity: unsupported format {tag!r}; this reader reads {FORMAT_TAG!r}"
        )
    count = obj.get("records")
    if count is not None and (
        isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_INDEX
    ):
        raise ReferenceFormatError(
            f"{where}: records: must be an integer from 0 to 2**63 - 1, got {count!r}"
        )
    return Header(metadata=dict(obj), records=count)


class ChunkOrderError(ReferenceFormatError):
    """A record's chunk index is not the next of its stream; `gap` when it skips ahead."""

    def __init__(self, message: str, record: Record, expected: int) -> None:
        super().__init__(message)
        self.record = record
        self.expected = expected

    @property
    def gap(self) -> bool:
        return self.record.chunk_index > self.expected


class ChunkOrder:
    """Checks that each stream counts 0, 1, 2, ... in file order.

    Each stream's last record (chunk and line) is kept, so a duplicate names the record it repeats.
    A jump ahead is only a gap if the skipped chunk never comes: the reader decides that with
    `order_error`, which looks further into the file.
    """

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, int]] = {}

    def check(self, record: Record) -> None:
        last = self.last.get(record.stream)
        want = 0 if last is None else last[0] + 1
        chunk = record.chunk_index
        if chunk > want:
            raise ChunkOrderError(
                f"{record.where}: chunk_index: {chunk} in stream {record.stream!r} "
                f"but {want} was expected (gap)",
                record,
                want,
            )
        if chunk < want:
            # chunks 0 .. want-1 of this stream were all read, in order: this one is a second copy
            seen = f"on line {last[1]}" if last is not None and last[0] == chunk else "earlier"
            raise ChunkOrderError(
                f"{record.where}: chunk_index: {chunk} in stream {record.stream!r} "
                f"but {want} was expected (duplicate: chunk {chunk} was already read {seen})",
                record,
                want,
            )
        self.last[record.stream] = (chunk, record.line)


class ReferenceReader:
    """Iterate the records of a `.jsonl` or `.jsonl.gz` reference, strictly and lazily.

    `fast=False` reads every line with the strict path alone (the fast path's yardstick in tests).
    """

    def __init__(
        self, path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES, fast: bool = True
    ) -> None:
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.fast = fast
        self.header: Header | None = None
        self._index: _index.ReferenceIndex | None = None
        if self.path.is_dir():
            raise ReferenceFormatError(f"{self.path}: is a directory, not a reference file")

    def _open(self) -> LineSource:
        return open_lines(self.path, self.max_line_bytes, mapped=self.fast)

    def __iter__(self) -> Iterator[Record]:
        source = str(self.path)
        order = ChunkOrder()
        count = 0
        with self._open() as lines:
            for line in lines.lines():
                item = self._read(lines, line)
                if isinstance(item, Header):
                    self.header = item
                    continue
                self._check_order(order, item)
                count += 1
                yield item
                # not kept while the next line is read: a consumer that let go of this record gets
                # its memory back before the next one is decoded
                del item
        if count == 0:
            raise ReferenceFormatError(f"{source}: the reference holds no records")
        if (
            self.header is not None
            and self.header.records is not None
            and self.header.records != count
        ):
            raise ReferenceFormatError(
                f"{source}: header says {self.header.records} records but the file holds {count} "
                "(cut short or appended to?)"
            )

    def _read(self, lines: LineSource, line: RawLine) -> Record | Header:
        """One line as a record (or the header): fast when it can be, strict otherwise."""
        if self.fast and line.cuts:
            try:
                return self._read_fast(lines, line)
            except (FastPathMiss, ReferenceFormatError):
                lines.settle(line)
        obj = self._strict(lines, line)
        if isinstance(obj, Header):
            return obj
        return parse_record(obj, source=str(self.path), line=line.lineno, base_dir=self.path.parent)

    def _strict(self, lines: LineSource, line: RawLine) -> Any:
        """The line's JSON by the strict path, or its Header; the one place reading errors come from."""
        where = f"{self.path}:{line.lineno}"
        obj = parse_line(lines.data(line), where)
        if line.lineno == 1:
            header = parse_header(obj, where)
            if header is not None:
                return header
        elif isinstance(obj, dict) and "trtparity" in obj:
            raise ReferenceFormatError(f"{where}: a header is only allowed on line 1")
        return obj

    def _read_fast(self, lines: LineSource, line: RawLine) -> Record:
        assert line.cuts is not None
        obj = parse_skeleton(lines.buf, line.start, line.end, line.cuts)
        if isinstance(obj, dict) and "trtparity" in obj:
            raise FastPathMiss("a header line")  # the strict path accepts or rejects it
        attach_payloads(obj, lines.view, line.cuts, lines.release)
        return parse_record(obj, source=str(self.path), line=line.lineno, base_dir=self.path.parent)

    def _key(
        self, lines: LineSource, line: RawLine, clean: bool | None = None
    ) -> tuple[str, int] | Header:
        """A line's key without decoding its tensors (what building the index needs). Without
        decoding, nothing proves that the payload spans hold no `"` (their ends may be predicted):
        `clean` says whether the caller found them free of it, None has them searched here."""
        where = f"{self.path}:{line.lineno}"
        if self.fast and line.cuts:
            try:
                obj = parse_skeleton(lines.buf, line.start, line.end, line.cuts)
                if not (isinstance(obj, dict) and "trtparity" in obj):
                    if clean is None:
                        check_cuts(lines.buf, line.cuts, lines.release)
                    elif not clean:
                        raise FastPathMiss("a payload span holds a quote")
                    return record_key(obj, where)
            except (FastPathMiss, ReferenceFormatError):
                pass
            lines.settle(line)
        obj = self._strict(lines, line)
        return obj if isinstance(obj, Header) else record_key(obj, where)

    def _check_order(self, order: ChunkOrder, record: Record) -> None:
        try:
            order.check(record)
        except ChunkOrderError as exc:
            if not exc.gap:
                raise
            later = self._find_later(record.stream, exc.expected, record.line)
            if later is None:
                raise
            raise ReferenceFormatError(
                f"{record.where}: chunk_index: chunks out of order in stream {record.stream!r}: "
                f"chunk {record.chunk_index} on line {record.line} comes before chunk "
                f"{exc.expected} on line {later}"
            ) from None

    def _find_later(self, stream: str, chunk: int, after: int) -> int | None:
        """The line of (stream, chunk) after line `after`, or None: tells a swap from a gap.

        Only run on the error path; reads keys alone, and stops at the first line it cannot read
        (that line's own error comes when the records are read up to it).
        """
        try:
            with self._open() as lines:
                for line in lines.lines():
                    if line.lineno <= after:
                        continue
                    key = self._key(lines, line)
                    if key == (stream, chunk):
                        return line.lineno
        except ReferenceFormatError:
            return None
        return None

    # -- random access -----------------------------------------------------------------------
    def index(self) -> _index.ReferenceIndex:
        """The reference's index: loaded when a saved one matches the file, else built and saved."""
        if self._index is None:
            self._index = _index.load(self.path)
            if self._index is None:
                with _index.building(self.path):  # a worker that waited here finds it built
                    self._index = _index.load(self.path)
                    if self._index is None:
                        self._index = self._build_index()
                        _index.save(self._index)
            if self._index.header is not None:
                self.header = parse_header(self._index.header, f"{self.path}:1")
        return self._index

    def _build_index(self) -> _index.ReferenceIndex:
        """One pass over the file, checking what the streaming reader checks except the tensors
        (those are checked when a record is read): header, keys, chunk order, record count."""
        stamp = _index.fingerprint(self.path)
        order = ChunkOrder()
        entries: list[_index.Entry] = []
        header: Header | None = None
        with self._open() as lines:
            for line in lines.lines():
                # the CRC and the payload spans' check in one pass over the line, then its key
                end = line.end
                crc, clean = lines.crc32(line.start, line.end, line.cuts or ())
                key = self._key(lines, line, clean)
                if line.end != end:  # the strict path found where the line really ends
                    crc, _ = lines.crc32(line.start, line.end)
                if isinstance(key, Header):
                    header = key
                    continue
                stream, chunk = key
                self._check_order(
                    order, Record(stream, chunk, {}, {}, line=line.lineno, source=str(self.path))
                )
                length = line.end - line.start
                entries.append(_index.Entry(stream, chunk, line.lineno, line.offset, length, crc))
        if not entries:
            raise ReferenceFormatError(f"{self.path}: the reference holds no records")
        if header is not None and header.records is not None and header.records != len(entries):
            raise ReferenceFormatError(
                f"{self.path}: header says {header.records} records but the file holds {len(entries)} "
                "(cut short or appended to?)"
            )
        return _index.ReferenceIndex(self.path, stamp, entries, header.metadata if header else None)

    def records(self, keys: Iterable[tuple[str, int]]) -> Iterator[Record]:
        """The records with these keys, in the order given, each read straight from its place."""
        self.index()
        with self._open() as lines:
            for key in keys:
                yield self._read_indexed(lines, self.index().entry(key), key)

    def get(self, stream: str, chunk_index: int) -> Record:
        """One record by key."""
        return next(iter(self.records([(stream, chunk_index)])))

    def _read_indexed(self, lines: LineSource, entry: _index.Entry, key: tuple[str, int]) -> Record:
        for attempt in range(2):
            record = self._try_indexed(lines, entry, key)
            if record is not None:
                return record
            if attempt == 0:  # the file changed in a way the fingerprint missed: rebuild, retry
                self._index = None
                _index.index_path(self.path).unlink(missing_ok=True)
                entry = self.index().entry(key)
        raise ReferenceFormatError(
            f"{self.path}:{entry.line}: the index and the file disagree even after rebuilding the index "
            "(is the file being written?)"
        )

    def _try_indexed(
        self, lines: LineSource, entry: _index.Entry, key: tuple[str, int]
    ) -> Record | None:
        """The record at the entry's place, or None when the line there is not the one indexed
        (the file changed: the caller rebuilds the index).

        The line's CRC-32 is summed while the line is decoded, in one pass over its pages, and
        checked after: what the line gave, a record or an error, stands only if the CRC matches.
        """
        try:
            line = lines.line_at(entry.line, entry.offset, entry.length)
        except FastPathMiss:
            return None
        item: Record | Header | None = None
        error: ReferenceFormatError | None = None
        try:
            item = self._read(lines, line)
        except ReferenceFormatError as exc:
            error = exc
        finally:
            crc = lines.summed_crc()
            lines.release(entry.offset, entry.offset + entry.length + 1)
        if crc != entry.crc32:
            return None
        if error is not None:
            raise error
        if not isinstance(item, Record) or item.key != key:
            return None
        return item


def read_records(path: str | Path) -> Iterator[Record]:
    return iter(ReferenceReader(path))


def read_header(path: str | Path) -> Header | None:
    """The header alone (first line), without reading the records."""
    p = Path(path)
    with open_binary(p) as stream:
        for lineno, data in _lines(stream, p, MAX_LINE_BYTES):
            return parse_header(parse_line(data, f"{p}:{lineno}"), f"{p}:1")
    return None
