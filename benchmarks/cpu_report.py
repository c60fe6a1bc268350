"""Run the gate's performance suites on the CPU and print the Markdown tables of docs/performance.md.

    python benchmarks/stream_model.py --out build/bench/stream
    python benchmarks/cpu_report.py --out build/bench          # add --threads 0 for the runtimes' defaults

Each configuration is one ordinary gate run (`pytest suites -k "latency or throughput or memory or
baseline"`), so the numbers are the ones a user's CI prints; this script only gathers the
summary.json files and lays them out side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUITES = "latency or throughput or memory or baseline"


@dataclass(frozen=True)
class Config:
    name: str
    engine: str
    contract: str
    ref: str
    baseline: str | None = None
    entry: str | None = None


def configs(stream: Path) -> list[Config]:
    silero = ("contracts/silero_vad.contract.json", "references/silero_vad_300.jsonl")
    encoder = (
        str(stream / "stream_encoder.contract.json"),
        str(stream / "stream_encoder_ref.jsonl"),
    )
    return [
        Config(
            "Silero VAD, ONNX Runtime",
            "pkg:silero_vad/data/silero_vad.onnx",
            *silero,
            baseline="pkg:silero_vad/data/silero_vad.jit",
            entry="_model",
        ),
        Config(
            "Silero VAD, PyTorch (TorchScript)",
            "pkg:silero_vad/data/silero_vad.jit",
            *silero,
            entry="_model",
        ),
        Config(
            "stream encoder, ONNX Runtime",
            str(stream / "stream_encoder.onnx"),
            *encoder,
            baseline=str(stream / "stream_encoder.pt"),
        ),
        Config(
            "stream encoder, PyTorch (TorchScript)", str(stream / "stream_encoder.pt"), *encoder
        ),
    ]


def run(config: Config, out: Path, threads: int) -> dict[str, Any]:
    folder = out / config.name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    args = [
        sys.executable,
        "-m",
        "pytest",
        "suites",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        SUITES,
        f"--trt-engine={config.engine}",
        f"--trt-contract={config.contract}",
        f"--trt-ref={config.ref}",
        f"--trt-artifacts={folder}",
        f"--trt-threads={threads}",
    ]
    if config.baseline:
        args.append(f"--trt-baseline={config.baseline}")
    if config.entry:
        args.append(f"--trt-torch-entry={config.entry}")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(
            f"{config.name}: no summary.json\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    summary["_exit"] = proc.returncode
    return summary


def ms(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def tables(results: list[tuple[Config, dict[str, Any]]]) -> str:
    lines = [
        "| configuration | p50 ms | p90 ms | p95 ms | p99 ms | mean ± std ms | min ms | harness overhead a chunk "
        "(feeds + compare) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config, s in results:
        lat = s["suites"].get("latency", {}).get("extra", {})
        over = lat.get("overhead") or {}
        lines.append(
            f"| {config.name} | {ms(lat.get('p50_ms'))} | {ms(lat.get('p90_ms'))} | {ms(lat.get('p95_ms'))} | "
            f"{ms(lat.get('p99_ms'))} | {ms(lat.get('mean_ms'))} ± {ms(lat.get('std_ms'))} | {ms(lat.get('min_ms'))} | "
            f"{ms(over.get('per_chunk_ms'))} ms ({ms(over.get('feeds_ms'))} + {ms(over.get('compare_ms'))}), "
            f"{over.get('share', math.nan):.1%} of p50 | {s['verdict']} |"
        )
    lines += ["", "| configuration | batch | p50 ms | ms/item | items/s |", "|---|---|---|---|---|"]
    for config, s in results:
        for row in s["suites"].get("throughput", {}).get("extra", {}).get("rows", []):
            if "error" in row:
                lines.append(f"| {config.name} | {row['batch']} | failed | | |")
                continue
            lines.append(
                f"| {config.name} | {row['batch']} | {ms(row['p50_ms'])} | {ms(row['per_item_ms'])} | "
                f"{row['items_per_s']:.0f} |"
            )
    lines += [
        "",
        "| configuration | engine file | peak host RSS (whole pytest process) |",
        "|---|---|---|",
    ]
    for config, s in results:
        mem = s["suites"].get("memory", {}).get("extra", {})
        lines.append(
            f"| {config.name} | {_mib(mem.get('engine_bytes'))} | {_mib(mem.get('host_rss_bytes'))} |"
        )
    lines += [
        "",
        "| engine vs baseline | engine p50 ms | baseline p50 ms | latency ratio | error p95 (engine / baseline) "
        "| verdict |",
        "|---|---|---|---|---|---|",
    ]
    for config, s in results:
        base = s["suites"].get("baseline")
        if not base:
            continue
        extra = base["extra"]
        errors = ", ".join(
            f"{k} {extra['engine']['error_p95'][k]:.2e} / {extra['baseline']['error_p95'][k]:.2e}"
            for k in extra["engine"]["error_p95"]
        )
        lines.append(
            f"| {config.name} vs {extra['baseline']['backend']} | {ms(extra['engine']['latency']['p50_ms'])} | "
            f"{ms(extra['baseline']['latency']['p50_ms'])} | {extra['ratios']['latency_p50']:.2f}x | {errors} | "
            f"{base['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def _mib(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value / 2**20:.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    ap.add_argument("--stream", type=Path, default=REPO / "build" / "bench" / "stream")
    ap.add_argument(
        "--threads", type=int, default=1, help="--trt-threads for every run (0: runtime default)"
    )
    args = ap.parse_args()
    results = []
    for config in configs(args.stream):
        print(f"running {config.name} ...", file=sys.stderr)
        results.append((config, run(config, args.out, args.threads)))
    load = os.getloadavg()
    env = results[0][1]["environment"]
    print(
        f"CPU: {env.get('device')} ({os.cpu_count()} cores), {env.get('platform')}, Python {env.get('python')}; "
        f"--trt-threads={args.threads}; load average after the runs {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n"
    )
    print(tables(results))


if __name__ == "__main__":
    main()
