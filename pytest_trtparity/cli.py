"""The `trtparity` console script: one subcommand per module in `pytest_trtparity.commands`.

A subcommand module defines `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default. Modules are imported only to build the parser, and each keeps
its heavy imports inside `func`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import TrtParityError

#: Subcommand modules, in the order `--help` lists them.
COMMANDS = ("contract", "reference", "gate", "merge", "build", "explain", "selftest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trtparity",
        description="Parity gate for TensorRT engines: contracts, references, builds.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pytest_trtparity.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pytest_trtparity.commands.{name}":
                continue  # a subcommand not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gate"] and not {"-h", "--help"} & set(argv[1:2]):
        # everything after `gate` belongs to pytest, options first included (-q, --trt-mode ...)
        from .commands.gate import run_gate

        return run_gate(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except TrtParityError as exc:
        print(f"trtparity {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trtparity: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
