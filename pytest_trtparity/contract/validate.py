"""What a JSON Schema cannot say about a contract: names that must refer to each other, tiers in
order, shapes that agree. One validator per contract section, so a new section adds one function
and one line in `SECTIONS`; each yields its problems as sentences that start with the JSON path.

The loader reports the first problem (and how many more), so the order of `SECTIONS` is the order
in which a contract's problems are named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from ..errors import ContractError

if TYPE_CHECKING:
    from .model import Contract, DriftCriteria, ProfileShape, TensorSpec, Tier, Tolerance

Problems = Iterator[str]
_DEFAULT = "<default>"


def tier_problems(tier: Tier | None, where: str) -> Problems:
    """A tier's limits are finite and in order (warn before fail in the direction that is worse)."""
    if tier is None:
        return
    for label, value in (("warn", tier.warn), ("fail", tier.fail)):
        if value is not None and not math.isfinite(value):
            yield f"{where}.{label} must be finite, got {value}"
    if tier.warn is None or tier.fail is None:
        return
    if tier.higher_is_worse and tier.warn > tier.fail:
        yield f"{where}: warn tier {tier.warn:g} is above fail tier {tier.fail:g}"
    if not tier.higher_is_worse and tier.warn < tier.fail:
        yield f"{where}: warn tier {tier.warn:g} is below fail tier {tier.fail:g} (lower is worse here)"


def _outputs(c: Contract) -> Mapping[str, TensorSpec]:
    return {t.name: t for t in c.outputs}


def _inputs(c: Contract) -> Mapping[str, TensorSpec]:
    return {t.name: t for t in c.inputs}


def tensors(c: Contract) -> Problems:
    """Inputs and outputs: unique names, value ranges in order."""
    for kind, specs in (("inputs", c.inputs), ("outputs", c.outputs)):
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            if spec.name in seen:
                yield f"$.{kind}[{i}].name: duplicate {kind[:-1]} name {spec.name!r}"
            seen.add(spec.name)
            if spec.value_range and spec.value_range[0] > spec.value_range[1]:
                yield f"$.{kind}[{i}].range: min {spec.value_range[0]} > max {spec.value_range[1]}"


def profiles(c: Contract) -> Problems:
    """Every profile shape names an input, has its rank, and keeps its fixed dimensions fixed."""
    inputs = _inputs(c)
    for pname, profile in c.profiles.items():
        for tname, ps in profile.shapes.items():
            at = f"$.profiles.{pname}.shapes.{tname}"
            if tname not in inputs:
                yield f"{at}: {tname!r} is not an input"
                continue
            yield from _profile_shape(ps, inputs[tname], at)


def _profile_shape(ps: ProfileShape, spec: TensorSpec, at: str) -> Problems:
    rank = spec.rank
    for label, shape in (("min", ps.min), ("opt", ps.opt), ("max", ps.max)):
        if len(shape) != rank:
            yield f"{at}.{label}: rank {len(shape)} but input {spec.name!r} has rank {rank}"
    if len({len(ps.min), len(ps.opt), len(ps.max)}) == 1 and not all(
        lo <= o <= hi for lo, o, hi in zip(ps.min, ps.opt, ps.max, strict=True)
    ):
        yield f"{at}: needs min <= opt <= max in every dimension"
    for d, (want, lo, hi) in enumerate(zip(spec.shape, ps.min, ps.max, strict=False)):
        if isinstance(want, int) and not lo == hi == want:
            yield f"{at}: dimension {d} is fixed at {want} in the input but {lo}..{hi} here"


def state(c: Contract) -> Problems:
    """State pairs join an existing output to an existing input of the same dtype."""
    inputs, outputs = _inputs(c), _outputs(c)
    for i, pair in enumerate(c.state):
        if pair.output not in outputs:
            yield f"$.state[{i}].output: {pair.output!r} is not an output"
        if pair.input not in inputs:
            yield f"$.state[{i}].input: {pair.input!r} is not an input"
        if pair.output in outputs and pair.input in inputs:
            o, n = outputs[pair.output], inputs[pair.input]
            if o.dtype != n.dtype:
                yield f"$.state[{i}]: {pair.output} is {o.dtype} but {pair.input} is {n.dtype}"


def invariants(c: Contract) -> Problems:
    """Invariants name an output, an axis inside its rank, and a range in order."""
    outputs = _outputs(c)
    for i, inv in enumerate(c.invariants):
        if inv.output not in outputs:
            yield f"$.invariants[{i}].output: {inv.output!r} is not an output"
        elif inv.check == "dim_equals" and inv.axis is not None:
            rank = outputs[inv.output].rank
            if not -rank <= inv.axis < rank:
                yield f"$.invariants[{i}].axis: {inv.axis} is out of range for rank {rank}"
        if inv.min is not None and inv.max is not None and inv.min > inv.max:
            yield f"$.invariants[{i}]: min {inv.min:g} > max {inv.max:g}"


def tolerances(c: Contract) -> Problems:
    """Each tolerance names an output and checks something; a pass rate knows what 'within' is."""
    named: dict[str, Tolerance] = dict(c.tolerances)
    if c.default_tolerance is not None:
        named[_DEFAULT] = c.default_tolerance
    outputs = _outputs(c)
    for name, tol in named.items():
        at = "$.default_tolerance" if name == _DEFAULT else f"$.tolerances.{name}"
        if name != _DEFAULT and name not in outputs:
            yield f"{at}: {name!r} is not an output"
        yield from _tolerance(tol, at)


def _tolerance(tol: Tolerance, at: str) -> Problems:
    if tol.chunk is None and tol.p95 is None:
        yield f"{at}: needs a chunk or p95 tier, or nothing would ever be checked"
    if tol.pass_rate is not None:
        if tol.within is None:
            yield f"{at}.pass_rate: needs a chunk tier that says what 'within' means"
        for label, v in (("warn", tol.pass_rate.warn), ("fail", tol.pass_rate.fail)):
            if v is not None and v > 1:
                yield f"{at}.pass_rate.{label}: a share of chunks must be <= 1, got {v:g}"
    yield from tier_problems(tol.chunk, f"{at}.chunk")
    yield from tier_problems(tol.p95, f"{at}.p95")
    yield from tier_problems(tol.pass_rate, f"{at}.pass_rate")


def closed_loop(c: Contract) -> Problems:
    """Drift criteria name an output and keep their tiers in order."""
    drift: dict[str, DriftCriteria] = dict(c.closed_loop.outputs)
    if c.closed_loop.default is not None:
        drift[_DEFAULT] = c.closed_loop.default
    outputs = _outputs(c)
    for name, crit in drift.items():
        at = "$.closed_loop.default" if name == _DEFAULT else f"$.closed_loop.outputs.{name}"
        if name != _DEFAULT and name not in outputs:
            yield f"{at}: {name!r} is not an output"
        yield from tier_problems(crit.max, f"{at}.max")
        yield from tier_problems(crit.mean, f"{at}.mean")
        if crit.trend is not None:
            yield from tier_problems(crit.trend.growth, f"{at}.trend.growth")


def regression(c: Contract) -> Problems:
    yield from tier_problems(c.regression.error_growth, "$.regression.error_growth")
    yield from tier_problems(c.regression.latency_growth, "$.regression.latency_growth")


def invariance(c: Contract) -> Problems:
    """Per-output invariance tiers name an output; every tier is in order."""
    outputs = _outputs(c)
    for name, inv_tier in c.invariance.outputs.items():
        if name not in outputs:
            yield f"$.invariance.outputs.{name}: {name!r} is not an output"
        yield from tier_problems(inv_tier, f"$.invariance.outputs.{name}")
    yield from tier_problems(c.invariance.default, "$.invariance.default")


def latency(c: Contract) -> Problems:
    for key, tier in c.latency.tiers.items():
        yield from tier_problems(tier, f"$.latency.{key}")


def memory(c: Contract) -> Problems:
    for key, tier in c.memory.tiers.items():
        yield from tier_problems(tier, f"$.memory.{key}")


#: The section validators, in the order their problems are reported.
SECTIONS: tuple[Callable[[Contract], Problems], ...] = (
    tensors,
    profiles,
    state,
    invariants,
    tolerances,
    closed_loop,
    regression,
    invariance,
    latency,
    memory,
)


def problems(contract: Contract) -> Iterator[str]:
    for section in SECTIONS:
        yield from section(contract)


def check_semantics(contract: Contract) -> None:
    """Raise ContractError naming the contract, the first problem's JSON path, and how many more."""
    found = list(problems(contract))
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ContractError(f"{contract.where}: {found[0]}{more}")
