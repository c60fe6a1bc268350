"""Turn the gate's settings into a loaded backend (and, for TensorRT, build the engine on demand)."""

from __future__ import annotations

from .backends import open_backend
from .backends.base import Backend
from .settings import GateSettings


def open_engine(settings: GateSettings) -> Backend:
    """The engine under test, loaded."""
    return open_backend(
        settings.require("engine"),
        settings.backend,
        provider=settings.provider,
        threads=settings.threads,
    ).load()
