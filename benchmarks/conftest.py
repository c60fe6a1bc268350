"""Shared by the benchmark modules: a place for figures to print at the end of the run."""

from __future__ import annotations

import pytest

_REPORT = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def bench_report(pytestconfig: pytest.Config) -> list[str]:
    """Lines printed under "trtparity benchmarks" at the end of the run (the figures docs quote)."""
    return pytestconfig.stash.setdefault(_REPORT, [])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("trtparity benchmarks")
        for line in lines:
            terminalreporter.write_line(line)
