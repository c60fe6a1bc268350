"""The catalogue: every fault the gate must catch on a model, scaled to its contract and reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..checks.closed_loop import SUITE as CLOSED_LOOP
from ..checks.functional import SUITE as FUNCTIONAL
from ..contract.model import Contract, Invariant
from ..errors import BackendError
from ..judge.results import SuiteResult, chunk_label
from ..judge.tiers import Level
from ..reference.reader import Record
from .model import BIAS_METRICS, DRIFT_CRITERIA, Expect, Fault, Outputs, Step, Transform

# -- what the catalogue needs to know about the model ----------------------------------------------


@dataclass
class ReferenceStats:
    """Sizes the catalogue scales its faults by, from one pass over the reference."""

    labels: list[str] = field(default_factory=list)
    max_abs: dict[str, float] = field(default_factory=dict)
    #: Chunks per stream; empty when built by hand (then the labels count as one stream).
    per_stream: dict[str, int] = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return len(self.labels)

    @property
    def longest_stream(self) -> int:
        """The longest closed loop the reference allows."""
        return max(self.per_stream.values(), default=self.chunks)

    @classmethod
    def scan(cls, records: Iterable[Record]) -> ReferenceStats:
        stats = cls()
        for r in records:
            stats.labels.append(chunk_label(r.stream, r.chunk_index))
            stats.per_stream[r.stream] = stats.per_stream.get(r.stream, 0) + 1
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
        expect_below = (Expect((metric,), name, FUNCTIONAL, Level.WARN),)
    return [
        Fault(
            "bias_above_fail",
            f"{desc_above} ({above:+.4g})",
            _replace(name, lambda a: (a + np.asarray(above).astype(a.dtype)).astype(a.dtype)),
            expect=(Expect((metric,), name, FUNCTIONAL, message="above the fail tier"),),
        ),
        Fault(
            "bias_below_fail",
            f"{desc_below} ({below:+.4g}); other criteria may fail, this one must not",
            _replace(name, lambda a: (a + np.asarray(below).astype(a.dtype)).astype(a.dtype)),
            expect=expect_below,
            forbid=(Expect((metric,), name, FUNCTIONAL),),
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
                    FUNCTIONAL,
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
    loop = stats.longest_stream
    if contract.closed_loop.chunks is not None:
        loop = min(loop, contract.closed_loop.chunks)
    if loop < 2:
        # a loop of one chunk starts from the reference state: it is the functional run, and a
        # drift has no step to compound over
        return Fault(
            "state_drift", desc, skip="the closed loop is one chunk long: nothing can drift"
        )
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
        expect=(Expect((DRIFT_CRITERIA,), None, CLOSED_LOOP),),
        forbid=(Expect((tol.metric, f"p95 over chunks of {tol.metric}"), state, FUNCTIONAL),),
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
    return [
        Fault("clean", "the engine as it is: nothing may fail"),
        *_bias_faults(contract, stats, clean, t),
        _noise_fault(contract, stats, t),
        *_nan_faults(contract, stats, t, mid),
        *_inf_faults(stats, t, min(mid + 1, n - 1)),
        _stuck_fault(contract, stats, t),
        _zero_fault(contract, stats, t),
        _swap_fault(contract, t),
        *_form_faults(t),
        _drift_fault(contract, stats, t),
        _invariant_fault(contract, stats, late),
        *_failure_faults(t.primary, stats, crash_at),
        _latency_fault(contract),
    ]


def _is_float(dtype: str) -> bool:
    return dtype in ("float64", "float32", "float16", "bfloat16")


def _fail_tier(contract: Contract, output: str) -> float:
    """The output's per-chunk fail tier, 0 where it has none."""
    tier = contract.tolerance(output).chunk
    return tier.fail if tier and tier.fail is not None else 0.0


def _noise_fault(contract: Contract, stats: ReferenceStats, t: _Targets) -> Fault:
    p = t.primary
    peak = stats.max_abs.get(p, 0.0)
    if not (_is_float(t.primary_dtype) and peak > 0):
        return Fault(
            "relative_noise",
            "relative noise",
            skip=f"{p!r} is not a float output with nonzero values",
        )
    scale = 20.0 * max(_fail_tier(contract, p), 1e-6) / peak
    return Fault(
        "relative_noise",
        f"Gaussian noise of {scale:.3g} relative on {p!r}",
        _noise(p, scale),
        expect=(Expect((contract.tolerance(p).metric,), p, FUNCTIONAL),),
    )


def _nan_faults(contract: Contract, stats: ReferenceStats, t: _Targets, mid: int) -> list[Fault]:
    """NaN in one element on one chunk, then everywhere from that chunk on (the state where there
    is one: a NaN in it must also sink the closed loop it is fed back into)."""
    target = t.state or t.primary
    if not _is_float(contract.output(target).dtype):
        return []
    nan_at = Expect(
        ("structure",), target, FUNCTIONAL, chunk=stats.label(mid), message="NaN at index"
    )
    looped = (Expect((DRIFT_CRITERIA,), target, CLOSED_LOOP),) if t.state else ()
    return [
        Fault(
            "nan_one_element",
            f"NaN in the first element of {target!r} on chunk {stats.label(mid)} only",
            _at_step(mid, _replace(target, _set_first(math.nan))),
            expect=(nan_at, *looped),
        ),
        Fault(
            "nan_from_chunk",
            f"NaN in {target!r} from chunk {stats.label(mid)} on",
            _from_step(mid, _replace(target, lambda a: np.full_like(a, np.nan))),
            expect=(nan_at, *looped),
        ),
    ]


def _inf_faults(stats: ReferenceStats, t: _Targets, at: int) -> list[Fault]:
    """+inf on one chunk beside the NaN faults' chunk, and inside a short reference."""
    if not _is_float(t.primary_dtype):
        return []
    p = t.primary
    expect = Expect(("structure",), p, FUNCTIONAL, chunk=stats.label(at), message="inf at index")
    return [
        Fault(
            "inf_one_element",
            f"+inf in the first element of {p!r} on chunk {stats.label(at)} only",
            _at_step(at, _replace(p, _set_first(math.inf))),
            expect=(expect,),
        )
    ]


def _stuck_fault(contract: Contract, stats: ReferenceStats, t: _Targets) -> Fault:
    p = t.primary
    if stats.chunks < 2:
        return Fault(
            "stuck_previous",
            "an output repeats the previous chunk's value",
            skip="the reference has one chunk: there is no previous value to repeat",
        )
    return Fault(
        "stuck_previous",
        f"{p!r} repeats the previous chunk's value",
        _stuck(p),
        expect=(Expect((contract.tolerance(p).metric,), p, FUNCTIONAL),),
    )


def _zero_fault(contract: Contract, stats: ReferenceStats, t: _Targets) -> Fault:
    p = t.primary
    if not stats.max_abs.get(p, 0.0) > 2 * _fail_tier(contract, p):
        return Fault(
            "all_zero",
            "all-zero output",
            skip=f"the reference {p!r} is itself within the tier of zero",
        )
    return Fault(
        "all_zero",
        f"{p!r} is all zeros",
        _replace(p, np.zeros_like),
        expect=(Expect((contract.tolerance(p).metric,), p, FUNCTIONAL),),
    )


def _swap_fault(contract: Contract, t: _Targets) -> Fault:
    p = t.primary
    if t.other is None:
        return Fault("swapped_outputs", "two outputs swapped", skip="the contract has one output")
    return Fault(
        "swapped_outputs",
        f"{p!r} and {t.other!r} swapped",
        _swap(p, t.other),
        expect=(Expect(("structure", contract.tolerance(p).metric), p, FUNCTIONAL),),
    )


def _form_faults(t: _Targets) -> list[Fault]:
    """The primary output with a wrong shape, then with a wrong dtype."""
    p = t.primary
    bad_dtype = _wrong_dtype(t.primary_dtype)
    return [
        Fault(
            "wrong_shape",
            f"{p!r} gains a leading axis of 1",
            _replace(p, lambda a: a[np.newaxis]),
            expect=(Expect(("structure",), p, FUNCTIONAL, message="shape"),),
        ),
        Fault(
            "wrong_dtype",
            f"{p!r} comes back as {bad_dtype}",
            _replace(p, lambda a: a.astype(np.dtype(bad_dtype))),
            expect=(Expect(("structure",), p, FUNCTIONAL, message=f"dtype {bad_dtype}"),),
        ),
    ]


def _failure_faults(p: str, stats: ReferenceStats, crash_at: int) -> list[Fault]:
    """The engine returns no primary output; the engine raises part way."""
    return [
        Fault(
            "missing_output",
            f"the engine returns no {p!r}",
            _drop(p),
            expect=(Expect(("missing output",), p, FUNCTIONAL),),
        ),
        Fault(
            "crash_mid_run",
            f"the engine raises from chunk {stats.label(crash_at)} on",
            _crash(crash_at),
            expect=(Expect(("error",), None, FUNCTIONAL, message="injected crash"),),
        ),
    ]


#: The contract's latency keys, and the criteria the latency suite names its findings by.
LATENCY_KEYS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
LATENCY_CRITERIA = tuple(k.removesuffix("_ms") for k in LATENCY_KEYS)


def _latency_fault(contract: Contract) -> Fault:
    desc = "every step sleeps past the latency fail tier"
    limits = [
        tier.fail
        for key in LATENCY_KEYS
        if (tier := contract.latency.tier(key)) is not None and tier.fail is not None
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
