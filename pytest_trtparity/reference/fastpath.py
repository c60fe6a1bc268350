"""The reader's fast path: parse a record's small JSON skeleton, decode its payloads in place.

A record line is almost all base64: a 25 MB tensor is a 33 MB JSON string. The strict path decodes the
line to `str`, has `json` copy each payload into another `str`, then decodes that: three passes and
three copies before a byte of the tensor exists. Here the payload spans are cut out of the line bytes
(`"b64":"` ... the next `"`; base64 has no escapes; where the tensor's dtype and shape come right
before, the span ends where they say, so the payload is read once, when decoded), the rest of the
line (a few hundred bytes) is parsed strictly with each payload replaced by a placeholder, and each
placeholder found where a tensor's `b64` belongs becomes a `Base64Span` that the codec decodes
straight from the line's buffer.

Every guarantee of the strict path still holds, because the fast path only ever returns what the
strict path would: the skeleton goes through the same strict JSON parser (duplicate keys, NaN tokens,
nesting), a payload that decodes under `validate=True` is pure ASCII (so the line is valid UTF-8
exactly when the skeleton is, and holds no newline), and the record is built by the same
`parse_record`. Whenever an assumption fails (a placeholder lands anywhere but a tensor's `b64`, the
line already holds `\\u0000`, a payload is not clean base64, any error at all), `FastPathMiss` is
raised and the reader re-reads the line strictly, which produces the error with file, line and field.

Lines come from a `LineSource`: `MappedLines` for a plain file (memory-mapped; payloads are decoded
where they lie and their pages handed back, so a 100 MB line is never resident as a whole),
`StreamLines` for `.gz` (one line in memory at a time).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import mmap
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from ..contract import dtypes
from ..errors import ReferenceFormatError
from ..util import strictjson
from .codec import Base64Span, FastPathMiss

_MARK = b'"b64":'
_QUOTE = 0x22
_SPACE = 0x20
_NEWLINE = b"\n"
#: How far ahead the scanner looks for the next payload or the line's end at a time; bounds the work
#: spent on lines without payloads (`values` tensors) to their own length.
_WINDOW = 1 << 16
#: How much of a payload the scanner searches for its closing quote at a time, handing each searched
#: stretch of a mapped file back before the next: finding a line's end must not make the whole line
#: resident (a 100 MB line would count in full against the gate's memory while it is decoded).
SCAN_BLOCK = 1 << 22
#: Payloads shorter than this stay in the skeleton for the JSON parser: for them the work per span
#: costs more than the copies it saves (a line without a longer one takes the strict path whole).
MIN_PAYLOAD = 1 << 14
#: What a placeholder looks like in the skeleton: the JSON escape of NUL, then the cut's number.
_PLACEHOLDER = b"\\u0000"
_NUL = "\x00"
#: A tensor's head as writers put it, `{"dtype":"float32","shape":[1,6500000],` right before its
#: `"b64":`: enough to know the payload's length without reading the payload (`predicted_close`).
_WS = rb"[ \t\r\n]*"
_HEAD = re.compile(
    rb"\{" + _WS + rb'"dtype"' + _WS + rb":" + _WS + rb'"(\w{1,16})"' + _WS + rb"," + _WS
    + rb'"shape"' + _WS + rb":" + _WS + rb"\[([0-9, \t\r\n]{0,400})\]" + _WS + rb"," + _WS + rb"\Z"
)  # fmt: skip
#: How far before a `"b64":` the head is looked for.
_HEAD_BYTES = 512


class Buffer(Protocol):
    """What the scanner needs from the line's buffer: `bytes` and `mmap.mmap` both qualify."""

    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...

    def __getitem__(self, index: Any, /) -> Any: ...


@dataclass(frozen=True)
class LineScan:
    """Where a line ends and where its `b64` payloads sit, as offsets into the buffer."""

    end: int
    newline: bool
    cuts: tuple[tuple[int, int], ...]


def scan_line(
    buf: Buffer,
    start: int,
    size: int,
    limit: int,
    release: Callable[[int, int], None] | None = None,
) -> LineScan | None:
    """Find the end of the line starting at `start` and the payload spans inside it.

    Payloads are not searched for newlines: a payload that holds one fails base64 validation later,
    and the reader then finds the line's true end the slow way. None means "use the slow way now"
    (an unterminated payload, a line over `limit` bytes). `release` is told about each stretch of
    payload searched (`find_quote`), so a mapped file's pages do not stay resident until decoding.
    """
    hard = min(size, start + limit + 1)
    cuts: list[tuple[int, int]] = []
    pos = start
    while True:
        hi = min(pos + _WINDOW, hard)
        mark = buf.find(_MARK, pos, hi)
        newline = buf.find(_NEWLINE, pos, mark if mark >= 0 else hi)
        if newline >= 0:
            return LineScan(newline, True, tuple(cuts)) if newline - start < limit else None
        if mark < 0:
            if hi < hard:
                pos = max(pos + 1, hi - len(_MARK) + 1)
                continue
            return (
                LineScan(size, False, tuple(cuts))
                if hard == size and size - start <= limit
                else None
            )
        begin = mark + len(_MARK)
        while begin < hard and buf[begin] == _SPACE:
            begin += 1
        if begin >= hard or buf[begin] != _QUOTE:
            pos = mark + 1  # not a string value: the JSON parser judges it
            continue
        close = predicted_close(buf, max(start, mark - _HEAD_BYTES), mark, begin, hard)
        if close < 0:
            close = find_quote(buf, begin + 1, hard, release)
        if close < 0:
            return None
        if close - begin - 1 >= MIN_PAYLOAD:
            cuts.append((begin + 1, close))
        pos = close + 1


def predicted_close(buf: Buffer, lo: int, mark: int, begin: int, hard: int) -> int:
    """Where the payload whose opening quote is at `begin` ends, from the dtype and shape just before
    its `"b64":` (in `[lo, mark)`), if a `"` sits there; -1 when that cannot be told.

    Searching a 33 MB payload for its closing quote reads every page of it once more than decoding
    does. A jump is safe because it is checked twice over: decoding validates every character of
    the span as base64 (a `"` or newline inside it, where the real payload ended sooner, is a
    `FastPathMiss` and the strict path reads the line), and the decoded length must match the
    shape. Readers that do not decode (keys alone) check the spans with `check_cuts`.
    """
    head = _HEAD.search(bytes(buf[lo:mark]))
    if head is None or head.group(1).decode() not in dtypes.WIRE_DTYPES:
        return -1
    text = head.group(2).strip()
    dims = text.split(b",") if text else []
    if not all(d.strip().isdigit() for d in dims):
        return -1
    size = math.prod(int(d) for d in dims) * dtypes.WIRE_DTYPES[head.group(1).decode()].itemsize
    close = begin + 1 + (size + 2) // 3 * 4
    if close - begin - 1 < MIN_PAYLOAD or close >= hard or buf[close] != _QUOTE:
        return -1
    return close


def check_cuts(
    buf: Buffer,
    cuts: tuple[tuple[int, int], ...],
    release: Callable[[int, int], None] | None = None,
) -> None:
    """`FastPathMiss` unless every payload span is free of `"`: a span's end may have been
    predicted (`predicted_close`), which only decoding proves; a reader that takes the skeleton
    without decoding (a line's key) proves it here."""
    for begin, stop in cuts:
        if find_quote(buf, begin, stop, release) >= 0:
            raise FastPathMiss("a payload span holds a quote")


def find_quote(
    buf: Buffer, start: int, hard: int, release: Callable[[int, int], None] | None
) -> int:
    """The first `"` in `[start, hard)`, or -1; with `release`, searched `SCAN_BLOCK` bytes at a time
    and each searched stretch handed to `release` before the next is read. The payload is read
    again when it is decoded (from the page cache, a minor fault a page), which costs less than
    holding it: the decoded tensors then peak beside a block of the line, not the whole line."""
    if release is None:
        return buf.find(b'"', start, hard)
    pos = start
    while pos < hard:
        stop = min(pos + SCAN_BLOCK, hard)
        close = buf.find(b'"', pos, stop)
        release(pos, stop if close < 0 else close)
        if close >= 0:
            return close
        pos = stop
    return -1


def skeleton(buf: Buffer, start: int, end: int, cuts: tuple[tuple[int, int], ...]) -> bytes:
    """The line with each payload replaced by a numbered placeholder."""
    pieces: list[bytes] = []
    pos = start
    for number, (begin, stop) in enumerate(cuts):
        piece = bytes(buf[pos:begin])
        if _PLACEHOLDER in piece:
            raise FastPathMiss("the line itself holds \\u0000")
        pieces.append(piece)
        pieces.append(_PLACEHOLDER + str(number).encode())
        pos = stop
    tail = bytes(buf[pos:end])
    if _PLACEHOLDER in tail:
        raise FastPathMiss("the line itself holds \\u0000")
    pieces.append(tail)
    return b"".join(pieces)


def parse_skeleton(buf: Buffer, start: int, end: int, cuts: tuple[tuple[int, int], ...]) -> Any:
    """The line's JSON with payloads still as placeholders (enough for stream and chunk index)."""
    try:
        text = skeleton(buf, start, end, cuts).decode("utf-8")
        return strictjson.loads(text)
    except (UnicodeDecodeError, strictjson.StrictJSONError) as exc:
        raise FastPathMiss(str(exc)) from None


def attach_payloads(
    obj: Any,
    view: memoryview,
    cuts: tuple[tuple[int, int], ...],
    release: Callable[[int, int], None] | None,
) -> list[Base64Span]:
    """Put a `Base64Span` where each placeholder sits, which must be a tensor's `b64` value.

    Every cut must be claimed exactly once by a tensor of `inputs` or `outputs`; a placeholder left
    anywhere else (meta, a key that only ends in b64) would change what the record says.
    """
    spans: list[Base64Span | None] = [None] * len(cuts)
    if not isinstance(obj, dict):
        raise FastPathMiss("a record must be an object")
    for side in ("inputs", "outputs"):
        tensors = obj.get(side)
        if not isinstance(tensors, dict):
            continue
        for tensor in tensors.values():
            if not isinstance(tensor, dict):
                continue
            value = tensor.get("b64")
            if not isinstance(value, str) or not value.startswith(_NUL):
                continue
            number = _placeholder_number(value, len(cuts))
            if spans[number] is not None:
                raise FastPathMiss("placeholder claimed twice")
            begin, stop = cuts[number]
            span = Base64Span(view, begin, stop, release)
            spans[number] = span
            tensor["b64"] = span
    claimed = [s for s in spans if s is not None]
    if len(claimed) != len(cuts):
        raise FastPathMiss("a payload outside a tensor's b64")
    return claimed


def _placeholder_number(value: str, count: int) -> int:
    digits = value[1:]
    if (
        not digits.isdigit()
        or not digits.isascii()
        or int(digits) >= count
        or str(int(digits)) != digits
    ):
        raise FastPathMiss(f"unexpected placeholder {value!r}")
    return int(digits)


# -- where lines come from ------------------------------------------------------------------------


@dataclass
class RawLine:
    """One line of a reference, still in its source's buffer: `[start, end)` excludes the newline.

    `cuts` is None when the line must be read strictly (no scan, or the fast path gave up);
    `offset` is where the line starts in the file (in the decompressed stream for `.gz`).
    """

    lineno: int
    start: int
    end: int
    newline: bool
    cuts: tuple[tuple[int, int], ...] | None
    offset: int

    @property
    def next_start(self) -> int:
        return self.end + 1 if self.newline else self.end


def too_long(path: Path, lineno: int, limit: int) -> ReferenceFormatError:
    return ReferenceFormatError(f"{path}:{lineno}: line too long (over {limit} bytes)")


class LineSource:
    """Lines of one reference file: `lines()` in order, `line_at()` by offset, `data()` for the
    strict path, `settle()` when the fast path gave up on a line, `release()` for spent bytes."""

    buf: Buffer
    view: memoryview

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit

    def lines(self) -> Iterator[RawLine]:
        raise NotImplementedError

    def line_at(self, lineno: int, offset: int, length: int) -> RawLine:
        """The line at a known place. The CRC-32 of its bytes (the index's check) is summed while
        the line is read and decoded, and is what `summed_crc` returns once the reader is done."""
        raise NotImplementedError

    def summed_crc(self) -> int:
        """The CRC-32 of the line `line_at` last gave, its bytes not yet summed summed now."""
        raise NotImplementedError

    def data(self, line: RawLine) -> bytes:
        return bytes(self.view[line.start : line.end])

    def crc32(
        self, start: int, stop: int, spans: tuple[tuple[int, int], ...] = ()
    ) -> tuple[int, bool]:
        """CRC-32 of the bytes in `[start, stop)` (the index's check of a line), and whether the
        payload `spans` inside them hold no `"` (`check_cuts`): building the index needs both."""
        clean = all(self.buf.find(b'"', begin, end) < 0 for begin, end in spans)
        return zlib.crc32(self.view[start:stop]), clean

    def settle(self, line: RawLine) -> None:
        line.cuts = None

    def release(self, start: int, stop: int) -> None:
        """Spent bytes; only a mapped file holds pages worth handing back."""

    def close(self) -> None:
        pass

    def __enter__(self) -> LineSource:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_PAGE = mmap.PAGESIZE
_CAN_RELEASE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")


class MappedLines(LineSource):
    """A plain `.jsonl` reference, memory-mapped: lines and payloads are read where they lie.

    Mapped pages count as resident memory once touched, so each stretch of the file is handed back
    (`MADV_DONTNEED`; the data stays in the page cache) as soon as it is decoded: what the reader holds
    stays about one record, whatever the file's size. Nothing reads a whole line ahead of decoding it
    (payload ends are predicted or searched a block at a time, a line read by key has its CRC summed
    as it is decoded), so the line itself adds a block or two, not its length, to the peak.
    """

    def __init__(self, path: Path, limit: int, handle: IO[bytes]) -> None:
        super().__init__(path, limit)
        self._handle = handle
        self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self.buf = self._map
        self.view = memoryview(self._map)
        self.size = len(self._map)
        # the CRC of the line `line_at` gave: summed so far, over [line start, _crc_pos) of
        # [line start, _crc_end); nothing is summed while _crc_end is 0
        self._crc, self._crc_pos, self._crc_end = 0, 0, 0

    def lines(self) -> Iterator[RawLine]:
        pos, lineno = 0, 0
        while pos < self.size:
            lineno += 1
            scan = scan_line(self._map, pos, self.size, self.limit, self.release)
            if scan is None:
                end, newline = self._exact_end(pos, lineno)
                line = RawLine(lineno, pos, end, newline, None, pos)
            else:
                line = RawLine(lineno, pos, scan.end, scan.newline, scan.cuts, pos)
            yield line
            self.release(pos, line.next_start)
            pos = line.next_start

    def settle(self, line: RawLine) -> None:
        """The fast path gave up: find the line's true end (a payload may have hidden a newline)."""
        if line.cuts is not None:
            line.end, line.newline = self._exact_end(line.start, line.lineno)
        line.cuts = None

    def _exact_end(self, start: int, lineno: int) -> tuple[int, bool]:
        hard = min(self.size, start + self.limit + 1)
        newline = self._map.find(_NEWLINE, start, hard)
        if newline >= 0 and newline - start < self.limit:
            return newline, True
        if newline < 0 and hard == self.size and self.size - start <= self.limit:
            return self.size, False
        raise too_long(self.path, lineno, self.limit)

    def line_at(self, lineno: int, offset: int, length: int) -> RawLine:
        """The line at a known place; its CRC-32 is summed in file order as its bytes are released
        (`release`): each page is read once, when it is decoded, and handed back, instead of a
        first pass to check the line that makes all of it resident before decoding."""
        end = offset + length
        if end > self.size:
            raise FastPathMiss("the index points past the end of the file")
        newline = end < self.size and self._map[end] == _NEWLINE[0]
        self._crc, self._crc_pos, self._crc_end = 0, offset, end
        scan = scan_line(self._map, offset, end, self.limit, self.release)
        return RawLine(
            lineno, offset, end, newline, scan.cuts if scan is not None else None, offset
        )

    def summed_crc(self) -> int:
        self._sum_to(self._crc_end)
        crc, self._crc_pos, self._crc_end = self._crc, 0, 0
        return crc

    def _sum_to(self, stop: int) -> None:
        """Add `[summed so far, stop)` to the line's CRC, a block at a time, handing each back: a
        payload decoded before one that precedes it in the file has the earlier one summed here."""
        pos = self._crc_pos
        while pos < stop:
            end = min(pos + SCAN_BLOCK, stop)
            self._crc = zlib.crc32(self.view[pos:end], self._crc)
            self._drop(pos, end)
            pos = end
        self._crc_pos = max(self._crc_pos, stop)

    def crc32(
        self, start: int, stop: int, spans: tuple[tuple[int, int], ...] = ()
    ) -> tuple[int, bool]:
        """`LineSource.crc32` in one pass, `SCAN_BLOCK` bytes at a time, each block searched for
        quotes where spans cross it, summed, then handed back: indexing a line must not make the
        whole line resident, nor read it twice. (The search comes first: it maps the block's pages
        faster than the CRC does.)"""
        crc, clean = 0, True
        for pos in range(start, stop, SCAN_BLOCK):
            end = min(pos + SCAN_BLOCK, stop)
            for begin, finish in spans:
                lo, hi = max(begin, pos), min(finish, end)
                if clean and lo < hi and self._map.find(b'"', lo, hi) >= 0:
                    clean = False
            crc = zlib.crc32(self.view[pos:end], crc)
            self._drop(pos, end)
        return crc, clean

    def release(self, start: int, stop: int) -> None:
        """Hand back the whole pages inside `[start, stop)` (only those: the rest is still needed),
        summing them first into the CRC of a line read by `line_at`."""
        if stop > self._crc_pos and start < self._crc_end:
            self._sum_to(min(stop, self._crc_end))
        self._drop(start, stop)

    def _drop(self, start: int, stop: int) -> None:
        lo = start - start % _PAGE
        hi = stop - stop % _PAGE
        if _CAN_RELEASE and hi > lo:
            with contextlib.suppress(OSError, ValueError):
                self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def close(self) -> None:
        self.view.release()
        with contextlib.suppress(BufferError):  # a span still held somewhere: closes when it goes
            self._map.close()
        self._handle.close()


class StreamLines(LineSource):
    """A `.jsonl.gz` reference (or anything that cannot be mapped), read forward line by line.

    The line being parsed is in memory (one line, not the file); payloads are still decoded straight
    from its bytes. Random access seeks through the decompressed stream: forward is one pass,
    backward starts over.
    """

    def __init__(self, path: Path, limit: int, stream: IO[bytes]) -> None:
        super().__init__(path, limit)
        self._stream = stream
        self._pos = 0
        self._line = b""
        self.buf = self._line
        self.view = memoryview(self._line)

    def _hold(self, data: bytes) -> None:
        self._line = data
        self.buf = data
        self.view = memoryview(data)

    def lines(self) -> Iterator[RawLine]:
        for lineno, offset, data, newline in read_lines(self._stream, self.path, self.limit):
            self._hold(data)
            scan = scan_line(data, 0, len(data), self.limit)
            yield RawLine(
                lineno, 0, len(data), newline, scan.cuts if scan is not None else None, offset
            )

    def data(self, line: RawLine) -> bytes:
        held = self._line
        return held if line.start == 0 and line.end == len(held) else held[line.start : line.end]

    def line_at(self, lineno: int, offset: int, length: int) -> RawLine:
        try:
            if offset != self._pos:
                self._stream.seek(offset)
            data = self._stream.read(length)
            self._pos = offset + len(data)
        except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
            raise corrupt(self.path, lineno, exc) from None
        if len(data) != length:
            raise FastPathMiss("the index points past the end of the file")
        self._hold(data)
        scan = scan_line(data, 0, len(data), self.limit)
        return RawLine(lineno, 0, len(data), True, scan.cuts if scan is not None else None, offset)

    def summed_crc(self) -> int:
        return zlib.crc32(self._line)

    def close(self) -> None:
        self._stream.close()


def corrupt(path: Path, lineno: int, exc: BaseException) -> ReferenceFormatError:
    return ReferenceFormatError(
        f"{path}:{lineno}: compressed stream is corrupt or truncated ({exc}); "
        "the whole reference is rejected"
    )


def read_lines(stream: IO[bytes], path: Path, limit: int) -> Iterator[tuple[int, int, bytes, bool]]:
    """(line number, byte offset, bytes without the newline, had a newline) from a forward stream;
    errors for over-long lines and for a corrupt or short gzip."""
    lineno, offset = 0, 0
    try:
        while True:
            line = stream.readline(limit + 1)
            if not line:
                return
            lineno += 1
            if len(line) > limit:
                raise too_long(path, lineno, limit)
            newline = line.endswith(b"\n")
            yield lineno, offset, line[:-1] if newline else line, newline
            offset += len(line)
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
        raise corrupt(path, lineno + 1, exc) from None


def open_binary(path: Path) -> IO[bytes]:
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise ReferenceFormatError(f"{path}: reference file not found") from None
    except OSError as exc:
        raise ReferenceFormatError(
            f"{path}: cannot read reference: {exc.strerror or exc}"
        ) from None
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def open_lines(path: Path, limit: int, *, mapped: bool = True) -> LineSource:
    """Map a plain file when possible (regular, not empty); stream it otherwise."""
    handle = open_binary(path)
    if mapped and path.suffix != ".gz":
        with contextlib.suppress(ValueError, OSError):  # empty, a pipe, no mmap on this file system
            return MappedLines(path, limit, handle)
    return StreamLines(path, limit, handle)
