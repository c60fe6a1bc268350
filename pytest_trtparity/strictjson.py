"""JSON parsing that refuses what the standard library quietly accepts.

`json.loads` keeps the last of duplicate keys, accepts `NaN`/`Infinity`, and turns `1e400` into inf;
for a contract or a reference each of those is a silent corruption, so each is an error here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class StrictJSONError(ValueError):
    """Why a document was refused; `where` is a human-readable position (line/column or key)."""


def _reject_constant(token: str) -> Any:
    raise StrictJSONError(f"non-standard JSON token {token} (NaN and Infinity are not JSON)")


def _parse_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {token} overflows a 64-bit float")
    return value


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
)


def loads(text: str) -> Any:
    """Parse one JSON document strictly; raises `StrictJSONError` with the position when known."""
    try:
        return _DECODER.decode(text)
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise StrictJSONError("JSON nested too deeply") from None


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_TOKENS = ("NaN", "Infinity", "-Infinity")


def locate(text: str, error: StrictJSONError) -> int | None:
    """The line of the offence `error` reports, found by a plain scan of `text`.

    The standard decoder's hooks see a duplicate key, a NaN token or an overflowing number without
    its position, so an error path that wants "file:line" walks the text itself (contracts are small;
    a reference's line is already known).
    """
    reason = str(error)
    want = (
        "duplicate"
        if reason.startswith("duplicate key")
        else "token"
        if reason.startswith("non-standard JSON token")
        else "number"
        if "overflows" in reason
        else None
    )
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
