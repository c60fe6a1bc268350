"""The writer a PyTorch harness calls: one record per chunk, written atomically.

The file appears under its final name only when the writer closes cleanly, so a harness that crashes
halfway leaves no reference that looks complete. The header records the count, which lets the reader
catch a file that was cut exactly at a line boundary.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from ..util.atomic import default_mode
from .codec import encode_tensor
from .reader import DEFAULT_STREAM, FORMAT_TAG

_COUNT_WIDTH = 20  # the header's record count is patched in place, so it has fixed width


class ReferenceWriter:
    """Write a v1 reference.

    ```python
    with ReferenceWriter("ref.jsonl", metadata={"model": "silero_vad", "seed": 0}) as w:
        for i, (x, y) in enumerate(chunks):
            w.write(inputs={"input": x}, outputs={"output": y})
    ```
    `chunk_index` counts per stream automatically; pass it to write an explicit value.
    `dtypes` maps a tensor name to a dtype name when the array's own dtype is not the one to record
    (a float32 array written as bfloat16).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        metadata: Mapping[str, Any] | None = None,
        encoding: str = "b64",
        dtypes: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.encoding = encoding
        self.dtypes = dict(dtypes or {})
        self.count = 0
        self._next: dict[str, int] = {}
        self.gz = self.path.suffix == ".gz"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        os.chmod(tmp, default_mode())
        self._tmp = Path(tmp)
        self._raw: IO[bytes] = self._tmp.open("wb")
        self._out: IO[bytes] = (
            gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0) if self.gz else self._raw  # type: ignore[assignment]
        )
        header = {"trtparity": FORMAT_TAG, **(metadata or {})}
        header.pop("records", None)
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
        if self.gz:  # gzip cannot be patched in place; gzip's own CRC and length catch truncation
            self._out.write(text.encode() + b"\n")
            self._count_at: int | None = None
        else:
            body = text[:-1] + ',"records":'
            self._count_at = len(body.encode())
            self._out.write(body.encode() + b"0".rjust(_COUNT_WIDTH) + b"}\n")

    def write(
        self,
        *,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        stream: str | None = None,
        chunk_index: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record; returns its chunk index."""
        name = stream or DEFAULT_STREAM
        index = self._next.get(name, 0) if chunk_index is None else chunk_index
        record: dict[str, Any] = {"chunk_index": index}
        if stream is not None:
            record["stream"] = stream
        record["inputs"] = {k: self._tensor(k, v) for k, v in inputs.items()}
        record["outputs"] = {k: self._tensor(k, v) for k, v in outputs.items()}
        if meta:
            record["meta"] = dict(meta)
        self._out.write(json.dumps(record, allow_nan=False, separators=(",", ":")).encode() + b"\n")
        self._next[name] = index + 1
        self.count += 1
        return index

    def _tensor(self, name: str, value: Any) -> dict[str, Any]:
        array = _to_numpy(value)
        return encode_tensor(array, dtype=self.dtypes.get(name), encoding=self.encoding)

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self._out.closed and self._raw.closed:
            return self.path
        if self.gz:
            self._out.close()
        if self._count_at is not None:
            self._raw.seek(self._count_at)
            self._raw.write(str(self.count).rjust(_COUNT_WIDTH).encode())
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the final path is left untouched."""
        for handle in (self._out, self._raw):
            if not handle.closed:
                handle.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ReferenceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _to_numpy(value: Any) -> np.ndarray:
    """Accept numpy arrays, Python scalars and torch tensors without importing torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
