"""The throughput suite: latency and items per second over the batch sizes the contract allows.

Batched inputs are real reference chunks tiled along the batch dimension (Silero VAD's input
[B, 576] and state [2, B, 128] both get B copies of the chunk), so every row of a batched output
must equal the reference output of that chunk: the sweep checks that too, with the output's
per-chunk tolerance, because an engine that is fast at batch 8 and wrong there helps nobody.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..contract.bindings import record_feeds
from ..contract.model import Contract
from ..errors import TrtParityError
from ..judge.compare import compare
from ..judge.payloads import ThroughputPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level, tier_finding
from ..reference.reader import Record
from .latency import prepare_chunks
from .timing import fmt_ms, latency_stats

SUITE = "throughput"
DEFAULT_ITERATIONS = 50
DEFAULT_WARMUP = 5
DEFAULT_CHUNKS = 8


@dataclass(frozen=True)
class BatchDim:
    """The batch dimension's name and its axis in every tensor that has it."""

    name: str
    axes: Mapping[str, int]


def batch_dim(contract: Contract) -> BatchDim | None:
    """The named dimension leading the first input that starts with one (Silero's `B`)."""
    for spec in contract.inputs:
        if spec.shape and isinstance(spec.shape[0], str):
            name = spec.shape[0]
            axes = {
                t.name: list(t.shape).index(name)
                for t in (*contract.inputs, *contract.outputs)
                if name in t.shape
            }
            return BatchDim(name, axes)
    return None


def batch_sizes(contract: Contract, dim: BatchDim | None) -> tuple[list[int], str]:
    """The sizes to sweep and where they came from: `latency.throughput_batches`, else powers of two
    (and both ends) over the range the profiles allow for the batch dimension, else [1]."""
    explicit = contract.latency.throughput_batches
    if explicit:
        return sorted({int(b) for b in explicit}), "latency.throughput_batches"
    if dim is None:
        return [1], "no batch dimension in the contract"
    lo = hi = None
    for profile in contract.profiles.values():
        for tensor, shape in profile.shapes.items():
            if tensor in dim.axes:
                axis = dim.axes[tensor]
                lo = shape.min[axis] if lo is None else min(lo, shape.min[axis])
                hi = shape.max[axis] if hi is None else max(hi, shape.max[axis])
    if lo is None or hi is None:
        return [1], f"no profile bounds {dim.name}"
    lo = max(lo, 1)
    sizes = {lo, hi} | {1 << k for k in range(hi.bit_length()) if lo <= 1 << k <= hi}
    return sorted(sizes), f"profiles: {dim.name} in {lo}..{hi}"


def tile(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """`size` rows along `axis`, repeating the array's own rows in order."""
    have = array.shape[axis]
    if have == 0:
        return array
    reps = -(-size // have)
    return np.take(np.concatenate([array] * reps, axis=axis), np.arange(size), axis=axis)


def batched(
    tensors: Mapping[str, np.ndarray], dim: BatchDim | None, size: int
) -> dict[str, np.ndarray]:
    if dim is None:
        return dict(tensors)
    return {k: tile(v, dim.axes[k], size) if k in dim.axes else v for k, v in tensors.items()}


def run_throughput(
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    iterations: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    chunks: int = DEFAULT_CHUNKS,
) -> SuiteResult:
    """Time every batch size over the first few reference chunks, and check the batched outputs."""
    spec = contract.latency
    rounds = int(
        (spec.throughput_iterations or DEFAULT_ITERATIONS) if iterations is None else iterations
    )
    dim = batch_dim(contract)
    sizes, source = batch_sizes(contract, dim)
    result = SuiteResult(suite=SUITE)
    rows: list[dict[str, Any]] = []
    try:
        prepared, _ = prepare_chunks(records, chunks)
        singles = [record_feeds(contract, c.inputs, backend.inputs, c.where) for c in prepared]
    except TrtParityError as exc:
        result.error = str(exc)
        return result
    if not prepared:
        result.error = "the reference holds no chunk"
        return result
    for size in sizes:
        try:
            rows.append(
                _sweep_one(backend, contract, prepared, singles, dim, size, rounds, warmup, result)
            )
        except TrtParityError as exc:
            result.findings.append(_failed_at(size, source, exc))
            rows.append({"batch": size, "error": str(exc)})
    result.chunks_run = sum(int(r.get("n", 0)) for r in rows)
    result.streams = sorted({c.stream for c in prepared})
    info = backend.info()
    payload = ThroughputPayload(
        batch_dim=dim.name if dim else None,
        batches_from=source,
        iterations=rounds,
        warmup=warmup,
        rows=rows,
        device=info.device,
        backend=info.backend,
    )
    payload.table = table_lines(payload)
    result.payload = payload
    result.complete = any("error" not in r for r in rows)
    if not result.complete:
        result.error = "no batch size ran"
    return result


def _failed_at(size: int, source: str, exc: TrtParityError) -> Finding:
    """A batch size the contract or engine allows must run: failing at it fails the suite."""
    message = f"the engine failed at batch size {size}, which {source} allows: {exc}"
    return Finding(Level.FAIL, SUITE, "engine", f"batch {size}", message)


def _sweep_one(
    backend: Backend,
    contract: Contract,
    prepared: Sequence[Any],
    singles: Sequence[Mapping[str, np.ndarray]],
    dim: BatchDim | None,
    size: int,
    rounds: int,
    warmup: int,
    result: SuiteResult,
) -> dict[str, Any]:
    feeds = [batched(f, dim, size) for f in singles]
    backend.reset_state()
    # no step's outputs outlive it: a name still bound to the last outputs keeps them (and the
    # engine's buffers behind them) alive through the next step, a second set of 26 MB tensors
    _check_rows(contract, prepared[0], backend.run(feeds[0]), dim, size, result)
    for i in range(warmup):
        backend.run(feeds[i % len(feeds)])
    samples = [backend.run_timed(feeds[i % len(feeds)])[1].total_ms for i in range(rounds)]
    stats = latency_stats(samples)
    return {
        "batch": size,
        "n": stats.n,
        "p50_ms": stats.p50_ms,
        "p95_ms": stats.p95_ms,
        "mean_ms": stats.mean_ms,
        "std_ms": stats.std_ms,
        "per_item_ms": stats.p50_ms / size,
        "items_per_s": 1e3 * size / stats.mean_ms if stats.mean_ms > 0 else math.nan,
    }


def _check_rows(
    contract: Contract,
    chunk: Any,
    out: Mapping[str, np.ndarray],
    dim: BatchDim | None,
    size: int,
    result: SuiteResult,
) -> None:
    """Every row of a batched output against the reference output of the chunk it tiles."""
    label = f"{chunk.label} x{size}"
    expected = batched(chunk.outputs, dim, size)
    for spec in contract.outputs:
        if spec.name not in out:
            result.findings.append(
                Finding(
                    Level.FAIL,
                    SUITE,
                    spec.name,
                    "missing output",
                    f"output {spec.name!r}: the engine returned no such output at batch size {size}",
                )
            )
            continue
        tol = contract.tolerance(spec.name)
        cmp = compare(
            spec.name,
            expected[spec.name],
            out[spec.name],
            expected_dtype=spec.dtype,
            tolerance=tol,
            allow_empty=spec.allow_empty,
        )
        if cmp.problem:
            result.findings.append(
                Finding(
                    Level.FAIL,
                    SUITE,
                    spec.name,
                    "structure",
                    f"output {spec.name!r} at batch size {size} on chunk {label}: {cmp.problem}",
                    chunk=label,
                )
            )
            continue
        f = tier_finding(
            tol.chunk,
            cmp.metrics[tol.metric],
            suite=SUITE,
            output=spec.name,
            criterion=f"{tol.metric} of the batched rows",
            chunk=label,
            blocking=tol.blocking,
            note=tol.note,
        )
        if f:
            result.findings.append(f)


def table_lines(p: ThroughputPayload) -> list[str]:
    lines = [
        f"throughput ({p.backend} on {p.device}, batch {p.batch_dim} from {p.batches_from}, "
        f"{p.iterations} calls each):",
        f"  {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'ms/item':>9} {'items/s':>10}",
    ]
    for row in p.rows:
        if "error" in row:
            lines.append(f"  {row['batch']:>5} failed: {row['error']}")
            continue
        lines.append(
            f"  {row['batch']:>5} {fmt_ms(row['p50_ms']):>9} {fmt_ms(row['p95_ms']):>9} "
            f"{fmt_ms(row['per_item_ms']):>9} {row['items_per_s']:>10.0f}"
        )
    return lines
