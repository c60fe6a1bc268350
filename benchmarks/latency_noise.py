"""How often latency noise flips the default gate's verdict on a clean engine, with the CPUs loaded.

    python benchmarks/latency_noise.py                      # 50 runs, stress-ng (or busy loops)
    python benchmarks/latency_noise.py --runs 20 --minutes 10 --out build/bench/noise

Each run is the default gate exactly as a user runs it (`python -m pytest suites -q
-p no:cacheprovider`, Silero VAD, its contract and reference) with `--trt-strict`, while one CPU
hog per core runs beside it: `stress-ng --cpu N` where it is installed, else a Python busy-loop
process per core (the output says which). Strict changes only the exit status (warn-tier findings
fail), not what is measured, so the non-strict verdict of the same run is read from the findings'
levels in its summary.json. On a clean engine every strict failure is spurious.

Counted per run: the verdict without and with `--trt-strict`, the latency suite's stability outcome
(stable, unstable, inconclusive, not assessed), its tries, and whether its first try crossed a tier
(what a gate that judged one unchecked measurement would have reported).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GATE = (sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", "--trt-strict")


@dataclass(frozen=True)
class Run:
    """One gate run: exit status, verdicts, and what the latency suite said about its measurement."""

    index: int
    seconds: float
    exit_status: int
    verdict: str  # without --trt-strict: pass, warn or fail
    strict_failed: bool
    latency_verdict: str
    stability: str
    tries: int
    first_try_crossed: bool
    p50_ms: float | None
    p95_ms: float | None
    cv_pct: float | None
    failing_suites: tuple[str, ...]
    inconclusive: tuple[str, ...]


def _busy() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


@contextmanager
def cpu_load(workers: int) -> Iterator[str]:
    """One CPU hog per core for the duration; yields what it is, for the report."""
    stress = shutil.which("stress-ng")
    if stress:
        proc = subprocess.Popen(
            [stress, "--cpu", str(workers), "--timeout", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield f"stress-ng --cpu {workers}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return
    procs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        yield f"{workers} Python busy-loop processes (stress-ng not installed)"
    finally:
        for p in procs:
            p.terminate()
            p.join(timeout=30)


def _level(findings: Sequence[dict[str, Any]]) -> str:
    levels = {f.get("level") for f in findings}
    return "fail" if "fail" in levels else "warn" if "warn" in levels else "pass"


def one_run(index: int, out: Path, timeout: float) -> Run:
    """The default gate once, under --trt-strict; its summary.json read back."""
    folder = out / f"run{index:03d}"
    start = time.perf_counter()
    proc = subprocess.run(
        [*GATE, f"--trt-artifacts={folder}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - start
    (out / f"run{index:03d}.log").write_text(proc.stdout[-20000:] + proc.stderr[-5000:])
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    suites: dict[str, Any] = summary.get("suites", {})
    findings = [f for s in suites.values() for f in s.get("findings", [])]
    errored = [name for name, s in suites.items() if s.get("error")]
    verdict = "fail" if errored or not summary else _level(findings)
    latency = suites.get("latency", {})
    extra = latency.get("extra", {})
    stability = extra.get("stability", {})
    history = stability.get("history", [{}])
    first = history[0].get("criteria", {}) if history else {}
    return Run(
        index=index,
        seconds=round(seconds, 2),
        exit_status=proc.returncode,
        verdict=verdict,
        strict_failed=proc.returncode != 0,
        latency_verdict=latency.get("verdict", "missing"),
        stability=stability.get("outcome", "missing"),
        tries=int(stability.get("tries", 0)),
        first_try_crossed=any(c.get("outcome") != "pass" for c in first.values()),
        p50_ms=extra.get("p50_ms"),
        p95_ms=extra.get("p95_ms"),
        cv_pct=extra.get("cv_pct"),
        failing_suites=tuple(
            sorted(n for n, s in suites.items() if s.get("verdict") in ("warn", "fail"))
        ),
        inconclusive=tuple(extra.get("inconclusive", [])),
    )


def tally(runs: Sequence[Run]) -> dict[str, Any]:
    """The counts the docs quote."""
    verdicts = Counter(r.verdict for r in runs)
    return {
        "runs": len(runs),
        "failures": verdicts["fail"],
        "warnings": verdicts["warn"],
        "passes": verdicts["pass"],
        "inconclusive": sum(r.stability == "inconclusive" for r in runs),
        "strict_failures": sum(r.strict_failed for r in runs),
        "strict_failures_from_latency": sum(
            r.strict_failed and "latency" in r.failing_suites for r in runs
        ),
        "remeasured": sum(r.tries > 1 for r in runs),
        "first_try_crossed_a_tier": sum(r.first_try_crossed for r in runs),
        "stability": dict(Counter(r.stability for r in runs)),
        "p95_ms_range": _range([r.p95_ms for r in runs]),
        "p50_ms_range": _range([r.p50_ms for r in runs]),
        "cv_pct_range": _range([r.cv_pct for r in runs]),
    }


def _range(values: Sequence[float | None]) -> list[float] | None:
    got = [v for v in values if v is not None]
    return [round(min(got), 3), round(max(got), 3)] if got else None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=20.0, help="stop starting runs after this")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPU hogs")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a gate run may take")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "latency_noise")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    deadline = time.monotonic() + args.minutes * 60
    with cpu_load(args.workers) as load:
        print(f"load: {load}; machine: {machine()}", flush=True)
        for i in range(1, args.runs + 1):
            if time.monotonic() > deadline:
                print(f"stopped after {len(runs)} runs: --minutes {args.minutes:g} reached")
                break
            run = one_run(i, args.out, args.timeout)
            runs.append(run)
            print(
                f"run {i:3d}: {run.verdict:4s} strict {'FAIL' if run.strict_failed else 'ok  '} "
                f"latency {run.latency_verdict} ({run.stability}, {run.tries} tr) "
                f"p50 {run.p50_ms} p95 {run.p95_ms} CV {run.cv_pct} {run.seconds}s "
                f"{','.join(run.failing_suites)}",
                flush=True,
            )
    counts = tally(runs)
    report = {
        "load": load,
        "machine": machine(),
        "loadavg_end": os.getloadavg(),
        "command": " ".join(GATE[1:]),
        "counts": counts,
        "runs": [asdict(r) for r in runs],
    }
    (args.out / "latency_noise.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(counts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
