"""GPU latency, throughput and memory through the PyTorch backend on CUDA, for docs/performance.md.

Runs from a checkout with nothing installed but PyTorch (CUDA), numpy and (optionally) pynvml:
no jsonschema, no silero-vad, no pytest-benchmark needed. From the repository root:

    mkdir -p build/gpu && cp "$(python -c 'import silero_vad, os; print(os.path.dirname(silero_vad.__file__))')/data/silero_vad.jit" build/gpu/
    PYTHONPATH=. python benchmarks/gpu_latency.py --jit build/gpu/silero_vad.jit --out "$OUT"

For each model (Silero VAD through its `_model` entry, and the benchmark stream encoder of
benchmarks/stream_model.py, built and scripted in-process) it measures, with the suites' own code:

* closed-loop per-chunk latency with transfers (host perf_counter) and its CUDA-event split
  (host-to-device, compute, device-to-host), with the ratio of the event sum to the host time;
* compute alone on device-resident inputs, eagerly and replayed as a CUDA graph;
* throughput over batch sizes 1..8 (tiled reference chunks, batched rows checked);
* peak device memory (NVML when pynvml is there, else PyTorch's allocator) and peak host RSS;
* the closed-loop error of the GPU run against the CPU reference.

It writes gpu_latency.json and gpu_latency.md under --out and prints the Markdown. `--device cpu`
runs the same code on the CPU (no CUDA sections), to check the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pytest_trtparity.backends.torch import TorchBackend, contract_options  # noqa: E402
from pytest_trtparity.checks.latency import LoopTimer, run_latency  # noqa: E402
from pytest_trtparity.checks.memory import run_memory  # noqa: E402
from pytest_trtparity.checks.throughput import run_throughput  # noqa: E402
from pytest_trtparity.contract.model import (  # noqa: E402
    Contract,
    LatencySpec,
    MemorySpec,
    Profile,
    ProfileShape,
    StatePair,
    TensorSpec,
    Tier,
    Tolerance,
)
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter  # noqa: E402

SILERO_CONTRACT = REPO / "contracts" / "silero_vad.contract.json"
SILERO_REF = REPO / "references" / "silero_vad_300.jsonl"


def contract_of(raw: Mapping[str, Any], path: Path | None = None) -> Contract:
    """A contract from its JSON, validated by the schema when jsonschema is installed (the GPU image
    lacks it; the committed contracts are validated by the CPU test suite)."""
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        pass
    else:
        from pytest_trtparity.contract.model import contract_from_json

        return contract_from_json(dict(raw), path=path)

    def tensor(t: Mapping[str, Any]) -> TensorSpec:
        return TensorSpec(
            t["name"], t["dtype"], tuple(t["shape"]), optional=t.get("optional", False)
        )

    def tier(t: Mapping[str, Any] | None) -> Tier | None:
        return Tier.from_json(t)

    def tolerance(t: Mapping[str, Any]) -> Tolerance:
        return Tolerance(
            metric=t.get("metric", "max_abs"), chunk=tier(t.get("chunk")), p95=tier(t.get("p95"))
        )

    return Contract(
        model=raw["model"],
        inputs=tuple(tensor(t) for t in raw["inputs"]),
        outputs=tuple(tensor(t) for t in raw["outputs"]),
        profiles={
            name: Profile(
                name,
                {
                    k: ProfileShape(tuple(s["min"]), tuple(s["opt"]), tuple(s["max"]))
                    for k, s in p["shapes"].items()
                },
            )
            for name, p in raw.get("profiles", {}).items()
        },
        state=tuple(
            StatePair(s["output"], s["input"], s.get("initial", "reference"))
            for s in raw.get("state", [])
        ),
        default_tolerance=tolerance(raw["default_tolerance"])
        if "default_tolerance" in raw
        else None,
        tolerances={k: tolerance(v) for k, v in raw.get("tolerances", {}).items()},
        latency=LatencySpec.from_json(raw.get("latency", {})),
        memory=MemorySpec.from_json(raw.get("memory", {})),
        path=path,
        raw=raw,
    )


def closed_loop_error(backend: TorchBackend, contract: Contract, ref: Path) -> dict[str, float]:
    """Worst |GPU - CPU reference| per output over the whole reference, the GPU carrying its own state."""
    carry = {p.input: p.output for p in contract.state}
    worst: dict[str, float] = {}
    backend.reset_state()
    for i, record in enumerate(ReferenceReader(ref)):
        feeds = {k: v for k, v in record.inputs.items() if backend.input_info(k) is not None}
        if i:
            for name in carry:
                feeds.pop(name, None)
        got = backend.run(feeds, carry=carry if i else {})
        for name, want in record.outputs.items():
            err = float(np.max(np.abs(got[name].astype(np.float64) - want.astype(np.float64))))
            worst[name] = max(worst.get(name, 0.0), err)
    return worst


def stream_encoder(work: Path) -> tuple[Path, Path, Contract]:
    """Script the benchmark encoder and record a 64-chunk CPU reference with the harness."""
    import stream_model
    import torch

    from pytest_trtparity.reference.recording import record_reference

    model = stream_model.build_model()
    scripted = torch.jit.script(model)
    pt = work / "stream_encoder.pt"
    torch.jit.save(scripted, str(pt))
    ref = work / "stream_encoder_ref.jsonl"
    with (
        torch.inference_mode(),
        ReferenceWriter(ref, metadata={"model": "stream_encoder", "device": "cpu"}) as w,
    ):
        record_reference(
            scripted,
            stream_model.feature_chunks(64),
            w,
            state_pairs={"cacheN": "cache"},
            initial_state={
                "cache": np.zeros(
                    (stream_model.LAYERS, 1, stream_model.KERNEL - 1, stream_model.DIM),
                    dtype=np.float32,
                )
            },
            input_names=("features", "cache"),
            output_names=("encoded", "cacheN"),
        )
    return pt, ref, contract_of(stream_model.contract())


def section(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded (and makes the exit status 1), the rest still runs."""
    start = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:
        results.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return None
    print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return value


def measure(
    label: str, backend: TorchBackend, contract: Contract, ref: Path, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": label,
        "engine": str(backend.path),
        "info": backend.info().to_json(),
    }
    print(f"{label}:", file=sys.stderr)
    cuda = backend.device.startswith("cuda")

    def latency(timing: str, graphs: bool) -> dict[str, Any]:
        result = run_latency(
            backend,
            contract,
            ReferenceReader(ref),
            bench=LoopTimer(),
            timing=timing,
            graphs=graphs,
            warmup=args.warmup,
            iterations=args.iterations,
            chunks=args.chunks,
        )
        if result.error:
            raise RuntimeError(result.error)
        extra = dict(result.payload.to_json())
        extra.pop("step_ms", None)
        return extra

    out["host"] = section(out, "latency with transfers", lambda: latency("host", False))
    if cuda:
        out["device_eager"] = section(out, "compute only, eager", lambda: latency("device", False))
        out["device_graph"] = section(
            out, "compute only, CUDA graph", lambda: latency("device", True)
        )

    def throughput() -> Any:
        result = run_throughput(
            backend, contract, ReferenceReader(ref), iterations=args.throughput_iterations
        )
        return {
            "rows": result.payload.to_json().get("rows"),
            "findings": [f.message for f in result.findings],
            "error": result.error,
        }

    out["throughput"] = section(out, "throughput", throughput)

    def memory() -> Any:
        result = run_memory(backend, contract, ReferenceReader(ref))
        extra = {k: v for k, v in result.payload.to_json().items() if k != "table"}
        if cuda:
            import torch

            extra["torch_max_memory_allocated"] = int(
                torch.cuda.max_memory_allocated(backend.device)
            )
            extra["torch_max_memory_reserved"] = int(torch.cuda.max_memory_reserved(backend.device))
        return extra

    out["memory"] = section(out, "memory", memory)
    out["closed_loop_error"] = section(
        out, "closed-loop error vs CPU reference", lambda: closed_loop_error(backend, contract, ref)
    )
    return out


def ms(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def markdown(report: Mapping[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Device: {env['gpu']} (CUDA runtime {env['cuda']}, torch {env['torch']}, cuDNN {env['cudnn']}), "
        f"host CPU {env['cpu']}, Python {env['python']}; {report['iterations']} timed chunks after "
        f"{report['warmup']} warm-up, {report['chunks']} distinct reference chunks, closed loop (state carried on the GPU).",
        "",
        "| model | p50 ms | p90 ms | p95 ms | p99 ms | mean ± std ms | h2d + compute + d2h (CUDA events, median) ms "
        "| events / host | compute only, eager p50 ms | compute only, CUDA graph p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        h = m.get("host") or {}
        split = h.get("split") or {}
        eager = (m.get("device_eager") or {}).get("device_compute") or {}
        graph = m.get("device_graph") or {}
        graph_p50 = (graph.get("device_compute") or {}).get("p50_ms")
        graph_cell = (
            ms(graph_p50)
            if graph.get("graphs")
            else f"not captured: {graph.get('graph_note', '-')}"
        )
        lines.append(
            f"| {m['model']} | {ms(h.get('p50_ms'))} | {ms(h.get('p90_ms'))} | {ms(h.get('p95_ms'))} | "
            f"{ms(h.get('p99_ms'))} | {ms(h.get('mean_ms'))} ± {ms(h.get('std_ms'))} | "
            f"{ms(split.get('h2d_ms'))} + {ms(split.get('compute_ms'))} + {ms(split.get('d2h_ms'))} = "
            f"{ms(split.get('device_sum_ms'))} (host {ms(split.get('host_ms'))}) | "
            f"{split.get('device_over_host', float('nan')):.3f} | {ms(eager.get('p50_ms'))} | {graph_cell} |"
        )
    lines += ["", "| model | batch | p50 ms | ms/item | items/s |", "|---|---|---|---|---|"]
    for m in report["models"]:
        for row in (m.get("throughput") or {}).get("rows") or []:
            if "error" in row:
                lines.append(f"| {m['model']} | {row['batch']} | failed: {row['error']} | | |")
            else:
                lines.append(
                    f"| {m['model']} | {row['batch']} | {ms(row['p50_ms'])} | {ms(row['per_item_ms'])} | "
                    f"{row['items_per_s']:.0f} |"
                )
    lines += [
        "",
        "| model | peak device memory | source | torch max allocated | peak host RSS | harness overhead a chunk "
        "| closed-loop max error vs CPU reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        mem = m.get("memory") or {}
        over = (m.get("host") or {}).get("overhead") or {}
        err = m.get("closed_loop_error") or {}
        lines.append(
            f"| {m['model']} | {_mib(mem.get('peak_device_bytes'))} | {mem.get('device_source', '-')} | "
            f"{_mib(mem.get('torch_max_memory_allocated'))} | {_mib(mem.get('host_rss_bytes'))} | "
            f"{ms(over.get('per_chunk_ms'))} ms ({over.get('share', float('nan')):.1%} of p50) | "
            + ", ".join(f"{k} {v:.2e}" for k, v in err.items())
            + " |"
        )
    if report.get("errors"):
        lines += ["", "Errors:", *(f"- {e}" for e in report["errors"])]
    return "\n".join(lines) + "\n"


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def environment(device: str) -> dict[str, Any]:
    import torch

    cuda = device.startswith("cuda")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "gpu": torch.cuda.get_device_name(device) if cuda else "none (CPU run)",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "device": device,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--jit", type=Path, required=True, help="silero_vad.jit (from the silero-vad wheel)"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=64)
    ap.add_argument("--throughput-iterations", type=int, default=200)
    ap.add_argument("--skip-encoder", action="store_true", help="Silero VAD only")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {
        "environment": environment(args.device),
        "warmup": args.warmup,
        "iterations": args.iterations,
        "chunks": args.chunks,
        "models": [],
    }
    silero = contract_of(json.loads(SILERO_CONTRACT.read_text()), SILERO_CONTRACT)
    backend = section(
        report,
        "load silero_vad.jit",
        lambda: TorchBackend(
            args.jit, entry="_model", device=args.device, **contract_options(silero)
        ).load(),
    )
    if backend is not None:
        report["models"].append(
            measure("Silero VAD (silero_vad.jit, _model)", backend, silero, SILERO_REF, args)
        )
        backend.close()
    if not args.skip_encoder:
        with tempfile.TemporaryDirectory() as tmp:
            built = section(report, "build stream encoder", lambda: stream_encoder(Path(tmp)))
            if built is not None:
                pt, ref, contract = built
                encoder = TorchBackend(pt, device=args.device, **contract_options(contract)).load()
                report["models"].append(
                    measure(
                        "stream encoder (TorchScript, 1.9 M params)", encoder, contract, ref, args
                    )
                )
                encoder.close()
    for m in report["models"]:
        report.setdefault("errors", []).extend(f"{m['model']}: {e}" for e in m.pop("errors", []))
    (args.out / "gpu_latency.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = markdown(report)
    (args.out / "gpu_latency.md").write_text(text)
    print(text)
    return 1 if report.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
