"""The build report written beside each engine, and reading the engine inspector's JSON.

The report names the builder (TensorRT or TensorRT-RTX) and version, the GPU or the ahead-of-time
target compute capabilities, the plan's size and sha256, and the network as TensorRT parsed it.

The inspector's JSON changed between versions: 10.x lists `Bindings` and one `Format/Datatype` string
per tensor ("Row major linear FP32"), 11.x lists `I/O Tensors` and separate `Format` and `Datatype`;
with LAYER_NAMES_ONLY verbosity a layer is a bare name. All three shapes are read here.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import __version__

REPORT_TAG = "trtparity-build/1"

#: Spellings of precisions inside inspector strings -> one name.
_PRECISIONS = {
    "FP32": "fp32",
    "FLOAT": "fp32",
    "FP16": "fp16",
    "HALF": "fp16",
    "BF16": "bf16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
    "FP8": "fp8",
    "INT4": "int4",
    "FP4": "fp4",
}
_TOKEN = re.compile(r"[A-Za-z]+[0-9]*")


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    precision: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "precision": self.precision}


@dataclass(frozen=True)
class EngineLayers:
    layers: tuple[LayerInfo, ...]
    io_tensors: tuple[str, ...] = ()
    detailed: bool = True

    @property
    def precisions(self) -> dict[str, int]:
        return dict(sorted(Counter(layer.precision for layer in self.layers).items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "layer_count": len(self.layers),
            "detailed": self.detailed,
            "precisions": self.precisions,
            "io_tensors": list(self.io_tensors),
            "layers": [layer.to_json() for layer in self.layers],
        }


def precision_of(text: str) -> str | None:
    """The precision named in an inspector datatype string, or None."""
    for token in reversed(_TOKEN.findall(text)):
        name = _PRECISIONS.get(token.upper())
        if name:
            return name
    return None


def _tensor_precision(tensor: Any) -> str | None:
    if not isinstance(tensor, Mapping):
        return None
    for key in ("Datatype", "Format/Datatype", "DataType"):
        value = tensor.get(key)
        if isinstance(value, str):
            found = precision_of(value)
            if found:
                return found
    return None


def _layer(raw: Any, index: int) -> LayerInfo:
    if isinstance(raw, str):
        return LayerInfo(raw, "unknown", "unknown")
    if not isinstance(raw, Mapping):
        return LayerInfo(f"layer {index}", "unknown", "unknown")
    found = [p for t in raw.get("Outputs", []) if (p := _tensor_precision(t))]
    if not found:
        found = [p for t in raw.get("Inputs", []) if (p := _tensor_precision(t))]
    precision = (
        "unknown"
        if not found
        else found[0]
        if len(set(found)) == 1
        else "mixed:" + "+".join(sorted(set(found)))
    )
    return LayerInfo(
        str(raw.get("Name", f"layer {index}")), str(raw.get("LayerType", "unknown")), precision
    )


def parse_inspector(text: str) -> EngineLayers:
    """Layers and their output precision from `IEngineInspector.get_engine_information(JSON)`."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"engine inspector returned invalid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError("engine inspector JSON is not an object")
    layers = raw.get("Layers", [])
    if not isinstance(layers, list):
        raise ValueError("engine inspector JSON has no Layers list")
    io = raw.get("I/O Tensors", raw.get("Bindings", []))
    return EngineLayers(
        layers=tuple(_layer(layer, i) for i, layer in enumerate(layers)),
        io_tensors=tuple(str(n) for n in io) if isinstance(io, list) else (),
        detailed=any(isinstance(layer, Mapping) for layer in layers),
    )


@dataclass(frozen=True)
class NetworkTensor:
    name: str
    dtype: str  # TensorRT DataType member name (FLOAT, HALF, INT64, ...)
    shape: tuple[int, ...]  # -1 marks a dynamic dimension

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class NetworkLayer:
    name: str
    type: str
    outputs: tuple[str, ...]  # the dtype TensorRT gave each output of the layer


@dataclass(frozen=True)
class NetworkDescription:
    """The network as TensorRT parsed it, before any optimisation: what the builder was given."""

    inputs: tuple[NetworkTensor, ...]
    outputs: tuple[NetworkTensor, ...]
    layers: tuple[NetworkLayer, ...]


def network_json(network: NetworkDescription) -> dict[str, Any]:
    """Inputs, outputs, layer count, layer types, and per-layer output dtypes (the precision
    TensorRT assigned in the strongly typed network; the engine inspector adds the kernels' own
    precision when a GPU is present)."""
    return {
        "inputs": [t.to_json() for t in network.inputs],
        "outputs": [t.to_json() for t in network.outputs],
        "layer_count": len(network.layers),
        "layer_types": dict(sorted(Counter(layer.type for layer in network.layers).items())),
        "output_dtypes": dict(
            sorted(Counter(d for layer in network.layers for d in layer.outputs).items())
        ),
        "layers": [
            {"name": layer.name, "type": layer.type, "output_dtypes": list(layer.outputs)}
            for layer in network.layers
        ],
    }


@dataclass
class BuildReport:
    """Everything a reader of a CI log needs to know about how an engine came to be."""

    trt_version: str
    gpu: str
    compute_capability: str
    profiles: Sequence[Mapping[str, Any]]
    options: Mapping[str, Any]
    build_seconds: float
    engine_bytes: int
    engine_sha256: str
    onnx: Mapping[str, Any]
    cache_key: str
    layers: EngineLayers | None = None
    cache_hit: bool = False
    notes: list[str] = field(default_factory=list)
    flavour: str = "tensorrt"
    targets: tuple[str, ...] = ()
    network: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trtparity": REPORT_TAG,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "plugin_version": __version__,
            "host": platform.node(),
            "tensorrt": {"version": self.trt_version, "flavour": self.flavour},
            "targets": list(self.targets),
            "device": {"name": self.gpu, "compute_capability": self.compute_capability or None},
            "profiles": list(self.profiles),
            "options": dict(self.options),
            "build_seconds": round(self.build_seconds, 3),
            "engine": {"bytes": self.engine_bytes, "sha256": self.engine_sha256},
            "onnx": dict(self.onnx),
            "cache_key": self.cache_key,
            "layers": self.layers.to_json() if self.layers else None,
            "network": dict(self.network) if self.network is not None else None,
            "notes": list(self.notes),
        }
