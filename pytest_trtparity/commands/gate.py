"""`trtparity gate`: run the gating suites through pytest, so that options, JUnit and xdist apply."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest


def suites_dir() -> Path:
    """The suites: shipped inside the package when installed from a wheel, else the repo's folder."""
    packaged = Path(__file__).resolve().parent.parent / "suites"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "suites"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "gate",
        help="run the gate (pytest on the bundled suites); extra arguments go to pytest",
        description="Equivalent to `pytest <suites> ARGS`: pass --trt-engine, --trt-contract, --trt-ref, ...",
    )
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")
    parser.set_defaults(func=_gate)


def _gate(args: argparse.Namespace) -> int:
    return run_gate(args.pytest_args)


def run_gate(pytest_args: list[str]) -> int:
    where = suites_dir()
    if not where.is_dir():
        print(f"trtparity gate: suites not found at {where}")
        return int(pytest.ExitCode.USAGE_ERROR)
    return int(pytest.main([str(where), *pytest_args]))
