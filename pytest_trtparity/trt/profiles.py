"""Optimization profiles: planned from the contract for a build, chosen per chunk at run time.

A TensorRT engine with dynamic inputs needs a min/opt/max shape for every dynamic input in every
profile; the contract names its profiles (the checklist's A: T=592, B: T=584, C: unified). Inputs the
contract fixes completely are added with min = opt = max, so a contract need not repeat them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..contract.model import Contract, Profile, ProfileShape
from ..errors import BindingError, ConfigError

Point = Literal["min", "opt", "max"]
POINTS: tuple[Point, ...] = ("min", "opt", "max")
Range = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class PlannedProfile:
    """One optimization profile as handed to the builder: input name -> (min, opt, max)."""

    name: str
    shapes: Mapping[str, Range]

    def at(self, point: Point) -> dict[str, tuple[int, ...]]:
        index = POINTS.index(point)
        return {name: rng[index] for name, rng in self.shapes.items()}

    def admits(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return all(
            name in shapes and _inside(rng, shapes[name]) for name, rng in self.shapes.items()
        )

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {
            name: {"min": list(lo), "opt": list(opt), "max": list(hi)}
            for name, (lo, opt, hi) in sorted(self.shapes.items())
        }


def _inside(rng: Range, shape: Sequence[int]) -> bool:
    lo, _, hi = rng
    return len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))


def _fixed_shape(shape: Sequence[int | str]) -> tuple[int, ...] | None:
    return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None


def plan_profiles(contract: Contract, names: Sequence[str] | None = None) -> list[PlannedProfile]:
    """The profiles to build, in order: the named ones, or all of the contract's.

    Raises ConfigError when a name is unknown, when the contract has no profiles although an input
    is dynamic, or when a profile leaves a dynamic input without shapes.
    """
    available = dict(contract.profiles)
    if names:
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ConfigError(
                f"{contract.where}: no profile named {unknown[0]!r} (profiles: {', '.join(available) or 'none'})"
            )
        chosen = [available[n] for n in dict.fromkeys(names)]
    else:
        chosen = list(available.values())
    dynamic = [t.name for t in contract.inputs if _fixed_shape(t.shape) is None]
    if not chosen:
        if dynamic:
            raise ConfigError(
                f"{contract.where}: input {dynamic[0]!r} is dynamic but the contract has no profiles; "
                "add one under $.profiles"
            )
        return [PlannedProfile("static", {})]
    return [_plan_one(contract, p) for p in chosen]


def _plan_one(contract: Contract, profile: Profile) -> PlannedProfile:
    shapes: dict[str, Range] = {}
    for spec in contract.inputs:
        given: ProfileShape | None = profile.shapes.get(spec.name)
        if given is not None:
            shapes[spec.name] = (tuple(given.min), tuple(given.opt), tuple(given.max))
            continue
        fixed = _fixed_shape(spec.shape)
        if fixed is not None:
            shapes[spec.name] = (fixed, fixed, fixed)
        elif not spec.optional:
            raise ConfigError(
                f"{contract.where}: $.profiles.{profile.name}.shapes: dynamic input {spec.name!r} "
                f"{list(spec.shape)} has no min/opt/max shapes"
            )
    for problem in named_dim_conflicts(contract, shapes):
        raise ConfigError(f"{contract.where}: $.profiles.{profile.name}: {problem}")
    return PlannedProfile(profile.name, shapes)


def named_dim_conflicts(contract: Contract, shapes: Mapping[str, Range]) -> Iterable[str]:
    """Each way a profile gives one named dim (B, T, ...) two values at the same point."""
    for index, point in enumerate(POINTS):
        seen: dict[str, tuple[str, int]] = {}
        for spec in contract.inputs:
            if spec.name not in shapes:
                continue
            shape = shapes[spec.name][index]
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, int) or axis >= len(shape):
                    continue
                value = shape[axis]
                if dim in seen and seen[dim][1] != value:
                    other, was = seen[dim]
                    yield (
                        f"dimension {dim} is {was} in {other!r} but {value} in {spec.name!r} "
                        f"at the {point} shapes"
                    )
                seen.setdefault(dim, (spec.name, value))


def choose_profile(
    profiles: Sequence[Mapping[str, Range]],
    shapes: Mapping[str, Sequence[int]],
    *,
    names: Sequence[str] = (),
) -> int:
    """The profile index to run a chunk of `shapes` with.

    A profile whose opt shapes equal the chunk's wins (it was tuned for exactly that), then the first
    that admits them. An error lists every profile's ranges when none does.
    """
    admitting = [
        i
        for i, p in enumerate(profiles)
        if all(name in shapes and _inside(rng, shapes[name]) for name, rng in p.items())
    ]
    for i in admitting:
        if all(tuple(shapes[name]) == rng[1] for name, rng in profiles[i].items()):
            return i
    if admitting:
        return admitting[0]
    described = "; ".join(
        f"{names[i] if i < len(names) else f'profile {i}'}: "
        + ", ".join(f"{n} {list(r[0])}..{list(r[2])}" for n, r in sorted(p.items()))
        for i, p in enumerate(profiles)
    )
    got = ", ".join(f"{n} {list(s)}" for n, s in sorted(shapes.items()))
    raise BindingError(
        f"no optimization profile admits the chunk's shapes ({got}); the engine has {described or 'no profiles'}"
    )


def match_profile_names(
    planned: Sequence[PlannedProfile], engine_profiles: Sequence[Mapping[str, Range]]
) -> dict[str, int]:
    """Contract profile name -> engine profile index, matched by identical min/opt/max shapes.

    Used when an engine has no build report saying which profile is which.
    """
    out: dict[str, int] = {}
    for p in planned:
        for index, ep in enumerate(engine_profiles):
            if index in out.values():
                continue
            if all(ep.get(name) == rng for name, rng in p.shapes.items() if name in ep):
                out[p.name] = index
                break
    return out
