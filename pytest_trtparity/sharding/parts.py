"""Sharding a suite over pytest-xdist workers, and putting the pieces back together.

Under `-n N` a suite's test is parametrized into N shards. A functional shard reads a contiguous
block of the reference's records (file order) through the index; a closed-loop shard runs whole
streams, each as one loop. A shard test fails for what a shard can judge on its own: the per-chunk
findings of its chunks (structure, invariants, a chunk over its tolerance's chunk tier). Criteria
over all chunks (p95, pass rate, drift) can only be judged once every shard has reported: the
controller merges the parts in file order, judges the merged series exactly as one process would, and
that verdict fails the run through the summary and the session's exit status.

An unsharded run (no xdist, `-n 0` or `-n 1`) is one shard holding everything: its test sees every
chunk, so it also fails on the aggregate criteria, and its result is the one a merge would build.
Either way summary.json, report and plots are built from the same merged result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..checks.registry import Judge, shardable
from ..contract.model import Contract, Tier
from ..errors import ConfigError, TrtParityError
from ..judge.payloads import ShardView
from ..judge.results import OutputSeries, SuiteResult, chunk_label
from ..judge.tiers import Finding, tier_finding

if TYPE_CHECKING:
    from ..reference.reader import Record, ReferenceReader

Key = tuple[str, int]


# -- which worker, which device ---------------------------------------------------------------


def worker_index(worker_id: str | None) -> int | None:
    """`gw3` -> 3; None for the controller or a run without xdist."""
    if not worker_id or not worker_id.startswith("gw") or not worker_id[2:].isdigit():
        return None
    return int(worker_id[2:])


def device_for_worker(worker_id: str | None, devices: Sequence[int]) -> int | None:
    """Worker gwN gets devices[N % len(devices)]; a run without xdist gets the first."""
    if not devices:
        return None
    return devices[(worker_index(worker_id) or 0) % len(devices)]


def visible_devices(device: int, inherited: str | None) -> str:
    """CUDA_VISIBLE_DEVICES that shows only `device`.

    Ids count the GPUs this process can see, as CUDA itself counts them: when CUDA_VISIBLE_DEVICES
    already narrows the list, device 1 is its second entry.
    """
    if inherited is None:
        return str(device)
    visible = [part.strip() for part in inherited.split(",") if part.strip()]
    if device >= len(visible):
        raise ConfigError(
            f"--trt-devices asks for device {device}, but CUDA_VISIBLE_DEVICES={inherited!r} "
            f"shows {len(visible)} device(s); ids count within that list"
        )
    return visible[device]


# -- what one shard reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based); count 1 is the whole suite."""

    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        return self.count == 1

    @property
    def id(self) -> str:
        return f"shard{self.index + 1}of{self.count}"

    def block(self, total: int) -> range:
        """This shard's contiguous block of `total` items; sizes differ by at most one."""
        size, extra = divmod(total, self.count)
        start = self.index * size + min(self.index, extra)
        return range(start, start + size + (1 if self.index < extra else 0))

    def records(self, reader: ReferenceReader) -> Selection:
        """Functional sharding: a contiguous block of records, in file order."""
        return Selection(self, reader)

    def streams(self, reader: ReferenceReader, *, limit: int | None = None) -> Selection:
        """Closed-loop sharding: every `count`-th stream from this shard's on, each whole (its first
        `limit` chunks), so each loop runs in one worker; records keep their file order."""
        return Selection(self, reader, by_stream=True, limit=limit)


@dataclass
class Selection:
    """The records one shard runs: all of them, streamed (whole shard), or chosen keys read through
    the index. The keys are found on first use, inside the suite's loop, so that a reference the
    index cannot be built from ends the suite with its error like any reading error."""

    shard: Shard
    reader: ReferenceReader
    by_stream: bool = False
    limit: int | None = None
    _keys: list[Key] | None = field(default=None, init=False, repr=False)

    def keys(self) -> list[Key]:
        if self._keys is None:
            index = self.reader.index()
            every = index.record_keys()
            if not self.by_stream:
                self._keys = [every[i] for i in self.shard.block(len(every))]
            else:
                mine = set(index.streams()[self.shard.index :: self.shard.count])
                self._keys = [
                    k for k in every if k[0] in mine and (self.limit is None or k[1] < self.limit)
                ]
        return self._keys

    def __iter__(self) -> Iterator[Record]:
        if self.shard.whole:
            return iter(self.reader)
        return self._read()

    def _read(self) -> Iterator[Record]:
        yield from self.reader.records(self.keys())

    def expected(self) -> int | None:
        """How many records this shard runs, when that can be known (for progress lines)."""
        try:
            return len(self.keys())
        except TrtParityError:
            return None

    @property
    def found(self) -> list[Key] | None:
        """The keys, if they were found (None: whole shard, or the index could not be built)."""
        return self._keys

    def positions(self) -> dict[str, int]:
        """Chunk label -> place of the record in the file, which orders the merge."""
        if self.shard.whole or self._keys is None:
            return {}
        index = self.reader.index()
        return {chunk_label(*key): index.position(key) for key in self._keys}


# -- how each suite is judged -----------------------------------------------------------------


def judge_for(suite: str) -> Judge:
    """How a shardable check judges its whole series once every shard is merged (the registry's)."""
    sharding = shardable().get(suite)
    if sharding is None:
        raise ConfigError(
            f"suite {suite!r} cannot be sharded (shardable: {', '.join(shardable())})"
        )
    return sharding.judge


def chunk_tier(contract: Contract, suite: str, output: str) -> tuple[Tier | None, str, bool]:
    """The per-chunk bound a shard can judge alone: (tier, metric, blocking)."""
    return shardable()[suite].chunk_tier(contract, output)


# -- one shard's part, and the merge ----------------------------------------------------------


@dataclass
class ShardPart:
    """What one shard measured, without the criteria that need every chunk."""

    shard: Shard
    result: SuiteResult
    positions: dict[str, int] = field(default_factory=dict)
    assigned: int = 0

    @property
    def suite(self) -> str:
        return self.result.suite

    @property
    def empty(self) -> bool:
        return self.assigned == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": [self.shard.index, self.shard.count],
            "result": self.result.to_json(),
            "positions": self.positions,
            "assigned": self.assigned,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ShardPart:
        index, count = raw["shard"]
        return cls(
            Shard(int(index), int(count)),
            SuiteResult.from_json(raw["result"]),
            {str(k): int(v) for k, v in raw["positions"].items()},
            int(raw["assigned"]),
        )


def make_part(result: SuiteResult, selection: Selection, contract: Contract) -> ShardPart:
    """Strip the whole-series judgement from a shard's result (it is redone after the merge).

    Suites append that judgement last, after every per-chunk finding; judging the shard's series
    again on an empty copy says how many findings it added.
    """
    probe = SuiteResult(result.suite, outputs=result.outputs)
    judge_for(result.suite)(probe, contract)
    kept = result.findings[: len(result.findings) - len(probe.findings)]
    part = SuiteResult(
        suite=result.suite,
        outputs=result.outputs,
        findings=kept,
        chunks_run=result.chunks_run,
        streams=list(result.streams),
        complete=result.complete,
        error=result.error,
        payload=result.payload.without(probe.payload),
    )
    assigned = len(selection.found) if selection.found is not None else -1  # -1: never known
    return ShardPart(selection.shard, part, selection.positions(), assigned)


def shard_view(part: ShardPart, contract: Contract) -> SuiteResult:
    """The result a shard's own test is judged on: its per-chunk findings, plus each output's worst
    chunk against the per-chunk bound. Named like its suite, so the test's report finds it."""
    r = part.result
    view = SuiteResult(
        suite=r.suite,
        findings=list(r.findings),
        chunks_run=r.chunks_run,
        streams=list(r.streams),
        complete=r.complete or part.empty,
        error=None if part.empty else r.error,
        payload=ShardView(part.shard.id),
    )
    for name, series in r.outputs.items():
        tier, metric, blocking = chunk_tier(contract, r.suite, name)
        values = series.series(metric)
        if tier is None or not values:
            continue
        worst = max(
            range(len(values)), key=lambda i: math.inf if math.isnan(values[i]) else values[i]
        )
        finding = tier_finding(
            tier,
            values[worst],
            suite=r.suite,
            output=name,
            criterion=metric,
            chunk=series.chunks[worst],
            blocking=blocking,
        )
        if finding is not None:
            view.findings.append(finding)
    return view


def merge(parts: Sequence[ShardPart], contract: Contract) -> SuiteResult:
    """One suite's result from its shards' parts: series and per-chunk findings in file order, then
    the whole-series judgement, exactly as one process would have produced it.

    A part that stopped on an error ends the merge there: one process would have stopped at the
    same record. Shards that never reported make the result incomplete (never a pass).
    """
    suite = parts[0].suite
    count = parts[0].shard.count
    ordered = sorted(parts, key=lambda p: p.shard.index)
    missing = sorted(set(range(count)) - {p.shard.index for p in ordered})
    used: list[ShardPart] = []
    for part in ordered:
        if not part.empty:
            used.append(part)
        if part.result.error and not part.empty:
            break
    merged = SuiteResult(suite=suite)
    _merge_series(merged, used)
    _merge_findings(merged, used)
    merged.chunks_run = sum(p.result.chunks_run for p in used)
    merged.streams = _streams_in_order(used)
    if used:
        merged.payload = used[0].result.payload.copy()
    errors = [p.result.error for p in used if p.result.error]
    if missing:
        errors.insert(
            0,
            f"shard(s) {', '.join(str(i + 1) for i in missing)} of {count} did not report "
            "(worker crashed, test deselected or not run)",
        )
    if errors:
        merged.error = errors[0]
    elif merged.chunks_run == 0:
        merged.error = "no chunk ran"
    merged.complete = merged.error is None
    judge_for(suite)(merged, contract)
    return merged


def _position(part: ShardPart, label: str) -> float:
    """Where a chunk's record lies in the file; an unsharded part keeps its own (file) order."""
    return float(part.positions.get(label, math.inf))


def _merge_series(merged: SuiteResult, parts: Sequence[ShardPart]) -> None:
    names = list(dict.fromkeys(name for p in parts for name in p.result.outputs))
    for name in names:
        rows: list[tuple[float, int, str, OutputSeries, int]] = []
        for n, part in enumerate(parts):
            series = part.result.outputs.get(name)
            if series is None:
                continue
            rows += [
                (_position(part, label), n, label, series, i)
                for i, label in enumerate(series.chunks)
            ]
        rows.sort(key=lambda row: (row[0], row[1]))
        metrics = list(dict.fromkeys(m for _, _, _, s, _ in rows for m in s.metrics))
        out = merged.series(name)
        out.chunks = [label for _, _, label, _, _ in rows]
        out.metrics = {
            m: [s.metrics[m][i] if m in s.metrics else math.nan for _, _, _, s, i in rows]
            for m in metrics
        }


def _merge_findings(merged: SuiteResult, parts: Sequence[ShardPart]) -> None:
    """Per-chunk findings in file order; findings about no chunk (said once per shard) once, after."""
    per_chunk: list[tuple[float, int, Finding]] = []
    general: dict[str, Finding] = {}
    for n, part in enumerate(parts):
        for f in part.result.findings:
            if f.chunk is None:
                general.setdefault(f.message, f)
            else:
                per_chunk.append((_position(part, f.chunk), n, f))
    per_chunk.sort(key=lambda row: (row[0], row[1]))
    merged.findings = [f for _, _, f in per_chunk] + list(general.values())


def _streams_in_order(parts: Sequence[ShardPart]) -> list[str]:
    """Streams in the order of their first record, as one process meets them."""
    first: dict[str, tuple[float, int]] = {}
    for n, part in enumerate(parts):
        ran = set(part.result.streams)
        for label, pos in part.positions.items():
            stream = label.rpartition("#")[0]
            if stream in ran:
                first[stream] = min(first.get(stream, (math.inf, n)), (float(pos), n))
        for i, stream in enumerate(part.result.streams):
            first.setdefault(stream, (math.inf, n * 1_000_000 + i))
    return sorted(first, key=lambda s: first[s])
