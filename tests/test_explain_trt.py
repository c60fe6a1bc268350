"""TensorRT engines in explain: the debug build from the build report, read back as debug tensors.

Nothing here executes a TensorRT engine (no GPU the TensorRT or TensorRT-RTX runtime supports on
CI). The localization logic runs against `FakeTensorRT`, a `DebugRuntime` that records what it was
asked to build and "runs" the built ONNX on ONNX Runtime with a fault of the test's choosing; the
real TensorRT-RTX builder builds a real debug plan of Silero (ahead of time, no GPU) and TensorRT's
own `is_debug_tensor` counts the marked tensors; the real run path is shown to stop with the one
sentence that says why.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import ConfigError, EngineLoadError, ExecutionUnavailable
from pytest_trtparity.explain.api import EngineSpec, explain_failure
from pytest_trtparity.explain.graph import prepare_graph
from pytest_trtparity.explain.intermediates import comparable, run_with_outputs, tensor_nodes
from pytest_trtparity.explain.trt_debug import (
    BuildSpec,
    DebugEngine,
    Marking,
    TensorRTRuntime,
    mark_intermediates,
    read_build_spec,
    source_tensor_names,
)
from pytest_trtparity.reference.reader import ReferenceReader
from pytest_trtparity.util.paths import package_file

from .conftest import SILERO_CONTRACT, SILERO_REF
from .test_explain_edits import conv_in_fp16, perturb, silero

P = "If_0_then_branch__Inline_0__"
NESTED = f"{P}/decoder/rnn/LSTM_output_1"  # inside If_0 > the decoder's If
PROFILE = {"input": {"min": [1, 576], "opt": [1, 576], "max": [1, 576]}}
UNFUSED = Marking(
    "unfused",
    (),
    "TensorRT debug tensors (unfused tensors marked): fusions as in the engine under test; fused tensors are not observed",
)


def _plan(tmp: Path, source: Path, **options: Any) -> Path:
    """A stand-in .plan with the build report the gate writes beside it (the fields explain reads)."""
    plan = tmp / "vad.plan"
    plan.write_bytes(b"not a plan: the fake runtime never reads it")
    report = {
        "tensorrt": {"version": "1.7.1.116", "flavour": "tensorrt-rtx"},
        "targets": ["8.9"],
        "profiles": [{"name": "stream", "shapes": PROFILE}],
        "options": {"precision": "fp32", "strongly_typed": True, "builder_flags": [], **options},
        "onnx": {"path": str(source)},
        "network": {
            "inputs": [
                {"name": "input", "dtype": "FLOAT", "shape": [-1, -1]},
                {"name": "sr", "dtype": "INT64", "shape": []},
                {"name": "state", "dtype": "FLOAT", "shape": [2, -1, 128]},
            ]
        },
    }
    (tmp / "vad.plan.build.json").write_text(json.dumps(report))
    return plan


class FakeTensorRT:
    """A `DebugRuntime`: `build` records the request, `run` computes the built ONNX on ONNX
    Runtime after `fault(model)` and returns every tensor as a debug tensor (TensorRT's names)."""

    def __init__(
        self, fault: Callable[[onnx.ModelProto], onnx.ModelProto], marking: Marking = UNFUSED
    ) -> None:
        self.fault = fault
        self.marking = marking
        self.builds: list[tuple[Path, int, Any]] = []
        self.runs = 0

    def build(self, spec: BuildSpec, onnx_path: Path, names: Sequence[str]) -> DebugEngine:
        self.builds.append((onnx_path, len(names), spec.request(onnx_path)))
        return DebugEngine(onnx_path.read_bytes(), self.marking, 0.5, spec)

    def run(
        self, engine: DebugEngine, feeds: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        self.runs += 1
        model = self.fault(onnx.load_from_string(engine.plan))
        prepared = prepare_graph(model, feeds).model
        names = [n.tensor for n in comparable(tensor_nodes(prepared))]
        values = run_with_outputs(prepared, feeds, [*names, "output", "stateN"], optimize=False)
        # the fault stands for a kernel: its own helper tensors are not observable
        debug = {k: v for k, v in values.items() if not k.endswith(("_raw", "_perturb"))}
        return {o: values[o] for o in ("output", "stateN")}, debug


def _records(index: int = 120) -> list[Any]:
    reader = ReferenceReader(SILERO_REF)
    return [r for i, r in zip(range(index + 1), reader, strict=False)][index:]


def _explain(tmp: Path, fake: FakeTensorRT, source: Path | None = None, **kw: Any) -> list[Any]:
    plan = _plan(tmp, source or silero())
    return explain_failure(
        EngineSpec(plan),
        source or silero(),
        load_contract(SILERO_CONTRACT),
        _records(),
        trt_runtime=fake,
        **kw,
    )


@pytest.mark.parametrize("tensor", [f"{P}/encoder/1/activation/Relu_output_0", NESTED])
def test_tensorrt_engine_is_localized_on_its_debug_tensors(tmp_path: Path, tensor: str) -> None:
    fake = FakeTensorRT(lambda m: perturb(m, tensor, "Mul", 1.5))
    (d,) = _explain(tmp_path, fake, outputs=["stateN"])
    assert d.first_divergence is not None and d.first_divergence.tensor == tensor
    assert d.output_error > d.tier
    assert any("fusions as in the engine under test" in n for n in d.notes)
    assert any("debug engine rebuilt by TensorRT-RTX from silero_vad.onnx" in n for n in d.notes)
    # built once, from the source the report names, with the report's options and targets
    (built, marked, request) = fake.builds[0]
    assert built == silero() and marked > 100
    assert request.compute_capabilities == ("8.9",) and request.strongly_typed
    assert [dict(p) for p in request.profiles] == [{"input": ((1, 576), (1, 576), (1, 576))}]


def test_clean_tensorrt_engine_has_nothing_to_explain(tmp_path: Path) -> None:
    fake = FakeTensorRT(lambda m: m)
    assert _explain(tmp_path, fake) == []  # no output over its fail tier on the replayed chunk
    (d,) = _explain(tmp_path, fake, outputs=["stateN"])
    assert d.first_divergence is None and d.output_error < d.tier


def test_a_fallback_that_changed_the_engine_is_said_in_the_notes(tmp_path: Path) -> None:
    changed = Marking(
        "output",
        ("x",),
        "this TensorRT has no debug tensors: intermediates were marked as extra outputs, which changed the engine (fusions)",
    )
    fake = FakeTensorRT(lambda m: perturb(m, NESTED, "Add", 0.1), marking=changed)
    (d,) = _explain(tmp_path, fake, outputs=["stateN"])
    assert any("which changed the engine" in n for n in d.notes)
    assert not any("fusions as in the engine under test" in n for n in d.notes)


def test_fp32_probe_rebuilds_from_the_edited_onnx_and_names_fp16(tmp_path: Path) -> None:
    """The source computes one conv in fp16; the fake TensorRT rounds it badly (x1.5) unless the
    probe's edit casts that conv up to fp32, which brings stateN back under the fail tier."""
    tensor = f"{P}/encoder/1/reparam_conv/Conv_output_0"
    source = tmp_path / "half_conv.onnx"
    onnx.save(conv_in_fp16(onnx.load(str(silero())), tensor), str(source))

    def fp16_kernel(model: onnx.ModelProto) -> onnx.ModelProto:
        edited = any(o.endswith("__fp32") for n in model.graph.node for o in n.output)
        return model if edited else perturb(model, tensor, "Mul", 1.5)

    fake = FakeTensorRT(fp16_kernel)
    (d,) = _explain(tmp_path, fake, source=source, outputs=["stateN"])
    assert d.first_divergence is not None and d.first_divergence.tensor == tensor
    (probe,) = d.probes
    assert len(fake.builds) == 2 and fake.builds[1][1] == 0  # the probe's rebuild marks nothing
    assert probe.explains and "fp16 precision is the likely cause" in probe.sentence, probe.sentence


def test_fp32_probe_does_not_apply_to_an_fp32_model(tmp_path: Path) -> None:
    fake = FakeTensorRT(lambda m: perturb(m, NESTED, "Mul", 1.5))
    (d,) = _explain(tmp_path, fake, outputs=["stateN"])
    assert d.first_divergence is not None and d.probes == () and len(fake.builds) == 1


# -- the build report ---------------------------------------------------------------------------


def test_build_spec_comes_from_the_report_and_says_which_field_is_wrong(tmp_path: Path) -> None:
    plan = _plan(tmp_path, silero(), workspace=1 << 30)
    spec = read_build_spec(plan)
    assert spec.source == silero() and spec.flavour == "tensorrt-rtx" and spec.targets == ("8.9",)
    assert spec.request(silero()).workspace == 1 << 30
    assert read_build_spec(plan, tmp_path / "other.onnx").source == tmp_path / "other.onnx"
    with pytest.raises(
        EngineLoadError,
        match=r"missing\.plan\.build\.json: not found; a TensorRT engine is localized through its build report",
    ):
        read_build_spec(tmp_path / "missing.plan")
    raw = json.loads((tmp_path / "vad.plan.build.json").read_text())
    del raw["network"]
    (tmp_path / "vad.plan.build.json").write_text(json.dumps(raw))
    with pytest.raises(EngineLoadError, match=r"field 'network\.inputs' is missing"):
        read_build_spec(plan)
    _plan(tmp_path, silero(), precision="int8")
    with pytest.raises(ConfigError, match="int8 engines are not localized"):
        read_build_spec(plan)


# -- the real TensorRT-RTX builder, and the run that cannot happen here ------------------------------

needs_rtx = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt_rtx_bindings") is None,
    reason="TensorRT-RTX not installed: pip install tensorrt-rtx-cu13-libs==1.7.1.116 tensorrt-rtx-cu13-bindings==1.7.1.116",
)


@pytest.fixture(scope="module")
def ifless() -> Path:
    return package_file("pkg:silero_vad/data/silero_vad_op18_ifless.onnx")


@needs_rtx
def test_real_rtx_debug_build_marks_the_source_tensors(tmp_path: Path, ifless: Path) -> None:
    from pytest_trtparity.trt import api
    from pytest_trtparity.trt.build import BuildOptions, build_engine

    options = BuildOptions(
        builder="tensorrt-rtx", compute_capabilities=("8.9",), profiles=("stream",)
    )
    plan = tmp_path / "vad.plan"  # the engine under test, with the build report the gate writes
    build_engine(ifless, load_contract(SILERO_CONTRACT), options, output=plan, cache_dir=tmp_path)
    spec = read_build_spec(plan)
    assert spec.source == ifless and spec.targets == ("8.9",) and len(spec.profiles) == 1
    names = source_tensor_names(onnx.load(str(ifless)))
    by_name = TensorRTRuntime(prefer="debug").build(spec, ifless, names)
    assert by_name.marking.mode == "debug" and len(by_name.plan) > 1_000_000
    # TensorRT's own is_debug_tensor agrees with the count, on a freshly parsed network
    trt = api.import_builder("tensorrt-rtx")
    parsed = api.parse_network(trt, str(ifless), api.new_logger(trt))
    marking = mark_intermediates(parsed.network, names, prefer="debug")
    tensors = api.network_tensors(parsed.network)
    debug = [n for n, t in tensors.items() if api.is_debug_tensor(parsed.network, t)]
    assert sorted(debug) == sorted(marking.marked) and len(debug) == len(by_name.marking.marked)
    # every source tensor the parser kept under its ONNX name (97 of 107 on this file) is marked
    assert debug and len(debug) == len([n for n in names if n in tensors]) == 97
    assert not any(
        api.is_debug_tensor(parsed.network, t) for n, t in tensors.items() if n not in debug
    )
    unfused = TensorRTRuntime().build(spec, ifless, names)
    assert unfused.marking.mode == "unfused" and len(unfused.plan) > 1_000_000


def test_real_run_without_a_gpu_says_the_debug_engine_was_built_but_could_not_run(
    tmp_path: Path,
) -> None:
    spec = read_build_spec(_plan(tmp_path, silero()))
    built = DebugEngine(b"plan bytes", UNFUSED, 12.34, spec)
    with pytest.raises(ExecutionUnavailable) as info:
        TensorRTRuntime().run(built, {})
    text = str(info.value)
    assert text.startswith(
        f"{spec.engine}: the debug engine was built (12.3 s) but could not run: "
    )
    assert "\n" not in text and "trtparity-debug-" not in text  # no temporary path
