"""The max-only pass across its own (large) blocks: near-ties picked out of each block as it goes.

`max_abs` alone is the default metric, so this pass runs on every chunk of most gates. It keeps each
block's float32 differences and takes the float64 maximum among the elements within one float32 step
of the running maximum; these tests put the deciding elements in different blocks of that pass.
"""

from __future__ import annotations

import numpy as np

from pytest_trtparity.contract.model import Tier, Tolerance
from pytest_trtparity.judge import blocked
from pytest_trtparity.judge.compare import compare

TOL = Tolerance(chunk=Tier(fail=1.0))
N = blocked.MAX_BLOCK * 2 + 5  # two full blocks of the max pass and a short third


def max_abs(ref: np.ndarray, got: np.ndarray) -> tuple[float, tuple[int, ...] | None]:
    c = compare("y", ref, got, expected_dtype="float32", tolerance=TOL, metrics=("max_abs",))
    assert c.ok, c.problem
    return c.metrics["max_abs"], c.worst_index


def test_a_float32_tie_in_a_later_block_is_broken_by_the_exact_difference() -> None:
    """1 - (-2**-30) is 1 in float32: the true worst element sits in the second block."""
    ref = np.zeros(N, np.float32)
    got = np.zeros(N, np.float32)
    got[3] = 1.0
    spot = blocked.MAX_BLOCK + 7
    got[spot], ref[spot] = 1.0, -(2.0**-30)
    assert max_abs(ref, got) == (1.0 + 2.0**-30, (spot,))


def test_an_earlier_block_taken_with_a_lower_threshold_does_not_win() -> None:
    """Block one's maximum is below block two's: its candidates must not be reported."""
    ref = np.zeros(N, np.float32)
    got = np.zeros(N, np.float32)
    got[10] = 0.5
    got[blocked.MAX_BLOCK + 1] = 0.75
    assert max_abs(ref, got) == (0.75, (blocked.MAX_BLOCK + 1,))


def test_ties_across_blocks_report_the_first_worst_element() -> None:
    ref = np.zeros(N, np.float32)
    got = np.zeros(N, np.float32)
    got[[blocked.MAX_BLOCK * 2 + 1, blocked.MAX_BLOCK + 2]] = 0.25
    assert max_abs(ref, got) == (0.25, (blocked.MAX_BLOCK + 2,))


def test_a_block_of_near_ties_is_gathered_in_parts() -> None:
    """Every element ties in float32 (more than `BLOCK` candidates in a block); one exact winner."""
    ref = np.full(N, 1.0, np.float32)
    got = np.full(N, 2.0, np.float32)
    spot = blocked.MAX_BLOCK + blocked.BLOCK * 3 + 11
    ref[spot] = np.float32(1.0) - np.float32(2.0**-24)  # exactly 1 + 2**-24 away
    value, worst = max_abs(ref, got)
    assert value == 1.0 + 2.0**-24 and worst == (spot,)


def test_identical_tensors_report_zero_at_the_first_element() -> None:
    ref = np.arange(N, dtype=np.float32)
    assert max_abs(ref, ref.copy()) == (0.0, (0,))


def test_the_max_pass_agrees_with_the_whole_tensor_definition_on_noise() -> None:
    rng = np.random.default_rng(11)
    ref = (rng.standard_normal(N) * 3).astype(np.float32)
    got = (ref + rng.standard_normal(N) * 1e-3).astype(np.float32)
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    assert max_abs(ref, got) == (float(diff.max()), (int(diff.argmax()),))


def test_a_float32_tie_with_the_next_element_is_broken_by_the_exact_difference() -> None:
    """The block's first maximum and its neighbour tie in float32; the neighbour is truly larger."""
    ref = np.zeros(N, np.float32)
    got = np.zeros(N, np.float32)
    spot = blocked.MAX_BLOCK + 40
    got[spot] = 1.0
    got[spot + 1], ref[spot + 1] = 1.0, -(2.0**-30)
    assert max_abs(ref, got) == (1.0 + 2.0**-30, (spot + 1,))


def test_exact_ties_gathered_as_near_ties_still_report_the_first() -> None:
    """The second block holds two elements equal to the first block's maximum: it goes through the
    near-tie gathering, and the earlier element still wins."""
    ref = np.zeros(N, np.float32)
    got = np.zeros(N, np.float32)
    got[[5, blocked.MAX_BLOCK, blocked.MAX_BLOCK + 9]] = 0.5
    assert max_abs(ref, got) == (0.5, (5,))
    got[5] = 0.0  # now the second block's first element, its own block start, is the first worst
    assert max_abs(ref, got) == (0.5, (blocked.MAX_BLOCK,))


def test_float64_outputs_across_blocks_report_the_first_worst_element() -> None:
    ref = np.zeros(N, np.float64)
    got = np.zeros(N, np.float64)
    got[0] = 0.5
    got[blocked.MAX_BLOCK * 2 + 3] = 0.5
    c = compare("y", ref, got, expected_dtype="float64", tolerance=TOL, metrics=("max_abs",))
    assert (c.metrics["max_abs"], c.worst_index) == (0.5, (0,))
    got[blocked.MAX_BLOCK * 2 + 4] = 0.75
    c = compare("y", ref, got, expected_dtype="float64", tolerance=TOL, metrics=("max_abs",))
    assert (c.metrics["max_abs"], c.worst_index) == (0.75, (blocked.MAX_BLOCK * 2 + 4,))
