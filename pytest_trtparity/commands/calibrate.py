"""`trtparity contract calibrate`: tiers from the measured noise of engines accepted as correct.

A verb of `trtparity contract`: `commands/contract.py` adds it with `calibrate.add_parser(verbs)`.
The logic lives in `judge/calibration.py`; this module parses, opens engines and writes the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def add_parser(verbs: Any) -> None:
    """Add `calibrate` to the `contract` command's verbs (an argparse subparsers object)."""
    p = verbs.add_parser(
        "calibrate", help="set a contract's tiers from engines accepted as correct"
    )
    p.add_argument("--contract", type=Path, required=True, metavar="FILE")
    p.add_argument("--ref", type=Path, required=True, metavar="REF.jsonl")
    p.add_argument(
        "--engine",
        action="append",
        required=True,
        metavar="ENGINE",
        help="an engine accepted as correct (repeat; the first also runs the fault catalogue)",
    )
    p.add_argument("--backend", help="backend for every engine (default: from each file's suffix)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--loosen",
        action="store_true",
        help="let measured noise widen a tier beyond the input contract's",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backends import open_backend
    from ..contract.model import load_contract
    from ..reference.reader import ReferenceReader
    from ..signoff.calibration import RULE, calibrate
    from ..util.atomic import write_text
    from ..util.paths import resolve

    if args.output.exists() and not args.force:
        raise ConfigError(f"{args.output}: exists (use --force to overwrite)")
    if not args.ref.is_file():
        raise ConfigError(f"{args.ref}: reference file not found")
    contract = load_contract(args.contract)
    records = list(ReferenceReader(args.ref))
    engines = {}
    try:
        for text in args.engine:
            path = resolve(text, Path.cwd())
            engines[text] = open_backend(path, args.backend).load()
        raw, measured, rows = calibrate(
            engines, contract, lambda: records, reference=str(args.ref), loosen=args.loosen
        )
    finally:
        for backend in engines.values():
            backend.close()
    write_text(args.output, json.dumps(raw, indent=2) + "\n")
    caught = sum(1 for r in rows if r.fault != "clean" and r.caught)
    na = sum(1 for r in rows if r.caught is None)
    print(f"rule: {RULE}")
    for output, stats in measured.values.items():
        print(f"  {output}: " + ", ".join(f"{k} {v:.3g}" for k, v in stats.items()))
    print(f"fault catalogue under the new tiers: {caught} caught, {na} n/a, none passed")
    print(f"wrote {args.output}")
    return 0
