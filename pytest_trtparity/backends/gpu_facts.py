"""GPU facts for the environment block: what can move an fp32 verdict besides the engine itself.

The cuDNN and cuBLAS versions choose the kernels (and so the rounding) of the same model; the clocks
say whether the GPU ran throttled or locked when latency was measured. Each fact is best effort: a
missing library or tool leaves its key out, never fails the gate. NVML is imported, and nvidia-smi
run, only when a GPU backend asks.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import shutil
import subprocess
from typing import Any

#: cuBLAS's libraryPropertyType values: MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL.
_PROPERTIES = (0, 1, 2)
#: Wheels that ship cuBLAS, newest first, for when the library is not (yet) loaded.
_CUBLAS_WHEELS = ("nvidia-cublas", "nvidia-cublas-cu13", "nvidia-cublas-cu12", "nvidia-cublas-cu11")
_SMI_FIELDS = ("sm_mhz", "mem_mhz", "sm_max_mhz", "mem_max_mhz")
_SMI_TIMEOUT_S = 10


def format_cudnn(version: int) -> str:
    """cuDNN's integer version as text: 91900 is 9.19.0 (cuDNN 9 counts major*10000, 8 major*1000)."""
    major_scale = 10000 if version >= 90000 else 1000
    major, rest = divmod(version, major_scale)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def loaded_library(stem: str, maps: str | None = None) -> str | None:
    """The path of `lib<stem>.so*` as this process has it mapped (Linux), else None.

    Reading the process's own map names the library that really runs, not one that might be found."""
    if maps is None:
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
                maps = fh.read()
        except OSError:
            return None
    prefix = f"lib{stem}.so"
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if os.path.basename(path).startswith(prefix):
            return path
    return None


def cublas_version() -> str | None:
    """The cuBLAS in use: asked of the loaded library, else the version of the wheel that ships it."""
    path = loaded_library("cublas")
    if path is not None:
        try:
            lib = ctypes.CDLL(path)
            parts = []
            for prop in _PROPERTIES:
                value = ctypes.c_int()
                if lib.cublasGetProperty(prop, ctypes.byref(value)) != 0:
                    raise OSError("cublasGetProperty failed")
                parts.append(value.value)
            return ".".join(map(str, parts))
        except (OSError, AttributeError):
            pass
    for wheel in _CUBLAS_WHEELS:
        try:
            return f"{importlib.metadata.version(wheel)} ({wheel} wheel)"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cudnn_version() -> str | None:
    """The cuDNN this process has loaded (for runtimes that do not report it themselves)."""
    path = loaded_library("cudnn")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.cudnnGetVersion.restype = ctypes.c_size_t
        return format_cudnn(int(lib.cudnnGetVersion()))
    except (OSError, AttributeError):
        return None


def gpu_clocks(*, uuid: str | None = None, index: int | None = None) -> dict[str, Any] | None:
    """Current and maximum SM and memory clocks (MHz) of one GPU, from NVML if pynvml is installed,
    else nvidia-smi, else None. `uuid` ("GPU-...") names the GPU unambiguously; `index` is NVML's
    (which ignores CUDA_VISIBLE_DEVICES). Read when the environment block is written: an idle GPU
    shows idle clocks, and the maxima say what it can reach."""
    if uuid is None and index is None:
        return None
    return _nvml_clocks(uuid, index) or _smi_clocks(uuid, index)


def _nvml_clocks(uuid: str | None, index: int | None) -> dict[str, Any] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver, no permission
        return None
    try:
        handle = (
            pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
            if uuid is not None
            else pynvml.nvmlDeviceGetHandleByIndex(index)
        )
        sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
        values = (
            pynvml.nvmlDeviceGetClockInfo(handle, sm),
            pynvml.nvmlDeviceGetClockInfo(handle, mem),
            pynvml.nvmlDeviceGetMaxClockInfo(handle, sm),
            pynvml.nvmlDeviceGetMaxClockInfo(handle, mem),
        )
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return {**dict(zip(_SMI_FIELDS, map(int, values), strict=True)), "source": "nvml"}


def _smi_clocks(uuid: str | None, index: int | None) -> dict[str, Any] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = "clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem"
    command = [
        smi,
        f"--query-gpu={query}",
        "--format=csv,noheader,nounits",
        "-i",
        str(uuid or index),
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None
    try:
        values = [int(float(part)) for part in lines[0].split(",")]
    except ValueError:  # "[N/A]" on GPUs that do not report a clock
        return None
    if len(values) != len(_SMI_FIELDS):
        return None
    return {**dict(zip(_SMI_FIELDS, values, strict=True)), "source": "nvidia-smi"}


def nvml_uuid(uuid: Any) -> str:
    """A CUDA device UUID as NVML and nvidia-smi spell it ("GPU-" and the hex groups)."""
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def visible_index(device_id: int) -> tuple[str | None, int | None]:
    """The (uuid, NVML index) of CUDA device `device_id` as CUDA_VISIBLE_DEVICES maps it, for
    runtimes that give only an ordinal (ONNX Runtime's device_id)."""
    visible = [
        v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()
    ]
    if not visible:
        return None, device_id
    if device_id >= len(visible):
        return None, None
    entry = visible[device_id]
    if entry.isdigit():
        return None, int(entry)
    return (entry if entry.startswith(("GPU-", "MIG-")) else None), None
