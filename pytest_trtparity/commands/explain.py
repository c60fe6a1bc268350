"""`trtparity explain`: localize a failure on demand for one chunk.

Replays the chunk (functional: the reference inputs and state; `--closed-loop`: the engine's own
state carried from the start of the stream up to that chunk), compares every intermediate tensor
with the source ONNX on ONNX Runtime, names the first one that diverges, and runs the probes.
Exit status 0 when every explained output was localized or nothing fails, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..contract.model import Contract
    from ..explain.diagnosis import Diagnosis
    from ..reference.reader import Record


def register(sub: Any) -> None:
    parser = add_parser(sub)
    parser.set_defaults(func=run)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="name the first layer where an engine diverges from its source ONNX, and why",
        description="Replays one chunk, compares the engine's intermediate tensors with the source ONNX "
        "on ONNX Runtime (CPU, fp32) in topological order, names the first tensor that diverges and "
        "runs the probes (a node in fp32, the source's weights).",
    )
    parser.add_argument(
        "--engine", required=True, metavar="PATH", help="engine (.onnx) or pkg:PACKAGE/FILE"
    )
    parser.add_argument(
        "--onnx", required=True, metavar="PATH", help="the source ONNX of the engine"
    )
    parser.add_argument("--contract", required=True, metavar="PATH", help="binding contract (JSON)")
    parser.add_argument(
        "--ref", required=True, metavar="PATH", help="reference records (JSONL or JSONL.gz)"
    )
    parser.add_argument("--chunk", required=True, metavar="ID", help="chunk: INDEX or STREAM#INDEX")
    parser.add_argument(
        "--closed-loop",
        action="store_true",
        help="feed the engine's own carried state up to the chunk",
    )
    parser.add_argument(
        "--output",
        action="append",
        metavar="NAME",
        help="output(s) to explain (default: the failing ones)",
    )
    parser.add_argument(
        "--budget", type=float, default=5.0, metavar="S", help="seconds per output (default 5)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the diagnoses as JSON")
    parser.add_argument(
        "--plot", type=Path, metavar="DIR", help="write one error-per-layer PNG per output here"
    )
    return parser


def parse_chunk(text: str) -> tuple[str, int]:
    """`12` -> ("default", 12); `speech#212` -> ("speech", 212)."""
    from ..errors import ConfigError

    stream, _, index = text.rpartition("#")
    try:
        value = int(index)
    except ValueError:
        raise ConfigError(f"--chunk {text!r}: expected INDEX or STREAM#INDEX") from None
    if value < 0:
        raise ConfigError(f"--chunk {text!r}: the index must not be negative")
    return stream or "default", value


def run(args: argparse.Namespace) -> int:
    import onnx

    from ..contract.model import load_contract
    from ..errors import ConfigError
    from ..util.paths import resolve

    cwd = Path.cwd()
    engine, source, contract_path, ref = (
        resolve(str(p), cwd) for p in (args.engine, args.onnx, args.contract, args.ref)
    )
    if engine.suffix != ".onnx":
        raise ConfigError(
            f"{engine}: trtparity explain runs ONNX Runtime engines (.onnx); use the Python API "
            "(pytest_trtparity.explain) with TorchTaps or the TensorRT debug tensors for others"
        )
    contract = load_contract(contract_path)
    stream, index = parse_chunk(args.chunk)
    records = _stream_records(ref, stream, index)
    suite = "closed_loop" if args.closed_loop else "functional"
    feeds, got = _replay(engine, contract, records, closed_loop=args.closed_loop)
    record = records[-1]
    outputs = args.output or _failing(contract, record, got, suite)
    if not outputs:
        print(
            f"trtparity explain: no output fails on chunk {stream}#{index} ({suite}); nothing to explain"
        )
        return 0
    diagnoses = [
        _explain(
            onnx.load(str(engine)),
            onnx.load(str(source)),
            contract,
            record,
            feeds,
            name,
            suite,
            args.budget,
        )
        for name in outputs
    ]
    return _emit(diagnoses, args)


def _stream_records(ref: Path, stream: str, index: int) -> list[Record]:
    from ..errors import ConfigError
    from ..reference.reader import ReferenceReader

    out = []
    for record in ReferenceReader(ref):
        if record.stream == stream and record.chunk_index <= index:
            out.append(record)
            if record.chunk_index == index:
                return out
    raise ConfigError(f"{ref}: no chunk {stream}#{index} in the reference")


def _replay(
    engine: Path, contract: Contract, records: list[Record], *, closed_loop: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The feeds the engine sees on the last record, and its outputs there."""
    from ..backends import open_backend
    from ..contract.bindings import record_feeds

    backend = open_backend(engine, "onnxruntime").load()
    try:
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
    finally:
        backend.close()


def _tier(contract: Contract, name: str, suite: str) -> float:
    if suite == "closed_loop":
        drift = contract.closed_loop.outputs.get(name) or contract.closed_loop.default
        if drift is not None and drift.max is not None and drift.max.fail is not None:
            return drift.max.fail
    tol = contract.tolerance(name)
    if tol.chunk is not None and tol.chunk.fail is not None:
        return tol.chunk.fail
    return 0.0


def _failing(
    contract: Contract, record: Record, got: Mapping[str, np.ndarray], suite: str
) -> list[str]:
    from ..explain.localize import tensor_error

    return [
        spec.name
        for spec in contract.outputs
        if np.asarray(record.outputs[spec.name]).dtype.kind == "f"
        and tensor_error(
            record.outputs[spec.name], got[spec.name], contract.tolerance(spec.name).metric
        )
        > _tier(contract, spec.name, suite)
    ]


def _explain(
    engine_model: Any,
    source_model: Any,
    contract: Contract,
    record: Record,
    feeds: dict[str, np.ndarray],
    output: str,
    suite: str,
    budget: float,
) -> Diagnosis:
    from ..explain.engines import OnnxTaps
    from ..explain.run import Chunk, explain_chunk, onnx_probes
    from ..judge.results import chunk_label

    chunk = Chunk(
        chunk_label(record.stream, record.chunk_index),
        feeds,
        dict(record.inputs),
        dict(record.outputs),
    )
    return explain_chunk(
        source=source_model,
        engine=OnnxTaps(engine_model),
        chunk=chunk,
        output=output,
        tier=_tier(contract, output, suite),
        metric=contract.tolerance(output).metric,
        suite=suite,
        probes=onnx_probes(engine_model, source_model, chunk, output),
        budget_s=budget,
    )


def _emit(diagnoses: list[Diagnosis], args: argparse.Namespace) -> int:
    from ..explain.plot import plot_layers
    from ..explain.render import render_line
    from ..util.atomic import write_text

    for d in diagnoses:
        print(render_line(d))
        for probe in d.probes:
            print(f"  probe: {probe.sentence}")
        if args.plot:
            args.plot.mkdir(parents=True, exist_ok=True)
            out = args.plot / f"explain-{d.suite}-{d.output}.png"
            plot_layers(d, out)
            print(f"  plot: {out}")
    if args.json:
        write_text(
            args.json, json.dumps({"diagnosis": [d.to_json() for d in diagnoses]}, indent=2) + "\n"
        )
    return 0 if all(d.first_divergence is not None for d in diagnoses) else 1
