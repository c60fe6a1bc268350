"""One gate run per artifacts folder at a time.

Two runs writing into one folder would leave a verdict that belongs to neither (the last writer
wins). A run claims the folder with an exclusive `flock` on `.trtparity.lock`, and writes into the
file who holds it (pid, host, start time, run id), so a second run can say whom it waits for. The
kernel drops a `flock` when its holder dies, even by SIGKILL: the lock of a dead run is taken over
without any guessing about pids. Without `fcntl` (Windows), the file is created with O_EXCL, and a
lock left by a pid that no longer runs on this host is taken over.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError

LOCK_NAME = ".trtparity.lock"
#: Attempts to claim: the holder may unlink the file between our open and our lock.
ATTEMPTS = 5


class ArtifactsBusyError(ConfigError):
    """Another live gate run holds the artifacts folder."""


@dataclass(frozen=True)
class Holder:
    """Who claimed a folder, as written into its lock file."""

    pid: int
    host: str
    started: str
    run_id: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "started": self.started, "run_id": self.run_id}

    @classmethod
    def from_text(cls, text: str) -> Holder | None:
        try:
            raw = json.loads(text)
            return cls(int(raw["pid"]), str(raw["host"]), str(raw["started"]), str(raw["run_id"]))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}, run {self.run_id}"


def this_holder(run_id: str) -> Holder:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return Holder(os.getpid(), socket.gethostname(), now, run_id)


def busy_message(folder: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder is not None else "a run that is still writing its lock file"
    return (
        f"{folder}: another gate run is writing into this artifacts folder ({who}); wait for it to "
        f"finish or pass --trt-artifacts with another folder"
    )


@dataclass
class FolderLock:
    """A held claim on an artifacts folder; `release()` gives it back (idempotent)."""

    path: Path
    holder: Holder
    handle: IO[str] | None

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: no one can lock this file after us
        self.handle.close()  # closing drops the flock (POSIX) or the O_EXCL file is already gone
        self.handle = None

    @property
    def held(self) -> bool:
        return self.handle is not None


def claim(folder: Path, run_id: str) -> FolderLock:
    """Claim `folder` for the run `run_id`, or raise ConfigError naming the run that holds it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(folder, exc) from None
    holder = this_holder(run_id)
    if importlib.util.find_spec("fcntl") is None:  # pragma: no cover - Windows
        return _claim_exclusive(folder, holder)
    return _claim_flock(folder, holder)


def _cannot_write(folder: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"{folder}: artifacts folder cannot be written: {exc.strerror or exc}")


def _claim_flock(folder: Path, holder: Holder) -> FolderLock:
    import fcntl

    path = folder / LOCK_NAME
    for _ in range(ATTEMPTS):
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise _cannot_write(folder, exc) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _cannot_write(folder, exc) from None
            raise ArtifactsBusyError(busy_message(folder, read_holder(path))) from None
        if not _same_file(handle, path):  # the previous holder unlinked it after our open
            handle.close()
            continue
        _write_holder(handle, holder)
        return FolderLock(path, holder, handle)
    raise ArtifactsBusyError(busy_message(folder, read_holder(path)))


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def _write_holder(handle: IO[str], holder: Holder) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder.to_json()) + "\n")
    handle.flush()
    with contextlib.suppress(OSError):
        os.fsync(handle.fileno())


def _claim_exclusive(folder: Path, holder: Holder) -> FolderLock:  # pragma: no cover - Windows
    path = folder / LOCK_NAME
    for _ in range(ATTEMPTS):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            other = read_holder(path)
            if other is not None and other.host == holder.host and not pid_alive(other.pid):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            raise ArtifactsBusyError(busy_message(folder, other)) from None
        except OSError as exc:
            raise _cannot_write(folder, exc) from None
        handle = os.fdopen(fd, "w+", encoding="utf-8")
        _write_holder(handle, holder)
        return FolderLock(path, holder, handle)
    raise ArtifactsBusyError(busy_message(folder, read_holder(path)))


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder.from_text(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a pid we may not signal still runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
