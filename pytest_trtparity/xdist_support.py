"""pytest-xdist: one shard per worker, one GPU per worker, one verdict for the run.

Workers parametrize the shardable suites (`trt_shard`) by their count, run their shards, and send
their results and shard parts to the controller as JSON through `config.workeroutput`. The controller
collects them in `pytest_testnodedown`, merges each suite once all its shards are in (sharding.py),
and writes one summary, one report and one set of plots from the merged results, as one process would.

Registered from the plugin's `pytest_configure`; nothing here runs, nor is xdist imported, in a run
without xdist (except the device binding of `--trt-devices`, which also applies to a single process).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import pytest

from .errors import ConfigError, TrtParityError
from .session import GateSession
from .sharding.parts import Shard, device_for_worker, visible_devices
from .sharding.payload import ingest as ingest_payload
from .sharding.payload import payload

PAYLOAD_KEY = "trtparity"
DEVICE_KEY = pytest.StashKey["int | None"]()


def is_worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker: it runs tests and reports to the controller, which judges and writes
    (the one place that asks; the plugin's hooks and fixtures use this)."""
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """Distributing: xdist loaded and asked to spread tests (`-n 0` leaves `dist` at "no")."""
    if is_worker(config) or not config.pluginmanager.hasplugin("xdist"):
        return False
    return str(config.getoption("dist", "no")) != "no" and not config.getoption(
        "collectonly", False
    )


def worker_count(config: pytest.Config) -> int:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return int(workerinput.get("workercount", 1))


def worker_id(config: pytest.Config) -> str | None:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    value = workerinput.get("workerid")
    return str(value) if value is not None else None


def install(config: pytest.Config, gate: GateSession) -> None:
    """Bind the device and register the hooks this process needs (called once, at configure)."""
    try:
        if is_controller(config):  # every id must be visible, before any worker starts
            for device in gate.settings.devices:
                visible_devices(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
        else:
            config.stash[DEVICE_KEY] = bind_device(worker_id(config), gate.settings.devices)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if is_worker(config):
        config.pluginmanager.register(WorkerHooks(gate), "trtparity-xdist-worker")
        return
    if install_matrix_shard(config, gate):
        return
    config.pluginmanager.register(MergeAtEnd(gate), "trtparity-merge")
    if is_controller(config):
        config.pluginmanager.register(ControllerHooks(gate), "trtparity-xdist-controller")


def install_matrix_shard(config: pytest.Config, gate: GateSession) -> bool:
    """--trt-shard K/N: this run is one CI-matrix job; its parts go to a file (sharding/matrix.py)."""
    from .sharding.matrix import MatrixShardHooks, shard_option

    try:
        shard = shard_option(config)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if shard is None:
        return False
    if is_controller(config):
        raise pytest.UsageError(
            "--trt-shard runs one shard per job and cannot be combined with pytest-xdist -n"
        )
    config.pluginmanager.register(MatrixShardHooks(gate, shard), "trtparity-matrix-shard")
    return True


def bind_device(worker: str | None, devices: tuple[int, ...]) -> int | None:
    """Show this process only its GPU, before anything initialises CUDA; None without --trt-devices."""
    device = device_for_worker(worker, devices)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(
            device, os.environ.get("CUDA_VISIBLE_DEVICES")
        )
    return device


def assigned_device(config: pytest.Config) -> int | None:
    return config.stash.get(DEVICE_KEY, None)


def shards(count: int) -> list[Shard]:
    return [Shard(i, count) for i in range(count)]


# -- the trip from worker to controller -------------------------------------------------------


def worker_payload(gate: GateSession) -> str:
    """What a worker reports: finished suites, shard parts, errors, environment (JSON text)."""
    return json.dumps(payload(gate))


def ingest(gate: GateSession, text: str) -> None:
    """Add one worker's report to the controller's session (results, parts, errors, environment)."""
    ingest_payload(gate, json.loads(text))


def merge_or_note(gate: GateSession, *, final: bool) -> None:
    try:
        gate.merge_parts(final=final)
    except TrtParityError as exc:
        gate.errors.append(str(exc))


class WorkerHooks:
    def __init__(self, gate: GateSession) -> None:
        self.gate = gate

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Split each shardable suite's test into one shard per worker (every worker collects the
        same items, as xdist requires)."""
        count = worker_count(metafunc.config)
        if "trt_shard" in metafunc.fixturenames and count > 1:
            metafunc.parametrize("trt_shard", shards(count), ids=[s.id for s in shards(count)])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput: dict[str, Any] = session.config.workeroutput  # type: ignore[attr-defined]
        workeroutput[PAYLOAD_KEY] = worker_payload(self.gate)


class ControllerHooks:
    def __init__(self, gate: GateSession) -> None:
        self.gate = gate

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "load":
            return None  # the user chose another distribution: respect it
        return shard_first_scheduler(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        output: dict[str, Any] = getattr(node, "workeroutput", None) or {}
        payload = output.get(PAYLOAD_KEY)
        if payload is None:
            name = getattr(getattr(node, "gateway", None), "id", "?")
            self.gate.errors.append(
                f"xdist worker {name} ended without reporting its gate results"
                + (f" ({error})" if error else " (crashed?)")
            )
            return
        ingest(self.gate, payload)
        self.gate.environment["xdist_workers"] = (
            int(self.gate.environment.get("xdist_workers", 0)) + 1
        )
        merge_or_note(self.gate, final=False)


_SHARD_ID = re.compile(r"\[(?:.*-)?shard(\d+)of(\d+)(?:-.*)?\]$")


def shard_pins(nodeids: Sequence[str], nodes: int) -> dict[int, int]:
    """Collection index -> node number for every shard test: shard k goes to node k-1 (mod nodes),
    so the shards of a suite start at once on different workers."""
    pins: dict[int, int] = {}
    for i, nodeid in enumerate(nodeids):
        match = _SHARD_ID.search(nodeid)
        if match and nodes:
            pins[i] = (int(match.group(1)) - 1) % nodes
    return pins


def shard_first_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load scheduling, except that shard k of each sharded suite is sent to worker k
    first. Plain load scheduling sends consecutive tests in chunks, which often hands every shard of
    a suite to the same worker."""
    from xdist.scheduler import LoadScheduling

    class ShardFirstScheduling(LoadScheduling):  # type: ignore[misc]
        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed and self.nodes:
                collection = next(iter(self.node2collection.values()))
                pins = shard_pins(collection, len(self.nodes))
                if pins and self._check_nodes_have_same_collection():
                    self._pin(collection, pins)
                    return
            super().schedule()

        def _pin(self, collection: list[str], pins: dict[int, int]) -> None:
            self.collection = collection
            self.pending[:] = [i for i in range(len(collection)) if i not in pins]
            if self.maxschedchunk is None:  # type: ignore[has-type]
                self.maxschedchunk = len(collection)
            nodes = self.nodes
            for index, n in sorted(pins.items()):
                self.node2pending[nodes[n]].append(index)
                nodes[n].send_runtest_some([index])
            for node in nodes:
                self.check_schedule(node)

    return ShardFirstScheduling(config, log)


class MergeAtEnd:
    """Whatever shards are still unmerged at the end (a worker died, a shard was deselected) are
    merged as they are: incomplete, so never a pass. Runs before the artifacts are written."""

    def __init__(self, gate: GateSession) -> None:
        self.gate = gate

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.gate.parts:
            merge_or_note(self.gate, final=True)
