"""A fault catalogue: wrap any backend, break its outputs on purpose, and prove the gate notices.

A gate is only worth its green light if it turns red for the engines it exists to stop. Each `Fault`
changes the outputs of a real engine in one specific way (a bias, a NaN, a stale output, a drifting
state, ...) and names the finding that must appear, so "caught" means caught *for the right reason*,
not merely failed. Faults apply to the outputs the wrapper returns and to the state it carries, so a
state fault feeds back through the closed loop as a real one would.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .backends.base import Backend, BackendInfo, IOInfo
from .contract import Contract, Invariant
from .errors import BackendError
from .gate import Finding, Level
from .reference.reader import Record
from .results import SuiteResult, chunk_label

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
    suites: tuple[str, ...] = ("functional", "closed_loop")
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

    def _run_impl(self, feeds: Mapping[str, np.ndarray], carry: Mapping[str, str]) -> Outputs:
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


# -- what the catalogue needs to know about the model ----------------------------------------------


@dataclass
class ReferenceStats:
    """Sizes the catalogue scales its faults by, from one pass over the reference."""

    labels: list[str] = field(default_factory=list)
    max_abs: dict[str, float] = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return len(self.labels)

    @classmethod
    def scan(cls, records: Iterable[Record]) -> ReferenceStats:
        stats = cls()
        for r in records:
            stats.labels.append(chunk_label(r.stream, r.chunk_index))
            for name, arr in r.outputs.items():
                if arr.size and arr.dtype.kind == "f":
                    peak = float(np.max(np.abs(arr[np.isfinite(arr)]), initial=0.0))
                    stats.max_abs[name] = max(stats.max_abs.get(name, 0.0), peak)
        return stats

    def label(self, step: int) -> str | None:
        return self.labels[step] if 0 <= step < len(self.labels) else None


def clean_worst(result: SuiteResult | None, contract: Contract, output: str) -> float:
    """The clean engine's worst per-chunk error on `output`, under its tolerance metric."""
    if result is None or output not in result.outputs:
        return 0.0
    values = [
        v
        for v in result.outputs[output].series(contract.tolerance(output).metric)
        if not math.isnan(v)
    ]
    return max(values, default=0.0)


# -- building the catalogue -----------------------------------------------------------------------


def _replace(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        if name in out:
            out[name] = fn(out[name])
        return out

    return transform


def _from_step(start: int, inner: Transform) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        return inner(step, out) if step.index >= start else out

    return transform


def _at_step(at: int, inner: Transform) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        return inner(step, out) if step.index == at else out

    return transform


def _set_first(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(-1)
        if flat.size:
            flat[0] = value
        return flat.reshape(a.shape)

    return fn


def _ulp(magnitude: float, dtype: np.dtype[np.generic]) -> float:
    if dtype.kind != "f":
        return 0.0
    return float(np.spacing(np.asarray(max(magnitude, 1e-30), dtype=dtype)))


@dataclass(frozen=True)
class _Targets:
    primary: str
    primary_dtype: str
    state: str | None
    other: str | None


def _targets(contract: Contract) -> _Targets:
    state_outputs = [p.output for p in contract.state]
    plain = [o for o in contract.outputs if o.name not in state_outputs]
    primary = plain[0] if plain else contract.outputs[0]
    others = [o.name for o in contract.outputs if o.name != primary.name]
    return _Targets(
        primary=primary.name,
        primary_dtype=primary.dtype,
        state=state_outputs[0] if state_outputs else None,
        other=others[0] if others else None,
    )


def _bias_faults(
    contract: Contract, stats: ReferenceStats, clean: SuiteResult | None, t: _Targets
) -> list[Fault]:
    name = t.primary
    tol = contract.tolerance(name)
    tier = tol.chunk
    desc_above = (
        f"a constant bias just above the {name!r} fail tier on every element of every chunk"
    )
    desc_below = (
        f"a constant bias just below the {name!r} fail tier on every element of every chunk"
    )
    skip = None
    if tier is None or tier.fail is None or tier.fail <= 0:
        skip = f"{name!r} has no positive per-chunk fail tier"
    elif tol.metric not in BIAS_METRICS:
        skip = f"a bias does not map onto metric {tol.metric}"
    elif t.primary_dtype not in ("float64", "float32", "float16", "bfloat16"):
        skip = f"{name!r} is not a float output"
    if skip or tier is None or tier.fail is None:
        return [
            Fault("bias_above_fail", desc_above, skip=skip),
            Fault("bias_below_fail", desc_below, skip=skip),
        ]
    fail = tier.fail
    peak = stats.max_abs.get(name, 0.0)
    host = np.dtype(np.float32) if t.primary_dtype == "bfloat16" else np.dtype(t.primary_dtype)
    rounding = _ulp(peak + fail, host) if t.primary_dtype != "bfloat16" else (peak + fail) * 2.0**-8
    margin = max(0.01 * fail, 4.0 * clean_worst(clean, contract, name) + 2.0 * rounding)
    if margin > 0.25 * fail:
        skip = (
            f"the clean error plus rounding on {name!r} ({margin:.3g}) is too close to the fail tier "
            f"{fail:g} to test its boundary"
        )
        return [
            Fault("bias_above_fail", desc_above, skip=skip),
            Fault("bias_below_fail", desc_below, skip=skip),
        ]
    sign = _bias_sign(contract, name, stats)
    above = sign * (fail + margin)
    below = sign * (fail - margin)
    metric = tol.metric
    expect_below: tuple[Expect, ...] = ()
    if tier.warn is not None and tier.warn < fail - 2 * margin:
        expect_below = (Expect((metric,), name, "functional", Level.WARN),)
    return [
        Fault(
            "bias_above_fail",
            f"{desc_above} ({above:+.4g})",
            _replace(name, lambda a: (a + np.asarray(above).astype(a.dtype)).astype(a.dtype)),
            expect=(Expect((metric,), name, "functional", message="above the fail tier"),),
        ),
        Fault(
            "bias_below_fail",
            f"{desc_below} ({below:+.4g}); other criteria may fail, this one must not",
            _replace(name, lambda a: (a + np.asarray(below).astype(a.dtype)).astype(a.dtype)),
            expect=expect_below,
            forbid=(Expect((metric,), name, "functional"),),
        ),
    ]


def _bias_sign(contract: Contract, name: str, stats: ReferenceStats) -> float:
    """+1, unless a positive bias would push the output out of its contract range and a negative one not."""
    for inv in contract.invariants_for(name):
        if (
            inv.check == "in_range"
            and inv.max is not None
            and stats.max_abs.get(name, 0.0) >= inv.max * 0.999
        ):
            return -1.0
    return 1.0


def _noise(name: str, scale: float, seed: int = 0) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        if name in out:
            a = out[name]
            rng = np.random.default_rng([seed, step.index])
            noisy = a.astype(np.float64) * (1.0 + scale * rng.standard_normal(a.shape))
            out[name] = noisy.astype(a.dtype)
        return out

    return transform


def _stuck(name: str) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        if step.previous is not None and name in step.previous:
            out[name] = step.previous[name].copy()
        return out

    return transform


def _swap(a: str, b: str) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        if a in out and b in out:
            out[a], out[b] = out[b], out[a]
        return out

    return transform


def _drop(name: str) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        out.pop(name, None)
        return out

    return transform


def _crash(at: int) -> Transform:
    def transform(step: Step, out: Outputs) -> Outputs:
        if step.index >= at:
            raise BackendError(f"injected crash at step {step.index}")
        return out

    return transform


def _wrong_dtype(dtype: str) -> str:
    return {
        "float32": "float16",
        "float16": "float32",
        "float64": "float32",
        "bfloat16": "float16",
        "int64": "int32",
        "int32": "int64",
        "int16": "int32",
        "int8": "int16",
        "uint8": "int16",
        "bool": "uint8",
    }[dtype]


def _invariant_breaker(inv: Invariant) -> tuple[Callable[[np.ndarray], np.ndarray], str] | None:
    """A replacement for the output that breaks `inv`, and what it does, or None."""
    if inv.check == "in_range" and inv.max is not None:
        bad = inv.max + max(0.5, abs(inv.max) * 0.5)
        return (
            lambda a: np.full_like(a, bad)
        ), f"set to {bad:g}, above the range maximum {inv.max:g}"
    if inv.check == "in_range" and inv.min is not None:
        bad = inv.min - max(0.5, abs(inv.min) * 0.5)
        return (
            lambda a: np.full_like(a, bad)
        ), f"set to {bad:g}, below the range minimum {inv.min:g}"
    if inv.check == "equals" and inv.value is not None:
        bad = inv.value + 1
        return (
            lambda a: np.full_like(a, bad)
        ), f"set to {bad:g} where the contract says {inv.value:g}"
    if inv.check == "finite":
        return _set_first(math.inf), "first element set to inf"
    return None


def _invariant_fault(contract: Contract, stats: ReferenceStats, start: int) -> Fault:
    desc = f"an output breaks a contract invariant from chunk {stats.label(start)} on"
    for inv in contract.invariants:
        spec = contract.output(inv.output)
        if inv.check == "finite" and spec.dtype not in (
            "float64",
            "float32",
            "float16",
            "bfloat16",
        ):
            continue
        breaker = _invariant_breaker(inv)
        if breaker is None:
            continue
        fn, how = breaker
        return Fault(
            "broken_invariant",
            f"{inv.output!r} {how} from chunk {stats.label(start)} on (invariant: {inv.describe()})",
            _from_step(start, _replace(inv.output, fn)),
            expect=(
                Expect(
                    ("invariant",),
                    inv.output,
                    "functional",
                    chunk=stats.label(start),
                    message=inv.describe(),
                ),
            ),
        )
    return Fault("broken_invariant", desc, skip="the contract has no value invariant to break")


def _drift_fault(contract: Contract, stats: ReferenceStats, t: _Targets) -> Fault:
    desc = "the carried state grows by a small relative factor every chunk"
    if t.state is None:
        return Fault("state_drift", desc, skip="the contract has no state pair")
    tol = contract.tolerance(t.state)
    tiers = [x for tier in (tol.chunk, tol.p95) if tier is not None for x in (tier.warn, tier.fail)]
    limit = min((x for x in tiers if x is not None and x > 0), default=1e-3)
    peak = max(stats.max_abs.get(t.state, 1.0), 1e-12)
    # small enough that one chunk's error stays under half of every functional tier: only the loop,
    # where the factor compounds, can see it
    eps = min(1e-5, 0.5 * limit / peak)
    factor = 1.0 + eps
    state = t.state
    return Fault(
        "state_drift",
        f"{desc}: {state!r} times (1 + {eps:.3g}) on every chunk, fed back in closed loop",
        _replace(state, lambda a: (a.astype(np.float64) * factor).astype(a.dtype)),
        expect=(Expect((DRIFT_CRITERIA,), None, "closed_loop"),),
        forbid=(Expect((tol.metric, f"p95 over chunks of {tol.metric}"), state, "functional"),),
    )


def catalogue(
    contract: Contract, stats: ReferenceStats, clean: SuiteResult | None = None
) -> list[Fault]:
    """Every fault the gate must catch on this model, scaled to its contract and reference.

    `clean` (the clean engine's functional result) sets how close to a tier the bias faults may go.
    """
    t = _targets(contract)
    n = max(stats.chunks, 1)
    mid, late, crash_at = n // 2, (2 * n) // 3, (2 * n) // 5
    p = t.primary
    metric = contract.tolerance(p).metric
    is_float = t.primary_dtype in ("float64", "float32", "float16", "bfloat16")
    faults: list[Fault] = [Fault("clean", "the engine as it is: nothing may fail")]
    faults += _bias_faults(contract, stats, clean, t)

    tier = contract.tolerance(p).chunk
    fail = tier.fail if tier and tier.fail is not None else 0.0
    peak = stats.max_abs.get(p, 0.0)
    if is_float and peak > 0:
        scale = 20.0 * max(fail, 1e-6) / peak
        faults.append(
            Fault(
                "relative_noise",
                f"Gaussian noise of {scale:.3g} relative on {p!r}",
                _noise(p, scale),
                expect=(Expect((metric,), p, "functional"),),
            )
        )
    else:
        faults.append(
            Fault(
                "relative_noise",
                "relative noise",
                skip=f"{p!r} is not a float output with nonzero values",
            )
        )

    nan_target = t.state or p
    if contract.output(nan_target).dtype in ("float64", "float32", "float16", "bfloat16"):
        nan_at = Expect(
            ("structure",), nan_target, "functional", chunk=stats.label(mid), message="NaN at index"
        )
        # a NaN in the state must also sink the closed loop it is fed back into
        looped = (Expect((DRIFT_CRITERIA,), nan_target, "closed_loop"),) if t.state else ()
        faults.append(
            Fault(
                "nan_one_element",
                f"NaN in the first element of {nan_target!r} on chunk {stats.label(mid)} only",
                _at_step(mid, _replace(nan_target, _set_first(math.nan))),
                expect=(nan_at, *looped),
            )
        )
        faults.append(
            Fault(
                "nan_from_chunk",
                f"NaN in {nan_target!r} from chunk {stats.label(mid)} on",
                _from_step(mid, _replace(nan_target, lambda a: np.full_like(a, np.nan))),
                expect=(nan_at, *looped),
            )
        )
    if is_float:
        faults.append(
            Fault(
                "inf_one_element",
                f"+inf in the first element of {p!r} on chunk {stats.label(mid + 1)} only",
                _at_step(mid + 1, _replace(p, _set_first(math.inf))),
                expect=(
                    Expect(
                        ("structure",),
                        p,
                        "functional",
                        chunk=stats.label(mid + 1),
                        message="inf at index",
                    ),
                ),
            )
        )
    faults.append(
        Fault(
            "stuck_previous",
            f"{p!r} repeats the previous chunk's value",
            _stuck(p),
            expect=(Expect((metric,), p, "functional"),),
        )
    )
    if peak > 2 * fail:
        faults.append(
            Fault(
                "all_zero",
                f"{p!r} is all zeros",
                _replace(p, np.zeros_like),
                expect=(Expect((metric,), p, "functional"),),
            )
        )
    else:
        faults.append(
            Fault(
                "all_zero",
                "all-zero output",
                skip=f"the reference {p!r} is itself within the tier of zero",
            )
        )
    if t.other is not None:
        faults.append(
            Fault(
                "swapped_outputs",
                f"{p!r} and {t.other!r} swapped",
                _swap(p, t.other),
                expect=(Expect(("structure", metric), p, "functional"),),
            )
        )
    else:
        faults.append(
            Fault("swapped_outputs", "two outputs swapped", skip="the contract has one output")
        )
    faults.append(
        Fault(
            "wrong_shape",
            f"{p!r} gains a leading axis of 1",
            _replace(p, lambda a: a[np.newaxis]),
            expect=(Expect(("structure",), p, "functional", message="shape"),),
        )
    )
    bad_dtype = _wrong_dtype(t.primary_dtype)
    faults.append(
        Fault(
            "wrong_dtype",
            f"{p!r} comes back as {bad_dtype}",
            _replace(p, lambda a: a.astype(np.dtype(bad_dtype))),
            expect=(Expect(("structure",), p, "functional", message=f"dtype {bad_dtype}"),),
        )
    )
    faults.append(_drift_fault(contract, stats, t))
    faults.append(_invariant_fault(contract, stats, late))
    faults.append(
        Fault(
            "missing_output",
            f"the engine returns no {p!r}",
            _drop(p),
            expect=(Expect(("missing output",), p, "functional"),),
        )
    )
    faults.append(
        Fault(
            "crash_mid_run",
            f"the engine raises from chunk {stats.label(crash_at)} on",
            _crash(crash_at),
            expect=(Expect(("error",), None, "functional", message="injected crash"),),
        )
    )
    faults.append(_latency_fault(contract))
    return faults


#: The contract's latency keys, and the criteria the latency suite names its findings by.
LATENCY_KEYS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
LATENCY_CRITERIA = tuple(k.removesuffix("_ms") for k in LATENCY_KEYS)


def _latency_fault(contract: Contract) -> Fault:
    desc = "every step sleeps past the latency fail tier"
    limits = [
        float(raw["fail"])
        for key in LATENCY_KEYS
        if isinstance(raw := contract.latency.get(key), Mapping) and raw.get("fail") is not None
    ]
    if not limits:
        return Fault(
            "latency_regression",
            desc,
            suites=("latency",),
            skip="the contract sets no latency fail tier",
        )
    delay = 1.5 * max(limits) / 1e3
    return Fault(
        "latency_regression",
        f"every step sleeps {delay * 1e3:g} ms (1.5 times the largest latency fail tier)",
        delay_s=delay,
        suites=("latency",),
        expect=(Expect(LATENCY_CRITERIA, None, "latency"),),
    )


# -- running it ------------------------------------------------------------------------------------

SuiteRunner = Callable[[Backend, Contract, Iterable[Record]], SuiteResult]


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
    clean_functional = next((r for r in clean_results if r.suite == "functional"), None)
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
    """The suites available in this installation: functional always; closed loop when the contract
    has state; latency when asked for and the contract sets a latency tier, timed over `iterations`
    steps after `warmup` (None: the contract's numbers)."""
    from .functional import run_functional

    runners: dict[str, SuiteRunner] = {"functional": lambda b, c, r: run_functional(b, c, r)}
    if contract.state:
        try:
            from .closed_loop import run_closed_loop
        except ImportError:
            pass
        else:
            runners["closed_loop"] = lambda b, c, r: run_closed_loop(b, c, r)
    if latency and any(key in contract.latency for key in LATENCY_KEYS):
        try:
            from .latency import run_latency
        except ImportError:
            pass
        else:
            runners["latency"] = lambda b, c, r: run_latency(
                b, c, r, iterations=iterations, warmup=warmup
            )
    return runners


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
