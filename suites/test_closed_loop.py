"""Gate: each stream runs on the engine's own state; error stays bounded, its mean low, no growth."""

import pytest

from pytest_trtparity.checks.closed_loop import run_closed_loop
from pytest_trtparity.errors import TrtParityError
from pytest_trtparity.reference.reader import read_header
from pytest_trtparity.util import progress


def _expected_chunks(trt_reference, limit):
    """For the progress line only: a reference whose header cannot be read fails in the loop itself."""
    try:
        header = read_header(trt_reference.path)
    except TrtParityError:
        return None
    total = header.records if header is not None else None
    if limit is not None and total is not None:
        return min(limit, total)
    return total


@pytest.mark.trtparity("closed_loop")
@pytest.mark.trt_closed_loop  # deselect this suite alone: -m "not trt_closed_loop"
def test_closed_loop_stability(
    trt_engine, trt_contract, trt_reference, trt_gate, pytestconfig, trt_shard
):
    limit = trt_contract.closed_loop.chunks
    # under pytest-xdist (-n N) each shard runs whole streams, one loop each (docs/scale.md)
    records = trt_shard.streams(trt_reference, limit=limit)
    expected = _expected_chunks(trt_reference, limit) if trt_shard.whole else records.expected()
    bar = progress.for_config(pytestconfig, "closed_loop", expected)
    try:
        result = run_closed_loop(trt_engine, trt_contract, records, on_chunk=bar)
    finally:
        if bar is not None:
            bar.close()
    trt_gate.enforce_shard(result, records)
