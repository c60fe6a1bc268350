"""pytest-trtparity: a pytest plugin that gates a TensorRT engine on parity with its PyTorch model."""

from __future__ import annotations

from .errors import (
    BackendError,
    BindingError,
    ConfigError,
    ContractError,
    EngineLoadError,
    InvariantViolation,
    ParityWarning,
    ReferenceFormatError,
    TrtParityError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BindingError",
    "ConfigError",
    "ContractError",
    "EngineLoadError",
    "InvariantViolation",
    "ParityWarning",
    "ReferenceFormatError",
    "TrtParityError",
    "__version__",
]
