"""What each backend can be asked to do, as one frozen dataclass per backend.

A typo in an option name used to be silently ignored (`options.get("cuda_graph")` is just None);
typed options make mypy catch it in the package and `from_keywords` turn it into a ConfigError for
callers that still pass keywords (`open_backend(path, threads=1)`). The gate builds these in one
place, `factory.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..contract.io import DimLike
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..contract.model import Contract

#: A TorchScript tensor's declared (dtype, shape), from the contract.
Spec = tuple[str, Sequence[DimLike]]

OptionsT = TypeVar("OptionsT", bound="BackendOptions")


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend takes: host threads (0: the runtime's default) and TF32 permission."""

    threads: int = 0
    tf32: bool = False


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    """`provider`: cpu, cuda or tensorrt (or onnxruntime's full provider name); `device_id`: the
    GPU of the CUDA and TensorRT providers; the `trt_*`, `precision` and `workspace` options reach
    the TensorRT provider only."""

    provider: str = "cpu"
    device_id: int = 0
    trt_cache_dir: Path | None = None
    precision: str = "fp32"
    workspace: int | None = None


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """`device` ("cpu" | "cuda[:N]"), `entry` (dotted submodule or method to call) and what
    TorchScript cannot say about itself: input and output names, optional inputs, and
    `specs` ({name: (dtype, shape)})."""

    device: str = "cpu"
    entry: str = ""
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    specs: Mapping[str, Spec] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorRTOptions(BackendOptions):
    """`device`: the CUDA device index; `contract`: checked against the engine's I/O at load and
    its invariants after every step (unless `check_invariants` is False); `cuda_graphs`: replay
    each (profile, shapes, addresses) step as a CUDA graph after one eager run; `flavour`: the
    runtime module family (None: as the build report says, else TensorRT)."""

    device: int = 0
    contract: Contract | None = None
    cuda_graphs: bool = False
    check_invariants: bool = True
    flavour: str | None = None


def from_keywords(kind: type[OptionsT], keywords: Mapping[str, Any], *, backend: str) -> OptionsT:
    """`kind` built from keyword options, refusing names it does not have.

    Sequences given as lists become tuples so the options stay hashable and frozen."""
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise ConfigError(
            f"the {backend} backend has no option {', '.join(map(repr, unknown))} "
            f"(its options: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in keywords.items()
    }
    return kind(**values)
