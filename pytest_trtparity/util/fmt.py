"""Numbers as people read them: one module for every sentence, table and label the gate prints.

Each surface keeps the style its readers (and the tests that pin its sentences) already know, so
the styles are named here rather than merged: `sig` is the core (significant digits); `cell` is a
report table cell; `short` is the terminal's; `prop` a JUnit property value; `ratio` and `ratio_short` ratios;
`pair` a value next to its limit; `ms` and `nbytes` timings and sizes.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"


def sig(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits (Python's `g`: nan, inf as Python spells them)."""
    return f"{value:.{digits}g}"


def signed(value: float, digits: int = 2) -> str:
    """`sig` with its sign always written (+0.0012, -3.4e-05): a slope's direction is the news."""
    return f"{value:+.{digits}g}"


def cell(value: Any, digits: int = 3) -> str:
    """report.md's style: None "-", NaN "NaN", booleans lower case, strings and ints as they are."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else sig(value, digits)
    return str(value)


def short(value: Any) -> str:
    """The terminal summary's style: floats to 3 digits, None "-", anything else as str()."""
    if isinstance(value, float):
        return sig(value)
    if value is None:
        return MISSING
    return str(value)


def prop(value: Any) -> str:
    """A JUnit property value: floats to 6 digits (NaN "NaN"), anything else as str()."""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else sig(value, 6)
    return str(value)


def ratio(value: Any) -> str:
    """report.md's ratio: `cell` to 2 digits and a multiplication sign; None "-"."""
    return MISSING if value is None else f"{cell(value, 2)}\u00d7"


def ratio_short(value: Any) -> str:
    """The terminal's ratio: a float to 2 digits and an "x"; anything else "-"."""
    return f"{sig(value, 2)}x" if isinstance(value, float) else MISSING


def pair(value: float, limit: float) -> tuple[str, str]:
    """Both numbers with enough digits that a value just over a limit does not look equal to it."""
    for digits in range(3, 18):
        a, b = sig(value, digits), sig(limit, digits)
        if a != b or value == limit:
            return a, b
    return repr(value), repr(limit)


def ms(value: float | None) -> str:
    """Milliseconds with as many decimals as the size deserves (0.123, 1.23, 12.3, 123)."""
    if value is None or math.isnan(value):
        return MISSING
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def nbytes(value: float | None) -> str:
    """A size in B, KiB, MiB or GiB (one decimal above a KiB)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{int(value)} B"
