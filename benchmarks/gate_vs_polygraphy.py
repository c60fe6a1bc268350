"""The functional gate, whole process, against Polygraphy and against a bare numpy loop.

    python benchmarks/gate_vs_polygraphy.py                 # 300 iterations, 3 interleaved repeats
    python benchmarks/gate_vs_polygraphy.py --iterations 100 --repeats 1

One identity-like ONNX model (x -> Identity, x -> Add 0; 262,144 float32 each) and the same data in
three forms: a trtparity reference (JSONL, base64), Polygraphy's inputs and outputs (JSON), and
`.npy` files. Each contender is a fresh process timed from start to exit, so imports, reading and
decoding all count:

* gate: `pytest --trt-engine ... -m trt_functional` in an empty folder (the bundled suites);
* polygraphy: `polygraphy run --onnxrt --load-inputs --load-outputs` (skipped when not installed;
  it is an optional benchmark dependency, `pip install polygraphy`);
* numpy: a loop that loads the `.npy` files, runs ONNX Runtime and takes max and mean |diff|: what
  a hand-written parity script spends.

The contenders run interleaved, `--repeats` times, and the ratios of the medians are printed: the
targets are gate at least 10x faster than Polygraphy and at most 3x the numpy loop.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from interleave import interleaved

ELEMENTS = 262_144
OUTPUTS = ("a", "b")

_NUMPY_LOOP = """
import sys, numpy as np, onnxruntime as ort
from pathlib import Path
folder, n = Path(sys.argv[1]), int(sys.argv[2])
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
worst = 0.0
for i in range(n):
    x = np.load(folder / "npy" / f"x_{i}.npy")
    got = sess.run(None, {"x": x})
    for name, out in zip(("a", "b"), got):
        ref = np.load(folder / "npy" / f"{name}_{i}.npy")
        d = np.abs(out - ref)
        worst = max(worst, float(d.max()), float(d.mean()))
assert worst <= 1e-6, worst
"""


def build(
    folder: Path,
    iterations: int,
    polygraphy: bool,
    *,
    elements: int = ELEMENTS,
    npy: bool = True,
) -> None:
    """Model, contract, reference, Polygraphy JSON and .npy files (when `npy`) for `iterations`
    records of `elements` float32 per tensor."""
    import onnx
    from onnx import TensorProto, helper

    from pytest_trtparity.reference import ReferenceWriter

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, elements])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, elements]) for n in OUTPUTS]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Add", ["x", "zero"], ["b"]),
    ]
    graph = helper.make_graph(nodes, "identity", [x], outs, initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    subprocess.run(
        ["trtparity", "contract", "init", "--onnx", "model.onnx", "-o", "model.contract.json"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    rng = np.random.default_rng(0)
    if npy:
        (folder / "npy").mkdir()
    feeds: list[dict[str, np.ndarray]] = []
    results: list[dict[str, np.ndarray]] = []
    with ReferenceWriter(folder / "ref.jsonl", metadata={"model": "identity"}) as writer:
        for i in range(iterations):
            data = rng.standard_normal((1, elements)).astype(np.float32)
            outputs = {name: data for name in OUTPUTS}
            writer.write(inputs={"x": data}, outputs=outputs)
            if npy:
                np.save(folder / "npy" / f"x_{i}.npy", data)
                for name in OUTPUTS:
                    np.save(folder / "npy" / f"{name}_{i}.npy", data)
            if polygraphy:
                feeds.append({"x": data})
                results.append(outputs)
    if polygraphy:
        _polygraphy_files(folder, feeds, results)


def _polygraphy_files(
    folder: Path, feeds: list[dict[str, np.ndarray]], results: list[dict[str, np.ndarray]]
) -> None:
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    save_json(feeds, str(folder / "inputs.json"))
    run = RunResults()
    run.append(
        ("reference", [IterationResult(outputs=r, runner_name="reference") for r in results])
    )
    run.save(str(folder / "outputs.json"))


def commands(folder: Path, iterations: int, polygraphy: bool) -> dict[str, list[str]]:
    gate = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--trt-engine", "model.onnx", "--trt-contract", "model.contract.json",
        "--trt-ref", "ref.jsonl", "--trt-threads", "1", "-m", "trt_functional",
        "--trt-artifacts", "artifacts",
    ]  # fmt: skip
    out = {
        "gate": gate,
        "numpy": [sys.executable, "-c", _NUMPY_LOOP, str(folder), str(iterations)],
    }
    if polygraphy:
        out["polygraphy"] = [
            shutil.which("polygraphy") or "polygraphy", "run", "model.onnx", "--onnxrt",
            "--load-inputs", "inputs.json", "--load-outputs", "outputs.json",
        ]  # fmt: skip
    return out


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def in_process(folder: Path, iterations: int, repeats: int) -> dict[str, float]:
    """Medians in seconds, in this process, interleaved: `run_functional` over the reference (the
    gate's loop), the bare numpy loop (`.npy` files loaded, the same ONNX Runtime backend run,
    max and mean |diff| taken) and the backend alone on feeds decoded beforehand."""
    from pytest_trtparity.backends import open_backend
    from pytest_trtparity.checks.functional import run_functional
    from pytest_trtparity.contract.bindings import record_feeds
    from pytest_trtparity.contract.model import load_contract
    from pytest_trtparity.reference import ReferenceReader

    contract = load_contract(folder / "model.contract.json")
    backend = open_backend(folder / "model.onnx", threads=1).load()
    reference = folder / "ref.jsonl"
    feeds = [
        record_feeds(contract, r.inputs, backend.inputs, r.where)
        for r in ReferenceReader(reference)
    ]
    npy = folder / "npy"

    def gate() -> None:
        result = run_functional(backend, contract, ReferenceReader(reference))
        assert result.complete and not result.failures(), result.error or result.failures()

    def numpy_loop() -> None:
        worst = 0.0
        for i in range(iterations):
            got = backend.run({"x": np.load(npy / f"x_{i}.npy")})
            for name in OUTPUTS:
                d = np.abs(got[name] - np.load(npy / f"{name}_{i}.npy"))
                worst = max(worst, float(d.max()), float(d.mean()))
        assert worst <= 1e-6, worst

    def backend_only() -> None:
        for f in feeds:
            backend.reset_state()
            backend.run(f)

    cases = {"gate": gate, "numpy loop": numpy_loop, "backend alone": backend_only}
    for fn in cases.values():
        fn()  # warm
    medians = interleaved(cases, repeats)
    backend.close()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args()
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        polygraphy_ok = False
        print("polygraphy not installed: its column is left out (pip install polygraphy)")
    else:
        polygraphy_ok = True
    folder = args.keep or Path(tempfile.mkdtemp(prefix="trtparity-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    build(folder, args.iterations, polygraphy_ok)
    runs = commands(folder, args.iterations, polygraphy_ok)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats):
        for name, command in runs.items():
            times[name].append(timed(command, folder))
            print(f"repeat {repeat + 1}: {name} {times[name][-1]:.2f} s", flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"{args.iterations} iterations x {len(OUTPUTS)} outputs x {ELEMENTS} float32, whole processes"
    )
    for name, value in med.items():
        print(
            f"  {name:<11} median {value:.2f} s  (all: {', '.join(f'{t:.2f}' for t in times[name])})"
        )
    if "polygraphy" in med:
        ratio = med["polygraphy"] / med["gate"]
        met = "met" if ratio >= 10 else "NOT met"
        print(f"target gate vs polygraphy: {ratio:.1f}x faster >= 10x: {met}")
    ratio = med["gate"] / med["numpy"]
    print(f"target gate vs numpy loop: {ratio:.2f}x <= 3x: {'met' if ratio <= 3 else 'NOT met'}")
    inside = in_process(folder, args.iterations, max(5, args.repeats))
    print(
        "  in process, medians: "
        + ", ".join(f"{name} {value:.3f} s" for name, value in inside.items())
        + f"; the gate adds {(inside['gate'] - inside['backend alone']) / args.iterations * 1e3:.3f}"
        " ms a chunk to the backend alone"
    )
    ratio = inside["gate"] / inside["numpy loop"]
    print(f"target in-process loop vs numpy loop: {ratio:.2f}x <= 1.5x: "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")  # fmt: skip
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
