"""The run's contract, read once.

Collection (mode `auto` asks whether the contract has state pairs), the contract fixture, the engine
factory (TensorRT profiles, PyTorch state names) and the artifacts at the end of the run all need the
same contract. Each used to parse the file again; now the first to ask loads it and the others get
the same object, or the same error, so a broken contract is one error with one sentence however many
parts of the run trip over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Contract


class ContractOnce:
    """What loading one contract file came to: the contract, or the exception it raised."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._contract: Contract | None = None
        self._error: Exception | None = None

    def load(self, path: Path) -> Contract:
        """The contract at `path`, loaded at the first call; later calls return it, or raise the
        first call's exception again. Another path starts afresh."""
        if path != self._path:
            self._path, self._contract, self._error = path, None, None
            self._read(path)
        if self._error is not None:
            raise self._error
        assert self._contract is not None
        return self._contract

    def _read(self, path: Path) -> None:
        from . import model  # looked up at call time, so a test can count the loads

        try:
            self._contract = model.load_contract(path)
        except Exception as exc:  # kept whatever it is: the caller decides how to report it
            self._error = exc.with_traceback(None)


__all__ = ["ContractOnce"]
