"""The pieces of a fault: where it strikes (`Step`), what must catch it (`Expect`), the fault
itself, and the backend wrapper that applies it to a real engine's outputs and carried state.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, BackendInfo, IOInfo
from ..checks.closed_loop import SUITE as CLOSED_LOOP
from ..checks.functional import SUITE as FUNCTIONAL
from ..judge.tiers import Finding, Level

#: The closed-loop suite's bound, mean and growth criteria ("closed-loop max of max_abs", ...).
DRIFT_CRITERIA = "closed-loop *"

#: Metrics on which a constant bias b shows up as (almost exactly) b.
BIAS_METRICS = frozenset({"max_abs", "mean_abs", "p95_abs", "p99_abs", "rmse"})

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Step:
    """What a fault sees on one step: its number since the wrapper started, and the clean outputs of
    the step before (None on the first)."""

    index: int
    previous: Mapping[str, np.ndarray] | None


Transform = Callable[[Step, Outputs], Outputs]


@dataclass(frozen=True)
class Expect:
    """A finding that must (or, in `Fault.forbid`, must not) appear.

    A finding matches when its suite, output and level agree (None: any), its criterion matches one
    of the `criteria` patterns (shell-style: "closed-loop *"), its chunk agrees and its message
    contains `message`.
    """

    criteria: tuple[str, ...]
    output: str | None = None
    suite: str | None = None
    level: Level = Level.FAIL
    chunk: str | None = None
    message: str = ""

    def matches(self, f: Finding) -> bool:
        return (
            any(fnmatch.fnmatchcase(f.criterion, c) for c in self.criteria)
            and f.level is self.level
            and (self.output is None or f.output == self.output)
            and (self.suite is None or f.suite == self.suite)
            and (self.chunk is None or f.chunk == self.chunk)
            and self.message in f.message
        )

    def describe(self) -> str:
        what = " or ".join(self.criteria)
        parts = [f"{self.level.word} {what}"]
        if self.output:
            parts.append(f"on {self.output!r}")
        if self.suite:
            parts.append(f"in {self.suite}")
        if self.chunk:
            parts.append(f"at chunk {self.chunk}")
        if self.message:
            parts.append(f"saying {self.message!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class Fault:
    """One way an engine can be wrong, and the finding that proves the gate saw it."""

    name: str
    description: str
    transform: Transform | None = None
    expect: tuple[Expect, ...] = ()
    forbid: tuple[Expect, ...] = ()
    suites: tuple[str, ...] = (FUNCTIONAL, CLOSED_LOOP)
    delay_s: float = 0.0
    #: A fault that cannot be built for this contract says why here (and is reported, not run).
    skip: str | None = None

    @property
    def expected(self) -> str:
        if not self.expect and not self.forbid:
            return "no failure in any suite"
        said = [e.describe() for e in self.expect] + [f"no {e.describe()}" for e in self.forbid]
        return "; ".join(said)


class FaultyBackend(Backend):
    """A backend that runs `inner` and hands back its outputs with `fault` applied.

    The closed-loop state is carried here, on the host, from the *faulted* outputs, so a state fault
    propagates. The step counter survives `reset_state` (the functional suite resets every chunk):
    "from chunk 200 on" means the 200th step since the wrapper was made. The wrapped backend stays
    open when this one closes; whoever opened it closes it.
    """

    kind = "faulty"

    def __init__(self, inner: Backend, fault: Fault | None = None) -> None:
        super().__init__(inner.path)
        self.inner = inner
        self.fault = fault
        self.steps = 0
        self._previous: Outputs | None = None

    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        self.inner.load()
        return self.inner.inputs, self.inner.outputs

    def info(self) -> BackendInfo:
        base = self.inner.info()
        return dataclasses.replace(
            base, extra={**base.extra, "fault": self.fault.name if self.fault else None}
        )

    def reset_state(self) -> None:
        super().reset_state()
        self.inner.reset_state()

    def _run_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None = None,
    ) -> Outputs:
        merged = dict(feeds)
        for inp, out in carry.items():
            merged[inp] = self._last[out]
        clean = self.inner.run(merged)
        step = Step(self.steps, self._previous)
        self._previous = clean
        self.steps += 1
        if self.fault is None:
            return clean
        if self.fault.delay_s:
            time.sleep(self.fault.delay_s)
        if self.fault.transform is None:
            return clean
        return self.fault.transform(step, {k: v.copy() for k, v in clean.items()})

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Outputs:
        """Not called: `_run_impl` runs the inner backend itself."""
        return self.inner.run(feeds)  # pragma: no cover
