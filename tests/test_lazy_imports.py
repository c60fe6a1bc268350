"""Start-up stays cheap: loading the plugin and collecting the bundled suites imports no heavy module.

Every pytest run in a project that has the plugin installed pays for what `pytest_trtparity.plugin`
imports, and every gate run pays for what collection imports; matplotlib (plots, written at the end),
onnxruntime, torch and tensorrt (the engine, opened by the first check that needs it) cost tenths of a
second to seconds each. The probe runs in a fresh interpreter, since this test process has long since
imported all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trtparity.bundled import suites_dir

#: Imported by the first check or artifact that needs them, never by plugin load or collection.
HEAVY = ("matplotlib", "onnxruntime", "torch", "tensorrt")
#: Needed at collection when a contract is loaded (its schema check), never by a bare plugin import.
SCHEMA = "jsonschema"

_PROBE = """
import json, sys
import pytest

watched = json.loads(sys.argv[1])
seen = {}

def loaded():
    return sorted(m for m in watched if m in sys.modules)

class Probe:
    def pytest_collection_finish(self, session):
        seen["collected"] = len(session.items)
        seen["after_collection"] = loaded()

import pytest_trtparity.plugin
seen["after_plugin_import"] = loaded()
pytest.main(sys.argv[2:], plugins=[Probe()])
print("PROBE " + json.dumps(seen))
"""


def probe(args: list[str], cwd: Path, *, preload: str = "") -> dict[str, object]:
    """Which watched modules a fresh interpreter holds after plugin import and after collection."""
    code = (preload + "\n" if preload else "") + _PROBE
    watched = json.dumps([*HEAVY, SCHEMA])
    out = subprocess.run(
        [sys.executable, "-c", code, watched, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, f"probe printed nothing (rc {out.returncode}):\n{out.stdout}\n{out.stderr}"
    result: dict[str, object] = json.loads(lines[-1][len("PROBE ") :])
    return result


def _collect_args() -> list[str]:
    return [str(suites_dir()), "--collect-only", "-q", "-p", "no:cacheprovider"]


def test_plugin_import_and_collection_import_nothing_heavy(tmp_path: Path) -> None:
    seen = probe(_collect_args(), tmp_path)
    assert seen["collected"], seen  # the suites were collected, so collection really ran
    assert seen["after_plugin_import"] == [], seen
    after = seen["after_collection"]
    assert isinstance(after, list)
    assert [m for m in after if m in HEAVY] == [], seen


def test_probe_sees_an_eager_import(tmp_path: Path) -> None:
    """The check can fail: a heavy module imported at start-up shows up in the probe's answer."""
    heavy = next((m for m in HEAVY if _installed(m)), None)
    if heavy is None:
        pytest.skip("none of the heavy modules is installed here")
    seen = probe(_collect_args(), tmp_path, preload=f"import {heavy}")
    assert seen["after_plugin_import"] == [heavy], seen
    after = seen["after_collection"]
    assert isinstance(after, list) and heavy in after, seen


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
