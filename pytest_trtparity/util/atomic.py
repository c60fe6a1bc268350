"""Atomic file writes: a crash or Ctrl-C leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import ConfigError


def default_mode() -> int:
    """0o666 less the umask: what `open()` would have given the file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[str] | IO[bytes]]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, default_mode())
    except OSError as exc:
        raise ConfigError(
            f"{path.parent}: artifacts folder cannot be written: {exc.strerror or exc}"
        ) from None
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)  # type: ignore[call-overload]
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)  # type: ignore[arg-type]
    return path


def ensure_writable(folder: Path) -> None:
    """Fail before the run, not after it, when the artifacts cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".trtparity-probe."):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{folder}: artifacts folder cannot be written: {exc.strerror or exc} (set --trt-artifacts)"
        ) from None
