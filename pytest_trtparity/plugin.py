"""pytest entry point: options, fixtures and hooks. All logic lives in the modules it calls."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import pytest

from .bundled import gate_requested
from .errors import ConfigError, TrtParityError
from .settings import OPTIONS, GateSettings, resolve_settings
from .xdist_support import is_worker

if TYPE_CHECKING:
    from .backends.base import Backend
    from .contract.model import Contract
    from .reference.reader import ReferenceReader
    from .session import GateSession
    from .sharding.parts import Shard

SESSION_KEY = pytest.StashKey["GateSession"]()
MARKER = "trtparity"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trtparity", "TensorRT parity gate")
    for spec in OPTIONS:
        kwargs: dict[str, object] = {"dest": spec.name, "help": spec.help}
        if spec.kind == "bool":
            kwargs["action"] = "store_true"
            kwargs["default"] = None
        else:
            kwargs["default"] = None
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
            if spec.choices:
                kwargs["choices"] = spec.choices
        group.addoption(spec.flag, **kwargs)
        ini_type: Literal["bool", "string"] = "bool" if spec.kind == "bool" else "string"
        parser.addini(
            spec.name,
            spec.help,
            type=ini_type,
            default=spec.default if spec.kind == "bool" else None,
        )
    _add_gate_command_flag(group)


def _add_gate_command_flag(group: pytest.OptionGroup) -> None:
    from .bundled import GATE_COMMAND_DEST, GATE_COMMAND_FLAG

    group.addoption(
        GATE_COMMAND_FLAG, dest=GATE_COMMAND_DEST, action="store_true", help=argparse.SUPPRESS
    )


def settings_from_config(config: pytest.Config) -> GateSettings:
    cli = {spec.name: config.getoption(spec.name) for spec in OPTIONS}
    ini = {spec.name: config.getini(spec.name) for spec in OPTIONS}
    ini_base = config.inipath.parent if config.inipath else config.rootpath
    return resolve_settings(cli, ini, cli_base=config.invocation_params.dir, ini_base=ini_base)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import newhooks

    pluginmanager.add_hookspecs(newhooks)


def pytest_configure(config: pytest.Config) -> None:
    from .checks.registry import SUITES

    config.addinivalue_line("markers", f"{MARKER}(suite): a gating suite of pytest-trtparity")
    for suite in SUITES:
        _register_suite_marker(config, suite)
    from .session import GateSession

    try:
        settings = settings_from_config(config)
    except TrtParityError as exc:
        raise pytest.UsageError(str(exc)) from None
    gate = GateSession(
        settings=settings, writes=runs_gate(config), requested=gate_requested(config)
    )
    config.stash[SESSION_KEY] = gate
    config.pluginmanager.register(gate, "trtparity-session")  # its hooks end the run
    config.pluginmanager.register(PerformanceSummary(), "trtparity-performance")
    from .bundled import BundledSuites, use_bundled_directly
    from .xdist_support import install

    use_bundled_directly(config)
    config.pluginmanager.register(BundledSuites(), "trtparity-bundled-suites")
    install(config, config.stash[SESSION_KEY])  # shards, devices and results under pytest-xdist


def _register_suite_marker(config: pytest.Config, suite: str) -> None:
    from .checks.registry import suite_marker

    config.addinivalue_line(
        "markers",
        f"{suite_marker(suite)}: the {suite} suite of the gate "
        f"(-m 'not {suite_marker(suite)}' leaves it out; the other suites still gate)",
    )


def gate_session(config: pytest.Config) -> GateSession:
    return config.stash[SESSION_KEY]


def _suite_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    return str(marker.args[0]) if marker.args else str(marker.kwargs.get("suite", "gate"))


def pytest_itemcollected(item: pytest.Item) -> None:
    """Give each gate test its suite's own marker (`trt_latency` from `trtparity("latency")`), so
    copies of the suites can be deselected one suite at a time too, and count what was collected
    before any deselection: the bundled suites join only a run that found no gating test."""
    from .bundled import count
    from .checks.registry import suite_marker

    found = count(item.config)
    found.items += 1
    suite = _suite_of(item)
    if suite is None:
        return
    found.gate_items += 1
    if item.get_closest_marker(suite_marker(suite)) is None:
        if suite_marker(suite) not in config_markers(item.config):
            # a suite this plugin does not list (a conftest's own): registered for --strict-markers
            _register_suite_marker(item.config, suite)
        item.add_marker(suite_marker(suite))


def config_markers(config: pytest.Config) -> set[str]:
    lines: list[str] = config.getini("markers")
    return {line.split(":", 1)[0].split("(", 1)[0].strip() for line in lines}


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[None]:
    """Once the items are known (on the xdist controller: once the gate is asked for), the run
    claims its artifacts folder."""
    yield
    start_gate(session.config)


def start_gate(config: pytest.Config) -> None:
    """Claim the artifacts folder as soon as this process knows it runs the gate."""
    gate = gate_session(config)
    if not gate.writes or not (gate.gate_items or gate.requested):
        return
    gate.start()  # a second live run into the same folder stops here, naming the holder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from .checks.registry import selected_suites

    gate = gate_session(config)
    wanted = selected_suites(gate.settings)
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        suite = _suite_of(item)
        (drop if suite is not None and wanted is not None and suite not in wanted else keep).append(
            item
        )
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    gate.gate_items = sum(1 for item in items if _suite_of(item) is not None)


@contextlib.contextmanager
def gate_errors(gate: GateSession) -> Iterator[None]:
    """What a gate fixture cannot set up (no contract, a broken engine, no reference) becomes an
    error of the run, which the summary lists, and fails the test with that one sentence."""
    try:
        yield
    except TrtParityError as exc:
        gate.errors.append(str(exc))
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def trt_settings(pytestconfig: pytest.Config) -> GateSettings:
    """The gate's resolved options (command line over ini)."""
    return gate_session(pytestconfig).settings


@pytest.fixture(scope="session")
def trt_gate(pytestconfig: pytest.Config) -> GateSession:
    """Collects suite results; `trt_gate.enforce(result)` fails or warns the calling test."""
    from .util.atomic import ensure_writable

    gate = gate_session(pytestconfig)
    if gate.writes:  # the controller writes the artifacts
        try:
            ensure_writable(gate.settings.artifacts)
        except TrtParityError as exc:
            pytest.fail(str(exc), pytrace=False)  # no verdict can be written to list it
    return gate


@pytest.fixture(scope="session")
def trt_contract(trt_settings: GateSettings, trt_gate: GateSession) -> Contract:
    """The binding contract named by --trt-contract, validated."""
    with gate_errors(trt_gate):
        contract = trt_settings.load_contract()
    trt_gate.contract = contract
    return contract


@pytest.fixture(scope="session")
def trt_engine(trt_settings: GateSettings, trt_gate: GateSession) -> Iterator[Backend]:
    """The loaded engine under test, behind the backend interface."""
    from .backends.factory import open_engine
    from .errors import ExecutionUnavailable

    with gate_errors(trt_gate):
        try:
            backend = open_engine(trt_settings)
            trt_gate.environment.update(backend.info().to_json())
        except ExecutionUnavailable as exc:  # no GPU its runtime supports: skip, naming why
            pytest.skip(f"the engine cannot execute here: {exc}")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def trt_reference(trt_settings: GateSettings, trt_gate: GateSession) -> ReferenceReader:
    """The reference records (read lazily, one at a time, on iteration)."""
    from .reference.reader import ReferenceReader

    with gate_errors(trt_gate):
        path = trt_settings.require("ref")
        if not path.is_file():
            raise ConfigError(f"{path}: reference file not found")
        reader = ReferenceReader(path)
    return reader


@pytest.fixture
def trt_shard() -> Shard:
    """Which shard of its suite a test runs: the whole suite, unless pytest-xdist splits it (-n N)."""
    from .sharding.parts import Shard

    return Shard()


@pytest.fixture(scope="session")
def trt_device(pytestconfig: pytest.Config) -> int | None:
    """The GPU id of --trt-devices this process runs on (worker gwN: devices[N % len]), which
    CUDA_VISIBLE_DEVICES then shows alone; None without --trt-devices."""
    from .xdist_support import assigned_device

    return assigned_device(pytestconfig)


@pytest.fixture(scope="session")
def trt_baseline(
    trt_settings: GateSettings, trt_gate: GateSession, request: pytest.FixtureRequest
) -> Iterator[Backend | None]:
    """The baseline engine named by --trt-baseline, loaded; None when no baseline was given."""
    if trt_settings.baseline is None and "baseline" not in trt_settings.deferred:
        yield None
        return
    from .checks.baseline import open_baseline

    contract = request.getfixturevalue("trt_contract")
    with gate_errors(trt_gate):
        backend = open_baseline(trt_settings, contract)
        trt_gate.environment["baseline"] = backend.info().to_json()
    yield backend
    backend.close()


class PerformanceSummary:
    """Prints the tables the performance suites leave in their payloads (latency, baseline side
    by side, throughput, memory), before the gate's verdict."""

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if is_worker(config):
            return
        lines = [
            str(line) for r in gate_session(config).results for line in r.payload.printed_table()
        ]
        if lines:
            terminalreporter.section("trtparity performance")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Gate tests: JUnit properties and crash notes before the report is made, plots after."""
    suite = _suite_of(item) if call.when == "call" else None
    if suite is None:
        yield
        return
    gate = gate_session(item.config)
    failed = None
    if call.excinfo is not None and not call.excinfo.errisinstance(pytest.skip.Exception):
        failed = call.excinfo.exconly().splitlines()[0] if call.excinfo.exconly() else "failed"
    gate.before_report(item, suite, failed)
    outcome: Any = yield
    gate.after_report(outcome.get_result(), suite)


def runs_gate(config: pytest.Config) -> bool:
    """This process writes the artifacts: not an xdist worker (the controller does), and the run
    executes tests (--collect-only judges nothing)."""
    return not is_worker(config) and not config.getoption("collectonly", False)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if is_worker(config):
        return
    gate = gate_session(config)
    if gate.summary is None:
        if gate.errors and gate.gate_items:
            terminalreporter.section("trtparity gate")
            for err in gate.errors:
                terminalreporter.write_line(f"ERROR: {err}")
        return
    terminalreporter.section("trtparity gate")
    for line in gate.terminal_lines():
        terminalreporter.write_line(line)
