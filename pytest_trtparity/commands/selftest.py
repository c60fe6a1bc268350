"""`trtparity selftest`: break your own engine on purpose and check that the gate notices.

Runs the fault catalogue (pytest_trtparity.faults) against the user's engine, contract and reference
and prints the catch table. A gate that lets one of these through would pass the engine it exists
to stop, so any miss, or a clean engine that does not pass, is a non-zero exit.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..faults import Catch, Fault
    from ..reference.reader import Record

#: References up to this size are decoded once and kept in memory for all the runs.
CACHE_BYTES = 256 << 20


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "selftest",
        help="inject every catalogued fault into an engine and check the gate catches each",
        description="Runs the clean engine and each fault through the functional, closed-loop and latency "
        "suites and prints, per fault, the reason it must be caught for, whether it was, and the finding. "
        "Exit status 1 when a fault is missed or the clean engine fails.",
    )
    parser.add_argument(
        "--engine", required=True, metavar="PATH", help="engine file (or pkg:PACKAGE/FILE)"
    )
    parser.add_argument("--contract", required=True, metavar="PATH", help="binding contract (JSON)")
    parser.add_argument(
        "--ref", required=True, metavar="PATH", help="reference records (JSONL or JSONL.gz)"
    )
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "tensorrt", "torch"),
        help="backend to run the engine with (default: from the extension)",
    )
    parser.add_argument(
        "--provider",
        default="cpu",
        choices=("cpu", "cuda", "tensorrt"),
        help="ONNX Runtime execution provider (default cpu)",
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for CPU backends")
    parser.add_argument(
        "--chunks", type=_positive, metavar="N", help="use only the first N reference records"
    )
    parser.add_argument(
        "--only", type=_names, default=(), metavar="A,B", help="run only these faults"
    )
    parser.add_argument(
        "--skip", type=_names, default=(), metavar="A,B", help="leave these faults out"
    )
    parser.add_argument(
        "--latency-iterations",
        type=_positive,
        metavar="N",
        help="timed steps per latency run (default: the contract's iterations)",
    )
    parser.add_argument(
        "--latency-warmup",
        type=int,
        metavar="N",
        help="warm-up steps per latency run (default: the contract's warmup)",
    )
    parser.add_argument(
        "--no-latency", action="store_true", help="leave the latency suite (and fault) out"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the table as JSON")
    parser.set_defaults(func=_selftest)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _records(path: Path, chunks: int | None) -> Callable[[], Iterable[Record]]:
    from ..reference.reader import ReferenceReader

    def read() -> Iterable[Record]:
        reader = ReferenceReader(path)
        return itertools.islice(reader, chunks) if chunks else reader

    if path.is_file() and path.stat().st_size <= CACHE_BYTES:
        cached = list(read())
        return lambda: cached
    return read


def _select(faults: list[Fault], only: Sequence[str], skip: Sequence[str]) -> list[Fault]:
    from ..errors import ConfigError

    names = [f.name for f in faults]
    unknown = sorted((set(only) | set(skip)) - set(names))
    if unknown:
        raise ConfigError(
            f"--only/--skip: no fault named {', '.join(unknown)}; the catalogue has {', '.join(names)}"
        )
    keep = [f for f in faults if (not only or f.name in only) and f.name not in skip]
    return [f for f in faults if f.name == "clean" or f in keep]  # the clean run is never skipped


def _selftest(args: argparse.Namespace) -> int:
    from ..backends import backend_name_for, open_backend
    from ..backends.factory import plain_options
    from ..contract.model import load_contract
    from ..errors import ConfigError
    from ..faults import default_runners, format_table, run_catalogue
    from ..util.paths import resolve

    cwd = Path.cwd()
    engine, contract_path, ref = (
        resolve(str(p), cwd) for p in (args.engine, args.contract, args.ref)
    )
    if not ref.is_file():
        raise ConfigError(f"{ref}: reference file not found")
    contract = load_contract(contract_path)
    records = _records(ref, args.chunks)
    runners = default_runners(
        contract,
        latency=not args.no_latency,
        iterations=args.latency_iterations,
        warmup=args.latency_warmup,
    )
    skip = (*args.skip, "latency_regression") if args.no_latency else args.skip
    name = backend_name_for(engine, args.backend)
    options = plain_options(name, provider=args.provider, threads=args.threads)
    backend = open_backend(engine, name, options).load()
    try:
        print(
            f"trtparity selftest: {engine} on {backend.info().backend}; suites: {', '.join(runners)}"
        )
        print(format_table([])[0], flush=True)
        rows = run_catalogue(
            backend,
            contract,
            records,
            runners,
            select=lambda faults: _select(faults, args.only, skip),
            on_row=lambda row: print("\n".join(format_table([row])[1:]), flush=True),
        )
    finally:
        backend.close()
    if args.json:
        _write_json(args.json, rows)
    return _verdict(rows)


def _verdict(rows: Sequence[Catch]) -> int:
    """PASS when the clean engine passes and no fault that could be built was missed; a fault that
    cannot be built for this contract or reference is n/a: neither caught nor missed, but counted."""
    faults = [r for r in rows if r.fault != "clean"]
    missed = [r.fault for r in faults if r.caught is False]
    clean_ok = all(r.caught is not False for r in rows if r.fault == "clean")
    caught = sum(1 for r in faults if r.caught is True)
    not_applicable = sum(1 for r in faults if r.caught is None)
    counts = f"{caught} of {len(faults) - not_applicable} faults caught for the right reason, {not_applicable} n/a"
    if clean_ok and not missed:
        print(f"selftest: PASS: {counts}; the clean engine passes")
        return 0
    why = []
    if not clean_ok:
        first = next(r.message for r in rows if r.fault == "clean")
        why.append(f"the clean engine does not pass ({first})")
    if missed:
        why.append(f"missed: {', '.join(missed)}")
    print(f"selftest: FAIL: {'; '.join(why)} ({counts})")
    return 1


def _write_json(path: Path, rows: Sequence[Catch]) -> None:
    from ..util.atomic import write_text

    body = [
        {
            "fault": r.fault,
            "description": r.description,
            "expected": r.expected,
            "caught": r.caught,
            "message": r.message,
        }
        for r in rows
    ]
    write_text(
        path, json.dumps({"selftest": body, "passed": _quiet_verdict(rows)}, indent=2) + "\n"
    )


def _quiet_verdict(rows: Sequence[Catch]) -> bool:
    return all(r.caught is not False for r in rows)
