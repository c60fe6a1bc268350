"""ONNX files on disk: which external-data sidecars a model needs, their digest, and staging.

TensorRT's parser resolves external data relative to the folder of the file it parses, and (like
onnx) refuses external data reached through a symlink or a hard link, failing with a bare "failed to
open file". Every sidecar is checked to exist first, naming the tensor that needs a missing one; when
a symlink or hard link is involved, the model and exactly its sidecars are copied into a clean folder.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError, MissingDependencyError


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            "reading an ONNX model's external-data sidecars needs the onnx package: pip install onnx"
        ) from None
    return onnx


def _tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def external_data(model_path: Path) -> dict[str, list[str]]:
    """Sidecar location (relative to the model's folder) -> names of the tensors stored there."""
    onnx = _import_onnx()
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ConfigError(f"{model_path}: not a readable ONNX model: {exc}") from None
    found: dict[str, list[str]] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location")
        if not location:
            raise ConfigError(
                f"{model_path}: tensor {tensor.name!r} is stored externally but names no location"
            )
        found.setdefault(location, []).append(tensor.name)
    return found


def _safe_relative(location: str, model_path: Path) -> PurePosixPath:
    rel = PurePosixPath(location.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise ConfigError(
            f"{model_path}: external data location {location!r} must stay inside the model's folder"
        )
    return rel


def sidecars(model_path: Path) -> dict[str, Path]:
    """Each external-data location of the model and the file it resolves to; errors when one is missing."""
    out: dict[str, Path] = {}
    for location, tensors in sorted(external_data(model_path).items()):
        rel = _safe_relative(location, model_path)
        path = model_path.parent / Path(*rel.parts)
        if not path.is_file():
            raise ConfigError(
                f"{model_path}: tensor {tensors[0]!r} is stored in {location!r}, which is missing from "
                f"{model_path.parent} (copy the .onnx together with its external-data files)"
            )
        out[location] = path
    return out


def file_digest(path: Path, digest: Any = None) -> str:
    h = digest or hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return str(h.hexdigest())


def model_digest(model_path: Path, files: dict[str, Path] | None = None) -> str:
    """sha256 over the model file and every sidecar it uses (location and content)."""
    files = sidecars(model_path) if files is None else files
    h = hashlib.sha256()
    h.update(file_digest(model_path).encode())
    for location, path in sorted(files.items()):
        h.update(b"\0" + location.encode() + b"\0" + file_digest(path).encode())
    return h.hexdigest()


def needs_staging(model_path: Path, files: dict[str, Path]) -> bool:
    """True when the parser would refuse the files where they are: onnx and TensorRT's parser
    reject external data reached through a symlink or a file with several hard links."""
    for path in (model_path, *files.values()):
        if path.is_symlink() or path.stat().st_nlink > 1:
            return True
    return False


def stage(model_path: Path, into: Path, files: dict[str, Path] | None = None) -> Path:
    """Copy the model and its sidecars into `into` as plain files; returns the staged model's path."""
    files = sidecars(model_path) if files is None else files
    into.mkdir(parents=True, exist_ok=True)
    staged = into / model_path.name
    shutil.copyfile(model_path, staged)
    for location, path in files.items():
        target = into / Path(*_safe_relative(location, model_path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return staged
