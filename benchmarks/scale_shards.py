"""The functional gate at the checklist's scale shape, one process against sharded, against a bare loop.

    python benchmarks/scale_shards.py [--records 50] [--mib 25] [--dir /tmp/trtparity-scale] [--keep]

Writes an identity-like ONNX model (`cache_last_channel` in, `cache_last_channel_next` out), its
starter contract and a reference of `--records` records, each tensor `--mib` MiB of float32 (50 x
25 MiB in and out: about 3.5 GB of JSONL), then times, each in its own process tree:

- `single`: the functional gate in one process;
- `xdist-2`: the same with `-n 2`;
- `matrix-2`: `--trt-shard 1/2` and `--trt-shard 2/2` at once (two CI runners), then
  `trtparity merge`; wall time is the slower shard plus the merge;
- `bare`: `json.loads` + `base64.b64decode` + `np.frombuffer` over every line of the same file.

Reported: wall seconds, ingest GB/s per core (file bytes / wall / processes reading), and peak RSS,
the largest of the run's processes (`wait4` of each child covers the descendants it waited for).
Verdicts of the three gate runs must agree. The reference is deleted afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IN, OUT = "cache_last_channel", "cache_last_channel_next"

BARE = """
import base64, json, sys
import numpy as np
with open(sys.argv[1], "rb") as fh:
    for n, line in enumerate(fh):
        rec = json.loads(line)
        if n == 0 and "inputs" not in rec:
            continue
        for side in ("inputs", "outputs"):
            for t in rec[side].values():
                np.frombuffer(base64.b64decode(t["b64"]), dtype=t["dtype"]).reshape(t["shape"])
"""


@dataclass
class Timing:
    name: str
    wall: float
    readers: int
    peak_rss_mib: float
    verdict: str


def build(folder: Path, records: int, mib: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from pytest_trtparity.reference import ReferenceWriter

    shape = [1, mib * (1 << 20) // 4]
    x = helper.make_tensor_value_info(IN, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info(OUT, TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", [IN], [OUT])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    cli = [sys.executable, "-m", "pytest_trtparity.cli"]
    subprocess.run(
        [*cli, "contract", "init", "--onnx", "model.onnx", "-o", "model.contract.json"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    rng = np.random.default_rng(0)
    ref = folder / "ref.jsonl"
    with ReferenceWriter(ref, metadata={"model": "identity-scale"}) as writer:
        for _ in range(records):
            data = rng.standard_normal(shape).astype(np.float32)
            writer.write(inputs={IN: data}, outputs={OUT: data})
    return ref


def _run(cmd: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) over the process and the descendants it waited for, status."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode


def _gate(artifacts: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--trt-engine", "model.onnx", "--trt-contract", "model.contract.json",
        "--trt-ref", "ref.jsonl", "--trt-threads", "1", "--trt-mode", "functional",
        "-m", "trt_functional", "--trt-artifacts", artifacts, *extra,
    ]  # fmt: skip


def _verdict(folder: Path) -> str:
    """The verdict and the functional chunk count, so a run that read nothing cannot look fast."""
    summary = json.loads((folder / "summary.json").read_text())
    chunks = summary.get("suites", {}).get("functional", {}).get("chunks_run", 0)
    return f"{summary['verdict']} ({chunks} chunks)"


def run_single(folder: Path) -> Timing:
    wall, rss, _ = _run(_gate("single"), folder)
    return Timing("single", wall, 1, rss, _verdict(folder / "single"))


def run_xdist(folder: Path) -> Timing:
    wall, rss, _ = _run(_gate("xdist", "-n", "2"), folder)
    return Timing("xdist-2", wall, 2, rss, _verdict(folder / "xdist"))


def run_matrix(folder: Path) -> Timing:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            _gate(f"shard{k}", f"--trt-shard={k}/2"),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k in (1, 2)
    ]
    peaks = [os.wait4(p.pid, 0)[2].ru_maxrss / 1024 for p in procs]
    merge = [sys.executable, "-m", "pytest_trtparity.cli", "merge", "shard1", "shard2"]
    _, merge_rss, _ = _run([*merge, "-o", "matrix"], folder)
    wall = time.perf_counter() - start
    return Timing("matrix-2", wall, 2, max([*peaks, merge_rss]), _verdict(folder / "matrix"))


def run_bare(folder: Path) -> Timing:
    wall, rss, code = _run([sys.executable, "-c", BARE, "ref.jsonl"], folder)
    return Timing("bare", wall, 1, rss, "ok" if code == 0 else f"exit {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--mib", type=int, default=25)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/trtparity-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the reference afterwards")
    args = parser.parse_args()
    folder: Path = args.dir
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        start = time.perf_counter()
        ref = build(folder, args.records, args.mib)
        size = ref.stat().st_size
        print(f"reference: {size / 1e9:.2f} GB, {args.records} records, "
              f"written in {time.perf_counter() - start:.1f} s")  # fmt: skip
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")  # fmt: skip
        timings = [run_bare(folder), run_single(folder), run_xdist(folder), run_matrix(folder)]
        print(f"{'run':<10} {'wall s':>8} {'GB/s/core':>10} {'peak RSS MiB':>13}  verdict")
        for t in timings:
            rate = size / 1e9 / t.wall / t.readers
            print(f"{t.name:<10} {t.wall:>8.1f} {rate:>10.3f} {t.peak_rss_mib:>13.0f}  {t.verdict}")
        gates = {t.verdict for t in timings if t.name != "bare"}
        if len(gates) != 1:
            print(f"verdicts differ: {gates}")
            return 1
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
