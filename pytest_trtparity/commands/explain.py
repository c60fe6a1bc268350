"""`trtparity explain`: localize a failure on demand for one chunk.

Replays the chunk (functional: the reference inputs and state; `--closed-loop`: the engine's own
state carried from the start of the stream up to that chunk), compares every intermediate tensor
with the source ONNX on ONNX Runtime, names the first one that diverges, and runs the probes.
Exit status 0 when every explained output was localized or nothing fails, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..contract.model import Contract
    from ..explain.api import EngineSpec
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
        "--engine",
        required=True,
        metavar="PATH",
        help="engine (.onnx on ONNX Runtime; .jit/.pt/.ts/.pt2 on PyTorch) or pkg:PACKAGE/FILE",
    )
    parser.add_argument(
        "--onnx", required=True, metavar="PATH", help="the source ONNX of the engine"
    )
    parser.add_argument("--contract", required=True, metavar="PATH", help="binding contract (JSON)")
    parser.add_argument(
        "--ref", required=True, metavar="PATH", help="reference records (JSONL or JSONL.gz)"
    )
    parser.add_argument(
        "--chunk",
        required=True,
        metavar="ID",
        help="chunk: INDEX, STREAM#INDEX, or auto / STREAM#auto (with one --output: the worst chunk, or in closed loop the first over the fail tier)",
    )
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
    parser.add_argument(
        "--entry",
        default="",
        metavar="NAME",
        help="PyTorch: the submodule or method to call (like --trt-torch-entry)",
    )
    parser.add_argument(
        "--device", default="cpu", metavar="DEV", help="PyTorch: cpu or cuda[:N] (default cpu)"
    )
    parser.add_argument(
        "--tf32", action="store_true", help="PyTorch on CUDA: allow TF32 (like --trt-tf32)"
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
    from ..contract.model import load_contract
    from ..explain.api import EngineSpec, explain_failure
    from ..util.paths import resolve

    cwd = Path.cwd()
    engine, source, contract_path, ref = (
        resolve(str(p), cwd) for p in (args.engine, args.onnx, args.contract, args.ref)
    )
    spec = EngineSpec(engine, entry=args.entry, device=args.device, tf32=args.tf32)
    contract = load_contract(contract_path)
    suite = "closed_loop" if args.closed_loop else "functional"
    stream, index = _chunk_index(args, spec, contract, ref, suite)
    records = _stream_records(ref, stream, index)
    diagnoses = explain_failure(
        spec, source, contract, records, suite=suite, outputs=args.output, budget_s=args.budget
    )
    if not diagnoses:
        print(
            f"trtparity explain: no output fails on chunk {stream}#{index} ({suite}); nothing to explain"
        )
        return 0
    return _emit(diagnoses, args)


def _chunk_index(
    args: argparse.Namespace, spec: EngineSpec, contract: Contract, ref: Path, suite: str
) -> tuple[str, int]:
    """The chunk asked for; `auto` (or `STREAM#auto`): the one the gate would explain for the
    single `--output`, the worst (functional) or the first over the fail tier (closed loop)."""
    from ..errors import ConfigError
    from ..explain.api import chunk_errors, chunk_that_matters, fail_tier, open_engine
    from ..reference.reader import ReferenceReader

    stream, _, index = args.chunk.rpartition("#")
    if index != "auto":
        return parse_chunk(args.chunk)
    if not args.output or len(args.output) != 1:
        raise ConfigError(f"--chunk {args.chunk}: auto needs exactly one --output")
    name, stream = args.output[0], stream or "default"
    records = [r for r in ReferenceReader(ref) if r.stream == stream]
    if not records:
        raise ConfigError(f"{ref}: no stream {stream!r} in the reference")
    backend = open_engine(spec, contract)
    try:
        errors = chunk_errors(backend, contract, records, name, closed_loop=suite == "closed_loop")
    finally:
        backend.close()
    tier = fail_tier(contract, name, suite)
    pick = chunk_that_matters(errors, tier, closed_loop=suite == "closed_loop")
    print(
        f"trtparity explain: chunk {stream}#{records[pick].chunk_index} ({suite}, {name!r} "
        f"error {errors[pick]:.3g}, fail tier {tier:.3g}, worst {max(errors):.3g})"
    )
    return stream, records[pick].chunk_index


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
