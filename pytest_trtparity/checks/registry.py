"""Every check of the gate, in one table: its name, marker, title, the modes that include it, how its
shards are judged once merged, and how the fault catalogue runs it.

Modes (the plugin's collection filter), marker registration, sharding, the fault catalogue and the
report's list of suites that did not run all read this table, so a new check is one new module in
this package, one entry here and its test file in `suites/`. Entries stay light: a check's module is
imported only when it runs (loading the plugin must not pay for numpy and every check), so the hooks
below import their module when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..settings import MODES, GateSettings

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..contract.model import Contract, Tier
    from ..judge.results import SuiteResult
    from ..reference.reader import Record

#: How the fault catalogue runs one suite: (engine, contract, records) -> result.
SuiteRunner = Callable[["Backend", "Contract", "Iterable[Record]"], "SuiteResult"]
#: Judges a suite's whole series once every shard's part is merged.
Judge = Callable[["SuiteResult", "Contract"], None]
#: The per-chunk bound a shard can judge alone for one output: (tier, metric, blocking).
ChunkTier = Callable[["Contract", str], "tuple[Tier | None, str, bool]"]


@dataclass(frozen=True)
class FaultOptions:
    """What `trtparity selftest` asks of the checks it runs."""

    latency: bool = True
    iterations: int | None = None
    warmup: int | None = None


@dataclass(frozen=True)
class Sharding:
    """How a check's chunks split over xdist workers: the per-chunk bound each shard judges alone,
    and the judgement of the whole series after the merge."""

    judge: Judge
    chunk_tier: ChunkTier


class Check(Protocol):
    """What the gate needs to know of a check, wherever it is scheduled, selected or reported."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def modes(self) -> frozenset[str]: ...
    @property
    def marker(self) -> str: ...
    @property
    def sharding(self) -> Sharding | None: ...
    def fault_runner(self, contract: Contract, options: FaultOptions) -> SuiteRunner | None: ...


@dataclass(frozen=True)
class Entry:
    """One registered check.

    `modes`: the --trt-mode values that include it; `auto_needs_state`: under `auto` it runs only
    when the contract declares state pairs. `needs`: the setting without which it skips itself and
    the sentence saying so. `listed`: whether the report names it among suites that did not run.
    `faults`: builds its runner for the fault catalogue, or None where it cannot run there.
    `at_end`: judged by the session from the run's own summary once every suite has reported (no
    suite file, no test item).
    """

    name: str
    title: str
    modes: frozenset[str] = frozenset(MODES)
    auto_needs_state: bool = False
    needs: tuple[str, str] | None = None
    listed: bool = True
    sharding: Sharding | None = None
    faults: Callable[[Contract, FaultOptions], SuiteRunner | None] | None = None
    at_end: bool = False

    @property
    def marker(self) -> str:
        """The per-check marker, `trt_<name>`: `-m "not trt_latency"` leaves that check out alone."""
        return suite_marker(self.name)

    def fault_runner(self, contract: Contract, options: FaultOptions) -> SuiteRunner | None:
        return self.faults(contract, options) if self.faults is not None else None


def suite_marker(suite: str) -> str:
    """The per-suite marker's name: `trt_latency` for the latency suite."""
    return f"trt_{suite}"


# -- the hooks, importing their check only when called ----------------------------------------


def _judge_functional(result: SuiteResult, contract: Contract) -> None:
    from .loop import judge_result

    judge_result(result, contract, suite=result.suite)


def _judge_closed_loop(result: SuiteResult, contract: Contract) -> None:
    from .closed_loop import judge_closed_loop

    judge_closed_loop(result, contract)


def _tolerance_tier(contract: Contract, output: str) -> tuple[Tier | None, str, bool]:
    tol = contract.tolerance(output)
    return tol.chunk, tol.metric, tol.blocking


def _loop_tier(contract: Contract, output: str) -> tuple[Tier | None, str, bool]:
    crit = contract.closed_loop.for_output(output)
    if crit is not None:
        return crit.max, crit.metric or contract.tolerance(output).metric, crit.blocking
    return _tolerance_tier(contract, output)


def _functional_runner(contract: Contract, options: FaultOptions) -> SuiteRunner | None:
    from .functional import run_functional

    return lambda b, c, r: run_functional(b, c, r)


def _closed_loop_runner(contract: Contract, options: FaultOptions) -> SuiteRunner | None:
    if not contract.state:
        return None
    from .closed_loop import run_closed_loop

    return lambda b, c, r: run_closed_loop(b, c, r)


def _latency_runner(contract: Contract, options: FaultOptions) -> SuiteRunner | None:
    if not options.latency:
        return None
    try:
        from .latency import CRITERIA, run_latency
    except ImportError:  # pytest-benchmark missing: the catalogue runs without latency
        return None
    if not any(key in contract.latency.tiers for key in CRITERIA):
        return None
    its, warm = options.iterations, options.warmup
    return lambda b, c, r: run_latency(b, c, r, iterations=its, warmup=warm)


#: Every check, in the order the README and the report list them.
CHECKS: tuple[Entry, ...] = (
    Entry("contract", "contract check"),
    Entry(
        "functional",
        "functional parity",
        modes=frozenset({"auto", "functional", "both"}),
        sharding=Sharding(_judge_functional, _tolerance_tier),
        faults=_functional_runner,
    ),
    Entry(
        "closed_loop",
        "closed loop",
        modes=frozenset({"auto", "closed_loop", "both"}),
        auto_needs_state=True,
        sharding=Sharding(_judge_closed_loop, _loop_tier),
        faults=_closed_loop_runner,
    ),
    Entry(
        "profiles",
        "profile sweep",
        needs=("onnx", "no --trt-onnx given (the ONNX file the engine was built from)"),
    ),
    Entry("latency", "latency", faults=_latency_runner),
    Entry("throughput", "throughput"),
    Entry("memory", "memory"),
    Entry(
        "baseline",
        "baseline comparison",
        needs=("baseline", "no --trt-baseline given (a PyTorch or ONNX model to compare with)"),
    ),
    Entry("build", "build check", listed=False),
    Entry("invariance", "invariance"),
    Entry(
        "regression",
        "against the previous release",
        needs=("previous", "no --trt-previous given (an earlier run's artifacts or summary.json)"),
        at_end=True,
    ),
)

_BY_NAME = {c.name: c for c in CHECKS}
#: Every gating suite's name, in registry order.
SUITES: tuple[str, ...] = tuple(_BY_NAME)


def get(name: str) -> Entry | None:
    """The registered check called `name`, or None (a user's own suite name)."""
    return _BY_NAME.get(name)


def shardable() -> dict[str, Sharding]:
    """Checks whose chunks can be split over workers, with how each is judged after the merge."""
    return {c.name: c.sharding for c in CHECKS if c.sharding is not None}


def fault_runners(contract: Contract, options: FaultOptions) -> dict[str, SuiteRunner]:
    """The checks the fault catalogue can run on this contract and installation."""
    out: dict[str, SuiteRunner] = {}
    for check in CHECKS:
        runner = check.fault_runner(contract, options)
        if runner is not None:
            out[check.name] = runner
    return out


def selected_suites(settings: GateSettings) -> frozenset[str] | None:
    """The suite names to keep, or None for all. `auto` keeps a check that needs state only when
    the contract has state pairs (read cheaply here; a broken contract is reported by its fixture)."""
    mode = settings.mode
    if mode == "both":
        return None
    if mode == "auto":
        if settings.contract is None:
            return None
        try:
            has_state = bool(settings.load_contract().state)
        except Exception:  # the contract fixture reports the real error with file and field
            return None
        if has_state:
            return None
    keep = {c.name for c in CHECKS if mode in c.modes}
    if mode == "auto":
        keep -= {c.name for c in CHECKS if c.auto_needs_state}
    return frozenset(keep)
