"""JSON parsing that refuses what the standard library quietly accepts.

`json.loads` keeps the last of duplicate keys, accepts `NaN`/`Infinity`, and turns `1e400` into inf;
for a contract or a reference each of those is a silent corruption, so each is an error here. An
integer literal too large for a 64-bit float is refused too: past 4,300 digits Python will not even
convert it (a bare `ValueError` with no position), and below that any later `float()` of it overflows.
Each of these errors carries the JSON path of the offending value, so the message can name the field.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

#: A UTF-8 byte-order mark, as bytes and as the character it decodes to.
BOM = b"\xef\xbb\xbf"
BOM_TEXT = "\ufeff"
BOM_MESSAGE = "starts with a UTF-8 byte-order mark; save it without BOM"

Path = tuple[str | int, ...]


class StrictJSONError(ValueError):
    """Why a document was refused; `path` is where in it (keys and list indices), when known."""

    def __init__(self, reason: str, path: Path = ()) -> None:
        super().__init__(reason)
        self.path = path


def dotted(path: Sequence[str | int]) -> str:
    """`outputs.y.values[3]`: a path the way reference messages name a field."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _reject_constant(token: str) -> Any:
    raise StrictJSONError(f"non-standard JSON token {token} (NaN and Infinity are not JSON)")


def _parse_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {token} overflows a 64-bit float")
    return value


#: Digits of the largest finite 64-bit float (1.79e308); a longer integer literal cannot fit one.
_FLOAT_DIGITS = len(str(int(sys.float_info.max)))


def _int_overflows(token: str) -> bool:
    digits = len(token) - token.startswith("-")
    if digits < _FLOAT_DIGITS:
        return False
    # never int() a longer token: Python refuses past 4,300 digits, and it is quadratic before that
    return digits > _FLOAT_DIGITS or abs(int(token)) > sys.float_info.max


def _parse_int(token: str) -> int:
    if len(token) < _FLOAT_DIGITS:  # the common case first: this runs for every integer
        return int(token)
    if _int_overflows(token):
        digits = len(token) - token.startswith("-")
        raise StrictJSONError(f"integer of {digits} digits overflows a 64-bit float")
    return int(token)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_reject_constant,
    parse_float=_parse_float,
    parse_int=_parse_int,
)


def loads(text: str) -> Any:
    """Parse one JSON document strictly; raises `StrictJSONError` with the path when known."""
    if text.startswith(BOM_TEXT):
        raise StrictJSONError(BOM_MESSAGE)
    try:
        return _DECODER.decode(text)
    except StrictJSONError as exc:
        raise StrictJSONError(str(exc), _offence_path(text, _kind(str(exc)))) from None
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise StrictJSONError("JSON nested too deeply") from None


# -- where a refused value sits ------------------------------------------------------------------
# The decoder's hooks see a duplicate key, a NaN token or an overflowing number without its place,
# so on that (rare) error path the text is decoded once more, leniently, with a marker where each
# offence was; the first marker of the reported kind, in document order, is the field to name.


class _Offence:
    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _kind(reason: str) -> str | None:
    if reason.startswith("duplicate key"):
        return "duplicate"
    if reason.startswith("non-standard JSON token"):
        return "token"
    if "overflows" in reason:
        return "number"
    return None


class _Object(list[tuple[str, Any]]):
    """An object's pairs, all kept (a duplicate key must not hide what its first value holds)."""


_MARKING = json.JSONDecoder(
    object_pairs_hook=_Object,
    parse_constant=lambda token: _Offence("token"),
    parse_float=lambda token: token if math.isfinite(float(token)) else _Offence("number"),
    parse_int=lambda token: _Offence("number") if _int_overflows(token) else token,
)


def _offence_path(text: str, kind: str | None) -> Path:
    if kind is None:
        return ()
    try:
        marked = _MARKING.decode(text)
    except (ValueError, RecursionError):
        return ()
    stack: list[tuple[Any, Path]] = [(marked, ())]
    while stack:  # depth first, in document order
        node, path = stack.pop()
        if isinstance(node, _Offence):
            if node.kind == kind:
                return path
        elif isinstance(node, _Object):
            seen: set[str] = set()
            children: list[tuple[Any, Path]] = []
            for key, value in node:
                if key in seen:  # named by its object: the message already quotes the key
                    children.append((_Offence("duplicate"), path))
                seen.add(key)
                children.append((value, (*path, key)))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(node))))
    return ()


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_TOKENS = ("NaN", "Infinity", "-Infinity")


def locate(text: str, error: StrictJSONError) -> int | None:
    """The line of the offence `error` reports, found by a plain scan of `text`.

    The standard decoder's hooks see a duplicate key, a NaN token or an overflowing number without
    its position, so an error path that wants "file:line" walks the text itself (contracts are small;
    a reference's line is already known).
    """
    want = _kind(str(error))
    if want is None:
        return None
    line = 1
    stack: list[set[str] | None] = []  # a set of keys per open object, None per open array
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            k = j + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            keys = stack[-1] if stack else None
            if want == "duplicate" and keys is not None and k < n and text[k] == ":":
                try:
                    key = json.loads(text[i : j + 1])
                except ValueError:
                    return None
                if key in keys:
                    return line
                keys.add(key)
            i = j
        elif c in "{[":
            stack.append(set() if c == "{" else None)
        elif c in "}]":
            if stack:
                stack.pop()
        elif want == "token" and text.startswith(_TOKENS, i):
            return line
        elif want == "number" and (c == "-" or c.isdigit()):
            match = _NUMBER.match(text, i)
            if match:
                if not math.isfinite(float(match.group())):
                    return line
                i = match.end() - 1
        i += 1
    return None


def _string_end(text: str, i: int) -> int:
    """Index of the quote closing the string that opens at `i` (or len(text))."""
    j = i + 1
    while j < len(text) and text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j


def line_of(text: str, path: Sequence[str | int]) -> int | None:
    """The line on which the value at `path` starts in the JSON `text`, or None.

    A schema validator reports a path into the parsed document; a person wants the line in the file.
    A plain scan (contracts are small) that follows keys and list indices, nothing more: `text` has
    already parsed, so no error handling beyond giving up.
    """
    want = tuple(path)
    frames: list[list[Any]] = []  # per open container: [is_object, key or index, awaiting a key]
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n:":
            line += c == "\n"
            i += 1
        elif c == ",":
            if frames:
                frame = frames[-1]
                if frame[0]:
                    frame[2] = True
                else:
                    frame[1] += 1
            i += 1
        elif c in "}]":
            if frames:
                frames.pop()
            i += 1
        elif frames and frames[-1][0] and frames[-1][2]:
            end = _string_end(text, i)
            try:
                frames[-1][1] = json.loads(text[i : end + 1])
            except ValueError:
                return None
            frames[-1][2] = False
            i = end + 1
        else:
            if tuple(frame[1] for frame in frames) == want:
                return line
            if c in "{[":
                frames.append([c == "{", None if c == "{" else 0, c == "{"])
                i += 1
            elif c == '"':
                i = _string_end(text, i) + 1
            else:
                while i < n and text[i] not in ",}] \t\r\n":
                    i += 1
    return None
