"""The throughput sweep (batch sizes from the contract, tiled chunks, batched rows checked) and the memory suite."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.onnxruntime import OnnxRuntimeBackend
from pytest_trtparity.checks.memory import gpu_index, host_rss, run_memory
from pytest_trtparity.checks.throughput import batch_dim, batch_sizes, run_throughput, tile
from pytest_trtparity.contract.model import contract_from_json, load_contract
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.reference import ReferenceReader

from .conftest import SILERO_CONTRACT, SILERO_REF


def _contract(**sections: Any) -> Any:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw.update(sections)
    raw.pop("$schema", None)
    return contract_from_json(raw)


def test_batch_dimension_and_sizes_come_from_the_contract() -> None:
    contract = load_contract(SILERO_CONTRACT)
    dim = batch_dim(contract)
    assert dim is not None and dim.name == "B"
    assert dict(dim.axes) == {"input": 0, "state": 1, "output": 0, "stateN": 1}
    assert batch_sizes(contract, dim) == ([1, 2, 4, 8], "profiles: B in 1..8")
    explicit = _contract(latency={"throughput_batches": [8, 3, 3]})
    assert batch_sizes(explicit, batch_dim(explicit)) == ([3, 8], "latency.throughput_batches")
    narrow = _contract(
        profiles={"p": {"shapes": {"input": {"min": [3, 576], "opt": [4, 576], "max": [6, 576]}}}}
    )
    assert batch_sizes(narrow, batch_dim(narrow))[0] == [3, 4, 6]
    none = _contract(profiles={})
    assert batch_sizes(none, batch_dim(none)) == ([1], "no profile bounds B")


def test_tiling_repeats_rows_in_order() -> None:
    state = np.arange(2 * 1 * 3, dtype=np.float32).reshape(2, 1, 3)
    tiled = tile(state, 1, 4)
    assert tiled.shape == (2, 4, 3)
    for row in range(4):
        np.testing.assert_array_equal(tiled[:, row], state[:, 0])
    two = np.arange(4).reshape(2, 2)
    np.testing.assert_array_equal(tile(two, 0, 3), [[0, 1], [2, 3], [0, 1]])


def test_sweep_times_every_batch_and_checks_rows(silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    result = run_throughput(
        backend,
        load_contract(SILERO_CONTRACT),
        ReferenceReader(SILERO_REF),
        iterations=6,
        warmup=1,
        chunks=3,
    )
    assert result.complete and result.verdict is Level.PASS, [f.message for f in result.findings]
    rows = result.payload.to_json()["rows"]
    assert [r["batch"] for r in rows] == [1, 2, 4, 8]
    for row in rows:
        assert row["n"] == 6 and row["p50_ms"] <= row["p95_ms"]
        assert row["per_item_ms"] == pytest.approx(row["p50_ms"] / row["batch"])
        assert row["items_per_s"] == pytest.approx(1e3 * row["batch"] / row["mean_ms"])
    assert result.payload.to_json()["table"][1].split() == [
        "batch",
        "p50",
        "ms",
        "p95",
        "ms",
        "ms/item",
        "items/s",
    ]


class RowMixer(OnnxRuntimeBackend):
    """Correct at batch 1, but swaps the state of the first two streams when batched."""

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super()._infer(feeds)
        if out["stateN"].shape[1] > 1:
            out["stateN"] = out["stateN"].copy()
            out["stateN"][:, 0] += 1.0
        return out


def test_wrong_batched_rows_fail(silero_onnx: Path) -> None:
    result = run_throughput(
        RowMixer(silero_onnx).load(),
        load_contract(SILERO_CONTRACT),
        ReferenceReader(SILERO_REF),
        iterations=2,
        warmup=0,
        chunks=1,
    )
    failures = result.failures()
    assert [f.chunk for f in failures] == ["default#0 x2", "default#0 x4", "default#0 x8"]
    assert failures[0].message.startswith("output 'stateN': max_abs of the batched rows 1")
    assert "on chunk default#0 x2 is above the fail tier 0.005" in failures[0].message


def test_a_batch_the_engine_refuses_fails(silero_onnx: Path) -> None:
    contract = _contract(latency={"throughput_batches": [1, 2]})

    class BatchOne(OnnxRuntimeBackend):
        def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            if feeds["input"].shape[0] != 1:
                from pytest_trtparity.errors import BackendError

                raise BackendError("silero_vad.onnx: profile 0 allows batch 1 only")
            return super()._infer(feeds)

    result = run_throughput(
        BatchOne(silero_onnx).load(), contract, ReferenceReader(SILERO_REF), iterations=2, warmup=0
    )
    (finding,) = result.failures()
    assert finding.message == (
        "the engine failed at batch size 2, which latency.throughput_batches allows: "
        "silero_vad.onnx: profile 0 allows batch 1 only"
    )
    assert result.complete  # batch 1 ran; the verdict still fails
    assert result.verdict is Level.FAIL


def test_host_rss_is_read() -> None:
    now, peak = host_rss()
    assert 0 < now <= peak


def test_memory_limits_are_judged(silero_onnx: Path) -> None:
    backend = open_backend(silero_onnx).load()
    assert gpu_index(backend) is None
    size = silero_onnx.stat().st_size
    contract = _contract(
        memory={
            "engine_bytes": {"warn": size - 1, "fail": 2e9},
            "host_rss_bytes": {"fail": 1024},
            "peak_device_bytes": {"fail": 1e9},
        }
    )
    result = run_memory(backend, contract, ReferenceReader(SILERO_REF), chunks=3)
    assert result.complete and result.chunks_run == 3
    by = {f.criterion: f for f in result.findings}
    assert by["engine_bytes"].level is Level.WARN
    assert (
        by["engine_bytes"].message
        == f"engine file size 2.2 MiB ({size} bytes) is above the warn tier 2.2 MiB ({size - 1} bytes)"
    )
    assert (
        by["host_rss_bytes"].level is Level.FAIL and "peak host RSS" in by["host_rss_bytes"].message
    )
    assert by["peak_device_bytes"].level is Level.WARN
    assert by["peak_device_bytes"].message == (
        "peak device memory was not measured (none: the engine runs on the CPU), "
        "so its limit 953.7 MiB is unchecked"
    )
    assert (
        result.payload.to_json()["engine_bytes"] == size
        and result.payload.to_json()["peak_device_bytes"] is None
    )


def test_gate_runs_throughput_and_memory_and_fails_a_memory_limit(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["latency"] = {"throughput_iterations": 3}
    raw["memory"] = {"engine_bytes": {"fail": 1000}}
    raw.pop("$schema", None)
    contract = pytester.path / "contract.json"
    contract.write_text(json.dumps(raw))
    result = pytester.runpytest(
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={contract}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={pytester.path / 'out'}",
        "-p",
        "no:cacheprovider",
        "-k",
        "throughput or memory",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*memory parity failed: 1 finding(s)*",
            "*engine file size 2.2 MiB (* bytes) is above the fail tier 1000 B (1000 bytes)*",
        ]
    )
    result.stdout.fnmatch_lines(["throughput (onnxruntime on *", "      8 *"])
