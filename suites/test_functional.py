"""Gate: every reference chunk, reference state in, every output within its tolerance.

Under pytest-xdist (`-n N`) this test runs as N shards, each on its own block of chunks read through
the reference's index; p95 and pass rate are judged once all shards are in (docs/scale.md).
"""

import pytest

from pytest_trtparity.checks.functional import run_functional


@pytest.mark.trtparity("functional")
@pytest.mark.trt_functional  # deselect this suite alone: -m "not trt_functional"
def test_functional_parity(trt_engine, trt_contract, trt_reference, trt_gate, trt_shard):
    records = trt_shard.records(trt_reference)
    trt_gate.enforce_shard(run_functional(trt_engine, trt_contract, records), records)
