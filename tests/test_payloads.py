"""Typed payloads: each check's `extra` object reads back as its own type and writes the same JSON,
key for key and in order, so summary.json and results shipped between workers stay unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_trtparity.checks.registry import CHECKS
from pytest_trtparity.judge.payloads import (
    PAYLOADS,
    ClosedLoopPayload,
    LatencyPayload,
    LoopPayload,
    MemoryPayload,
    Payload,
    ShardView,
    payload_from_json,
)
from pytest_trtparity.judge.results import SuiteResult

LATENCY: dict[str, Any] = {
    "n": 3,
    "p50_ms": 0.15,
    "p95_ms": 0.2,
    "timing": "host",
    "split": None,
    "overhead": {"per_chunk_ms": 0.07, "share": 0.4},
    "warmup": 2,
    "iterations": 3,
    "chunks": 1,
    "carry": {"state": "stateN"},
    "timer": "trtparity loop",
    "backend": "onnxruntime",
    "device": "cpu",
    "step_ms": [0.1, 0.15, 0.2],
    "cv_pct": None,
    "cv_warn_pct": 2.5,
    "stability": {"outcome": "stable", "tries": 1},
    "inconclusive": [],
    "table": ["latency ..."],
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "contract": {
        "engine_inputs": [{"name": "x", "dtype": "float32", "shape": [1]}],
        "engine_outputs": [],
    },
    "functional": {"harness": {"chunks": 3}},
    "closed_loop": {"harness": {"chunks": 3}, "state": [], "chunks_limit": None, "drift": {}},
    "profiles": {"points": {"min": {"shapes": {"x": [1]}, "sources": {}}}},
    "latency": LATENCY,
    "throughput": {
        "batch_dim": None,
        "batches_from": "profiles",
        "iterations": 5,
        "warmup": 1,
        "rows": [{"batch": 1, "error": "x"}],
        "device": "cpu",
        "backend": "onnxruntime",
        "table": [],
    },
    "memory": {
        "engine_bytes": 10,
        "peak_device_bytes": None,
        "host_rss_bytes": 20,
        "device_source": "none",
        "host_rss_now_bytes": 19,
        "device": "cpu",
        "backend": "onnxruntime",
        "table": ["memory ..."],
    },
    "baseline": {
        "chunks": 2,
        "warmup": 1,
        "feeding": "same",
        "metrics": {},
        "engine": {},
        "baseline": {},
        "ratios": {},
        "table": [],
    },
    "build": {"network": {"layer_count": 3}, "table": ["build: ..."]},
    "invariance": {
        "chunks": ["a"],
        "batch_sizes": [1, 2],
        "profiles": ["-"],
        "deterministic_backend": True,
        "tiers": {},
        "worst": {"repeat/output": 0.0},
    },
    "regression": {"previous_run": None, "rows": [], "table": ["| a |"]},
}


def test_every_registered_check_has_a_payload_type() -> None:
    assert {c.name for c in CHECKS} <= set(PAYLOADS)


@pytest.mark.parametrize("suite", sorted(EXAMPLES))
def test_payload_round_trips_key_for_key_in_order(suite: str) -> None:
    raw = EXAMPLES[suite]
    payload = payload_from_json(suite, raw)
    assert type(payload) is PAYLOADS[suite] and payload.other == {}
    assert json.dumps(payload.to_json()) == json.dumps(raw)  # same keys, values and order


def test_results_shipped_as_json_come_back_typed() -> None:
    result = SuiteResult("latency", payload=LatencyPayload.from_json(LATENCY), complete=True)
    result.chunks_run = 3
    back = SuiteResult.from_json(json.loads(json.dumps(result.to_json())))
    assert isinstance(back.payload, LatencyPayload)
    assert back.payload.stat("p95_ms") == 0.2 and back.payload.carry == {"state": "stateN"}
    assert back.payload.printed_table() == ["latency ..."]
    assert back.to_json()["extra"] == LATENCY


def test_unset_optional_keys_are_left_out_and_set_ones_written() -> None:
    loop = ClosedLoopPayload()
    assert loop.to_json() == {}
    loop.harness = {"chunks": 1}
    assert loop.to_json() == {"harness": {"chunks": 1}}
    loop.state = []  # the chunk limit travels with the state pairs, null when unlimited
    assert loop.to_json() == {"harness": {"chunks": 1}, "state": [], "chunks_limit": None}
    memory = MemoryPayload(None, None, None, "none", None, "cpu", "ort")
    assert memory.to_json()["engine_bytes"] is None  # always written, null when not measured


def test_an_unknown_suite_keeps_its_keys_and_a_shard_view_is_recognised() -> None:
    mine = payload_from_json("my_suite", {"b": 1, "a": [2]})
    assert type(mine) is Payload and mine.to_json() == {"b": 1, "a": [2]}
    assert payload_from_json("functional", {}) == Payload()
    view = payload_from_json("functional", {"shard_view": "shard1of2"})
    assert isinstance(view, ShardView) and view.shard_view == "shard1of2"


def test_typed_reads_an_untyped_payload_over_and_without_drops_judged_keys() -> None:
    result = SuiteResult("copy_of_functional", payload=Payload(other={"harness": {"chunks": 4}}))
    payload = result.typed(LoopPayload)
    assert result.payload is payload and payload.harness == {"chunks": 4} and payload.other == {}
    merged = ClosedLoopPayload(harness={"chunks": 2}, drift={"out": {}})
    kept = merged.without(ClosedLoopPayload(drift={}))
    assert kept.to_json() == {"harness": {"chunks": 2}}
    copy = merged.copy()
    copy.drift = None
    assert merged.drift == {"out": {}}
