"""A starter contract from any ONNX model's declared inputs and outputs.

The starter is valid as written, so `trtparity contract init` plus a v1 reference gates a model with
no code. Its tolerances are deliberately tight defaults per dtype (close to torch.testing's); the
user loosens them with a reason, which is the conversation a contract exists to record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import dtypes
from .io import IOInfo
from .model import SCHEMA_ID, contract_from_json

#: (warn, fail) on the per-chunk max_abs error, by output dtype.
DEFAULT_TIERS: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-6),
    "float32": (1e-5, 1e-4),
    "float16": (1e-3, 1e-2),
    "bfloat16": (1.6e-2, 5e-2),
}

#: Output-name suffixes that usually mark the next value of an input of the same stem.
_STATE_SUFFIXES = ("_out", "_next", "_new", "N", "n", "_n", "_o")


def _dim_name(tensor: str, axis: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", tensor)
    if not stem or stem[0].isdigit():
        stem = f"t_{stem}"
    return f"{stem}_d{axis}"


def _shape(name: str, shape: tuple[int | str | None, ...]) -> list[int | str]:
    out: list[int | str] = []
    for axis, dim in enumerate(shape):
        if (isinstance(dim, int) and dim >= 0) or (
            isinstance(dim, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dim)
        ):
            out.append(dim)
        else:
            out.append(_dim_name(name, axis))
    return out


def _tolerance(dtype: str) -> dict[str, Any]:
    if dtype in DEFAULT_TIERS:
        warn, fail = DEFAULT_TIERS[dtype]
        return {"metric": "max_abs", "chunk": {"warn": warn, "fail": fail}}
    return {
        "metric": "max_abs",
        "chunk": {"fail": 0},
        "note": "integer and bool outputs must match exactly",
    }


def guess_state_pairs(
    inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Pairs like state -> stateN or cache -> cache_out with equal dtype and rank."""
    pairs = []
    for out in outputs:
        for suffix in _STATE_SUFFIXES:
            if not out["name"].endswith(suffix) or out["name"] == suffix:
                continue
            stem = out["name"][: -len(suffix)]
            match = next((i for i in inputs if i["name"] == stem), None)
            if (
                match
                and match["dtype"] == out["dtype"]
                and len(match["shape"]) == len(out["shape"])
            ):
                pairs.append({"output": out["name"], "input": stem, "initial": "reference"})
                break
    return pairs


def starter_contract(
    onnx_path: Path,
    engine_inputs: Sequence[IOInfo],
    engine_outputs: Sequence[IOInfo],
    *,
    model: str | None = None,
) -> dict[str, Any]:
    """A valid starter contract for a model whose I/O an engine declared (the caller loads it, so
    the contract package never reaches up into the backends)."""
    inputs: list[dict[str, Any]] = [
        {"name": i.name, "dtype": i.dtype, "shape": _shape(i.name, i.shape)} for i in engine_inputs
    ]
    outputs: list[dict[str, Any]] = [
        {"name": o.name, "dtype": o.dtype, "shape": _shape(o.name, o.shape)} for o in engine_outputs
    ]
    contract: dict[str, Any] = {
        "$schema": SCHEMA_ID,  # the packaged schema; a relative path would not exist beside the user's file
        "trtparity": "contract/1",
        "model": model or onnx_path.stem,
        "description": f"Starter contract written from {onnx_path.name}; review dims, tolerances and state pairs.",
        "inputs": inputs,
        "outputs": outputs,
        "invariants": [
            {"output": o["name"], "check": "finite"}
            for o in outputs
            if o["dtype"] in dtypes.FLOAT_DTYPES
        ],
        "tolerances": {o["name"]: _tolerance(str(o["dtype"])) for o in outputs},
    }
    pairs = guess_state_pairs(inputs, outputs)
    if pairs:
        contract["state"] = pairs
    contract_from_json(
        contract
    )  # a starter that fails its own schema would be a bug: fail loudly here
    return contract
