"""The contract check: the engine's declared inputs and outputs against the binding contract.

It runs first and needs no reference: a wrong name, dtype, rank or fixed size makes every later
comparison meaningless, so it is reported as the one sentence a developer needs.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..contract.bindings import engine_problems
from ..contract.io import IOInfo
from ..contract.model import Contract
from ..judge.payloads import ContractPayload
from ..judge.results import SuiteResult
from ..judge.tiers import Finding, Level


def contract_suite(
    contract: Contract, inputs: Sequence[IOInfo], outputs: Sequence[IOInfo]
) -> SuiteResult:
    """The contract suite's result: one fail-level finding per disagreement between engine and contract."""
    result = SuiteResult(suite="contract", complete=True)
    for problem in engine_problems(contract, inputs, outputs):
        name = problem.split("'")[1] if "'" in problem else "*"
        result.findings.append(
            Finding(
                Level.FAIL,
                "contract",
                name,
                "binding",
                f"engine does not match {contract.where}: {problem}",
            )
        )
    result.payload = ContractPayload(
        engine_inputs=[{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in inputs],
        engine_outputs=[
            {"name": o.name, "dtype": o.dtype, "shape": list(o.shape)} for o in outputs
        ],
    )
    return result
