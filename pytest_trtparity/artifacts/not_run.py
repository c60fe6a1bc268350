"""Which gate suites did not run, and why: a sign-off must not read an absent check as a passed one.

The reason comes, in this order, from the suite's own skip message (it knows best: "no --trt-onnx"),
from the mode (`--trt-mode functional` leaves closed loop out), from the options a suite needs
(`--trt-baseline`, `--trt-onnx`), and from an error that stopped the run before the suite started.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..checks.registry import CHECKS
from ..settings import GateSettings

#: Every suite of the gate the report names when absent, in report order, with the name a reader
#: knows it by (the checks registry's).
NAMES = {c.name: c.title for c in CHECKS if c.listed}
#: Options without which a suite skips itself.
NEEDS = {c.name: c.needs for c in CHECKS if c.needs is not None}


def _mode_reason(suite: str, settings: GateSettings, wanted: frozenset[str] | None) -> str | None:
    if wanted is None or suite in wanted:
        return None
    if settings.mode == "auto":
        return "not selected: --trt-mode auto and the contract declares no state pairs"
    return f"not selected by --trt-mode {settings.mode}"


def _selected(settings: GateSettings) -> frozenset[str] | None:
    from ..checks.registry import selected_suites

    try:
        return selected_suites(settings)
    except Exception:  # a broken contract is reported elsewhere; no mode reason then
        return None


def reasons(
    settings: GateSettings,
    ran: Collection[str],
    skipped: Mapping[str, str],
    *,
    stopped: bool = False,
) -> dict[str, str]:
    """Suite name -> one sentence saying why it did not run, for every gate suite not in `ran`.

    `stopped`: the run recorded errors (engine, contract, reference), which stop suites before they
    record anything.
    """
    wanted = _selected(settings)
    out: dict[str, str] = {}
    for suite in NAMES:
        if suite in ran:
            continue
        need = NEEDS.get(suite)
        if suite in skipped:
            out[suite] = f"skipped: {skipped[suite]}"
        elif (why := _mode_reason(suite, settings, wanted)) is not None:
            out[suite] = why
        elif need is not None and getattr(settings, need[0]) is None:
            out[suite] = need[1]
        elif stopped:
            out[suite] = "did not start: an error stopped the run first (see errors)"
        else:
            out[suite] = "not run: not collected, or deselected (-k, -m)"
    return out
