"""NaN and infinity in JSON: one spelling for every file the gate writes.

JSON has no NaN or Infinity, and `json.dumps` would write non-standard tokens that strict readers
(jq, JSON Schema validators, other languages) refuse. summary.json, shard parts and worker results
therefore carry them as the strings "NaN", "Infinity" and "-Infinity"; this module is the only
place that writes and reads that spelling, so the round trip can never drift between files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NAN, INF, NEG_INF = "NaN", "Infinity", "-Infinity"
_SPECIAL = {NAN: math.nan, INF: math.inf, NEG_INF: -math.inf}


def encode(value: float) -> float | str:
    """A float as JSON can hold it: finite values unchanged, the rest as their string."""
    if math.isnan(value):
        return NAN
    if math.isinf(value):
        return INF if value > 0 else NEG_INF
    return value


def encode_optional(value: float | None) -> float | str | None:
    return None if value is None else encode(value)


def decode(value: Any) -> float | None:
    """The inverse of `encode`: a number (not a bool) or one of the three strings, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _SPECIAL.get(value)
    return None


def decode_number(value: Any) -> float:
    """`decode` for places that always hold a number (series values); anything else is NaN."""
    out = decode(value)
    return math.nan if out is None else out


def clean(obj: Any) -> Any:
    """A JSON-ready copy of nested mappings and sequences: every float through `encode`, every
    mapping key a string."""
    if isinstance(obj, float):
        return encode(obj)
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj
