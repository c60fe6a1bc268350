"""The entry point the gate and `trtparity explain` call: explain the failing outputs of one chunk.

`explain_failure(engine, source_onnx, contract, records)` opens the engine (ONNX Runtime or
PyTorch), replays the chunk (functional: the last record's inputs and state; closed loop: the
stream from its start, the engine's own state carried, so the last chunk is replayed exactly as the
gate ran it), and returns one `Diagnosis` per output over its fail tier on that chunk; an empty list
when none is. Each diagnosis is bounded by `budget_s` (probes stop once it is spent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .diagnosis import Diagnosis, Probe
from .run import DEFAULT_BUDGET_S, Chunk, ProbeFn, explain_chunk, onnx_probes

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..contract.model import Contract
    from ..reference.reader import Record

TORCH_SUFFIXES = (".pt", ".pt2", ".ts", ".jit")


@dataclass(frozen=True)
class EngineSpec:
    """The engine under test as the gate opens it: `backend` "onnxruntime" or "torch" ("" picks by
    suffix); for PyTorch the `entry` (like --trt-torch-entry), `device` and `tf32` (like --trt-tf32)."""

    path: Path
    backend: str = ""
    entry: str = ""
    device: str = "cpu"
    tf32: bool = False

    @property
    def kind(self) -> str:
        if self.backend:
            return self.backend
        suffix = self.path.suffix.lower()
        return "torch" if suffix in TORCH_SUFFIXES else "onnxruntime" if suffix == ".onnx" else ""


def open_engine(spec: EngineSpec, contract: Contract) -> Backend:
    """The engine's backend, loaded with the options the gate would give it."""
    from ..backends import open_backend
    from ..errors import ConfigError

    if spec.kind == "torch":
        from ..backends.torch import gate_options

        options = gate_options(contract, entry=spec.entry, device=spec.device, tf32=spec.tf32)
        return open_backend(spec.path, "torch", options).load()
    if spec.kind == "onnxruntime":
        return open_backend(spec.path, "onnxruntime").load()
    raise ConfigError(
        f"{spec.path}: trtparity explain runs ONNX Runtime engines (.onnx) and PyTorch ones "
        f"({', '.join(TORCH_SUFFIXES)}); TensorRT debug tensors are API-only (explain/trt_debug.py)"
    )


def replay(
    backend: Backend, contract: Contract, records: Sequence[Record], *, closed_loop: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The feeds the engine sees on the last record, and its outputs there."""
    from ..contract.bindings import record_feeds

    steps = records if closed_loop else records[-1:]
    last: dict[str, np.ndarray] = {}
    feeds: dict[str, np.ndarray] = {}
    for i, record in enumerate(steps):
        feeds = record_feeds(contract, record.inputs, backend.inputs, record.where)
        if closed_loop and i > 0:
            for pair in contract.state:
                if pair.input in feeds:
                    feeds[pair.input] = last[pair.output]
        last = backend.run(feeds)
    return feeds, last


def fail_tier(contract: Contract, name: str, suite: str) -> float:
    """The per-chunk fail tier of output `name` (closed loop: its drift maximum's)."""
    if suite == "closed_loop":
        drift = contract.closed_loop.outputs.get(name) or contract.closed_loop.default
        if drift is not None and drift.max is not None and drift.max.fail is not None:
            return drift.max.fail
    tol = contract.tolerance(name)
    if tol.chunk is not None and tol.chunk.fail is not None:
        return tol.chunk.fail
    return 0.0


def failing_outputs(
    contract: Contract, record: Record, got: Mapping[str, np.ndarray], suite: str
) -> list[str]:
    """The floating-point outputs whose error on `record` is over their fail tier."""
    from .localize import tensor_error

    return [
        spec.name
        for spec in contract.outputs
        if np.asarray(record.outputs[spec.name]).dtype.kind == "f"
        and tensor_error(
            record.outputs[spec.name], got[spec.name], contract.tolerance(spec.name).metric
        )
        > fail_tier(contract, spec.name, suite)
    ]


def explain_failure(
    engine: EngineSpec,
    source_onnx: Path,
    contract: Contract,
    records: Sequence[Record],
    *,
    suite: str = "functional",
    outputs: Sequence[str] | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
) -> list[Diagnosis]:
    """One diagnosis per failing output (or per output in `outputs`) on the last of `records`.

    `records` is the chunk alone (functional) or its stream up to it (`suite="closed_loop"`)."""
    import onnx

    backend = open_engine(engine, contract)
    try:
        feeds, got = replay(backend, contract, records, closed_loop=suite == "closed_loop")
        record = records[-1]
        names = list(outputs) if outputs else failing_outputs(contract, record, got, suite)
        if not names:
            return []
        source = onnx.load(str(source_onnx))
        chunk = _chunk(record, feeds)

        def rerun() -> dict[str, np.ndarray]:
            # closed loop: the whole stream again, so a setting acts on the carried state too
            return replay(backend, contract, records, closed_loop=suite == "closed_loop")[1]

        return [
            _diagnose(engine, backend, source, contract, chunk, name, suite, budget_s, rerun)
            for name in names
        ]
    finally:
        backend.close()


def _chunk(record: Record, feeds: dict[str, np.ndarray]) -> Chunk:
    from ..judge.results import chunk_label

    return Chunk(
        chunk_label(record.stream, record.chunk_index),
        feeds,
        dict(record.inputs),
        dict(record.outputs),
    )


def _diagnose(
    engine: EngineSpec,
    backend: Backend,
    source: Any,
    contract: Contract,
    chunk: Chunk,
    output: str,
    suite: str,
    budget_s: float,
    rerun: Callable[[], Mapping[str, np.ndarray]],
) -> Diagnosis:
    from .engines import EngineTaps, OnnxTaps
    from .torch_hooks import TorchTaps

    taps: EngineTaps
    probes: list[ProbeFn]
    if engine.kind == "torch":
        taps, probes = TorchTaps(backend), torch_probes(backend, chunk, output, rerun)
    else:
        model = _load_onnx(engine.path)
        taps, probes = OnnxTaps(model), onnx_probes(model, source, chunk, output)
    return explain_chunk(
        source=source,
        engine=taps,
        chunk=chunk,
        output=output,
        tier=fail_tier(contract, output, suite),
        metric=contract.tolerance(output).metric,
        suite=suite,
        probes=probes,
        budget_s=budget_s,
    )


def _load_onnx(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def torch_probes(
    backend: Backend, chunk: Chunk, output: str, rerun: Callable[[], Mapping[str, np.ndarray]]
) -> list[ProbeFn]:
    """PyTorch on CUDA with TF32 in force: `rerun` (the chunk, or in closed loop its stream from
    the start) with TF32 off."""
    from ..backends.torch_math import tf32_in_force
    from .probes import tf32_probe

    if not getattr(backend, "cuda", False):
        return []
    import torch

    if not tf32_in_force(torch).get("tf32"):
        return []

    def probe(d: Diagnosis) -> Probe | None:
        return tf32_probe(
            rerun,
            output,
            chunk.expected[output],
            d.output_error,
            d.tier,
            d.metric,
            torch=torch,
        )

    return [probe]


def chunk_errors(
    backend: Backend,
    contract: Contract,
    records: Sequence[Record],
    output: str,
    *,
    closed_loop: bool,
) -> list[float]:
    """`output`'s error on each record of one stream, in order (closed loop: the engine's own state
    carried from record to record, as the gate's closed loop runs it)."""
    from ..contract.bindings import record_feeds
    from .localize import tensor_error

    metric = contract.tolerance(output).metric
    errors: list[float] = []
    last: dict[str, np.ndarray] = {}
    for i, record in enumerate(records):
        feeds = record_feeds(contract, record.inputs, backend.inputs, record.where)
        if closed_loop and i > 0:
            for pair in contract.state:
                if pair.input in feeds:
                    feeds[pair.input] = last[pair.output]
        last = backend.run(feeds)
        errors.append(tensor_error(record.outputs[output], last[output], metric))
    return errors


def chunk_that_matters(errors: Sequence[float], tier: float, *, closed_loop: bool) -> int:
    """Functional: the worst chunk; closed loop: the first over the tier (else the worst)."""
    if closed_loop:
        over = [i for i, e in enumerate(errors) if e > tier]
        if over:
            return over[0]
    return int(np.argmax(errors)) if errors else 0
