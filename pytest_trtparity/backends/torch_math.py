"""TF32 for the PyTorch backend: off unless asked for, and the process's own setting put back on close.

TF32 rounds the inputs of fp32 matrix products and cuDNN convolutions and recurrences to 10 mantissa
bits. PyTorch's defaults let cuDNN use it; on an H200, TF32 moved Silero VAD's recurrent state over
a 300-chunk closed loop from 6.7e-5 to 1.4e-2 against the CPU reference, past the contract's 5e-3
fail tier (docs/performance.md, TF32).
A gate that compares fp32 therefore fixes the setting itself (IEEE fp32 unless `--trt-tf32`), records
what was in force, and leaves the user's process as it found it: the flags are process-wide.

PyTorch has two ways to say this. Since 2.9, per-operation `fp32_precision` values ("ieee", "tf32",
"none" to inherit); mixing them with the older `allow_tf32` flags can leave the old getters raising,
so where the new values exist only they are read and written. Older PyTorch has only the flags and
`set_float32_matmul_precision`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

#: (label, path under torch.backends) of the per-operation precisions this module sets and reads.
_OPS = (
    ("matmul", ("cuda", "matmul")),
    ("cudnn_conv", ("cudnn", "conv")),
    ("cudnn_rnn", ("cudnn", "rnn")),
)
#: Where an operation that says "none" inherits from: CUDA's "all" value, which PyTorch exposes as
#: `torch.backends.cudnn.fp32_precision` (for matmul too), then the generic `torch.backends` one.
_PARENTS = (("cudnn",), ())
#: The CPU side of matmul precision: `set_float32_matmul_precision` sets it with CUDA's, and PyTorch
#: refuses to report the matmul precision while the two disagree.
_CPU_MATMUL = ("mkldnn", "matmul")


def has_precision_api(torch: Any) -> bool:
    """Whether this PyTorch has the per-operation `fp32_precision` settings (2.9 and later)."""
    backends = torch.backends
    return all(hasattr(_node(backends, path), "fp32_precision") for _, path in _OPS) and hasattr(
        _node(backends, _CPU_MATMUL), "fp32_precision"
    )


def _node(backends: Any, path: tuple[str, ...]) -> Any:
    node = backends
    for part in path:
        node = getattr(node, part, None)
    return node


def apply_tf32(torch: Any, allow: bool) -> Callable[[], None]:
    """Set TF32 for matmul and cuDNN to `allow`; return the function that puts the old values back."""
    if has_precision_api(torch):
        return _apply_precision(torch, allow)
    return _apply_flags(torch, allow)


def _apply_precision(torch: Any, allow: bool) -> Callable[[], None]:
    """Set the per-operation values, and the older flags with them where they can be read.

    PyTorch's own code still reads the older flags (torch.export reads cuDNN's), and those getters
    raise once the per-operation values disagree with the flag stored beside them; so each older
    setter runs first, then the per-operation values are made explicit (a "none" that inherits a
    process-wide "tf32" would otherwise keep TF32 on)."""
    backends = torch.backends
    paths = [path for _, path in _OPS] + [_CPU_MATMUL]
    saved = [(path, str(_node(backends, path).fp32_precision)) for path in paths]
    matmul = _read_or_none(torch.get_float32_matmul_precision)
    cudnn = _read_or_none(lambda: bool(backends.cudnn.allow_tf32))

    def restore() -> None:
        with _quiet():
            if matmul is not None:
                torch.set_float32_matmul_precision(matmul)
            if cudnn is not None:
                backends.cudnn.allow_tf32 = cudnn
        for path, old in saved:
            _node(backends, path).fp32_precision = old

    try:
        with _quiet():
            if matmul is not None:
                torch.set_float32_matmul_precision("high" if allow else "highest")
            if cudnn is not None:
                backends.cudnn.allow_tf32 = allow
        for path in paths:
            _node(backends, path).fp32_precision = "tf32" if allow else "ieee"
    except Exception:
        restore()
        raise
    return restore


def _read_or_none(getter: Callable[[], Any]) -> Any:
    """An older flag's value, or None where the process already mixed the two APIs and PyTorch
    refuses to answer (then only the per-operation values are set and put back)."""
    try:
        with _quiet():
            return getter()
    except RuntimeError:
        return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """PyTorch 2.9+ warns that the older flags are deprecated; here they are set on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(TF32|fp32_precision|float32_matmul).*")
        yield


def _apply_flags(torch: Any, allow: bool) -> Callable[[], None]:
    backends = torch.backends
    saved = (
        torch.get_float32_matmul_precision(),
        bool(backends.cuda.matmul.allow_tf32),
        bool(backends.cudnn.allow_tf32),
    )

    def restore() -> None:
        # the precision first: it also sets the matmul flag, which then gets its own value back
        torch.set_float32_matmul_precision(saved[0])
        backends.cuda.matmul.allow_tf32 = saved[1]
        backends.cudnn.allow_tf32 = saved[2]

    torch.set_float32_matmul_precision("high" if allow else "highest")
    backends.cuda.matmul.allow_tf32 = allow
    backends.cudnn.allow_tf32 = allow
    return restore


def tf32_in_force(torch: Any) -> dict[str, Any]:
    """What the environment block records: TF32 as PyTorch applies it now, per operation, and
    `NVIDIA_TF32_OVERRIDE` (the driver libraries' own switch; "0" turns TF32 off whatever PyTorch says)."""
    ops = _ops_precision(torch) if has_precision_api(torch) else _ops_flags(torch)
    override = os.environ.get("NVIDIA_TF32_OVERRIDE")
    facts: dict[str, Any] = {
        "tf32": any(v == "tf32" for v in ops.values()) and override != "0",
        "tf32_ops": ops,
    }
    if override is not None:
        facts["nvidia_tf32_override"] = override
    return facts


def _ops_precision(torch: Any) -> dict[str, str]:
    backends = torch.backends
    ops: dict[str, str] = {}
    for label, path in _OPS:
        values = [
            str(getattr(_node(backends, p), "fp32_precision", "none")) for p in (path, *_PARENTS)
        ]
        # "none" inherits from the parent; "none" all the way up is full fp32
        ops[label] = next((v for v in values if v != "none"), "ieee")
    return ops


def _ops_flags(torch: Any) -> dict[str, str]:
    backends = torch.backends
    precision = str(torch.get_float32_matmul_precision())
    matmul = "tf32" if bool(backends.cuda.matmul.allow_tf32) else "ieee"
    if precision == "medium":
        matmul = "bf16"
    cudnn = "tf32" if bool(backends.cudnn.allow_tf32) else "ieee"
    return {"matmul": matmul, "cudnn_conv": cudnn, "cudnn_rnn": cudnn}
