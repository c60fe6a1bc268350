"""The index of a reference: where each record's line lies, so a shard reads only its own records.

Written once beside the reference as `<reference>.idx.json` (atomically) and reused while the
reference is unchanged. "Unchanged" is decided from the file itself, never from the index alone: the
size, the modification time in nanoseconds and a SHA-256 of the first and last 64 KiB must all match
what the index recorded, or it is rebuilt. Each entry also carries the CRC-32 of its line, checked on
every read, which catches an edit that kept size, time and both ends (the reader then rebuilds).

For `.jsonl.gz` the offsets are positions in the decompressed stream: reading a record seeks forward
through it, so random access costs a decompression of everything before the record. Plain `.jsonl`
is the format to shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ReferenceFormatError
from ..util.atomic import write_text

INDEX_FORMAT = "trtparity-index/1"
SUFFIX = ".idx.json"
#: Bytes hashed at each end of the reference for its fingerprint.
EDGE_BYTES = 1 << 16

Key = tuple[str, int]


@dataclass(frozen=True)
class Entry:
    """One record: its key, its line number, and its line's place and checksum in the file."""

    stream: str
    chunk: int
    line: int
    offset: int
    length: int
    crc32: int

    @property
    def key(self) -> Key:
        return (self.stream, self.chunk)


@dataclass
class ReferenceIndex:
    reference: Path
    fingerprint: dict[str, Any]
    entries: list[Entry]
    header: dict[str, Any] | None = None
    _by_key: dict[Key, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {e.key: i for i, e in enumerate(self.entries)}

    def __len__(self) -> int:
        return len(self.entries)

    def record_keys(self) -> list[Key]:
        """Every record's key, in file order."""
        return [e.key for e in self.entries]

    def streams(self) -> list[str]:
        """Stream names in the order of their first record."""
        return list(dict.fromkeys(e.stream for e in self.entries))

    def position(self, key: Key) -> int:
        """The record's place among all records in file order (0-based)."""
        try:
            return self._by_key[key]
        except KeyError:
            raise self._missing(key) from None

    def entry(self, key: Key) -> Entry:
        return self.entries[self.position(key)]

    def _missing(self, key: Key) -> ReferenceFormatError:
        stream, chunk = key
        chunks = sum(1 for e in self.entries if e.stream == stream)
        held = f"chunks 0..{chunks - 1}" if chunks else "no such stream"
        return ReferenceFormatError(
            f"{self.reference}: no record for stream {stream!r} chunk {chunk} ({held})"
        )

    def to_json(self) -> dict[str, Any]:
        """Columns rather than objects: a million records stay a few tens of MB."""
        return {
            "trtparity": INDEX_FORMAT,
            "reference": self.reference.name,
            "fingerprint": self.fingerprint,
            "header": self.header,
            "stream": [e.stream for e in self.entries],
            "chunk": [e.chunk for e in self.entries],
            "line": [e.line for e in self.entries],
            "offset": [e.offset for e in self.entries],
            "length": [e.length for e in self.entries],
            "crc32": [e.crc32 for e in self.entries],
        }

    @classmethod
    def from_json(cls, raw: Any, reference: Path) -> ReferenceIndex:
        """Rebuild from `to_json`; any doubt about the document raises ValueError (then rebuilt)."""
        if not isinstance(raw, dict) or raw.get("trtparity") != INDEX_FORMAT:
            raise ValueError("not an index of this format")
        columns: list[list[Any]] = []
        for name in ("stream", "chunk", "line", "offset", "length", "crc32"):
            column = raw.get(name)
            if not isinstance(column, list):
                raise ValueError(f"index column {name} missing")
            columns.append(column)
        if len({len(c) for c in columns}) != 1:
            raise ValueError("index columns missing or of unequal length")
        entries = [Entry(*row) for row in zip(*columns, strict=True)]
        for e in entries:
            if not isinstance(e.stream, str) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in (e.chunk, e.line, e.offset, e.length, e.crc32)
            ):
                raise ValueError("malformed index entry")
        header = raw.get("header")
        if header is not None and not isinstance(header, dict):
            raise ValueError("malformed header")
        index = cls(reference, dict(raw.get("fingerprint") or {}), entries, header)
        if len(index._by_key) != len(entries):
            raise ValueError("duplicate keys in index")
        return index


def index_path(reference: Path) -> Path:
    return reference.with_name(reference.name + SUFFIX)


def fingerprint(reference: Path) -> dict[str, Any]:
    """What must match for an index to be reused: size, mtime_ns, and a hash of both ends."""
    st = reference.stat()
    digest = hashlib.sha256()
    with reference.open("rb") as fh:
        digest.update(fh.read(EDGE_BYTES))
        if st.st_size > EDGE_BYTES:
            fh.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
            digest.update(fh.read(EDGE_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "edges_sha256": digest.hexdigest()}


def load(reference: Path) -> ReferenceIndex | None:
    """The saved index, or None when it is missing, unreadable, or for another state of the file."""
    path = index_path(reference)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        index = ReferenceIndex.from_json(raw, reference)
    except (OSError, ValueError, TypeError):
        return None
    try:
        current = fingerprint(reference)
    except OSError:
        return None
    return index if index.fingerprint == current else None


def save(index: ReferenceIndex) -> Path | None:
    """Write the index beside its reference; a folder that cannot be written just means no reuse."""
    path = index_path(index.reference)
    try:
        return write_text(path, json.dumps(index.to_json(), separators=(",", ":")) + "\n")
    except (ConfigError, OSError):
        return None


@contextlib.contextmanager
def building(reference: Path) -> Iterator[None]:
    """Hold an exclusive lock on the reference while its index is built, so that xdist workers that
    start together build it once (the others wait, then load it). Best effort: without `fcntl` or a
    lockable file, each builds its own."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(reference, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
