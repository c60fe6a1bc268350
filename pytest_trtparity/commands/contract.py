"""`trtparity contract init|check`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
    check.set_defaults(func=_check)


def _init(args: argparse.Namespace) -> int:
    from ..contract_init import write_starter

    path = write_starter(args.onnx, args.output, model=args.model, force=args.force)
    print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..contract import load_contract

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
        return 0
    from ..backends.onnxruntime import OnnxRuntimeBackend
    from ..bindings import engine_problems

    with OnnxRuntimeBackend(args.onnx) as backend:
        problems = list(engine_problems(contract, backend.inputs, backend.outputs))
    for p in problems:
        print(f"  MISMATCH {args.onnx}: {p}")
    if not problems:
        print(f"  {args.onnx}: I/O matches the contract")
    return 1 if problems else 0
