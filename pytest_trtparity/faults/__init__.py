"""A fault catalogue: wrap any backend, break its outputs on purpose, and prove the gate notices.

A gate is only worth its green light if it turns red for the engines it exists to stop. Each `Fault`
changes the outputs of a real engine in one specific way (a bias, a NaN, a stale output, a drifting
state, ...) and names the finding that must appear, so "caught" means caught *for the right reason*,
not merely failed. Faults apply to the outputs the wrapper returns and to the state it carries, so a
state fault feeds back through the closed loop as a real one would.
"""

from ..checks.registry import SuiteRunner
from .catalogue import LATENCY_CRITERIA, LATENCY_KEYS, ReferenceStats, catalogue, clean_worst
from .model import BIAS_METRICS, DRIFT_CRITERIA, Expect, Fault, FaultyBackend, Step, Transform
from .run import (
    Catch,
    all_findings,
    default_runners,
    error_findings,
    evaluate,
    format_table,
    run_catalogue,
    run_fault,
)

__all__ = [
    "BIAS_METRICS",
    "DRIFT_CRITERIA",
    "LATENCY_CRITERIA",
    "LATENCY_KEYS",
    "Catch",
    "Expect",
    "Fault",
    "FaultyBackend",
    "ReferenceStats",
    "Step",
    "SuiteRunner",
    "Transform",
    "all_findings",
    "catalogue",
    "clean_worst",
    "default_runners",
    "error_findings",
    "evaluate",
    "format_table",
    "run_catalogue",
    "run_fault",
]
