"""Running the catalogue: each fault through the gate's suites, and the catch table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..backends.base import Backend
from ..checks.functional import SUITE as FUNCTIONAL
from ..checks.registry import FaultOptions, SuiteRunner, fault_runners
from ..contract.model import Contract
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level
from ..reference.reader import Record
from .catalogue import ReferenceStats, catalogue
from .model import Fault, FaultyBackend

# -- running it ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catch:
    """One row of the catch table."""

    fault: str
    expected: str
    caught: bool | None  # None: not applicable to this model
    message: str
    description: str = ""

    @property
    def word(self) -> str:
        return "n/a" if self.caught is None else ("yes" if self.caught else "NO")


def error_findings(result: SuiteResult) -> list[Finding]:
    """A suite that stopped (error, or incomplete) as fail-level findings with criterion "error"."""
    if result.error:
        return [Finding(Level.FAIL, result.suite, "*", "error", f"{result.suite}: {result.error}")]
    if not result.complete:
        return [
            Finding(Level.FAIL, result.suite, "*", "error", f"{result.suite}: did not complete")
        ]
    return []


def all_findings(results: Sequence[SuiteResult]) -> list[Finding]:
    return [f for r in results for f in (*r.findings, *error_findings(r))]


def evaluate(
    fault: Fault, results: Sequence[SuiteResult], missing_suites: Sequence[str] = ()
) -> Catch:
    """Did the gate react to `fault` as it must?"""
    if fault.skip:
        return Catch(fault.name, "n/a", None, f"not applicable: {fault.skip}", fault.description)
    findings = all_findings(results)
    if missing_suites:
        return Catch(
            fault.name,
            fault.expected,
            False,
            f"not run: no {', '.join(missing_suites)} suite available",
            fault.description,
        )
    if not fault.expect and not fault.forbid:
        fails = [f for f in findings if f.level is Level.FAIL]
        return Catch(
            fault.name,
            fault.expected,
            not fails,
            fails[0].message if fails else "every suite passed",
            fault.description,
        )
    for e in fault.forbid:
        hit = next((f for f in findings if e.matches(f)), None)
        if hit:
            return Catch(
                fault.name, fault.expected, False, f"unexpected: {hit.message}", fault.description
            )
    for e in fault.expect:
        if not any(e.matches(f) for f in findings):
            seen = next((f.message for f in findings if f.level is Level.FAIL), "no failure at all")
            return Catch(
                fault.name,
                fault.expected,
                False,
                f"missing {e.describe()}; first failure: {seen}",
                fault.description,
            )
    first = (
        next(f for f in findings if fault.expect and fault.expect[0].matches(f))
        if fault.expect
        else None
    )
    return Catch(
        fault.name,
        fault.expected,
        True,
        first.message if first else "as expected",
        fault.description,
    )


def run_fault(
    backend: Backend,
    fault: Fault | None,
    contract: Contract,
    records: Callable[[], Iterable[Record]],
    runners: Mapping[str, SuiteRunner],
    suites: Sequence[str],
) -> list[SuiteResult]:
    """Each suite once, on a fresh wrapper (so every suite sees the fault from its first step)."""
    results = []
    for name in suites:
        wrapped = FaultyBackend(backend, fault)
        try:
            results.append(runners[name](wrapped, contract, records()))
        except Exception as exc:  # a harness crash is a result too: never a pass
            results.append(SuiteResult(suite=name, error=f"{type(exc).__name__}: {exc}"))
        finally:
            backend.reset_state()
    return results


def run_catalogue(
    backend: Backend,
    contract: Contract,
    records: Callable[[], Iterable[Record]],
    runners: Mapping[str, SuiteRunner],
    *,
    faults: Sequence[Fault] | None = None,
    select: Callable[[list[Fault]], list[Fault]] | None = None,
    on_row: Callable[[Catch], None] | None = None,
) -> list[Catch]:
    """Run the clean engine and every fault; one `Catch` per fault, in catalogue order.

    Without `faults`, the catalogue is built for this contract and reference (scaled by the clean
    run) and narrowed by `select`.
    """
    stats = ReferenceStats.scan(records())
    clean_results = run_fault(backend, None, contract, records, runners, list(runners))
    clean_functional = next((r for r in clean_results if r.suite == FUNCTIONAL), None)
    if faults is None:
        faults = catalogue(contract, stats, clean_functional)
        if select is not None:
            faults = select(faults)
    rows: list[Catch] = []
    for fault in faults:
        if fault.name == "clean":
            row = evaluate(fault, clean_results)
        elif fault.skip:
            row = evaluate(fault, [])
        else:
            wanted = [s for s in fault.suites if s in runners]
            needed = [
                e.suite
                for e in (*fault.expect, *fault.forbid)
                if e.suite and e.suite not in runners
            ]
            results = (
                run_fault(backend, fault, contract, records, runners, wanted) if not needed else []
            )
            row = evaluate(fault, results, sorted(set(needed)))
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def default_runners(
    contract: Contract,
    *,
    latency: bool = True,
    iterations: int | None = None,
    warmup: int | None = None,
) -> dict[str, SuiteRunner]:
    """The registered checks this installation can run on this contract (functional always, closed
    loop when the contract has state, latency when asked for and the contract sets a latency tier,
    timed over `iterations` steps after `warmup`; None: the contract's numbers)."""
    return fault_runners(contract, FaultOptions(latency, iterations, warmup))


#: Width of the fault column, so rows printed one at a time still line up.
NAME_WIDTH = 20


def format_table(rows: Sequence[Catch]) -> list[str]:
    """The catch table as printed by `trtparity selftest`: one line per fault, then what it expected."""
    width = max([NAME_WIDTH, *(len(r.fault) for r in rows)])
    lines = [f"{'fault':<{width}}  caught  finding"]
    for r in rows:
        lines.append(f"{r.fault:<{width}}  {r.word:<6}  {r.message or r.expected}")
        lines.append(f"{'':<{width}}          expected: {r.expected}")
    return lines
