"""Which suites a run gates: --trt-mode against what the contract offers."""

from __future__ import annotations

from ..settings import GateSettings

ALWAYS = frozenset({"contract", "latency", "baseline", "profiles", "throughput", "memory", "build"})

#: Every gating suite, in the order the README lists them. Each has its own marker, `trt_<suite>`,
#: so that one suite can be deselected (`-m "not trt_latency"`) while the others still gate.
SUITES = (
    "contract",
    "functional",
    "closed_loop",
    "profiles",
    "latency",
    "throughput",
    "memory",
    "baseline",
    "build",
)


def suite_marker(suite: str) -> str:
    """The per-suite marker's name: `trt_latency` for the latency suite."""
    return f"trt_{suite}"


def selected_suites(settings: GateSettings) -> frozenset[str] | None:
    """The suite names to keep, or None for all. `auto` keeps closed loop only when the contract
    has state pairs (read cheaply here; a broken contract is reported by its fixture instead)."""
    mode = settings.mode
    if mode == "both":
        return None
    if mode == "functional":
        return ALWAYS | {"functional"}
    if mode == "closed_loop":
        return ALWAYS | {"closed_loop"}
    if settings.contract is None:
        return None
    try:
        from ..contract.model import load_contract

        has_state = bool(load_contract(settings.contract).state)
    except Exception:  # the contract fixture reports the real error with file and field
        return None
    return None if has_state else ALWAYS | {"functional"}
