"""The gate's options: declared once, registered as both command-line options and ini keys.

Precedence: command line, then ini. Paths from the command line are relative to where pytest was
invoked; paths from an ini file are relative to that file's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .contract.once import ContractOnce
from .errors import ConfigError
from .util.paths import resolve

if TYPE_CHECKING:
    from .contract.model import Contract

MODES = ("auto", "functional", "closed_loop", "both")
EXPLAIN_MODES = ("auto", "off", "always")


@dataclass(frozen=True)
class OptionSpec:
    name: str  # ini key and dest; the flag is --trt-<name with dashes>
    help: str
    kind: Literal["path", "str", "bool", "choice", "int"] = "str"
    choices: tuple[str, ...] = ()
    default: str | bool | int | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "trt_engine",
        "Engine under test: .plan/.engine (TensorRT), .onnx (ONNX Runtime), .pt/.ts/.pt2 (PyTorch); "
        "pkg:PACKAGE/FILE names a file inside an installed package.",
        "path",
        metavar="PATH",
    ),
    OptionSpec(
        "trt_backend",
        "Backend to run the engine with, overriding the one its extension picks.",
        "choice",
        ("onnxruntime", "tensorrt", "tensorrt-rtx", "torch"),
    ),
    OptionSpec(
        "trt_contract",
        "Binding contract (JSON) the engine is checked against.",
        "path",
        metavar="PATH",
    ),
    OptionSpec(
        "trt_ref",
        "Reference records (JSONL or JSONL.gz, format reference/1).",
        "path",
        metavar="PATH",
    ),
    OptionSpec(
        "trt_artifacts",
        "Folder for summary.json, plots and report.md.",
        "path",
        default="trtparity-artifacts",
        metavar="DIR",
    ),
    OptionSpec("trt_strict", "Treat warn-tier findings as failures.", "bool", default=False),
    OptionSpec(
        "trt_mode",
        "functional, closed_loop, both, or auto (both when the contract has state pairs).",
        "choice",
        MODES,
        default="auto",
    ),
    OptionSpec(
        "trt_provider",
        "ONNX Runtime execution provider: cpu, cuda or tensorrt.",
        "choice",
        ("cpu", "cuda", "tensorrt"),
        default="cpu",
    ),
    OptionSpec(
        "trt_threads",
        "Intra-op threads for CPU backends (0: the runtime's default).",
        "int",
        default=0,
    ),
    OptionSpec(
        "trt_baseline",
        "Second engine (PyTorch or ONNX) run through the same chunks for comparison.",
        "path",
        metavar="PATH",
    ),
    OptionSpec(
        "trt_devices",
        "Comma-separated GPU ids that xdist workers are spread over.",
        "str",
        metavar="IDS",
    ),
    OptionSpec(
        "trt_shard",
        "Run shard K of N (a CI matrix job) and write shard-part.json for `trtparity merge`.",
        "str",
        metavar="K/N",
    ),
    OptionSpec(
        "trt_onnx",
        "The ONNX file the TensorRT engine was built from: the profile sweep runs it on "
        "ONNX Runtime as its reference.",
        "path",
        metavar="PATH",
    ),
    OptionSpec(
        "trt_precision",
        "Precision for engines built on demand from .onnx with --trt-backend tensorrt "
        "(fp16/bf16/int8 need TensorRT 10.x; graph: as the ONNX graph says).",
        "choice",
        ("fp32", "fp16", "bf16", "int8", "graph"),
        default="fp32",
    ),
    OptionSpec(
        "trt_cuda_graphs",
        "Replay each TensorRT step as a captured CUDA graph.",
        "bool",
        default=False,
    ),
    OptionSpec(
        "trt_cache_dir",
        "Engine and timing cache folder (default: $TRTPARITY_CACHE_DIR or ~/.cache/trtparity).",
        "path",
        metavar="DIR",
    ),
    OptionSpec(
        "trt_torch_entry",
        "Submodule or method of a PyTorch model to call (engine or baseline), e.g. "
        "_model for Silero VAD's .jit, whose forward hides its state.",
        "str",
        metavar="NAME",
    ),
    OptionSpec(
        "trt_torch_device",
        "Device for PyTorch models (engine or baseline): cpu, cuda or cuda:N.",
        "str",
        default="cpu",
        metavar="DEVICE",
    ),
    OptionSpec(
        "trt_tf32",
        "Allow TF32 in fp32 GPU math (PyTorch's cuDNN and matmul, ONNX Runtime's CUDA provider); "
        "off by default: TF32 keeps 10 mantissa bits and can move an fp32 comparison past its tiers.",
        "bool",
        default=False,
    ),
    OptionSpec(
        "trt_compute_capability",
        "Comma-separated compute capabilities (8.9,12.0) that engines built on demand with "
        "--trt-backend tensorrt-rtx target ahead of time; needed where there is no GPU.",
        "str",
        metavar="X.Y[,X.Y]",
    ),
    OptionSpec(
        "trt_explain",
        "Localize failures at the end of the run: auto (each failing output of the functional "
        "and closed-loop checks), always (also the worst chunk of passing outputs), or off.",
        "choice",
        EXPLAIN_MODES,
        default="auto",
    ),
    OptionSpec(
        "trt_explain_budget",
        "Seconds of localization and probes per explained output (default 5).",
        "str",
        default="5",
        metavar="SECONDS",
    ),
    OptionSpec(
        "trt_previous",
        "An earlier run's artifacts folder or its summary.json: this run's errors and latency are "
        "judged against it (the contract's regression tiers).",
        "path",
        metavar="DIR",
    ),
    OptionSpec(
        "trt_latency_timing",
        "What the latency suite times: host (each step with its transfers, as an "
        "application sees it) or device (compute alone on device-resident inputs; a CUDA graph "
        "replay with --trt-cuda-graphs).",
        "choice",
        ("host", "device"),
        default="host",
    ),
)


@dataclass(frozen=True)
class GateSettings:
    engine: Path | None
    backend: str | None
    contract: Path | None
    ref: Path | None
    artifacts: Path
    strict: bool
    mode: str
    provider: str
    threads: int
    baseline: Path | None
    devices: tuple[int, ...]
    onnx: Path | None = None
    precision: str = "fp32"
    cuda_graphs: bool = False
    cache_dir: Path | None = None
    torch_entry: str | None = None
    torch_device: str = "cpu"
    latency_timing: str = "host"
    compute_capability: tuple[str, ...] = ()
    tf32: bool = False
    explain: str = "auto"
    explain_budget: float = 5.0
    previous: Path | None = None
    #: paths that could not be resolved (a `pkg:` whose package is absent), raised only when the gate
    #: needs them: a repository's ini defaults must not break its unrelated test runs, and a gate run
    #: must still leave its verdict (fail) and summary.json.
    deferred: Mapping[str, str] = field(default_factory=dict)
    #: the contract, loaded by whichever part of the run needs it first (see contract/once.py)
    _contract: ContractOnce = field(default_factory=ContractOnce, repr=False, compare=False)

    def require(self, what: str) -> Path:
        if what in self.deferred:
            raise ConfigError(self.deferred[what])
        value = getattr(self, what)
        if value is None:
            raise ConfigError(
                f"no {what} given: pass --trt-{what} PATH or set trt_{what} in your ini file"
            )
        return value  # type: ignore[no-any-return]

    def load_contract(self) -> Contract:
        """The contract named by --trt-contract, parsed once per run: every later call returns the
        same object, or raises the first call's error again (ConfigError when none was given)."""
        return self._contract.load(self.require("contract"))


def _convert(spec: OptionSpec, value: Any, base: Path, source: str) -> Any:
    if value is None or value == "":
        return None
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source} {spec.name}: expected true or false, got {value!r}")
    if spec.kind == "int":
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{source} {spec.name}: expected an integer, got {value!r}") from None
    if spec.kind == "choice" and str(value) not in spec.choices:
        raise ConfigError(
            f"{source} {spec.name}: {value!r} is not one of {', '.join(spec.choices)}"
        )
    if spec.kind == "path":
        return resolve(str(value), base)
    return str(value)


def parse_devices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ids = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"--trt-devices {text!r}: expected comma-separated GPU ids like 0,1"
        ) from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--trt-devices {text!r}: ids must be distinct and non-negative")
    return ids


def resolve_settings(
    cli: dict[str, Any], ini: dict[str, Any], *, cli_base: Path, ini_base: Path
) -> GateSettings:
    """Merge command-line and ini values (already read from pytest) into typed settings."""
    values: dict[str, Any] = {}
    deferred: dict[str, str] = {}
    for spec in OPTIONS:
        raw_cli = cli.get(spec.name)
        from_cli = raw_cli is not None and raw_cli is not False
        raw, base, source = (
            (raw_cli, cli_base, "option") if from_cli else (ini.get(spec.name), ini_base, "ini key")
        )
        try:
            value = _convert(spec, raw, base, source)
        except ConfigError as exc:
            if spec.kind != "path":
                raise
            # a path that cannot be resolved (a `pkg:` whose package is absent) fails the gate
            # when it is needed, with a summary, instead of stopping pytest before any verdict
            where = spec.flag if from_cli else spec.name
            deferred[spec.name.removeprefix("trt_")] = f"{source} {where}: {exc}"
            value = None
        values[spec.name] = spec.default if value is None and spec.kind != "path" else value
        if value is None and spec.kind == "path" and spec.default is not None:
            values[spec.name] = resolve(str(spec.default), cli_base)
    return GateSettings(
        engine=values["trt_engine"],
        backend=values["trt_backend"],
        contract=values["trt_contract"],
        ref=values["trt_ref"],
        artifacts=values["trt_artifacts"],
        strict=bool(values["trt_strict"]),
        mode=values["trt_mode"],
        provider=values["trt_provider"],
        threads=int(values["trt_threads"] or 0),
        baseline=values["trt_baseline"],
        devices=parse_devices(values["trt_devices"]),
        deferred=deferred,
        onnx=values["trt_onnx"],
        precision=values["trt_precision"],
        cuda_graphs=bool(values["trt_cuda_graphs"]),
        cache_dir=values["trt_cache_dir"],
        torch_entry=values["trt_torch_entry"],
        torch_device=values["trt_torch_device"] or "cpu",
        latency_timing=values["trt_latency_timing"],
        compute_capability=tuple(
            cc.strip() for cc in (values["trt_compute_capability"] or "").split(",") if cc.strip()
        ),
        tf32=bool(values["trt_tf32"]),
        explain=values["trt_explain"],
        explain_budget=parse_budget(values["trt_explain_budget"]),
        previous=values["trt_previous"],
    )


def parse_budget(text: str | None) -> float:
    """--trt-explain-budget: seconds, a positive number."""
    try:
        value = float(text or 5)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"--trt-explain-budget {text!r}: expected a positive number of seconds")
    return value
