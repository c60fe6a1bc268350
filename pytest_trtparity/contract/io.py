"""An engine's inputs and outputs as the engine itself declares them, in the contract's terms.

Backends describe what they loaded with these; the contract check compares them with the contract's
tensor specs. They live with the contract so that both sides can use them without reaching up.
"""

from __future__ import annotations

from dataclasses import dataclass

DimLike = int | str | None


@dataclass(frozen=True)
class IOInfo:
    """One engine input or output as the engine itself declares it; dynamic dims are str or None."""

    name: str
    dtype: str
    shape: tuple[DimLike, ...]

    def admits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            not isinstance(want, int) or want < 0 or want == got
            for want, got in zip(self.shape, shape, strict=True)
        )


__all__ = ["DimLike", "IOInfo"]
