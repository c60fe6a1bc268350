"""Every speed and memory target of the gate, measured on this machine in one command.

    python benchmarks/targets.py              # about 5 to 10 minutes on two cores
    python benchmarks/targets.py --quick      # fewer iterations and repeats: a first look

With `--quick` the whole-process comparisons run 100 iterations instead of 300, so the gate's fixed
start-up weighs three times as much against Polygraphy and the numpy loop: those two lines then
read worse than the targets' case and are not the figures to quote.

Runs each benchmark in a fresh process, one after the other (never side by side: they time each
other otherwise), shows its own report, and ends with one line per target: what was measured, the
target, met or not. Each figure is a ratio of things timed in the same process or run interleaved
with it, except start-up and the reader's throughput, which are absolute (and so say which CPU).

* comparison against a bare max/mean |diff| (`test_compare_bench.py`), each metric <= 2x;
* the gate's harness figure and the in-process loop against a bare loop on a sleeping engine
  (`test_compare_bench.py`): <= 20% at 1 ms, <= 5% at 5 ms, loop <= 1.5x; the same figure around
  a real engine, the stream encoder on ONNX Runtime (`test_perf_targets.py`);
* the functional gate, whole process, against Polygraphy (>= 10x faster; needs `polygraphy`,
  the `bench` extra) and a bare numpy loop (<= 3x) (`gate_vs_polygraphy.py`);
* peak RSS of the whole gate on 26 MB outputs, one process and `-n 2` (`rss_bound.py`);
* the reader, fresh process, 40 records of 69 MB lines, 2.8 GB (`test_reader_bench.py`): 2 GB/s;
* start-up (`startup.py`): 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from pytest_trtparity.backends.base import host_cpu_name

HERE = Path(__file__).resolve().parent


def steps(quick: bool) -> list[tuple[str, list[str], dict[str, str]]]:
    py = sys.executable
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    return [
        ("comparison and harness", [*pytest, str(HERE / "test_compare_bench.py")], {}),
        (
            "harness around a real engine",
            [*pytest, str(HERE / "test_perf_targets.py"), "-k", "harness"],
            {},
        ),
        (
            "gate against Polygraphy and a numpy loop",
            [py, str(HERE / "gate_vs_polygraphy.py")]
            + (["--iterations", "100", "--repeats", "1"] if quick else []),
            {},
        ),
        (
            "peak RSS on 26 MB outputs",
            [py, str(HERE / "rss_bound.py")] + (["--records", "6"] if quick else []),
            {},
        ),
        (
            "reader, 2.8 GB",
            [*pytest, str(HERE / "test_reader_bench.py")],
            {"TRTPARITY_BENCH_CHUNKS": "8" if quick else "40"},
        ),
        ("start-up", [py, str(HERE / "startup.py")] + (["--repeats", "3"] if quick else []), {}),
    ]


def targets_of(output: str) -> list[str]:
    """The `target ...` lines a benchmark printed."""
    return [m.group(0).strip() for m in re.finditer(r"^target .*$", output, re.M)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer iterations: a first look (whole-process ratios then read worse)",
    )
    args = parser.parse_args()
    lines: list[str] = []
    for title, command, env in steps(args.quick):
        print(
            f"\n== {title}: {' '.join(Path(c).name if '/' in c else c for c in command)}",
            flush=True,
        )
        done = subprocess.run(
            command, cwd=HERE.parent, env=os.environ | env, capture_output=True, text=True
        )
        report = (
            done.stdout.split("trtparity benchmarks", 1)[-1] if "pytest" in command else done.stdout
        )
        print(report.strip()[-4000:])
        if done.returncode not in (0, 1):
            print(done.stderr.strip()[-2000:])
        found = targets_of(done.stdout)
        lines.extend(found or [f"target {title}: did not run (exit {done.returncode})"])
    print(
        f"\n== targets on {host_cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    for line in lines:
        print("  " + line.removeprefix("target "))
    return 0 if all(line.endswith(": met") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
