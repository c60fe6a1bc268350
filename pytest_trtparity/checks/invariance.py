"""Invariance: an engine must give a chunk the same answer whatever else it is run with.

Parity at batch 1 says nothing about batch 8: an engine can mix neighbouring rows, depend on the
batch size, pick a kernel per profile that disagrees with another profile's, or be non-deterministic
from one run to the next. Each of these ships when the gate only replays the reference one chunk at a
time. This check runs the engine against itself, so it needs no reference output:

* repeat: the same chunk twice gives the same output;
* identical rows: a batch of B copies of one chunk gives B equal rows, equal to the chunk alone;
* position and neighbours: a batch of distinct chunks, in order and rotated by one, gives each
  chunk the output it gets alone;
* every batch size (and, on TensorRT, every optimization profile) the engine admits.

Inputs and outputs are batched along the axis the contract names with `invariance.batch_dim` ("B"
by default): Silero's state is [2, B, 128], so its rows are stacked on axis 1. Tensors without that
axis (a scalar sample rate) are shared by every row.

A contract whose inputs never name the batch dim (a starter contract with a fixed batch of 1) gets
the repeat check alone, and the payload says why the batch checks did not run: sharing every
tensor would make each "row" the first chunk, a false failure on a correct engine. A batch whose
stacked feeds and outputs would hold more than `BATCH_BYTES` is skipped, and said so, rather than
holding gigabytes for large tensors; only the chunks the largest batch run uses are kept.

Tiers (max |difference| per output) come from the contract's `invariance` section; without one, the
default is exact where the backend promises determinism (ONNX Runtime on the CPU: fixed kernels, no
atomics, same result for the same shapes; measured batch-invariant on Silero too, docs/signoff.md)
and the output's functional tolerance elsewhere (GPU kernels may be chosen per batch size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend, NamedProfiles, ProfileSelectable
from ..contract.bindings import record_feeds
from ..contract.model import Contract, Tier
from ..errors import TrtParityError
from ..judge.payloads import InvariancePayload
from ..judge.results import SuiteResult, chunk_label
from ..judge.tiers import Finding, Level, judge
from ..reference.reader import Record
from ..util import fmt

SUITE = "invariance"
EXACT = Tier(fail=0.0)
Arrays = dict[str, np.ndarray]
#: What one batch's stacked feeds and outputs may hold: batch 8 of 26 MB tensors is over 600 MB.
BATCH_BYTES = 256 << 20
#: Elements compared at a time, so that the float64 copies a comparison makes stay small.
COMPARE_BLOCK = 1 << 20


@dataclass(frozen=True)
class Comparison:
    """One output of one row, compared with what the same chunk gave alone (or the first time)."""

    criterion: str  # repeat, identical rows, position, batch size
    output: str
    batch: int
    rows: str
    profile: str
    diff: float


def deterministic(backend: Backend) -> bool:
    """Whether the backend promises the same bits for the same inputs: ONNX Runtime on the CPU."""
    info = backend.info()
    return info.backend == "onnxruntime" and (info.provider or "").startswith("CPU")


#: Comparisons between different batch sizes or row orders. A deterministic backend still runs
#: other kernels there (a matrix-vector product at batch 1, a blocked matrix product at batch 8), so
#: its results may differ in the last bits: exactness is demanded only of a repeated run and of
#: identical rows within one batch. Across batches a deterministic backend may differ by at most
#: ACROSS_FRACTION of the output's chunk fail tier: far above rounding (1e-7 on Silero's state
#: against 5e-5), far below a real dependence on neighbours or batch size (1.8e-3 and 7e-3).
ACROSS_BATCHES = frozenset({"batch size", "position"})
ACROSS_FRACTION = 0.01


def tiers(contract: Contract, backend: Backend, *, across: bool = False) -> dict[str, Tier]:
    """Per output, the tier a difference between runs that must agree is judged by (`across`: for
    comparisons between batch sizes or positions, see ACROSS_BATCHES). The contract's
    `invariance` tiers come first; otherwise exact on a deterministic backend, else the output's
    chunk tier."""
    exact = deterministic(backend)
    out: dict[str, Tier] = {}
    for name in contract.output_names:
        tier = contract.invariance.tier_for(name)
        if tier is None:
            tol = contract.tolerance(name).chunk or contract.tolerance(name).p95
            if not exact:
                tier = tol or EXACT
            elif across and tol is not None and tol.fail is not None:
                tier = Tier(fail=tol.fail * ACROSS_FRACTION)
            else:
                tier = EXACT
        out[name] = tier
    return out


def batch_axes(contract: Contract) -> dict[str, int]:
    """Tensor name -> its batch axis, for every input and output whose shape names the batch dim."""
    dim = contract.invariance.batch_dim
    return {
        t.name: t.shape.index(dim) for t in (*contract.inputs, *contract.outputs) if dim in t.shape
    }


def no_batch_axis(contract: Contract) -> str | None:
    """Why the batch checks cannot run (no input names the batch dim), or None when they can."""
    dim = contract.invariance.batch_dim
    if any(dim in t.shape for t in contract.inputs):
        return None
    return (
        f"no input names the batch dimension {dim!r} (set invariance.batch_dim in the contract): "
        "batch checks not run"
    )


def batch_sizes(contract: Contract) -> list[int]:
    """The contract's `invariance.batch_sizes`, else 1, 2 and each profile's opt and max batch."""
    if contract.invariance.batch_sizes:
        return sorted(set(contract.invariance.batch_sizes) | {1})
    axes = batch_axes(contract)
    sizes = {1, 2}
    for profile in contract.profiles.values():
        for name, shape in profile.shapes.items():
            if name in axes:
                sizes |= {shape.opt[axes[name]], shape.max[axes[name]]}
    return sorted(sizes)


def stack(feeds: Sequence[Arrays], axes: Mapping[str, int]) -> Arrays:
    """One batch from single-row feeds: batched tensors concatenated, shared ones taken once."""
    return {
        name: np.concatenate([f[name] for f in feeds], axis=axes[name])
        if name in axes
        else feeds[0][name]
        for name in feeds[0]
    }


def batched_shapes(
    feeds: Arrays, axes: Mapping[str, int], batch: int
) -> dict[str, tuple[int, ...]]:
    """The shapes `stack` would give `batch` copies of `feeds`, without stacking them."""
    shapes = {}
    for name, value in feeds.items():
        shape = list(value.shape)
        if name in axes:
            shape[axes[name]] *= batch
        shapes[name] = tuple(shape)
    return shapes


def batch_bytes(feeds: Arrays, outputs: Arrays, axes: Mapping[str, int], batch: int) -> int:
    """Bytes a batch of `batch` rows holds: its stacked feeds and its outputs (one row each given)."""
    return sum(
        v.nbytes * (batch if k in axes else 1) for part in (feeds, outputs) for k, v in part.items()
    )


def row(out: Arrays, axes: Mapping[str, int], i: int) -> Arrays:
    return {k: np.take(v, [i], axis=axes[k]) if k in axes else v for k, v in out.items()}


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64; a shape change or a NaN where the other has none is infinite.
    Compared `COMPARE_BLOCK` elements at a time: float64 copies of a 26 MB tensor are 104 MB."""
    if a.shape != b.shape:
        return math.inf
    x, y = np.ravel(a), np.ravel(b)
    worst = 0.0
    for start in range(0, x.size, COMPARE_BLOCK):
        worst = max(
            worst, _block_diff(x[start : start + COMPARE_BLOCK], y[start : start + COMPARE_BLOCK])
        )
    return worst


def _block_diff(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    same_nan = np.isnan(x) & np.isnan(y)
    with np.errstate(invalid="ignore"):
        d = np.where(same_nan | (x == y), 0.0, np.abs(x - y))
    return float(np.nan_to_num(d, nan=math.inf).max())


class _Runner:
    """Runs batches on one backend (one profile pinned, or none) and records comparisons."""

    def __init__(
        self,
        backend: Backend,
        contract: Contract,
        chunks: Sequence[Arrays],
        profile: str,
        budget: int = BATCH_BYTES,
    ) -> None:
        self.backend, self.contract, self.chunks, self.profile = backend, contract, chunks, profile
        self.budget = budget
        self.axes = batch_axes(contract)
        self.outputs = [o for o in contract.output_names]
        self.found: list[Comparison] = []
        self.skipped: list[str] = []
        self.used = 1  # chunks the checks ran

    def run(self, feeds: Arrays) -> Arrays:
        self.backend.reset_state()
        return self.backend.run(feeds)

    def admits(self, batch: int) -> bool:
        shapes = batched_shapes(self.chunks[0], self.axes, batch)
        infos = {i.name: i for i in self.backend.inputs}
        if not all(infos[k].admits(v) for k, v in shapes.items() if k in infos):
            return False
        profiles = self.contract.profiles
        if self.profile in profiles:
            return profiles[self.profile].admits(shapes)
        return not profiles or any(p.admits(shapes) for p in profiles.values())

    def plan(self, sizes: Sequence[int], first: Arrays) -> list[int]:
        """The batch sizes to run: admitted, and within the byte budget (the others are noted)."""
        planned = []
        for batch in sizes:
            if batch == 1 or not self.admits(batch):
                continue
            need = batch_bytes(self.chunks[0], first, self.axes, batch)
            if need > self.budget:
                where = f" under profile {self.profile!r}" if self.profile else ""
                self.skipped.append(
                    f"batch {batch}{where}: stacked feeds and outputs would hold "
                    f"{fmt.nbytes(need)}, over the {fmt.nbytes(self.budget)} budget: skipped"
                )
                continue
            planned.append(batch)
        return planned

    def compare(self, criterion: str, got: Arrays, want: Arrays, batch: int, rows: str) -> None:
        for name in self.outputs:
            if name in got and name in want:
                diff = max_diff(got[name], want[name])
                self.found.append(Comparison(criterion, name, batch, rows, self.profile, diff))

    def check(self, sizes: Sequence[int]) -> None:
        """Each chunk alone (only those the largest planned batch uses), the repeat of the first
        after the others, then every planned batch size."""
        first = self.run(self.chunks[0])
        planned = self.plan(sizes, first)
        self.used = min(len(self.chunks), max(planned, default=0) + 1)
        alone = [first] + [self.run(f) for f in self.chunks[1 : self.used]]
        self.compare("repeat", self.run(self.chunks[0]), alone[0], 1, "row 0 (run twice)")
        for batch in planned:
            self.copies(batch, alone[0])
            for shift in (0, 1):
                self.positions(batch, shift, alone)

    def copies(self, batch: int, alone: Arrays) -> None:
        """A batch of copies of the first chunk: equal rows, each equal to the chunk alone."""
        same = self.run(stack([self.chunks[0]] * batch, self.axes))
        for i in range(1, batch):
            self.compare(
                "identical rows",
                row(same, self.axes, i),
                row(same, self.axes, 0),
                batch,
                f"rows 0 and {i} (same chunk)",
            )
        self.compare(
            "batch size",
            row(same, self.axes, 0),
            alone,
            batch,
            "row 0 against the chunk alone at batch 1",
        )

    def positions(self, batch: int, shift: int, alone: Sequence[Arrays]) -> None:
        """Distinct chunks, rotated by `shift`: each row equal to its chunk alone."""
        order = [(i + shift) % len(alone) for i in range(batch)]
        mixed = self.run(stack([self.chunks[k] for k in order], self.axes))
        for i, k in enumerate(order):
            self.compare(
                "position",
                row(mixed, self.axes, i),
                alone[k],
                batch,
                f"row {i} (chunk {k}, neighbours {_neighbours(order, i)})",
            )


def _neighbours(order: Sequence[int], i: int) -> str:
    near = [str(order[j]) for j in (i - 1, i + 1) if 0 <= j < len(order)]
    return ", ".join(near) or "none"


def _chunks(
    contract: Contract, backend: Backend, records: Iterable[Record], want: int
) -> tuple[list[Arrays], list[str]]:
    """Up to `want` distinct chunks whose feeds share one shape (so that they stack): the first
    shape to gather that many, else the most common one (a streaming encoder's first chunk is
    longer than the rest)."""
    groups: dict[tuple[Any, ...], tuple[list[Arrays], list[str]]] = {}
    for record in records:
        feeds = record_feeds(contract, record.inputs, backend.inputs, record.where)
        key = tuple(sorted((k, v.shape) for k, v in feeds.items()))
        chunks, labels = groups.setdefault(key, ([], []))
        chunks.append(feeds)
        labels.append(chunk_label(record.stream, record.chunk_index))
        if len(chunks) == want:
            return chunks, labels
    return max(groups.values(), key=lambda g: len(g[0]), default=([], []))


def profiles_of(backend: Backend) -> list[str]:
    """Engine optimization profiles to pin one at a time (TensorRT); [""] where there are none."""
    names = backend.profile_names if isinstance(backend, NamedProfiles) else None
    return list(names) if names else [""]


def run_invariance(
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    sizes: Sequence[int] | None = None,
    budget: int = BATCH_BYTES,
) -> SuiteResult:
    """The invariance suite: every comparison as a series point, the worst per criterion and output
    judged against `tiers`. A finding names the batch size, the rows and the profile; checks that
    did not run (no batch axis, a batch over `budget` bytes) are listed in the payload."""
    result = SuiteResult(suite=SUITE)
    no_axis = no_batch_axis(contract)
    wanted = [] if no_axis else list(batch_sizes(contract) if sizes is None else sizes)
    not_run = [no_axis] if no_axis else []
    try:
        want = min(contract.invariance.chunks, max(wanted, default=0) + 1)
        chunks, labels = _chunks(contract, backend, records, max(want, 1))
        if not chunks:
            result.error = "no reference chunk to batch"
            return result
        found: list[Comparison] = []
        used = 1
        for profile in profiles_of(backend):
            if profile and isinstance(backend, ProfileSelectable):
                backend.pin_profile(profile)
            runner = _Runner(backend, contract, chunks, profile, budget)
            runner.check(wanted)
            found += runner.found
            not_run += runner.skipped
            used = max(used, runner.used)
        if profiles_of(backend) != [""] and isinstance(backend, ProfileSelectable):
            backend.pin_profile(None)
    except TrtParityError as exc:
        result.error = str(exc)
        return result
    limits = tiers(contract, backend)
    across = tiers(contract, backend, across=True)
    for c in found:
        result.series(c.output).add(_label(c), {"max_abs": c.diff})
        result.chunk_done(c.criterion)
    result.findings = judge_comparisons(
        found, limits, across=across, blocking=contract.invariance.blocking
    )
    tiers_used = {
        **{k: v.to_json() for k, v in limits.items()},
        **{f"across batches/{k}": v.to_json() for k, v in across.items()},
    }
    result.payload = _payload(found, labels[:used], tiers_used, deterministic(backend), not_run)
    result.finish()
    return result


def _payload(
    found: Sequence[Comparison],
    labels: Sequence[str],
    tiers_used: Mapping[str, object],
    exact: bool,
    not_run: Sequence[str],
) -> InvariancePayload:
    payload = InvariancePayload(
        chunks=list(labels),
        batch_sizes=sorted({c.batch for c in found}),
        profiles=sorted({c.profile or "-" for c in found}),
        deterministic_backend=exact,
        tiers=dict(tiers_used),
        worst={
            f"{crit}/{out}": max(c.diff for c in found if (c.criterion, c.output) == (crit, out))
            for crit, out in sorted({(c.criterion, c.output) for c in found})
        },
    )
    if not_run:
        payload.not_run = list(not_run)
        payload.table = [f"invariance: {line}" for line in not_run]
    return payload


def _label(c: Comparison) -> str:
    where = f", profile {c.profile!r}" if c.profile else ""
    return f"{c.criterion}: batch {c.batch}, {c.rows}{where}"


def judge_comparisons(
    found: Sequence[Comparison],
    limits: Mapping[str, Tier],
    *,
    across: Mapping[str, Tier] | None = None,
    blocking: bool = True,
) -> list[Finding]:
    """One finding per criterion and output: its worst comparison, and how many others crossed.
    Comparisons between batch sizes or positions are judged by `across` where given."""
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for c in found:
        groups.setdefault((c.criterion, c.output), []).append(c)
    findings = []
    for (criterion, output), cs in groups.items():
        tier = (across or limits)[output] if criterion in ACROSS_BATCHES else limits[output]
        judged = [(judge(tier, c.diff), c) for c in cs]
        bad = [(lv, c) for lv, c in judged if lv[0] is not Level.PASS]
        if not bad:
            continue
        (level, limit), worst = max(bad, key=lambda x: (x[0][0], x[1].diff))
        findings.append(_finding(criterion, worst, level, limit, len(bad), blocking))
    return findings


def _finding(
    criterion: str, c: Comparison, level: Level, limit: float | None, count: int, blocking: bool
) -> Finding:
    word = "fail" if level is Level.FAIL else "warn"
    if level is Level.FAIL and not blocking:
        level = Level.WARN
    where = f" under profile {c.profile!r}" if c.profile else ""
    others = f"; {count - 1} more comparisons differ" if count > 1 else ""
    what = {
        "repeat": "two runs of the same chunk differ (non-deterministic)",
        "identical rows": "identical rows give different outputs",
        "batch size": "a chunk's output depends on the batch size",
        "position": "a row's output depends on its position or neighbours",
    }[criterion]
    message = (
        f"output {c.output!r}: {what}: batch {c.batch}, {c.rows}{where}: max_abs {c.diff:.3g} is "
        f"above the {word} tier {limit if limit is not None else 0:g}{others}"
    )
    return Finding(level, SUITE, c.output, criterion, message, c.diff, limit)


def summary_table(result: SuiteResult) -> list[str]:
    """Worst difference per criterion and output, for the report."""
    payload = result.payload
    worst: Mapping[str, float] = payload.worst if isinstance(payload, InvariancePayload) else {}
    lines = ["| criterion | output | worst max_abs |", "|---|---|---|"]
    for key, value in worst.items():
        criterion, output = key.split("/", 1)
        lines.append(f"| {criterion} | {output} | {value:.3g} |")
    if isinstance(payload, InvariancePayload) and payload.not_run:
        lines += ["", *(f"Not run: {line}" for line in payload.not_run)]
    return lines
