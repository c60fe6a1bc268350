"""`trtparity reference check`: read a whole reference strictly and say what it holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("reference", help="inspect a v1 reference file")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    check = verbs.add_parser(
        "check", help="read every record strictly; optionally against a contract"
    )
    check.add_argument("reference", type=Path, metavar="FILE")
    check.add_argument(
        "--contract", type=Path, help="check every record's tensors against this contract"
    )
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from ..contract.bindings import check_tensor, record_outputs_problems
    from ..contract.model import load_contract
    from ..reference.reader import ReferenceReader

    contract = load_contract(args.contract) if args.contract else None
    reader = ReferenceReader(args.reference)
    streams: dict[str, int] = {}
    for record in reader:
        streams[record.stream] = streams.get(record.stream, 0) + 1
        if contract is not None:
            dims: dict[str, int] = {}
            record_outputs_problems(contract, record.outputs, record.where)
            for spec in contract.inputs:
                if spec.name in record.inputs:
                    check_tensor(spec, record.inputs[spec.name], dims, record.where, "inputs")
            for spec in contract.outputs:
                check_tensor(spec, record.outputs[spec.name], dims, record.where, "outputs")
    total = sum(streams.values())
    print(f"{args.reference}: {total} records in {len(streams)} stream(s)")
    for name, count in streams.items():
        print(f"  {name}: chunks 0..{count - 1}")
    if reader.header is not None:
        meta = {k: v for k, v in reader.header.metadata.items() if k != "trtparity"}
        print(f"  header: {meta}")
    return 0
