"""TensorRT tensor descriptions in our own terms: dtype names, shapes, bytes.

TensorRT reports dtypes as `DataType` members and dynamic dims as -1; the rest of the plugin speaks
contract dtype names and treats a dynamic dim as None. Converting here keeps both the runtime and
the tests free of TensorRT objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from ..contract import dtypes
from ..errors import EngineLoadError

#: TensorRT DataType member names -> contract dtype names.
TRT_DTYPES: Final[dict[str, str]] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}

#: DataType members that exist but have no host representation the gate can compare.
UNSUPPORTED_TRT_DTYPES: Final[frozenset[str]] = frozenset({"FP8", "INT4", "FP4", "E8M0"})

#: Contract dtype names TensorRT has no DataType for.
NO_TRT_DTYPE: Final[frozenset[str]] = frozenset({"float64", "int16"})


def dtype_name(trt_name: str, *, tensor: str = "?") -> str:
    """The contract dtype name of a TensorRT DataType member name (`DataType.HALF.name`)."""
    key = trt_name.rsplit(".", 1)[-1].upper()
    if key in TRT_DTYPES:
        return TRT_DTYPES[key]
    if key in UNSUPPORTED_TRT_DTYPES:
        raise EngineLoadError(
            f"tensor {tensor!r} is {key} at the engine's boundary; the gate compares only "
            f"{', '.join(sorted(set(TRT_DTYPES.values())))} I/O (cast in the ONNX graph)"
        )
    raise EngineLoadError(
        f"tensor {tensor!r} has TensorRT dtype {trt_name!r}, unknown to this version of the gate"
    )


def trt_dtype_member(name: str) -> str:
    """The DataType member name for a contract dtype name (inverse of `dtype_name`)."""
    for member, ours in TRT_DTYPES.items():
        if ours == name:
            return member
    raise EngineLoadError(f"dtype {name!r} has no TensorRT equivalent")


def volume(shape: Sequence[int]) -> int:
    """Elements in a tensor of `shape`; a rank-0 tensor holds one."""
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {list(shape)} still has a dynamic (-1) dimension")
    return math.prod(shape)


def nbytes(dtype: str, shape: Sequence[int]) -> int:
    """Bytes one tensor occupies on the device (bfloat16 takes two, as on the wire)."""
    return volume(shape) * dtypes.itemsize(dtype)


def dims_of(trt_shape: Sequence[int]) -> tuple[int | None, ...]:
    """A TensorRT shape with -1 for dynamic dims, as the IOInfo shape (None for dynamic)."""
    return tuple(None if int(d) < 0 else int(d) for d in trt_shape)


@dataclass(frozen=True)
class TensorDesc:
    """One engine I/O tensor as TensorRT declares it, already in our terms."""

    name: str
    mode: Literal["input", "output"]
    dtype: str
    shape: tuple[int | None, ...]
    on_host: bool = False  # shape tensors live in host memory

    @property
    def is_input(self) -> bool:
        return self.mode == "input"


def to_device_layout(array: np.ndarray, dtype: str) -> np.ndarray:
    """The contiguous bytes to copy to the device for a host array of contract dtype `dtype`.

    Host arrays of bfloat16 tensors hold float32 values (numpy has no bfloat16); the device wants
    the 16-bit patterns.
    """
    if dtype == "bfloat16":
        return dtypes.float32_to_bfloat16_bits(array)
    return np.asarray(array, dtype=dtypes.host_dtype(dtype), order="C")


def from_device_layout(raw: np.ndarray, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """A host array of `dtype` and `shape` from raw device bytes (a copy; the buffer is reused)."""
    count = volume(shape)
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype=np.uint16, count=count).reshape(tuple(shape))
        return dtypes.bfloat16_bits_to_float32(bits)
    wire = dtypes.wire_dtype(dtype)
    return (
        np.frombuffer(raw, dtype=wire, count=count)
        .reshape(tuple(shape))
        .astype(dtypes.host_dtype(dtype), copy=True)
    )
