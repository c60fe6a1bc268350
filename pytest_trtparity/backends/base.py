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
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..contract import dtypes
from ..contract.io import DimLike as DimLike
from ..contract.io import IOInfo as IOInfo
from ..errors import BindingError, ConfigError, EngineLoadError
from .options import BackendOptions, from_keywords

#: The device-side split of one step in milliseconds: host-to-device, compute, device-to-host.
DeviceSplit = tuple[float, float, float]


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
    #: the options this backend takes; `open_backend` converts keywords to it
    options_type: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(
        self, path: str | Path, options: BackendOptions | None = None, **keywords: Any
    ) -> None:
        """`options` typed, or (for suites and scripts written before typed options) their fields
        as keywords, converted at once: a name the backend does not take is a ConfigError."""
        self.path = Path(path)
        if keywords:
            if options is not None:
                raise ConfigError(
                    f"{self.path}: pass the {self.kind} backend's options or keywords, not both"
                )
            options = from_keywords(self.options_type, keywords, backend=self.kind)
        if options is None:
            options = self.options_type()
        if not isinstance(options, self.options_type):
            raise ConfigError(
                f"{self.path}: the {self.kind} backend takes {self.options_type.__name__}, "
                f"not {type(options).__name__}"
            )
        self.options = options
        self._loaded = False
        self._have_state = False
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
            self._have_state = False

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
        self._have_state = False

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        fetch: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        carried = self._checked(feeds, carry)
        return self._finish(self._run_impl(feeds, carried, fetch), fetch)

    def run_timed(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        fetch: Collection[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], StepTiming]:
        """`run`, timed: host wall time around the whole step (checks included), plus the device
        split where the backend measures one (`_run_timed_impl`)."""
        start = time.perf_counter()
        carried = self._checked(feeds, carry)
        out, split = self._run_timed_impl(feeds, carried, fetch)
        out = self._finish(out, fetch)
        total = (time.perf_counter() - start) * 1e3
        if split is None:
            return out, StepTiming(total_ms=total)
        return out, StepTiming(
            total_ms=total, h2d_ms=split[0], compute_ms=split[1], d2h_ms=split[2]
        )

    def _checked(
        self, feeds: Mapping[str, np.ndarray], carry: Mapping[str, str] | None
    ) -> dict[str, str]:
        """The checks every step passes before a backend sees it; the carry map, copied."""
        self.load()
        carried = dict(carry or {})
        self.check_feeds(feeds, carried)
        if carried and not self._have_state:
            raise BindingError("closed loop asked to carry state before any step produced it")
        return carried

    def _finish(
        self, out: dict[str, np.ndarray], fetch: Collection[str] | None
    ) -> dict[str, np.ndarray]:
        self._last = out
        self._have_state = True
        if fetch is None:
            return dict(out)
        return {k: v for k, v in out.items() if k in fetch}

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

    def _run_timed_impl(
        self,
        feeds: Mapping[str, np.ndarray],
        carry: Mapping[str, str],
        fetch: Collection[str] | None,
    ) -> tuple[dict[str, np.ndarray], DeviceSplit | None]:
        """Default: no device split; GPU backends measure one with CUDA events."""
        return self._run_impl(feeds, carry, fetch), None

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# -- optional features ---------------------------------------------------------------------------
# Not every runtime can do everything; a check asks with isinstance (these are runtime checkable)
# rather than probing attribute names, so a renamed method is a type error, not a silent skip.


@runtime_checkable
class DeviceStep(Protocol):
    """One engine step on inputs already resident on the device, for timing compute alone.

    Calling it runs the step (a CUDA graph replay when `graphs` is True), waits for the device and
    returns the CUDA-event time of the step in milliseconds. Carried state is fed back on the device.
    """

    graphs: bool
    note: str

    def __call__(self) -> float: ...

    def close(self) -> None: ...


@runtime_checkable
class DeviceTimed(Protocol):
    """A backend that can time compute alone on device-resident inputs (latency's device timing)."""

    def device_step(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        carry: Mapping[str, str] | None = None,
        graphs: bool = False,
    ) -> DeviceStep: ...


@runtime_checkable
class OnGpu(Protocol):
    """A backend that can say which CUDA device it runs on (None: this instance runs on the host)."""

    def gpu_index(self) -> int | None: ...


@runtime_checkable
class DeviceMemoryReporter(Protocol):
    """A backend whose runtime counts its own peak device memory (None while it cannot say)."""

    def peak_device_bytes(self) -> int | None: ...


@runtime_checkable
class NamedProfiles(Protocol):
    """An engine with named optimization profiles (TensorRT).

    Python before 3.12 reads `profile_names` to answer isinstance, which loads the engine: ask
    about a loaded backend."""

    @property
    def profile_names(self) -> list[str]: ...


@runtime_checkable
class ProfileSelectable(NamedProfiles, Protocol):
    """Named optimization profiles that can be pinned one at a time (the profile sweep)."""

    def pin_profile(self, profile: str | int | None) -> None: ...
