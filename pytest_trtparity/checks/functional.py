"""Functional parity: every chunk gets the reference inputs (reference states included) and every
output is compared with the reference and checked against the contract's invariants.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..backends.base import Backend
from ..contract.model import Contract
from ..errors import TrtParityError
from ..judge.results import SuiteResult
from ..reference.reader import Record
from .loop import ChunkCallback, ChunkChecker, judge_result, prefetched, run_chunk, run_step

SUITE = "functional"


def run_functional(
    backend: Backend,
    contract: Contract,
    records: Iterable[Record],
    *,
    on_chunk: ChunkCallback | None = None,
    suite: str = SUITE,
) -> SuiteResult:
    """Run every record through the engine. A reader or binding error ends the run with what was
    gathered so far kept in the result (`complete` False, `error` set): nothing measured is lost,
    and an incomplete result is never a pass."""
    result = SuiteResult(suite=suite)
    engine_inputs = backend.inputs
    try:

        def fresh_step(record: Record, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            backend.reset_state()  # functional: every chunk takes the reference state
            return run_step(backend, record, feeds)

        with ChunkChecker(result, contract, suite=suite) as checker:
            for record in prefetched(records):
                run_chunk(checker, engine_inputs, record, fresh_step, on_chunk)
    except TrtParityError as exc:
        result.error = str(exc)
    result.finish()
    judge_result(result, contract, suite=suite)
    return result
