"""Start-up: what a gate run costs besides checking, whole process, against the 1.5 s target.

    python benchmarks/startup.py                  # 5 interleaved repeats
    python benchmarks/startup.py --repeats 9

The bundled Silero VAD engine, contract and the first 5 chunks of its committed reference, run as
users run it (`python -m pytest --trt-engine ...`) from an empty folder, in a fresh process each
time: the interpreter, pytest and its plugins, this plugin, the contract, opening the engine, the
artifacts (summary, report, plots) all count. Start-up is the process's wall time minus the time
pytest reports inside the tests themselves (the checking, from `--junitxml`). Two cases: the
functional suite alone (`-m trt_functional`) and the whole default gate. Wall and CPU (user +
system) are both printed; on a loaded machine CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "silero_vad.contract.json"
REFERENCE = REPO / "references" / "silero_vad_300.jsonl"
TARGET_S = 1.5
CHUNKS = 5


def short_reference(folder: Path) -> Path:
    lines = REFERENCE.read_text().splitlines()
    header = json.loads(lines[0])
    if "records" in header:
        header["records"] = CHUNKS
    path = folder / "ref.jsonl"
    path.write_text("\n".join([json.dumps(header), *lines[1 : CHUNKS + 1]]) + "\n")
    return path


def run(folder: Path, marker: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, seconds inside tests) of one gate run in a fresh process."""
    junit = folder / "junit.xml"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--trt-engine", "pkg:silero_vad/data/silero_vad.onnx", "--trt-contract", str(CONTRACT),
        "--trt-ref", "ref.jsonl", "--junitxml", str(junit), *marker,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):  # 1: a warn-level latency finding under load is still a run
        raise SystemExit(f"the gate did not run:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    inside = sum(float(case.get("time", 0)) for case in ET.parse(junit).iter("testcase"))
    return wall, cpu, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trtparity-startup-"))
    try:
        short_reference(folder)
        cases = {"functional suite": ["-m", "trt_functional"], "whole default gate": []}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
        run(folder, cases["functional suite"])  # bytecode and page cache warm, as on a CI runner
        for _ in range(args.repeats):
            for name, marker in cases.items():
                runs[name].append(run(folder, marker))
        print(f"start-up, {CHUNKS}-chunk Silero VAD gate, {args.repeats} repeats, medians "
              f"({os.cpu_count()} CPUs, {sys.version.split()[0]}):")  # fmt: skip
        for name, rows in runs.items():
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            inside = statistics.median(r[2] for r in rows)
            startup = statistics.median(r[0] - r[2] for r in rows)
            print(f"  {name:<19} wall {wall:.2f} s, CPU {cpu:.2f} s, inside tests {inside:.2f} s, "
                  f"start-up {startup:.2f} s")  # fmt: skip
            if name == "functional suite":
                met = "met" if startup <= TARGET_S else "NOT met"
                print(
                    f"target start-up: {startup:.2f} s (wall minus checking) <= {TARGET_S} s: {met}"
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
