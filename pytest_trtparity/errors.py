"""Exception and warning types.

Every error a user can cause carries a message that names where the problem is (file, line, field or
tensor) and, where there is one, what to do about it. The gate never turns one of these into a pass.
"""

from __future__ import annotations


class TrtParityError(Exception):
    """Base class: something the user can fix stopped the gate."""


class ContractError(TrtParityError):
    """The binding contract is unreadable, fails its schema, or contradicts itself."""


class ReferenceFormatError(TrtParityError):
    """A reference file breaks the v1 format; the message names file, line and field."""


class BackendError(TrtParityError):
    """A backend could not load the engine or run a step."""


class EngineLoadError(BackendError):
    """The engine file is missing, corrupt, or from an incompatible runtime or GPU."""


class MissingDependencyError(BackendError):
    """An optional dependency that the chosen backend needs is not installed."""


class BindingError(TrtParityError):
    """The engine's real inputs or outputs do not match the contract, or a feed does not."""


class InvariantViolation(TrtParityError):
    """An engine output broke one of the contract's mandatory invariants."""


class ConfigError(TrtParityError):
    """An option or ini value is missing or malformed."""


class ParityWarning(UserWarning):
    """An output crossed its warn tier (or a non-blocking output crossed its fail tier).

    Shown in pytest's warnings summary; `--trt-strict` turns it into a failure.
    """


class BuildError(BackendError):
    """TensorRT's parser or builder refused the model; the message names file, node and TensorRT's words."""


class ExecutionUnavailable(BackendError):
    """The engine cannot execute on this machine (no GPU, or one its runtime does not support):
    the gate's execution checks skip naming why, and the verdict rests on what did run."""


class ShardSetError(TrtParityError):
    """Matrix shard parts that cannot be merged into one verdict (another reference, contract or
    engine, a missing or duplicated shard, a run that did not finish): never a pass."""
