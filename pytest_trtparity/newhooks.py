"""Hooks pytest-trtparity offers to conftest.py files and other plugins."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_trtparity_environment(config: pytest.Config) -> dict[str, Any] | None:
    """Add facts about the machine to the summary's ``environment`` block and the sign-off report.

    Called once, on the controller, before the artifacts are written. Every implementation's dict is
    merged in (later keys win). The plugin records the backend, its version, the device and the
    engine's checksum itself; use this for what only your CI knows, for example in ``conftest.py``::

        def pytest_trtparity_environment(config):
            import subprocess
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True,
            ).stdout.strip()
            return {"gpu_driver": driver, "runner": "gpu-runner-7"}
    """
