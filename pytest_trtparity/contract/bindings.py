"""Binding checks: the engine's real I/O against the contract, and each record against the contract.

A TensorRT engine accepts any pointer; ONNX Runtime casts nothing but will reshape-broadcast in some
graphs. So names, dtypes, ranks, fixed sizes and the consistency of named dynamic dims are checked
here, by the harness, before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ..errors import BindingError
from . import dtypes
from .io import IOInfo
from .model import Contract, TensorSpec


def engine_problems(
    contract: Contract, inputs: Sequence[IOInfo], outputs: Sequence[IOInfo]
) -> Iterator[str]:
    """Every way the engine's declared I/O disagrees with the contract, one sentence each."""
    yield from _side(contract.inputs, inputs, "input")
    yield from _side(contract.outputs, outputs, "output")


def _side(specs: Sequence[TensorSpec], actual: Sequence[IOInfo], kind: str) -> Iterator[str]:
    have = {a.name: a for a in actual}
    want = {s.name: s for s in specs}
    for name, spec in want.items():
        if name not in have:
            if not spec.optional:
                yield f"{kind} {name!r} is in the contract but not in the engine (engine {kind}s: {', '.join(sorted(have)) or 'none'})"
            continue
        info = have[name]
        if info.dtype != spec.dtype:
            yield f"{kind} {name!r}: engine dtype {info.dtype}, contract says {spec.dtype}"
        if len(info.shape) != len(spec.shape):
            yield f"{kind} {name!r}: engine rank {len(info.shape)} {list(info.shape)}, contract says rank {len(spec.shape)} {list(spec.shape)}"
            continue
        for axis, (e, c) in enumerate(zip(info.shape, spec.shape, strict=True)):
            if isinstance(e, int) and e >= 0 and isinstance(c, int) and e != c:
                yield f"{kind} {name!r}: dimension {axis} is {e} in the engine, contract says {c}"
    for name in sorted(set(have) - set(want)):
        yield f"engine {kind} {name!r} is not in the contract"


def check_tensor(
    spec: TensorSpec, array: np.ndarray, dims: dict[str, int], where: str, side: str
) -> None:
    """Check one tensor of a record against its spec, binding named dims as it goes."""
    want = dtypes.host_dtype(spec.dtype)
    if array.dtype != want:
        raise BindingError(
            f"{where}: {side}.{spec.name}: dtype {dtypes.name_of(array.dtype) if array.dtype.kind in 'biuf' else array.dtype}, contract says {spec.dtype}"
        )
    if array.ndim != spec.rank:
        raise BindingError(
            f"{where}: {side}.{spec.name}: shape {list(array.shape)}, contract says {list(spec.shape)}"
        )
    for axis, (got, dim) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if isinstance(dim, int):
            if got != dim:
                raise BindingError(
                    f"{where}: {side}.{spec.name}: dimension {axis} is {got}, contract says {dim}"
                )
        elif dims.setdefault(dim, got) != got:
            raise BindingError(
                f"{where}: {side}.{spec.name}: dimension {axis} ({dim}) is {got} but {dim} = {dims[dim]} elsewhere in this chunk"
            )
    if array.size == 0 and not spec.allow_empty:
        raise BindingError(
            f"{where}: {side}.{spec.name}: empty tensor (shape {list(array.shape)}); the contract does not allow it"
        )


def record_feeds(
    contract: Contract,
    record_inputs: Mapping[str, np.ndarray],
    engine_inputs: Sequence[IOInfo],
    where: str,
    dims: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """The feeds for one chunk: record inputs checked against the contract, limited to what the engine takes."""
    dims = {} if dims is None else dims
    engine_names = {i.name for i in engine_inputs}
    unknown = sorted(set(record_inputs) - set(contract.input_names))
    if unknown:
        raise BindingError(f"{where}: inputs.{unknown[0]}: not an input of the contract")
    feeds: dict[str, np.ndarray] = {}
    for spec in contract.inputs:
        if spec.name not in record_inputs:
            if spec.name in engine_names:
                raise BindingError(
                    f"{where}: inputs.{spec.name}: missing from the reference record"
                )
            continue
        check_tensor(spec, record_inputs[spec.name], dims, where, "inputs")
        if spec.name in engine_names:
            feeds[spec.name] = record_inputs[spec.name]
    return feeds


def record_outputs_problems(
    contract: Contract, record_outputs: Mapping[str, np.ndarray], where: str
) -> None:
    unknown = sorted(set(record_outputs) - set(contract.output_names))
    if unknown:
        raise BindingError(f"{where}: outputs.{unknown[0]}: not an output of the contract")
    missing = [n for n in contract.output_names if n not in record_outputs]
    if missing:
        raise BindingError(f"{where}: outputs.{missing[0]}: missing from the reference record")
    # a reference output of the wrong dtype or shape is the reference's fault, not the engine's
    dims: dict[str, int] = {}
    for spec in contract.outputs:
        check_tensor(spec, record_outputs[spec.name], dims, where, "outputs")
