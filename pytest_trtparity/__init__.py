"""pytest-trtparity: a pytest plugin that gates a TensorRT engine on parity with its PyTorch model.

PYTEST_DONT_REWRITE: `trtparity gate` imports this package before it starts pytest in the same
process, so pytest could not rewrite its asserts anyway and would warn on every run; the package's
asserts are internal invariants, not test assertions.
"""

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
