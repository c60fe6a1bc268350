"""pytest entry point: options, fixtures and hooks. All logic lives in the modules it calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .errors import ConfigError, TrtParityError
from .settings import OPTIONS, GateSettings, resolve_settings

if TYPE_CHECKING:
    from .backends.base import Backend
    from .contract import Contract
    from .reference.reader import ReferenceReader
    from .session import GateSession

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
        parser.addini(spec.name, spec.help, type="bool" if spec.kind == "bool" else "string",
                      default=spec.default if spec.kind == "bool" else None)


def settings_from_config(config: pytest.Config) -> GateSettings:
    cli = {spec.name: config.getoption(spec.name) for spec in OPTIONS}
    ini = {spec.name: config.getini(spec.name) for spec in OPTIONS}
    ini_base = config.inipath.parent if config.inipath else config.rootpath
    return resolve_settings(cli, ini, cli_base=config.invocation_params.dir, ini_base=ini_base)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(suite): a gating suite of pytest-trtparity")
    from .session import GateSession

    try:
        settings = settings_from_config(config)
    except TrtParityError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = GateSession(settings=settings)


def gate_session(config: pytest.Config) -> GateSession:
    return config.stash[SESSION_KEY]


def _suite_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    return str(marker.args[0]) if marker.args else str(marker.kwargs.get("suite", "gate"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from .modes import selected_suites

    gate = gate_session(config)
    wanted = selected_suites(gate.settings)
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        suite = _suite_of(item)
        (drop if suite is not None and wanted is not None and suite not in wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    gate.gate_items = sum(1 for item in items if _suite_of(item) is not None)


def _fail_config(exc: TrtParityError) -> None:
    pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def trt_settings(pytestconfig: pytest.Config) -> GateSettings:
    """The gate's resolved options (command line over ini)."""
    return gate_session(pytestconfig).settings


@pytest.fixture(scope="session")
def trt_gate(pytestconfig: pytest.Config) -> GateSession:
    """Collects suite results; `trt_gate.enforce(result)` fails or warns the calling test."""
    return gate_session(pytestconfig)


@pytest.fixture(scope="session")
def trt_contract(trt_settings: GateSettings, trt_gate: GateSession) -> Contract:
    """The binding contract named by --trt-contract, validated."""
    from .contract import load_contract

    try:
        contract = load_contract(trt_settings.require("contract"))
    except TrtParityError as exc:
        trt_gate.errors.append(str(exc))
        _fail_config(exc)
        raise
    trt_gate.contract = contract
    return contract


@pytest.fixture(scope="session")
def trt_engine(trt_settings: GateSettings, trt_gate: GateSession) -> Iterator[Backend]:
    """The loaded engine under test, behind the backend interface."""
    from .engine_factory import open_engine

    try:
        backend = open_engine(trt_settings)
        trt_gate.environment.update(backend.info().to_json())
    except TrtParityError as exc:
        trt_gate.errors.append(str(exc))
        _fail_config(exc)
        raise
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def trt_reference(trt_settings: GateSettings, trt_gate: GateSession) -> ReferenceReader:
    """The reference records (read lazily, one at a time, on iteration)."""
    from .reference.reader import ReferenceReader

    try:
        path = trt_settings.require("ref")
        if not path.is_file():
            raise ConfigError(f"{path}: reference file not found")
        return ReferenceReader(path)
    except TrtParityError as exc:
        trt_gate.errors.append(str(exc))
        _fail_config(exc)
        raise


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the artifacts
    gate = gate_session(config)
    if not gate.gate_items and not gate.results:
        return
    try:
        gate.write()
    except TrtParityError as exc:
        gate.errors.append(str(exc))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    from .gate import Level

    if gate.verdict is Level.FAIL and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    gate = gate_session(config)
    if gate.summary is None:
        if gate.errors and gate.gate_items:
            terminalreporter.section("trtparity gate")
            for err in gate.errors:
                terminalreporter.write_line(f"ERROR: {err}")
        return
    from .terminal import summary_lines

    terminalreporter.section("trtparity gate")
    for line in summary_lines(gate.summary, str(gate.summary_path) if gate.summary_path else None):
        terminalreporter.write_line(line)
