"""ONNX Runtime backend: CPU by default, the CUDA or TensorRT execution providers on request.

onnxruntime falls back to the CPU with only a warning when a provider cannot be created
(microsoft/onnxruntime#23372); this backend asserts that the provider asked for is the one in use.
The CUDA provider runs with `use_tf32=0` unless `tf32=True` (--trt-tf32): its default lets cuBLAS and
cuDNN round fp32 inputs to TF32, which an fp32 gate must not do silently (torch_math.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..contract import dtypes
from ..errors import BackendError, EngineLoadError, MissingDependencyError
from ..util.hashing import file_sha256
from .base import Backend, BackendInfo, IOInfo, host_cpu_name, read_engine_file
from .gpu_facts import cublas_version, cudnn_version, gpu_clocks, visible_index
from .options import OnnxRuntimeOptions

#: Steps whose feeds reach this size let go of the last step's outputs before they run and hand the
#: CPU arena's unused blocks back after (`_let_go`, `_run_options`).
ARENA_SHRINK_BYTES = 16 << 20

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependencyError(
            f"the onnxruntime backend needs onnxruntime: pip install onnxruntime ({exc})"
        ) from None
    return onnxruntime


def parse_provider(name: str) -> str:
    key = name.strip().lower()
    if key in PROVIDERS:
        return PROVIDERS[key]
    if name in PROVIDERS.values():
        return name
    raise BackendError(
        f"unknown onnxruntime provider {name!r}; expected one of {', '.join(PROVIDERS)}"
    )


def tensorrt_ep_options(options: OnnxRuntimeOptions) -> dict[str, str]:
    """Options for onnxruntime's TensorRT execution provider.

    Engine and timing caches (under the gate's cache folder) keep a second run from rebuilding, and
    the precision follows --trt-precision so both TensorRT paths build the same kind of engine.
    """
    out = {"trt_engine_cache_enable": "True", "trt_timing_cache_enable": "True"}
    cache = options.trt_cache_dir
    if cache:
        out["trt_engine_cache_path"] = str(cache)
        out["trt_timing_cache_path"] = str(cache)
    flag = {"fp16": "trt_fp16_enable", "bf16": "trt_bf16_enable", "int8": "trt_int8_enable"}.get(
        options.precision
    )
    if flag:
        out[flag] = "True"
    if options.workspace:
        out["trt_max_workspace_size"] = str(int(options.workspace))
    return _with_device(out, options)


def cuda_ep_options(options: OnnxRuntimeOptions) -> dict[str, str]:
    """Options for onnxruntime's CUDA execution provider: TF32 off unless `tf32` asks for it."""
    return _with_device({"use_tf32": "1" if options.tf32 else "0"}, options)


def _with_device(out: dict[str, str], options: OnnxRuntimeOptions) -> dict[str, str]:
    """The provider's `device_id` where another GPU than the first is asked for."""
    if options.device_id:
        out["device_id"] = str(int(options.device_id))
    return out


def _dim(d: Any) -> int | str | None:
    return d if isinstance(d, int | str) else None


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"
    options_type = OnnxRuntimeOptions
    options: OnnxRuntimeOptions
    _shrink: Any = None  # RunOptions for large steps, made on first use

    def _load_impl(self) -> tuple[tuple[IOInfo, ...], tuple[IOInfo, ...]]:
        ort = _import_ort()
        self.provider = parse_provider(self.options.provider or "cpu")
        available = ort.get_available_providers()
        if self.provider not in available:
            raise BackendError(
                f"onnxruntime {ort.__version__} has no {self.provider} (available: {', '.join(available)}); "
                "install onnxruntime-gpu or choose --trt-provider cpu"
            )
        model = read_engine_file(self.path)
        opts = ort.SessionOptions()
        threads = self.options.threads
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = (
            [self.provider]
            if self.provider == PROVIDERS["cpu"]
            else [self.provider, PROVIDERS["cpu"]]
        )
        if self.provider == PROVIDERS["tensorrt"]:
            ep_options = tensorrt_ep_options(self.options)
            if "trt_engine_cache_path" in ep_options:
                os.makedirs(ep_options["trt_engine_cache_path"], exist_ok=True)
            providers = [(self.provider, ep_options), PROVIDERS["cpu"]]  # type: ignore[list-item]
        if self.provider == PROVIDERS["cuda"]:
            providers = [(self.provider, cuda_ep_options(self.options)), PROVIDERS["cpu"]]  # type: ignore[list-item]
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception hierarchy
            raise EngineLoadError(
                f"{self.path}: onnxruntime cannot load this model (sha256 {file_sha256(self.path)[:16]}…): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        used = self.session.get_providers()
        if not used or used[0] != self.provider:
            raise BackendError(
                f"{self.path}: asked for {self.provider} but onnxruntime runs on {used[0] if used else 'nothing'}"
            )
        self.version = ort.__version__
        self._engine_bytes = len(model)
        ins = tuple(self._io(i) for i in self.session.get_inputs())
        outs = tuple(self._io(o) for o in self.session.get_outputs())
        return ins, outs

    def _io(self, arg: Any) -> IOInfo:
        try:
            dt = dtypes.ORT_TYPES[arg.type]
        except KeyError:
            raise EngineLoadError(
                f"{self.path}: tensor {arg.name!r} has unsupported type {arg.type}"
            ) from None
        return IOInfo(arg.name, dt, tuple(_dim(d) for d in arg.shape))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        large = self._large(feeds)
        if large:
            self._let_go()
        try:
            if any(t.dtype == "bfloat16" for t in (*self.inputs, *self.outputs)):
                return self._infer_bfloat16(feeds)
            values = self.session.run(
                names,
                {k: np.asarray(v, order="C") for k, v in feeds.items()},
                self._run_options() if large else None,
            )
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{self.path.name}: onnxruntime run failed: {str(exc).splitlines()[0]}"
            ) from None
        return dict(zip(names, (np.asarray(v) for v in values), strict=True))

    @staticmethod
    def _large(feeds: Mapping[str, np.ndarray]) -> bool:
        """A step whose feeds reach `ARENA_SHRINK_BYTES`: its memory is managed (`_let_go`,
        `_run_options`); smaller steps, such as Silero's, run exactly as they always have."""
        return sum(int(np.asarray(v).nbytes) for v in feeds.values()) >= ARENA_SHRINK_BYTES

    def _let_go(self) -> None:
        """Drop the last step's outputs before this step runs. They are kept to carry state, and
        what this step carries is already in its feeds; kept any longer, they (and the arena
        blocks behind them) stay alive through the step, a second set of outputs in the peak.
        Until the step has finished there is no state to carry."""
        self._last = {}
        self._have_state = False

    def _run_options(self) -> Any:
        """For steps of large tensors, options that hand the CPU arena's unused blocks back after
        the run (None off the CPU provider). The arena otherwise keeps every block it grew into for
        the life of the session, so one check's 26 MB tensors stay resident under the next check's
        peak; re-allocating blocks this large costs little beside the step itself."""
        if self.provider != "CPUExecutionProvider":
            return None
        if self._shrink is None:
            options = _import_ort().RunOptions()
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._shrink = options
        return self._shrink

    def _infer_bfloat16(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """numpy has no bfloat16: feed raw bit patterns as typed OrtValues and read outputs by pointer."""
        import ctypes

        ort = _import_ort()
        bf16 = 16  # ONNX TensorProto.BFLOAT16
        binding = self.session.io_binding()
        for name, array in feeds.items():
            info = self.input_info(name)
            if info is not None and info.dtype == "bfloat16":
                bits = dtypes.float32_to_bfloat16_bits(array)
                binding.bind_ortvalue_input(
                    name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, bf16)
                )
            else:
                binding.bind_cpu_input(name, np.asarray(array, order="C"))
        for out in self.outputs:
            binding.bind_output(out.name, "cpu")
        self.session.run_with_iobinding(binding)
        result: dict[str, np.ndarray] = {}
        for out, value in zip(self.outputs, binding.get_outputs(), strict=True):
            if out.dtype != "bfloat16":
                result[out.name] = np.asarray(value.numpy())
                continue
            shape = tuple(value.shape())
            count = int(np.prod(shape)) if shape else 1
            raw = (ctypes.c_uint16 * count).from_address(value.data_ptr())
            bits = (
                np.frombuffer(memoryview(raw), dtype=np.uint16).copy().reshape(shape)
                if count
                else np.zeros(shape, np.uint16)
            )
            result[out.name] = dtypes.bfloat16_bits_to_float32(bits)
        return result

    def gpu_index(self) -> int | None:
        """The GPU of the CUDA and TensorRT providers; None on the CPU provider (`OnGpu`)."""
        if parse_provider(self.options.provider or "cpu") == PROVIDERS["cpu"]:
            return None
        return self.options.device_id

    def info(self) -> BackendInfo:
        self.load()
        return BackendInfo(
            backend=self.kind,
            version=self.version,
            device=host_cpu_name() if self.provider == PROVIDERS["cpu"] else self.provider,
            engine=str(self.path),
            engine_sha256=file_sha256(self.path),
            engine_bytes=self._engine_bytes,
            provider=self.provider,
            extra={
                "threads": self.options.threads or os.cpu_count(),
                **(self._cuda_facts() if self.provider == PROVIDERS["cuda"] else {}),
            },
        )

    def _cuda_facts(self) -> dict[str, Any]:
        """The CUDA provider's TF32 option as the session applied it, the cuDNN and cuBLAS it loaded
        and the GPU's clocks; what cannot be read is left out."""
        applied = self.session.get_provider_options().get(self.provider, {})
        use_tf32 = applied.get("use_tf32")
        uuid, index = visible_index(int(applied.get("device_id", 0) or 0))
        facts: dict[str, Any] = {
            "tf32_requested": self.options.tf32,
            "use_tf32": use_tf32,
            "tf32": None if use_tf32 is None else str(use_tf32) == "1",
            "cudnn": cudnn_version(),
            "cublas": cublas_version(),
            "gpu_clocks": gpu_clocks(uuid=uuid, index=index),
        }
        override = os.environ.get("NVIDIA_TF32_OVERRIDE")
        if override is not None:
            facts["nvidia_tf32_override"] = override
            if override == "0":
                facts["tf32"] = False
        return {k: v for k, v in facts.items() if v is not None}
