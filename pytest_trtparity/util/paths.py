"""Where files named on the command line or in ini keys really are.

`pkg:PACKAGE/RESOURCE` names a file shipped inside an installed package (the default gate's engine
lives in the silero-vad wheel) without importing the package, which may pull in heavy dependencies.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ConfigError

PKG_PREFIX = "pkg:"


def resolve(spec: str, base: Path) -> Path:
    if spec.startswith(PKG_PREFIX):
        return package_file(spec)
    path = Path(spec).expanduser()
    return path if path.is_absolute() else base / path


def package_file(spec: str) -> Path:
    package, _, resource = spec[len(PKG_PREFIX) :].partition("/")
    if not package or not resource:
        raise ConfigError(f"{spec!r}: expected pkg:PACKAGE/PATH/IN/PACKAGE")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        hint = " (pip install --no-deps silero-vad)" if package == "silero_vad" else ""
        raise ConfigError(f"{spec!r}: package {package!r} is not installed{hint}")
    for location in found.submodule_search_locations:
        candidate = Path(location) / resource
        if candidate.exists():
            return candidate
    raise ConfigError(f"{spec!r}: package {package!r} has no file {resource!r}")
