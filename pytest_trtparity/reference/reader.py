"""Streaming reader for v1 references: one record in memory at a time, every fault an error.

A gate that reads 20 GB of reference must not hold it, and a gate must never pass because a reader
skipped a bad line: a truncated last line, invalid UTF-8, a blank line, a duplicate key, a chunk index
out of order, a short `.gz` — each stops the run with file, line and field named.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import strictjson
from ..errors import ReferenceFormatError
from .codec import decode_tensor

FORMAT_TAG = "reference/1"
DEFAULT_STREAM = "default"
#: Longest line accepted; a bigger one is almost certainly not a reference (or needs npy sidecars).
MAX_LINE_BYTES = 8 << 30
_RECORD_KEYS_REQUIRED = ("chunk_index", "inputs", "outputs")


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


def open_binary(path: Path) -> IO[bytes]:
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise ReferenceFormatError(f"{path}: reference file not found") from None
    except OSError as exc:
        raise ReferenceFormatError(f"{path}: cannot read reference: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _lines(stream: IO[bytes], path: Path, limit: int) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, bytes without the newline); errors for over-long lines and short gzip."""
    lineno = 0
    try:
        while True:
            line = stream.readline(limit + 1)
            if not line:
                return
            lineno += 1
            if len(line) > limit:
                raise ReferenceFormatError(f"{path}:{lineno}: line too long (over {limit} bytes)")
            yield lineno, line[:-1] if line.endswith(b"\n") else line
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
        raise ReferenceFormatError(
            f"{path}:{lineno + 1}: compressed stream is corrupt or truncated ({exc}); "
            "the whole reference is rejected"
        ) from None


def parse_line(data: bytes, where: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReferenceFormatError(f"{where}: invalid UTF-8 at byte {exc.start} of the line") from None
    if not text.strip():
        raise ReferenceFormatError(f"{where}: blank line (a record or the header was expected)")
    try:
        return strictjson.loads(text)
    except strictjson.StrictJSONError as exc:
        raise ReferenceFormatError(f"{where}: {exc} (truncated or not JSON?)") from None


def parse_record(obj: Any, *, source: str, line: int, base_dir: Path | None) -> Record:
    where = f"{source}:{line}"
    if not isinstance(obj, dict):
        raise ReferenceFormatError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    for key in _RECORD_KEYS_REQUIRED:
        if key not in obj:
            raise ReferenceFormatError(f"{where}: {key}: missing")
    chunk = obj["chunk_index"]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
        raise ReferenceFormatError(f"{where}: chunk_index: must be a non-negative integer, got {chunk!r}")
    stream = obj.get("stream", DEFAULT_STREAM)
    if not isinstance(stream, str) or not stream:
        raise ReferenceFormatError(f"{where}: stream: must be a non-empty string, got {stream!r}")
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
        raise ReferenceFormatError(f"{where}: trtparity: unsupported format {tag!r}; this reader reads {FORMAT_TAG!r}")
    count = obj.get("records")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ReferenceFormatError(f"{where}: records: must be a non-negative integer, got {count!r}")
    return Header(metadata=dict(obj), records=count)


class ChunkOrder:
    """Checks that each stream counts 0, 1, 2, ... in file order."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    def check(self, record: Record) -> None:
        want = self.next.get(record.stream, 0)
        if record.chunk_index != want:
            what = "duplicate or out of order" if record.chunk_index < want else "gap"
            raise ReferenceFormatError(
                f"{record.where}: chunk_index: {record.chunk_index} in stream {record.stream!r} "
                f"but {want} was expected ({what})"
            )
        self.next[record.stream] = want + 1


class ReferenceReader:
    """Iterate the records of a `.jsonl` or `.jsonl.gz` reference, strictly and lazily."""

    def __init__(self, path: str | Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.header: Header | None = None
        if self.path.is_dir():
            raise ReferenceFormatError(f"{self.path}: is a directory, not a reference file")

    def __iter__(self) -> Iterator[Record]:
        source = str(self.path)
        base_dir = self.path.parent
        order = ChunkOrder()
        count = 0
        with open_binary(self.path) as stream:
            for lineno, data in _lines(stream, self.path, self.max_line_bytes):
                obj = parse_line(data, f"{source}:{lineno}")
                if lineno == 1:
                    self.header = parse_header(obj, f"{source}:1")
                    if self.header is not None:
                        continue
                elif isinstance(obj, dict) and "trtparity" in obj:
                    raise ReferenceFormatError(f"{source}:{lineno}: a header is only allowed on line 1")
                record = parse_record(obj, source=source, line=lineno, base_dir=base_dir)
                order.check(record)
                count += 1
                yield record
        if count == 0:
            raise ReferenceFormatError(f"{source}: the reference holds no records")
        if self.header is not None and self.header.records is not None and self.header.records != count:
            raise ReferenceFormatError(
                f"{source}: header says {self.header.records} records but the file holds {count} "
                "(cut short or appended to?)"
            )


def read_records(path: str | Path) -> Iterator[Record]:
    return iter(ReferenceReader(path))


def read_header(path: str | Path) -> Header | None:
    """The header alone (first line), without reading the records."""
    p = Path(path)
    with open_binary(p) as stream:
        for lineno, data in _lines(stream, p, MAX_LINE_BYTES):
            return parse_header(parse_line(data, f"{p}:{lineno}"), f"{p}:1")
    return None

