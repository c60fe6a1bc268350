"""The gate under pytest-xdist, as users run it: `-n 2` gives the verdict and the per-chunk metrics of a
run without it, and each worker binds to its own GPU."""

from __future__ import annotations

import ctypes
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_trtparity.artifacts.summary import schema as summary_schema
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter

from .conftest import SILERO_CONTRACT, SILERO_REF

pytest.importorskip("xdist", reason="needs pytest-xdist")

SUITES = "-k", "functional_parity or closed_loop"


def _two_stream_reference(path: Path) -> Path:
    """The Silero reference as two interleaved streams of 150 chunks (two closed loops)."""
    source = list(ReferenceReader(SILERO_REF))
    with ReferenceWriter(path, metadata={"model": "silero_vad"}) as w:
        for i in range(150):
            for s in range(2):
                r = source[s * 150 + i]
                w.write(inputs=r.inputs, outputs=r.outputs, stream=f"utt{s}")
    return path


def _strict_p95_contract(path: Path) -> Path:
    """Silero's contract with an output p95 no engine can meet, and per-chunk tiers it meets."""
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw.pop("$schema", None)
    raw["tolerances"]["output"]["p95"] = {"fail": 1e-9}
    path.write_text(json.dumps(raw))
    return path


def _run(
    pytester: pytest.Pytester, engine: Path, contract: Path, ref: Path, out: str, *extra: str
) -> Any:
    return pytester.runpytest_subprocess(
        f"--trt-engine={engine}",
        f"--trt-contract={contract}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={pytester.path / out}",
        "--trt-mode=both",
        "-p",
        "no:cacheprovider",
        *SUITES,
        *extra,
    )


def _suites(summary: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "verdict",
        "complete",
        "error",
        "chunks_run",
        "streams",
        "findings",
        "outputs",
        "aggregates",
    )
    return {name: {k: body[k] for k in keep} for name, body in summary["suites"].items()}


def test_two_workers_give_the_verdict_and_metrics_of_one_process(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    """Per-chunk tiers pass, the p95 cannot: one process fails the functional test itself; two
    workers pass every shard test, and the merged aggregate fails the run with the same summary."""
    ref = _two_stream_reference(gate_dir / "ref.jsonl")
    contract = _strict_p95_contract(gate_dir / "strict.contract.json")

    single = _run(pytester, silero_onnx, contract, ref, "one")
    assert single.ret == pytest.ExitCode.TESTS_FAILED
    single.assert_outcomes(passed=1, failed=1)
    single.stdout.fnmatch_lines(
        ["*output 'output': p95 over chunks of max_abs * is above the fail tier 1e-09*"]
    )

    sharded = _run(pytester, silero_onnx, contract, ref, "two", "-n", "2")
    assert sharded.ret == pytest.ExitCode.TESTS_FAILED
    assert sharded.parseoutcomes() == {"passed": 4}  # two functional and two closed-loop shards
    sharded.stdout.fnmatch_lines(
        [
            "functional: fail (300 chunks)",
            "*FAIL: output 'output': p95 over chunks*",
            "verdict: FAIL*",
        ]
    )

    one = json.loads((pytester.path / "one" / "summary.json").read_text())
    two = json.loads((pytester.path / "two" / "summary.json").read_text())
    assert one["verdict"] == two["verdict"] == "fail"
    assert set(one["suites"]) == set(two["suites"]) == {"functional", "closed_loop"}
    assert _suites(two) == _suites(one)
    assert two["suites"]["closed_loop"]["streams"] == ["utt0", "utt1"]
    assert two["environment"]["xdist_workers"] == 2
    jsonschema.Draft202012Validator(summary_schema()).validate(two)
    assert (gate_dir / "ref.jsonl.idx.json").is_file()  # the shards read through the index


def test_a_passing_gate_passes_sharded(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    ref = shutil.copy(SILERO_REF, gate_dir / "ref.jsonl")
    result = _run(pytester, silero_onnx, SILERO_CONTRACT, Path(ref), "two", "-n", "2", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*PASSED*test_functional_parity?shard1of2?*"], consecutive=False)
    result.stdout.fnmatch_lines(["*PASSED*test_functional_parity?shard2of2?*"], consecutive=False)
    result.stdout.fnmatch_lines(["functional: pass (300 chunks)", "verdict: PASS*"])


_DEVICE_PROBE = """
import json, os
from pathlib import Path

def test_where_am_i(trt_device):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    probe = {"trt_device": trt_device, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        from test_cuda_probe import pci_bus_id
        probe["pci_bus_id"] = pci_bus_id()
    except ImportError:
        pass
    Path(os.environ["PROBE_DIR"], worker + ".json").write_text(json.dumps(probe))

def test_second(trt_device):
    pass
"""


def _probe(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str
) -> dict[str, Any]:
    """Each process's device; `--dist each` makes every worker run the probe."""
    out = pytester.path / f"probes{len(list(pytester.path.glob('probes*')))}"
    out.mkdir()
    monkeypatch.setenv("PROBE_DIR", str(out))
    pytester.makepyfile(test_device_probe=_DEVICE_PROBE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    return {p.stem: json.loads(p.read_text()) for p in out.iterdir()}


def test_each_worker_gets_its_device(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    got = _probe(pytester, monkeypatch, "-n", "2", "--dist=each", "--trt-devices=3,5")
    assert got == {
        "gw0": {"trt_device": 3, "visible": "3"},
        "gw1": {"trt_device": 5, "visible": "5"},
    }


def test_one_process_takes_the_first_device(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _probe(pytester, monkeypatch, "--trt-devices=1,0") == {
        "main": {"trt_device": 1, "visible": "1"}
    }
    assert _probe(pytester, monkeypatch) == {"main": {"trt_device": None, "visible": None}}


def test_a_device_outside_the_visible_list_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--trt-devices=0,1", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--trt-devices asks for device 1, but CUDA_VISIBLE_DEVICES='0' shows 1 "
            "device(s); ids count within that list"
        ]
    )
    assert "created: 2/2 workers" not in result.stdout.str()  # refused before any worker started


# -- on a host with several GPUs (skipped elsewhere) ------------------------------------------

_CUDA_PROBE = '''
import ctypes

def pci_bus_id():
    """The PCI bus id of CUDA device 0 as this process sees it (CUDA_VISIBLE_DEVICES applied)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    dev = ctypes.c_int()
    assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    buf = ctypes.create_string_buffer(64)
    assert cuda.cuDeviceGetPCIBusId(buf, 64, dev) == 0
    return buf.value.decode()
'''


def _cuda_device_count() -> int:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int()
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except OSError:
        return 0


@pytest.mark.skipif(
    _cuda_device_count() < 2, reason="needs a host with at least 2 CUDA GPUs (libcuda.so.1)"
)
def test_workers_land_on_distinct_gpus(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker's CUDA device 0 is a different physical GPU (by PCI bus id)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makepyfile(test_cuda_probe=_CUDA_PROBE)
    got = _probe(
        pytester, monkeypatch, "-n", "2", "--dist=each", "--trt-devices=0,1", "test_device_probe.py"
    )
    print(json.dumps(got, indent=2))
    assert {w: p["visible"] for w, p in got.items()} == {"gw0": "0", "gw1": "1"}
    assert len({p["pci_bus_id"] for p in got.values()}) == 2
