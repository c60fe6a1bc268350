"""The bundled gating suites, and when a run gets them without naming them.

`pytest --trt-engine=model.plan --trt-contract=C --trt-ref=R` is the gate's headline: it must gate in
an empty folder (where pytest alone collects nothing) and in a repository whose own tests are unrelated
(where pytest alone runs those instead). So the collection runs as pytest decides; when it found no
gating test although the gate was asked for, the suites shipped with the plugin are collected in a
second pass. A user who names suites (the repository's `suites/` or a copy) gets them alone, once.

The gate is asked for by a gate option on the command line, or by `trtparity gate`. Ini keys alone
only configure: a repository's defaults for its own gate must not turn `pytest tests` into a gate run.
They run the bundled suites only where pytest, given no paths, would otherwise collect nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

#: Options that ask for a gate run when given on the command line (dests and ini keys alike).
GATE_OPTIONS = ("trt_engine", "trt_contract", "trt_ref")

#: Passed by `trtparity gate` (hidden from --help): the gate is wanted even when only ini keys
#: configure it. An option, not a flag in memory, so that pytest-xdist hands it to its workers.
GATE_COMMAND_FLAG = "--trtparity-gate-command"
GATE_COMMAND_DEST = "trtparity_gate_command"


@dataclass
class CollectionCount:
    """What the collection found before any deselection (-k, -m, --trt-mode)."""

    items: int = 0
    gate_items: int = 0


COUNT = pytest.StashKey[CollectionCount]()

#: How node ids name the bundled suites: `pytest_trtparity/suites/test_functional.py::...`.
NODE_PREFIX = "pytest_trtparity/suites"


def suites_dir() -> Path:
    """The suites: shipped inside the package in a wheel (hatch force-include), else the
    repository's `suites/` next to the package (an editable install)."""
    package = Path(__file__).resolve().parent
    packaged = package / "suites"
    return packaged if packaged.is_dir() else package.parent / "suites"


def on_command_line(config: pytest.Config) -> bool:
    return any(config.getoption(name, None) is not None for name in GATE_OPTIONS)


def in_ini(config: pytest.Config) -> bool:
    return any(bool(config.getini(name)) for name in GATE_OPTIONS)


def forced(config: pytest.Config) -> bool:
    return bool(config.getoption(GATE_COMMAND_DEST, False))


def use_bundled_directly(config: pytest.Config) -> None:
    """`trtparity gate` without paths: the bundled suites are the run's paths from the start, set
    before pytest-xdist hands the paths to its workers (no first pass over the current folder)."""
    if forced(config) and not paths_given(config):
        config.args = [str(suites_dir())]


def gate_requested(config: pytest.Config) -> bool:
    """A gate option on the command line, or `trtparity gate`: this run owes a verdict."""
    return forced(config) or on_command_line(config)


def paths_given(config: pytest.Config) -> bool:
    return config.args_source is pytest.Config.ArgsSource.ARGS


def count(config: pytest.Config) -> CollectionCount:
    if COUNT not in config.stash:
        config.stash[COUNT] = CollectionCount()
    return config.stash[COUNT]


def wants_bundled(config: pytest.Config) -> bool:
    """After the first pass: collect the bundled suites too?"""
    found = count(config)
    if found.gate_items:
        return False
    if gate_requested(config):
        return True
    return in_ini(config) and found.items == 0 and not paths_given(config)


def suite_modules(session: pytest.Session, where: Path) -> list[pytest.Module]:
    """One module collector per suite file, named `pytest_trtparity/suites/test_x.py` in node ids
    (the folder lies outside the user's rootdir), whatever the user's python_files patterns."""
    return [
        pytest.Module.from_parent(session, path=path, nodeid=f"{NODE_PREFIX}/{path.name}")
        for path in sorted(where.glob("test_*.py"))
    ]


class BundledSuites:
    """Adds the bundled suites inside the one collection pass, before any deselection (-k, -m,
    --trt-mode) and before pytest-xdist workers report their items, so that workers agree and the
    terminal's "collected N items" counts what runs."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        if not wants_bundled(config):
            return
        first = list(items)
        where = suites_dir()
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"trtparity: no gating suite collected; running the bundled suites in {where}"
            )
        found = [
            item for module in suite_modules(session, where) for item in session.genitems(module)
        ]
        if paths_given(config):  # the named tests stay, the suites join them
            items.extend(found)
            return
        # pytest's defaults (testpaths or the current folder) hold no gate: the suites replace them
        items[:] = found
        if first:
            config.hook.pytest_deselected(items=first)
