"""JSON parsing that refuses what the standard library quietly accepts.

`json.loads` keeps the last of duplicate keys, accepts `NaN`/`Infinity`, and turns `1e400` into inf;
for a contract or a reference each of those is a silent corruption, so each is an error here.
"""

from __future__ import annotations

import json
import math
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
