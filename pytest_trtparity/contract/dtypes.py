"""The closed set of tensor dtypes a contract or reference may name, and their numpy forms.

numpy has no bfloat16, so bfloat16 tensors travel as their raw 16-bit patterns and are widened to
float32 (exactly) when decoded; everything downstream compares float32 values.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from ..errors import TrtParityError

#: dtype name -> numpy dtype of the bytes on the wire (little-endian).
WIRE_DTYPES: Final[dict[str, np.dtype[np.generic]]] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

SUPPORTED: Final[tuple[str, ...]] = tuple(WIRE_DTYPES)

FLOAT_DTYPES: Final[frozenset[str]] = frozenset({"float64", "float32", "float16", "bfloat16"})
INT_DTYPES: Final[frozenset[str]] = frozenset({"int64", "int32", "int16", "int8", "uint8"})


class UnknownDtypeError(TrtParityError, ValueError):
    """A dtype name outside `SUPPORTED`."""


def itemsize(name: str) -> int:
    return int(wire_dtype(name).itemsize)


def wire_dtype(name: str) -> np.dtype[np.generic]:
    try:
        return WIRE_DTYPES[name]
    except (KeyError, TypeError):
        raise UnknownDtypeError(
            f"unknown dtype {name!r}; expected one of {', '.join(SUPPORTED)}"
        ) from None


def host_dtype(name: str) -> np.dtype[np.generic]:
    """The numpy dtype an array of this tensor has in memory after decoding."""
    if name == "bfloat16":
        return np.dtype(np.float32)
    native: np.dtype[np.generic] = wire_dtype(name).newbyteorder("=")
    return native


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    widened: np.ndarray = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return widened


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even, keeping NaN a NaN (quiet bit set) as TensorRT and PyTorch do."""
    f32 = np.asarray(values, dtype=np.float32, order="C")  # keeps rank 0, unlike ascontiguousarray
    flat = f32.reshape(-1)  # rank 0 becomes one element, so the NaN fix-up below can index it
    as_u32 = flat.view(np.uint32)
    rounding = ((as_u32 >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    rounded = ((as_u32 + rounding) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(flat)
    rounded[nan] = ((as_u32[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    out: np.ndarray = rounded.reshape(f32.shape)
    return out


def name_of(dtype: np.dtype[np.generic] | type) -> str:
    """The contract name of a numpy dtype (the inverse of `host_dtype`, bfloat16 aside)."""
    dt = np.dtype(dtype)
    for name, wire in WIRE_DTYPES.items():
        if name != "bfloat16" and wire.kind == dt.kind and wire.itemsize == dt.itemsize:
            return name
    raise UnknownDtypeError(
        f"numpy dtype {dt} has no trtparity name; supported: {', '.join(SUPPORTED)}"
    )


#: ONNX Runtime's type strings ("tensor(float)") -> contract names.
ORT_TYPES: Final[dict[str, str]] = {
    "tensor(double)": "float64",
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
