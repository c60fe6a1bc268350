"""Peak resident memory of the whole gate on 25 MB outputs, against 2x the longest line + 200 MB.

    python benchmarks/rss_bound.py                    # 20 records, whole gate, then -n 2
    python benchmarks/rss_bound.py --records 6 --no-xdist

The reference holds two float32 outputs of 6.5M elements (26 MB each; the input is as large, so a
line is about 104 MB of JSON) from the identity-like model of `gate_vs_polygraphy.py`. The gate runs
as users run it (`pytest --trt-engine ...`, every bundled suite that applies), in a fresh process
under `/usr/bin/time -v`; its "Maximum resident set size" is the largest of any process of the run,
so with `-n 2` it is the largest worker (or the controller). Exits non-zero when a run is over the
bound or the gate itself fails, printing the numbers either way.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gate_vs_polygraphy import build

ELEMENTS = 6_500_000
MB = 1_000_000
TIME = "/usr/bin/time"


def bound_bytes(reference: Path) -> tuple[int, int]:
    """(longest line in bytes, the bound: 2x that + 200 MB)."""
    with reference.open("rb") as fh:
        longest = max(len(line) for line in fh)
    return longest, 2 * longest + 200 * MB


def max_rss_bytes(time_output: str) -> int:
    """The "Maximum resident set size (kbytes)" GNU time prints, in bytes."""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output)
    if found is None:
        raise SystemExit(f"no maximum resident set size in the output of {TIME} -v")
    return int(found.group(1)) * 1024


def gate(folder: Path, extra: list[str]) -> tuple[int, int, str]:
    """(return code, peak RSS in bytes, the gate's verdict lines) of one whole-gate run."""
    command = [
        TIME, "-v", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--trt-engine", "model.onnx", "--trt-contract", "model.contract.json",
        "--trt-ref", "ref.jsonl", "--trt-threads", "1", "--trt-artifacts", "artifacts", *extra,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    lines = [
        row
        for row in done.stdout.splitlines()
        if re.match(r"^(\w+: (pass|fail|warn)|verdict|  ERROR|\d+ (passed|failed))", row)
    ]
    return done.returncode, max_rss_bytes(done.stderr), "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--no-xdist", action="store_true", help="skip the -n 2 run")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args()
    if not Path(TIME).exists():
        print(f"{TIME} (GNU time) is needed for the peak RSS")
        return 2
    folder = args.keep or Path(tempfile.mkdtemp(prefix="trtparity-rss-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "ref.jsonl").exists():
        build(folder, args.records, False, elements=ELEMENTS, npy=False)
    longest, bound = bound_bytes(folder / "ref.jsonl")
    print(
        f"{args.records} records, 2 outputs x {ELEMENTS:,} float32 ({ELEMENTS * 4 / MB:.0f} MB each); "
        f"longest line {longest / MB:.1f} MB; bound 2 x line + 200 MB = {bound / MB:.0f} MB"
    )
    runs = (
        {"whole gate": []} if args.no_xdist else {"whole gate": [], "whole gate -n 2": ["-n", "2"]}
    )
    failed = False
    for name, extra in runs.items():
        rc, peak, verdict = gate(folder, extra)
        over = peak > bound
        failed |= over or rc != 0
        print(
            f"  {name:<16} peak RSS {peak / MB:6.0f} MB ({peak / bound:.0%} of the bound)"
            f"{'  OVER' if over else ''}{f'  gate exit {rc}' if rc else ''}"
        )
        if rc or over:
            print("    " + verdict.replace("\n", "\n    "))
        met = "met" if not (over or rc) else "NOT met"
        print(
            f"target peak RSS, {name}: {peak / MB:.0f} MB, {peak / bound:.0%} of the bound "
            f"<= 100%: {met}"
        )
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
