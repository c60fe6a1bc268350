"""The memory suite: engine file size, peak device memory and host RSS, against the contract's limits.

Device memory is read from the best source there is, and the source is always reported:
NVML's count for this process (pynvml, from `pytest-trtparity[nvml]`; the whole footprint, CUDA
context included), else the backend's own peak (PyTorch's allocator for the torch backend), else
cudaMemGetInfo's used memory of the whole device (other processes included). A limit that cannot
be measured is a warning, never a silent pass.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable, Iterable, Mapping

from ..backends.base import Backend, DeviceMemoryReporter, OnGpu
from ..contract.bindings import record_feeds
from ..contract.model import Contract, MemorySpec, Tier
from ..errors import TrtParityError
from ..judge.payloads import MemoryPayload
from ..judge.results import SuiteResult
from ..judge.tiers import BytesThreshold, Finding, Level, threshold_finding
from ..reference.reader import Record
from .timing import fmt_bytes

SUITE = "memory"
DEFAULT_CHUNKS = 20
CRITERIA = {
    "engine_bytes": "engine file size",
    "peak_device_bytes": "peak device memory",
    "host_rss_bytes": "peak host RSS",
}


def host_rss() -> tuple[int, int]:
    """(current, peak) resident set size of this process in bytes."""
    current = peak = 0
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    if not peak:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = (
            maxrss if sys.platform == "darwin" else maxrss * 1024
        )  # bytes on macOS, KiB elsewhere
    return current or peak, peak


def gpu_index(backend: Backend) -> int | None:
    """The GPU a backend runs on, or None for a CPU backend."""
    return backend.gpu_index() if isinstance(backend, OnGpu) else None


def _nvml_reader(index: int) -> Callable[[], int | None] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no driver, or no such device: try the next source
        return None
    pid = os.getpid()

    def read() -> int | None:
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:
            return None
        for proc in procs:
            used = getattr(proc, "usedGpuMemory", None)
            if proc.pid == pid and isinstance(used, int):
                return used
        return None  # in a container NVML may not see our pid

    return read if read() is not None else None


def _mem_get_info_reader(index: int) -> Callable[[], int | None] | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:

        def read_cudart() -> int | None:
            ok = cudart.cudaError_t.cudaSuccess
            err, current = cudart.cudaGetDevice()
            if err != ok or cudart.cudaSetDevice(index)[0] != ok:
                return None
            try:
                err, free, total = cudart.cudaMemGetInfo()
            finally:
                cudart.cudaSetDevice(current)  # leave the caller's current device as it was
            return int(total - free) if err == ok else None

        return read_cudart if read_cudart() is not None else None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():

        def read_torch() -> int | None:
            free, total = torch.cuda.mem_get_info(index)
            return int(total - free)

        return read_torch
    return None


class DeviceMemoryProbe:
    """Tracks the peak device memory of one backend over the samples taken."""

    def __init__(self, backend: Backend, *, attributable: bool = False) -> None:
        """`attributable`: only a count that belongs to this backend alone (its own peak), for
        comparing two engines in one process, where process-wide counts would be equal."""
        self.backend = backend
        self.index = gpu_index(backend)
        self.peak: int | None = None
        self.source = (
            "none: the engine runs on the CPU"
            if self.index is None
            else "none: no way to read GPU memory"
        )
        self._read: Callable[[], int | None] | None = None
        if self.index is None:
            return
        own = backend.peak_device_bytes if isinstance(backend, DeviceMemoryReporter) else None
        if attributable:
            if callable(own) and own() is not None:
                self._read, self.source = own, f"{backend.kind} backend's own peak"
            else:
                self.source = (
                    f"none: the {backend.kind} backend does not report its own device memory"
                )
            return
        nvml = _nvml_reader(self.index)
        if nvml is not None:
            self._read, self.source = nvml, "NVML (this process)"
        elif callable(own) and own() is not None:
            self._read, self.source = own, f"{backend.kind} backend's own peak"
        else:
            info = _mem_get_info_reader(self.index)
            if info is not None:
                self._read, self.source = (
                    info,
                    "cudaMemGetInfo (whole device, other processes included)",
                )

    def sample(self) -> int | None:
        if self._read is None:
            return None
        value = self._read()
        if value is not None:
            self.peak = value if self.peak is None else max(self.peak, value)
        return value


def bytes_finding(
    key: str, tier: Tier, value: float | None, *, suite: str = SUITE, why_missing: str = ""
) -> Finding | None:
    """One size criterion (`CRITERIA`) under its tier; a size not measured is a warning that its
    limit went unchecked, never a silent pass."""
    threshold = BytesThreshold(tier=tier, criterion=key, what=CRITERIA.get(key, key))
    if value is None:
        message = threshold.unmeasured(why_missing)
        limit = tier.fail if tier.fail is not None else tier.warn
        return Finding(Level.WARN, suite, "engine", key, message, limit=limit)
    return threshold_finding(threshold, float(value), suite=suite, output="engine")


def judge_memory(
    values: Mapping[str, int | None], memory: MemorySpec, why_missing: Mapping[str, str]
) -> list[Finding]:
    findings = []
    for key in CRITERIA:
        tier = memory.tier(key)
        if tier is None:
            continue
        f = bytes_finding(key, tier, values.get(key), why_missing=why_missing.get(key, ""))
        if f:
            findings.append(f)
    return findings


def run_memory(
    backend: Backend, contract: Contract, records: Iterable[Record], *, chunks: int = DEFAULT_CHUNKS
) -> SuiteResult:
    """Run a few reference chunks, sampling device memory after each, then judge the limits."""
    result = SuiteResult(suite=SUITE)
    probe = DeviceMemoryProbe(backend)
    probe.sample()
    try:
        for record in records:
            if result.chunks_run >= chunks:
                break
            feeds = record_feeds(contract, record.inputs, backend.inputs, record.where)
            backend.reset_state()
            backend.run(feeds)
            probe.sample()
            result.chunks_run += 1
            if record.stream not in result.streams:
                result.streams.append(record.stream)
            # let go of this chunk before the next is decoded: the peak this suite reports is then
            # one chunk and its outputs, not two chunks side by side
            del record, feeds
    except TrtParityError as exc:
        result.error = str(exc)
    rss_now, rss_peak = host_rss()
    info = backend.info()
    values: dict[str, int | None] = {
        "engine_bytes": info.engine_bytes,
        "peak_device_bytes": probe.peak,
        "host_rss_bytes": rss_peak,
    }
    result.findings = judge_memory(values, contract.memory, {"peak_device_bytes": probe.source})
    payload = MemoryPayload(
        engine_bytes=info.engine_bytes,
        peak_device_bytes=probe.peak,
        host_rss_bytes=rss_peak,
        device_source=probe.source,
        host_rss_now_bytes=rss_now,
        device=info.device,
        backend=info.backend,
    )
    result.payload = payload
    payload.table = [
        f"memory ({info.backend} on {info.device}, {result.chunks_run} chunks): engine file {fmt_bytes(info.engine_bytes)}, "
        f"peak device {fmt_bytes(probe.peak)} [{probe.source}], peak host RSS {fmt_bytes(rss_peak)}"
    ]
    if result.error is None:
        if result.chunks_run:
            result.complete = True
        else:
            result.error = "no chunk ran"
    return result
