"""The entry point the gate and `trtparity explain` call: explain the failing outputs of one chunk.

`explain_failure(engine, source_onnx, contract, records)` opens the engine (ONNX Runtime or
PyTorch; a TensorRT plan is rebuilt as a debug engine, explain/trt_debug.py), replays the chunk (functional: the last record's inputs and state; closed loop: the
stream from its start, the engine's own state carried, so the last chunk is replayed exactly as the
gate ran it), and returns one `Diagnosis` per output over its fail tier on that chunk; an empty list
when none is. Each diagnosis is bounded by `budget_s` (probes stop once it is spent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .diagnosis import Diagnosis, Probe
from .run import DEFAULT_BUDGET_S, Chunk, ProbeFn, explain_chunk, onnx_probes

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..contract.io import IOInfo
    from ..contract.model import Contract
    from ..reference.reader import Record
    from .trt_debug import DebugEngineRunner, DebugRuntime

TORCH_SUFFIXES = (".pt", ".pt2", ".ts", ".jit")
#: TensorRT plans: localized through a debug build from the source ONNX of their build report.
TRT_SUFFIXES = (".plan", ".engine", ".trt")


class Replayable(Protocol):
    """What a replay needs: a backend, or the TensorRT debug engine."""

    @property
    def inputs(self) -> tuple[IOInfo, ...]: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


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
            return "tensorrt" if self.backend.startswith("tensorrt") else self.backend
        suffix = self.path.suffix.lower()
        if suffix in TRT_SUFFIXES:
            return "tensorrt"
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
        f"({', '.join(TORCH_SUFFIXES)}); TensorRT plans ({', '.join(TRT_SUFFIXES)}) are replayed on a debug build instead"
    )


def steps(
    backend: Replayable, contract: Contract, records: Sequence[Record], *, closed_loop: bool
) -> Iterator[tuple[Record, dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Each record with the feeds the engine sees on it and its outputs there: the reference
    inputs, and in closed loop the engine's own state carried from record to record, as the gate's
    closed loop runs it."""
    from ..contract.bindings import record_feeds

    last: dict[str, np.ndarray] = {}
    for i, record in enumerate(records):
        feeds = record_feeds(contract, record.inputs, backend.inputs, record.where)
        if closed_loop and i > 0:
            for pair in contract.state:
                if pair.input in feeds:
                    feeds[pair.input] = last[pair.output]
        last = backend.run(feeds)
        yield record, feeds, last


def replay(
    backend: Replayable, contract: Contract, records: Sequence[Record], *, closed_loop: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The feeds the engine sees on the last record, and its outputs there."""
    final = None
    for step in steps(  # only the last step is kept: a long stream of large tensors stays small
        backend, contract, records if closed_loop else records[-1:], closed_loop=closed_loop
    ):
        final = step
    if final is None:
        return {}, {}
    _, feeds, last = final
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
    trt_runtime: DebugRuntime | None = None,
) -> list[Diagnosis]:
    """One diagnosis per failing output (or per output in `outputs`) on the last of `records`.

    `records` is the chunk alone (functional) or its stream up to it (`suite="closed_loop"`).
    `trt_runtime` builds and runs TensorRT debug engines (default: the real TensorRT)."""
    from .graph import import_tools

    onnx, _, _ = import_tools()  # a missing `explain` extra is one sentence, before any work

    if engine.kind == "tensorrt":
        return explain_tensorrt(
            engine, source_onnx, contract, records, suite, outputs, budget_s, trt_runtime
        )
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


def explain_tensorrt(
    engine: EngineSpec,
    source_onnx: Path | None,
    contract: Contract,
    records: Sequence[Record],
    suite: str,
    outputs: Sequence[str] | None,
    budget_s: float,
    runtime: DebugRuntime | None = None,
) -> list[Diagnosis]:
    """A TensorRT plan: the debug engine is built from the source ONNX with the build report's
    options first (so a machine that cannot run it still says how far it got), then the chunk is
    replayed on it and its debug tensors are compared as an ONNX Runtime engine's would be."""
    import onnx

    from .trt_debug import (
        DebugEngineRunner,
        TensorRTRuntime,
        TensorRTTaps,
        read_build_spec,
        source_tensor_names,
    )

    spec = read_build_spec(engine.path, source_onnx)
    source = onnx.load(str(spec.source))
    runner = DebugEngineRunner(runtime or TensorRTRuntime(), spec, source_tensor_names(source))
    runner.build()
    feeds, got = replay(runner, contract, records, closed_loop=suite == "closed_loop")
    record = records[-1]
    names = list(outputs) if outputs else failing_outputs(contract, record, got, suite)
    chunk = _chunk(record, feeds)
    taps = TensorRTTaps(runner)
    return [
        explain_chunk(
            source=source,
            engine=taps,
            chunk=chunk,
            output=name,
            tier=fail_tier(contract, name, suite),
            metric=contract.tolerance(name).metric,
            suite=suite,
            probes=trt_probes(runner, source, chunk, name),
            budget_s=budget_s,
        )
        for name in names
    ]


def trt_probes(runner: DebugEngineRunner, source: Any, chunk: Chunk, output: str) -> list[ProbeFn]:
    """TensorRT (strongly typed): the first diverging node and the fp16/bf16 nodes feeding it cast
    up to fp32 in the source ONNX, the engine rebuilt with the same options and the chunk re-run."""
    from .graph import prepare_graph
    from .probes import fp32_node_probe
    from .run import _engine_node

    def run(model: Any) -> np.ndarray:
        import tempfile

        import onnx

        with tempfile.TemporaryDirectory(prefix="trtparity-fp32-") as tmp:
            path = Path(tmp) / "fp32.onnx"
            onnx.save(model, str(path))
            built = runner.runtime.build(runner.spec, path, ())
            return runner.runtime.run(built, chunk.feeds)[0][output]

    def fp32(d: Diagnosis) -> Probe | None:
        assert d.first_divergence is not None
        # the If branches this chunk selects inlined, so a node inside them can be cast up
        model = prepare_graph(source, chunk.feeds).model
        node = _engine_node(model, d.first_divergence.tensor)
        if node is None:
            return None
        expected = chunk.expected[output]
        return fp32_node_probe(model, node, run, expected, d.output_error, d.tier, d.metric)

    return [fp32]


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
    from .localize import tensor_error

    metric = contract.tolerance(output).metric
    return [
        tensor_error(record.outputs[output], out[output], metric)
        for record, _, out in steps(backend, contract, records, closed_loop=closed_loop)
    ]


def chunk_that_matters(errors: Sequence[float], tier: float, *, closed_loop: bool) -> int:
    """Functional: the worst chunk; closed loop: the first over the tier (else the worst)."""
    if closed_loop:
        over = [i for i, e in enumerate(errors) if e > tier]
        if over:
            return over[0]
    return int(np.argmax(errors)) if errors else 0
