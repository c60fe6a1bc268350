"""Sharding: which shard reads what, which worker gets which GPU, and that merging the shards' parts
gives exactly the result of one process reading everything."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_trtparity.backends import open_backend
from pytest_trtparity.backends.base import Backend
from pytest_trtparity.checks.closed_loop import run_closed_loop
from pytest_trtparity.checks.functional import run_functional
from pytest_trtparity.contract.model import Contract, Tier, load_contract
from pytest_trtparity.errors import ConfigError
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.judge.tiers import Level
from pytest_trtparity.reference import ReferenceReader, ReferenceWriter
from pytest_trtparity.session import GateSession
from pytest_trtparity.settings import resolve_settings
from pytest_trtparity.sharding.parts import (
    Shard,
    ShardPart,
    device_for_worker,
    make_part,
    merge,
    shard_view,
    visible_devices,
    worker_index,
)
from pytest_trtparity.xdist_support import shard_pins

from .conftest import SILERO_CONTRACT, SILERO_REF

# -- plans and devices ------------------------------------------------------------------------


@given(total=st.integers(0, 500), count=st.integers(1, 17))
def test_blocks_cover_every_item_once_in_order(total: int, count: int) -> None:
    blocks = [Shard(i, count).block(total) for i in range(count)]
    assert [i for b in blocks for i in b] == list(range(total))
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("worker", "expected"),
    [
        ("gw0", 0),
        ("gw7", 7),
        ("gw12", 12),
        (None, None),
        ("master", None),
        ("gw", None),
        ("gwx1", None),
    ],
)
def test_worker_index(worker: str | None, expected: int | None) -> None:
    assert worker_index(worker) == expected


def test_workers_spread_over_devices_round_robin() -> None:
    devices = (2, 5)
    got = [device_for_worker(f"gw{n}", devices) for n in range(5)]
    assert got == [2, 5, 2, 5, 2]
    assert device_for_worker(None, devices) == 2  # no xdist: the first device
    assert device_for_worker("gw3", ()) is None


def test_visible_devices_count_within_an_inherited_list() -> None:
    assert visible_devices(1, None) == "1"
    assert visible_devices(1, "4,6,7") == "6"
    assert visible_devices(0, " 3 , 2") == "3"
    with pytest.raises(
        ConfigError, match=r"device 2, but CUDA_VISIBLE_DEVICES='0,1' shows 2 device\(s\)"
    ):
        visible_devices(2, "0,1")
    with pytest.raises(ConfigError, match="shows 0 device"):
        visible_devices(0, "")


def test_scheduler_pins_shard_k_to_node_k() -> None:
    ids = [
        "s/test_contract.py::test_engine",
        "s/test_functional.py::test_functional_parity[shard1of3]",
        "s/test_functional.py::test_functional_parity[shard2of3]",
        "s/test_functional.py::test_functional_parity[shard3of3]",
        "s/test_closed_loop.py::test_loop[shard2of3]",
        "s/test_x.py::test_y[myshard1of2x]",
    ]
    assert shard_pins(ids, 3) == {1: 0, 2: 1, 3: 2, 4: 1}
    assert shard_pins(ids, 2) == {1: 0, 2: 1, 3: 0, 4: 1}


# -- what shards read -------------------------------------------------------------------------


def _multi_stream(path: Path, per_stream: int = 30, streams: int = 2) -> Path:
    """The Silero reference cut into interleaved streams (each a contiguous run of the audio)."""
    source = list(ReferenceReader(SILERO_REF))
    with ReferenceWriter(path, metadata={"model": "silero_vad"}) as w:
        for i in range(per_stream):
            for s in range(streams):
                r = source[s * per_stream + i]
                w.write(inputs=r.inputs, outputs=r.outputs, stream=f"utt{s}")
    return path


def test_chunk_shards_read_contiguous_blocks_through_the_index(tmp_path: Path) -> None:
    reader = ReferenceReader(_multi_stream(tmp_path / "r.jsonl", 5, 2))
    picked = [[r.key for r in Shard(i, 3).records(reader)] for i in range(3)]
    assert [k for block in picked for k in block] == reader.index().record_keys()
    assert [len(b) for b in picked] == [4, 3, 3]


def test_stream_shards_run_whole_streams_in_file_order(tmp_path: Path) -> None:
    reader = ReferenceReader(_multi_stream(tmp_path / "r.jsonl", 4, 3))
    first = [r.key for r in Shard(0, 2).streams(reader)]
    second = [r.key for r in Shard(1, 2).streams(reader)]
    assert first == [(s, c) for c in range(4) for s in ("utt0", "utt2")]
    assert second == [("utt1", c) for c in range(4)]
    assert [r.key for r in Shard(1, 2).streams(reader, limit=2)] == [("utt1", 0), ("utt1", 1)]


def test_the_whole_shard_streams_without_an_index(tmp_path: Path) -> None:
    ref = _multi_stream(tmp_path / "r.jsonl", 3, 2)
    selection = Shard().records(ReferenceReader(ref))
    assert [r.key for r in selection] == [(s, c) for c in range(3) for s in ("utt0", "utt1")]
    assert selection.positions() == {}
    assert not (tmp_path / "r.jsonl.idx.json").exists()


# -- merging ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(silero_onnx: Path) -> Backend:
    return open_backend(silero_onnx, threads=1).load()


@pytest.fixture(scope="module")
def contract() -> Contract:
    """Silero's contract with a chunk tier tight enough that some chunks fail and some warn."""
    base = load_contract(SILERO_CONTRACT)
    tol = dataclasses.replace(
        base.tolerance("output"),
        chunk=Tier(warn=1e-7, fail=4e-7),
        p95=Tier(warn=5e-8, fail=2e-7),
        pass_rate=Tier(warn=0.99, fail=0.9),
    )
    return dataclasses.replace(base, tolerances={**base.tolerances, "output": tol})


@pytest.fixture(scope="module")
def functional_ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 Silero chunks; chunk 17's expected state holds a NaN (a structure problem on that chunk)."""
    path = tmp_path_factory.mktemp("ref") / "silero60.jsonl"
    with ReferenceWriter(path, metadata={"model": "silero_vad"}) as w:
        for r in list(ReferenceReader(SILERO_REF))[:60]:
            outputs = dict(r.outputs)
            if r.chunk_index == 17:
                outputs["stateN"] = outputs["stateN"].copy()
                outputs["stateN"][0, 0, 3] = np.nan
            w.write(inputs=r.inputs, outputs=outputs)
    return path


def _json(result: SuiteResult) -> str:
    """Everything a run measured about the engine; the harness's own timing differs run to run."""
    raw = result.to_json()
    raw["extra"].pop("harness", None)
    return json.dumps(raw, sort_keys=True)


def _parts(
    run: Any, reader: ReferenceReader, contract: Contract, count: int, *, streams: bool = False
) -> list[ShardPart]:
    parts = []
    for i in range(count):
        selection = Shard(i, count).streams(reader) if streams else Shard(i, count).records(reader)
        parts.append(make_part(run(selection), selection, contract))
    return parts


@pytest.mark.parametrize("count", [2, 3, 7])
def test_merged_functional_shards_equal_one_process(
    engine: Backend, contract: Contract, functional_ref: Path, count: int
) -> None:
    whole = run_functional(engine, contract, ReferenceReader(functional_ref))
    assert whole.verdict is Level.FAIL and len(whole.findings) > 3  # the case is not trivial
    parts = _parts(
        lambda recs: run_functional(engine, contract, recs),
        ReferenceReader(functional_ref),
        contract,
        count,
    )
    merged = merge(list(reversed(parts)), contract)  # arrival order does not matter
    assert _json(merged) == _json(whole)


def test_merged_closed_loop_streams_equal_one_process(engine: Backend, tmp_path: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    ref = _multi_stream(tmp_path / "r.jsonl", 30, 3)
    whole = run_closed_loop(engine, contract, ReferenceReader(ref))
    assert whole.complete and len(whole.streams) == 3
    parts = _parts(
        lambda recs: run_closed_loop(engine, contract, recs),
        ReferenceReader(ref),
        contract,
        2,
        streams=True,
    )
    assert _json(merge(parts, contract)) == _json(whole)


def test_part_keeps_per_chunk_findings_only(
    engine: Backend, contract: Contract, functional_ref: Path
) -> None:
    reader = ReferenceReader(functional_ref)
    selection = Shard(0, 2).records(reader)
    part = make_part(run_functional(engine, contract, selection), selection, contract)
    assert part.result.findings and all(f.chunk is not None for f in part.result.findings)
    assert not any(f.criterion.startswith(("p95", "pass rate")) for f in part.result.findings)
    assert {f.criterion for f in part.result.findings} == {"structure"}  # chunk 17's NaN


def test_shard_test_fails_on_its_worst_chunk_not_on_p95(
    engine: Backend, contract: Contract, functional_ref: Path
) -> None:
    reader = ReferenceReader(functional_ref)
    selection = Shard(1, 2).records(reader)  # chunks 30..59: no NaN
    part = make_part(run_functional(engine, contract, selection), selection, contract)
    view = shard_view(part, contract)
    assert [(f.output, f.criterion) for f in view.failures()] == [("output", "max_abs")]
    assert "on chunk default#" in view.failures()[0].message


def test_missing_shard_makes_the_merge_incomplete(
    engine: Backend, contract: Contract, functional_ref: Path
) -> None:
    parts = _parts(
        lambda recs: run_functional(engine, contract, recs),
        ReferenceReader(functional_ref),
        contract,
        3,
    )
    merged = merge([parts[0], parts[2]], contract)
    assert not merged.complete and merged.verdict is Level.FAIL
    assert (
        merged.error
        == "shard(s) 2 of 3 did not report (worker crashed, test deselected or not run)"
    )


def test_merge_stops_where_one_process_stops(engine: Backend, tmp_path: Path) -> None:
    """A record error in shard 2 of 3: one process stops there, so the merge drops shard 3."""
    contract = load_contract(SILERO_CONTRACT)
    path = tmp_path / "r.jsonl"
    with ReferenceWriter(path) as w:
        for r in list(ReferenceReader(SILERO_REF))[:30]:
            inputs = dict(r.inputs)
            if r.chunk_index == 14:
                inputs["state"] = inputs["state"][:, :, :64].copy()  # wrong shape: a binding error
            w.write(inputs=inputs, outputs=r.outputs)
    whole = run_functional(engine, contract, ReferenceReader(path))
    assert whole.error and not whole.complete
    parts = _parts(
        lambda recs: run_functional(engine, contract, recs), ReferenceReader(path), contract, 3
    )
    assert _json(merge(parts, contract)) == _json(whole)


def test_empty_shards_pass_and_drop_out(engine: Backend, tmp_path: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    path = tmp_path / "r.jsonl"
    with ReferenceWriter(path) as w:
        for r in list(ReferenceReader(SILERO_REF))[:2]:
            w.write(inputs=r.inputs, outputs=r.outputs)
    parts = _parts(
        lambda recs: run_functional(engine, contract, recs), ReferenceReader(path), contract, 4
    )
    assert [p.empty for p in parts] == [False, False, True, True]
    assert all(
        shard_view(p, contract).complete and not shard_view(p, contract).error for p in parts
    )
    whole = run_functional(engine, contract, ReferenceReader(path))
    assert _json(merge(parts, contract)) == _json(whole)


def test_part_survives_the_trip_through_json(
    engine: Backend, contract: Contract, functional_ref: Path
) -> None:
    parts = _parts(
        lambda recs: run_functional(engine, contract, recs),
        ReferenceReader(functional_ref),
        contract,
        2,
    )
    again = [ShardPart.from_json(json.loads(json.dumps(p.to_json()))) for p in parts]
    assert _json(merge(again, contract)) == _json(merge(parts, contract))


# -- the session ------------------------------------------------------------------------------


def _session(tmp_path: Path) -> GateSession:
    settings = resolve_settings(
        {"trt_contract": str(SILERO_CONTRACT), "trt_artifacts": str(tmp_path)},
        {},
        cli_base=tmp_path,
        ini_base=tmp_path,
    )
    return GateSession(settings=settings)


def test_session_fails_shard_tests_on_chunks_and_the_run_on_aggregates(
    engine: Backend, functional_ref: Path, tmp_path: Path
) -> None:
    """Loose chunk tier, impossible p95: every shard test passes, the merged suite fails."""
    base = load_contract(SILERO_CONTRACT)
    tol = dataclasses.replace(base.tolerance("output"), p95=Tier(fail=1e-12))
    contract = dataclasses.replace(base, tolerances={**base.tolerances, "output": tol})
    gate = _session(tmp_path)
    gate.contract = contract
    reader = ReferenceReader(
        shutil.copy(SILERO_REF, tmp_path / "ref.jsonl")
    )  # its index goes there
    for i in range(2):
        selection = Shard(i, 2).records(reader)
        gate.enforce_shard(run_functional(engine, contract, selection), selection)
    assert [r.payload.to_json() for r in gate.results] == [{"shard_view": "shard2of2"}]
    gate.merge_parts(final=True)
    (merged,) = gate.results
    assert merged.chunks_run == 300 and merged.verdict is Level.FAIL and gate.verdict is Level.FAIL
    assert [f.criterion for f in merged.failures()] == ["p95 over chunks of max_abs"]
    assert not gate.parts


def test_session_shard_test_fails_with_its_chunks(
    engine: Backend, contract: Contract, functional_ref: Path, tmp_path: Path
) -> None:
    gate = _session(tmp_path)
    gate.contract = contract
    selection = Shard(0, 2).records(ReferenceReader(functional_ref))
    with pytest.raises(
        pytest.fail.Exception,
        match=r"functional parity failed: \d+ finding\(s\)\noutput 'stateN' on chunk default#17",
    ):
        gate.enforce_shard(run_functional(engine, contract, selection), selection)
    assert len(gate.parts) == 1


def test_session_merges_only_complete_sets_until_the_end(engine: Backend, tmp_path: Path) -> None:
    gate = _session(tmp_path)
    contract = load_contract(SILERO_CONTRACT)
    gate.contract = contract
    reader = ReferenceReader(
        shutil.copy(SILERO_REF, tmp_path / "ref.jsonl")
    )  # its index goes there
    selection = Shard(0, 2).records(reader)
    gate.parts.append(make_part(run_functional(engine, contract, selection), selection, contract))
    gate.merge_parts()
    assert len(gate.parts) == 1 and not gate.results
    gate.merge_parts(final=True)
    assert gate.results[0].error is not None and gate.verdict is Level.FAIL


def test_bind_device_narrows_what_cuda_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_trtparity.xdist_support import bind_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8,9")
    assert bind_device("gw1", (0, 2)) == 2
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "9"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert bind_device("gw0", ()) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_reference_the_index_rejects_ends_the_shard_with_its_error(
    engine: Backend, tmp_path: Path
) -> None:
    """A chunk gap found while building the index: each shard's suite ends with that error (kept in
    its result, as any reading error), its test fails, and the merge fails."""
    contract = load_contract(SILERO_CONTRACT)
    path = tmp_path / "r.jsonl"
    with ReferenceWriter(path) as w:
        for r in list(ReferenceReader(SILERO_REF))[:6]:
            w.write(
                inputs=r.inputs, outputs=r.outputs, chunk_index=r.chunk_index + (r.chunk_index >= 3)
            )
    parts = _parts(
        lambda recs: run_functional(engine, contract, recs), ReferenceReader(path), contract, 2
    )
    for part in parts:
        assert (
            part.result.error is not None
            and "chunk_index: 4 in stream 'default' but 3 was expected (gap)" in part.result.error
        )
        view = shard_view(part, contract)
        assert view.verdict is Level.FAIL and not part.empty
    merged = merge(parts, contract)
    assert not merged.complete and "(gap)" in str(merged.error)
