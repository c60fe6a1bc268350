"""`trtparity contract init|check|calibrate`.

`check --onnx M.onnx` compares the contract with the model as ONNX Runtime reads it; adding
`--builder tensorrt|tensorrt-rtx` compares it with the network TensorRT's own parser makes of the
file (names, dtypes, ranks, dynamic dimensions, and whether TensorRT accepts each profile's shapes),
which needs the builder but no GPU."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def register(sub: Any) -> None:
    parser = sub.add_parser("contract", help="write or check a binding contract")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    init = verbs.add_parser("init", help="write a valid starter contract from an ONNX model")
    init.add_argument("--onnx", type=Path, required=True, metavar="MODEL.onnx")
    init.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    init.add_argument("--model", help="model name to record (default: the file's stem)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=_init)
    check = verbs.add_parser("check", help="validate a contract against its schema and itself")
    check.add_argument("contract", type=Path, metavar="FILE")
    check.add_argument(
        "--onnx", type=Path, help="also check this ONNX model's I/O against the contract"
    )
    check.add_argument(
        "--builder",
        choices=("tensorrt", "tensorrt-rtx"),
        help="check --onnx as this TensorRT builder parses it (no GPU needed), not ONNX Runtime",
    )
    check.set_defaults(func=_check)
    from . import calibrate  # `contract calibrate`: tiers from accepted engines' measured noise

    calibrate.add_parser(verbs)


def write_starter(
    onnx_path: Path, out: Path, *, model: str | None = None, force: bool = False
) -> Path:
    """Read the ONNX model's I/O through ONNX Runtime and write its starter contract to `out`."""
    import json

    from ..backends.onnxruntime import OnnxRuntimeBackend
    from ..contract.starter import starter_contract
    from ..errors import ConfigError
    from ..util.atomic import write_text

    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (pass --force to overwrite)")
    with OnnxRuntimeBackend(onnx_path) as backend:
        contract = starter_contract(onnx_path, backend.inputs, backend.outputs, model=model)
    return write_text(out, json.dumps(contract, indent=2) + "\n")


def _init(args: argparse.Namespace) -> int:
    path = write_starter(args.onnx, args.output, model=args.model, force=args.force)
    print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..contract.model import load_contract

    contract = load_contract(args.contract)
    print(f"{args.contract}: valid contract for {contract.model!r}")
    print(f"  inputs:  {', '.join(f'{t.name} {t.dtype}{list(t.shape)}' for t in contract.inputs)}")
    print(f"  outputs: {', '.join(f'{t.name} {t.dtype}{list(t.shape)}' for t in contract.outputs)}")
    if contract.profiles:
        print(f"  profiles: {', '.join(contract.profiles)}")
    if contract.state:
        print(f"  state: {', '.join(f'{p.output} -> {p.input}' for p in contract.state)}")
    for inv in contract.invariants:
        print(f"  invariant: {inv.describe()}")
    if args.onnx is None:
        if args.builder:
            raise ConfigError("--builder checks the contract against a model: pass --onnx M.onnx")
        return 0
    if args.builder:
        return _check_parsed(args.onnx, contract, args.builder)
    from ..backends.onnxruntime import OnnxRuntimeBackend
    from ..contract.bindings import engine_problems

    with OnnxRuntimeBackend(args.onnx) as backend:
        problems = list(engine_problems(contract, backend.inputs, backend.outputs))
    for p in problems:
        print(f"  MISMATCH {args.onnx}: {p}")
    if not problems:
        print(f"  {args.onnx}: I/O matches the contract")
    return 1 if problems else 0


def _check_parsed(onnx: Path, contract: Any, builder: str) -> int:
    from ..checks.build import check_network

    result = check_network(onnx, contract, builder)
    network = result.network
    for p in result.problems:
        print(f"  MISMATCH {onnx} as {result.who} parsed it: {p}")
    if not result.problems:
        print(
            f"  {onnx}: the network {result.who} parsed ({len(network.inputs)} inputs, "
            f"{len(network.outputs)} outputs, {len(network.layers)} layers) matches the contract, "
            f"and it accepts {len(contract.profiles)} profile(s)"
        )
    return 1 if result.problems else 0
