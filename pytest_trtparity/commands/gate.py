"""`trtparity gate`: run the gating suites through pytest, so that options, JUnit and xdist apply.

pytest is started with the caller's arguments only, in the caller's folder: the bundled suites are
added by the plugin (bundled.py), not named as a path, because pytest looks for its ini file and
rootdir above the paths it is given, and the suites of an editable install sit in this repository,
whose pyproject.toml holds the defaults of this repository's own gate. The user's folder decides.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from ..bundled import GATE_COMMAND_FLAG, suites_dir
from ..settings import OPTIONS

__all__ = ["register", "run_gate", "suites_dir"]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "gate",
        help="run the gate (pytest on the bundled suites); extra arguments go to pytest",
        usage="trtparity gate [--trt-* OPTIONS] [PYTEST OPTIONS] [PATHS]",
        description=(
            "Equivalent to `pytest ARGS` with the bundled gating suites, run in the current "
            "folder (its ini file and rootdir apply). Every pytest option works too "
            "(-n 4, --junitxml, -k, -m 'not trt_latency'): see `pytest --help`."
        ),
    )
    group = parser.add_argument_group("gate options (also ini keys: trt_engine, trt_contract, ...)")
    for spec in OPTIONS:
        # listed for --help only: `trtparity gate ARGS` hands ARGS to pytest unparsed (cli.main)
        if spec.kind == "bool":
            group.add_argument(spec.flag, action="store_true", help=spec.help)
        else:
            metavar = spec.metavar or (
                "{" + ",".join(spec.choices) + "}" if spec.choices else "VALUE"
            )
            group.add_argument(spec.flag, metavar=metavar, help=spec.help)
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")
    parser.set_defaults(func=_gate)


def _gate(args: argparse.Namespace) -> int:
    return run_gate(args.pytest_args)


def run_gate(pytest_args: list[str]) -> int:
    where = suites_dir()
    if not where.is_dir():
        print(f"trtparity gate: suites not found at {where}")
        return int(pytest.ExitCode.USAGE_ERROR)
    return int(pytest.main([GATE_COMMAND_FLAG, *pytest_args]))
