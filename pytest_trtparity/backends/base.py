"""The one small interface every engine runtime implements.

Public methods check at the edge (names, dtypes, ranks of the feeds; that the engine is loaded) and
then call the `_impl` methods, so a backend only has to say how to run, never how to validate.
TensorRT sees only pointers: if the harness did not check, nothing would.
"""

from __future__ import annotations

import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from ..contract import dtypes
from ..contract.io import DimLike as DimLike
from ..contract.io import IOInfo as IOInfo
from ..errors import BindingError, EngineLoadError


@dataclass(frozen=True)
class BackendInfo:
    """What ran the engine, for the summary's environment block and the sign-off report."""

    backend: str
    version: str
    device: str
    engine: str
    engine_sha256: str
    engine_bytes: int
    provider: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "backend": self.backend,
            "version": self.version,
            "device": self.device,
            "engine": self.engine,
            "engine_sha256": self.engine_sha256,
            "engine_bytes": self.engine_bytes,
            "provider": self.provider,
        }
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class StepTiming:
    """How long one step took, in milliseconds.

    `total_ms` is host wall time around the whole step (feeds in, outputs out), measured after the
    device finished. GPU backends also fill the device-side split measured with CUDA events, as
    trtexec separates host latency from GPU compute: host-to-device copies, compute, device-to-host.
    """

    total_ms: float
    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None


def host_cpu_name() -> str:
    """The CPU model, for the summary's device line when an engine runs on the host."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_engine_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EngineLoadError(f"{path}: engine file not found") from None
    except IsADirectoryError:
        raise EngineLoadError(f"{path}: is a directory, not an engine file") from None
    except OSError as exc:
        raise EngineLoadError(f"{path}: cannot read engine: {exc.strerror or exc}") from None
    if not data:
        raise EngineLoadError(f"{path}: engine file is empty")
    return data


class Backend(ABC):
    """Load an engine, describe its I/O, run one step.

    `run(feeds, carry=...)`: `carry` maps an input name to the output of the previous step that
    feeds it (closed loop). Host backends take it from their last outputs; the TensorRT backend keeps
    it on the device. `fetch` names the outputs to copy back; None means all.
    """

    kind: ClassVar[str] = "base"

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        self.options = options
        self._loaded = False
        self._last: dict[str, np.ndarray] = {}
        self._inputs: tuple[IOInfo, ...] = ()
        self._outputs: tuple[IOInfo, ...] = ()

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> Backend:
        if not self._loaded:
            self._inputs, self._outputs = self._load_impl()
            self._loaded = True
        return self

    def close(self) -> None:
        if self._loaded:
            self._close_impl()
            self._loaded = False
            self._last = {}

    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- description -------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[IOInfo, ...]:
        self.load()
        return self._inputs

    @property
    def outputs(self) -> tuple[IOInfo, ...]:
        self.load()
        return self._outputs

    def input_info(self, name: str) -> IOInfo | None:
        return next((i for i in self.inputs if i.name == name), None)

    def output_info(self, name: str) -> IOInfo | None:
        return next((o for o in self.outputs if o.name == name), None)

    @abstractmethod
    def info(self) -> BackendInfo: ...

    # -- running -----------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget carried outputs: the next step starts a new stream."""
        self._last = {}

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        fetch: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        self.load()
        carry = dict(carry or {})
        self.check_feeds(feeds, carry)
        if carry and not self._last:
            raise BindingError("closed loop asked to carry state before any step produced it")
        out = self._run_impl(feeds, carry, fetch)
        self._last = out
        if fetch is None:
            return dict(out)
        return {k: v for k, v in out.items() if k in fetch}

    def run_timed(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        fetch: Collection[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], StepTiming]:
        """`run`, timed. Host backends time with perf_counter; GPU backends override this to
        synchronise and add the CUDA-event split."""
        start = time.perf_counter()
        out = self.run(feeds, carry=carry, fetch=fetch)
        return out, StepTiming(total_ms=(time.perf_counter() - start) * 1e3)

    def check_feeds(self, feeds: Mapping[str, np.ndarray], carry: Mapping[str, str]) -> None:
        names = {i.name for i in self.inputs}
        outs = {o.name for o in self.outputs}
        given = set(feeds) | set(carry)
        extra = sorted(given - names)
        if extra:
            raise BindingError(
                f"{self.path.name}: extra keys in feeds: {', '.join(extra)} (engine inputs: {', '.join(sorted(names))})"
            )
        missing = sorted(names - given)
        if missing:
            raise BindingError(f"{self.path.name}: some inputs are missing: {', '.join(missing)}")
        both = sorted(set(feeds) & set(carry))
        if both:
            raise BindingError(f"{self.path.name}: inputs both fed and carried: {', '.join(both)}")
        for inp, out in carry.items():
            if out not in outs:
                raise BindingError(f"{self.path.name}: carry {inp!r} <- {out!r}: no such output")
        for name, array in feeds.items():
            info = self.input_info(name)
            assert info is not None
            want = dtypes.host_dtype(info.dtype)
            if array.dtype != want:
                raise BindingError(
                    f"{self.path.name}: input {name!r} is {array.dtype}, the engine takes {info.dtype}"
                )
            if not info.admits(tuple(array.shape)):
                raise BindingError(
                    f"{self.path.name}: input {name!r} has shape {list(array.shape)}, "
                    f"the engine takes {list(info.shape)}"
                )

    # -- what a backend implements -----------------------------------------------------------
    @abstractmethod
    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]: ...

    def _close_impl(self) -> None:  # noqa: B027 - most backends hold nothing to release
        pass

    def _run_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Default: a host-side backend; carried inputs come from the last outputs.

        `fetch` names the outputs the caller wants on the host; a host backend has them all anyway
        (`run` filters), a device backend copies back only those."""
        merged = dict(feeds)
        for inp, out in carry.items():
            merged[inp] = self._last[out]
        return self._infer(merged)

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
