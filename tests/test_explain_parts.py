"""The explain package's parts on small inputs: localization rules, renderers, plot, command,
PyTorch hooks, TensorRT debug tensors (against a fake network and context) and the TF32 switch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.cli import build_parser
from pytest_trtparity.commands import explain as explain_cmd
from pytest_trtparity.errors import ConfigError, EngineLoadError
from pytest_trtparity.explain.diagnosis import Diagnosis, FirstDivergence, LayerError, Probe
from pytest_trtparity.explain.intermediates import TensorNode
from pytest_trtparity.explain.localize import chain, first_divergence, layer_errors, tensor_error
from pytest_trtparity.explain.names import match_names, module_of_name, strip_inline
from pytest_trtparity.explain.plot import plot_layers
from pytest_trtparity.explain.probes import sentence, tf32, tf32_probe
from pytest_trtparity.explain.render import render_line, render_markdown
from pytest_trtparity.explain.trt_debug import attach, make_listener, mark_intermediates

from .test_explain_edits import ROOT, silero


def _node(tensor: str, inputs: tuple[str, ...], op: str = "Relu") -> TensorNode:
    return TensorNode(tensor, f"/m/{tensor}/{op}", op, f"m.{tensor}", inputs, 1)


NODES = [_node("a", ("x",)), _node("b", ("a",)), _node("c", ("b",)), _node("y", ("c",))]


def _layers(errors: dict[str, float]) -> list[LayerError]:
    ref = {n.tensor: np.zeros(3) for n in NODES}
    got = {k: np.full(3, v) for k, v in errors.items()}
    return layer_errors(NODES, ref, got, {"x": 0.0})


def test_first_over_the_tier_is_named() -> None:
    layers = _layers({"a": 0.0, "b": 0.0, "c": 2.0, "y": 3.0})
    first = first_divergence(layers, 1.0, {n.tensor: n.inputs for n in NODES}, {})
    assert first is not None and first.tensor == "c" and "where its inputs agree" in first.reason


def test_a_10x_jump_under_the_tier_is_named_before_the_tier_crossing() -> None:
    layers = _layers({"a": 1e-3, "b": 0.05, "c": 0.2, "y": 2.0})
    first = first_divergence(layers, 1.0, {n.tensor: n.inputs for n in NODES}, {})
    assert first is not None and first.tensor == "b"
    assert first.inputs_error == pytest.approx(1e-3) and "50x" in first.reason


def test_noise_and_slow_growth_are_not_divergence() -> None:
    # 5x steps never jump 10x, and everything stays under the tier: nothing to name
    layers = _layers({"a": 1e-4, "b": 5e-4, "c": 2.5e-3, "y": 1.25e-2})
    assert first_divergence(layers, 1.0, {}, {}) is None
    # exact zeros upstream and a noise-level error under the floor: nothing either
    layers = _layers({"a": 0.0, "b": 1e-9, "c": 1e-9, "y": 1e-9})
    assert first_divergence(layers, 1.0, {}, {}) is None


def test_tensors_without_engine_counterpart_pass_their_inputs_error_on() -> None:
    ref = {n.tensor: np.zeros(3) for n in NODES}
    got = {"a": np.full(3, 0.5), "c": np.full(3, 0.6), "y": np.full(3, 0.6)}
    layers = layer_errors(NODES, ref, got, {"x": 0.0})
    assert [x.tensor for x in layers] == ["a", "c", "y"]
    assert layers[1].inputs_error == pytest.approx(0.5)  # through the unobserved b


def test_tensor_error_metrics_and_mismatches() -> None:
    a, b = np.array([1.0, 2.0]), np.array([1.5, 2.0])
    assert tensor_error(a, b) == 0.5
    assert tensor_error(a, b, "mean_abs") == 0.25
    assert tensor_error(a, b, "max_rel") == 0.5
    assert tensor_error(a, np.zeros(3)) == math.inf
    assert tensor_error(a, np.array([1.0, np.nan])) == math.inf


def test_chain_is_the_path_to_the_output() -> None:
    assert chain(NODES, "b", "y") == ("b", "c", "y")
    assert chain(NODES, "y", "a") == ("y",)


def test_names() -> None:
    assert module_of_name("/encoder/1/activation/Relu") == "encoder.1.activation"
    assert module_of_name("If_0_If_0_then_branch__Inline_0__/decoder/rnn/LSTM") == "decoder.rnn"
    assert module_of_name("Relu_3") == ""
    assert strip_inline("If_0_then_branch__Inline_0__/x") == "/x"
    got = match_names(["If_0_then_branch__Inline_0__/x", "/y", "/z"], ["/x", "/y"])
    assert got == {"If_0_then_branch__Inline_0__/x": "/x", "/y": "/y"}


def _diagnosis(first: bool = True) -> Diagnosis:
    layers = tuple(
        LayerError(f"/m/t{i}", f"/m/n{i}", "Conv", "m", e, 0.0)
        for i, e in enumerate([0.0, 0.0, 2e-5, 4e-3, 8e-3])
    )
    fd = FirstDivergence(
        "/m/t2", "/m/n2", "Conv", "m", 2e-5, 5e-3, 0.0, "error 2e-05 where its inputs agree exactly"
    )
    probe = Probe(
        "TF32 off",
        6.36e-3,
        2.5e-5,
        5e-3,
        sentence("TF32 off", 6.36e-3, 2.5e-5, 5e-3, "TF32"),
        False,
    )
    return Diagnosis(
        "functional",
        "stateN",
        "default#212",
        "max_abs",
        6.36e-3,
        5e-3,
        fd if first else None,
        ("/m/t2", "/m/t3", "stateN") if first else (),
        (probe,) if first else (),
        layers,
    )


def test_probe_sentence_has_the_issue_shape() -> None:
    assert (
        sentence("TF32 off", 6.36e-3, 2.5e-5, 5e-3, "TF32")
        == "with TF32 off the error falls from 0.00636 to 2.5e-05, under the fail tier 0.005: TF32 is the likely cause"
    )
    assert "not the cause" in sentence("x", 1.0, 1.0, 0.5, "x")
    assert "not the whole cause" in sentence("x", 1.0, 0.9, 0.5, "x")


def test_renderers() -> None:
    line = render_line(_diagnosis())
    assert line.startswith(
        "explain functional 'stateN' on chunk default#212: first divergence at /m/t2"
    )
    assert "TF32 is the likely cause" in line and "\n" not in line
    md = render_markdown(_diagnosis(), plot="plots/explain.png")
    assert "| tensor | `/m/t2` |" in md and "`/m/t2` → `/m/t3` → `stateN`" in md
    assert "![error per layer](plots/explain.png)" in md
    assert "no intermediate tensor diverges" in render_line(_diagnosis(first=False))


def test_plot_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    data = plot_layers(_diagnosis(), out)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and out.read_bytes() == data
    assert plot_layers(_diagnosis(first=False))[:4] == b"\x89PNG"
    broken = Diagnosis.from_json(
        {
            **_diagnosis().to_json(),
            "layers": [{**_diagnosis().layers[0].to_json(), "error": "Infinity"}],
        }
    )
    assert plot_layers(broken)[:4] == b"\x89PNG"  # an infinite error still plots


def test_parse_chunk() -> None:
    assert explain_cmd.parse_chunk("12") == ("default", 12)
    assert explain_cmd.parse_chunk("speech#212") == ("speech", 212)
    for bad in ("x", "a#-1"):
        with pytest.raises(ConfigError, match="--chunk"):
            explain_cmd.parse_chunk(bad)


def _args(tmp_path: Path, engine: str, chunk: str = "120", *extra: str) -> Any:
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    explain_cmd.register(sub)
    parser = build_parser()
    del parser
    root = argparse.ArgumentParser()
    explain_cmd.register(root.add_subparsers())
    return root.parse_args(
        [
            "explain",
            "--engine",
            engine,
            "--onnx",
            str(silero()),
            "--contract",
            str(ROOT / "contracts" / "silero_vad.contract.json"),
            "--ref",
            str(ROOT / "references" / "silero_vad_300.jsonl"),
            "--chunk",
            chunk,
            "--json",
            str(tmp_path / "d.json"),
            "--plot",
            str(tmp_path),
            *extra,
        ]
    )


def test_command_on_the_half_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(tmp_path, str(silero("silero_vad_half.onnx")), "120", "--output", "stateN")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "first divergence at /encoder/0/reparam_conv/Conv_output_0" in out
    body = json.loads((tmp_path / "d.json").read_text())
    assert body["diagnosis"][0]["first_divergence"]["op_type"] == "Conv"
    assert (tmp_path / "explain-functional-stateN.png").is_file()


def test_command_closed_loop_on_a_clean_engine_has_nothing_to_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(tmp_path, str(silero()), "5", "--closed-loop")
    assert args.func(args) == 0
    assert "no output fails on chunk default#5 (closed_loop)" in capsys.readouterr().out


def test_command_rejects_engines_it_cannot_open(tmp_path: Path) -> None:
    args = _args(tmp_path, str(tmp_path / "e.plan"))
    with pytest.raises(EngineLoadError, match="localized through its build report"):
        args.func(args)  # a TensorRT plan without its build report: no source, no build options
    args = _args(tmp_path, str(silero()), "9999")
    with pytest.raises(ConfigError, match="no chunk default#9999"):
        args.func(args)


# -- PyTorch forward hooks ---------------------------------------------------------------------


# Module capture and matching: tests/test_explain_torch.py.


# -- TensorRT debug tensors against a fake ------------------------------------------------------


class _Tensor:
    def __init__(self, name: str) -> None:
        self.name = name


class _Layer:
    def __init__(self, name: str) -> None:
        self.num_outputs = 1
        self._out = _Tensor(name)

    def get_output(self, i: int) -> _Tensor:
        return self._out


class _Network:
    def __init__(self, names: list[str]) -> None:
        self.layers = [_Layer(n) for n in names]
        self.num_layers = len(names)
        self.debug: list[str] = []
        self.outputs: list[str] = []

    def get_layer(self, i: int) -> _Layer:
        return self.layers[i]

    def mark_debug(self, tensor: _Tensor) -> bool:
        self.debug.append(tensor.name)
        return True

    def mark_output(self, tensor: _Tensor) -> None:
        self.outputs.append(tensor.name)


def test_trt_marks_debug_tensors_not_outputs() -> None:
    net = _Network(["/a", "/b", "/c"])
    marking = mark_intermediates(net, ["/a", "/c", "/missing"])
    assert marking.mode == "debug" and marking.marked == ("/a", "/c")
    assert net.debug == ["/a", "/c"] and net.outputs == []
    assert "may stay unfused" in marking.note


def test_trt_prefers_unfused_marking_which_keeps_fusions() -> None:
    net = _Network(["/a"])
    net.mark_unfused_tensors_as_debug_tensors = lambda: True  # type: ignore[attr-defined]
    marking = mark_intermediates(net, ["/a"])
    assert (
        marking.mode == "unfused" and net.debug == [] and "fusions as in the engine" in marking.note
    )


def test_trt_without_debug_tensors_falls_back_to_outputs_and_says_the_engine_changed() -> None:
    net = _Network(["/a", "/b"])
    del _Network.mark_debug
    try:
        marking = mark_intermediates(net, ["/b"])
    finally:
        _Network.mark_debug = lambda self, t: self.debug.append(t.name) or True  # type: ignore[attr-defined,func-returns-value]
    assert (
        marking.mode == "output" and net.outputs == ["/b"] and "changed the engine" in marking.note
    )


def test_trt_listener_copies_each_debug_tensor() -> None:
    class IDebugListener:  # stands in for tensorrt.IDebugListener
        def __init__(self) -> None:
            pass

    calls: list[tuple[int, int]] = []

    def copy(addr: int, nbytes: int, dtype: Any, shape: tuple[int, ...], stream: Any) -> np.ndarray:
        calls.append((addr, nbytes))
        return np.zeros(shape, dtype)

    listener = make_listener(IDebugListener, copy, lambda t: np.dtype(np.float32))
    assert isinstance(listener, IDebugListener)
    assert listener.process_debug_tensor(0x10, "device", "float", (2, 3), "/a", None) is True
    assert calls == [(0x10, 24)] and listener.tensors["/a"].shape == (2, 3)
    context = SimpleNamespace(
        listeners=[],
        states=[],
        set_debug_listener=lambda x: context.listeners.append(x),
        set_tensor_debug_state=lambda n, on: context.states.append((n, on)),
    )
    attach(context, listener, ["/a"])
    assert context.listeners == [listener] and context.states == [("/a", True)]


# -- TF32 ----------------------------------------------------------------------------------------


def _fake_torch(on: bool) -> Any:
    """The flags of PyTorch before 2.9 (no per-operation precisions)."""
    precision = {"value": "high" if on else "highest"}
    return SimpleNamespace(
        backends=SimpleNamespace(
            cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=on)),
            cudnn=SimpleNamespace(allow_tf32=on),
        ),
        get_float32_matmul_precision=lambda: precision["value"],
        set_float32_matmul_precision=lambda v: precision.update(value=v),
    )


def test_tf32_switch_is_restored_even_on_error() -> None:
    torch = _fake_torch(True)
    with pytest.raises(RuntimeError), tf32(False, torch):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        raise RuntimeError
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_tf32_probe_names_tf32_when_turning_it_off_fixes_the_output() -> None:
    torch = _fake_torch(True)
    expected = np.zeros(4, np.float32)

    def run() -> dict[str, np.ndarray]:  # a model whose error comes from TF32 alone
        error = 6.36e-3 if torch.backends.cudnn.allow_tf32 else 2.5e-5
        return {"stateN": expected + error}

    probe = tf32_probe(run, "stateN", expected, 6.36e-3, 5e-3, torch=torch)
    assert probe.explains and not probe.changed_engine
    assert probe.sentence.endswith("under the fail tier 0.005: TF32 is the likely cause")

    def run_other() -> dict[str, np.ndarray]:  # error from something else: TF32 off changes nothing
        return {"stateN": expected + 6.36e-3}

    assert not tf32_probe(run_other, "stateN", expected, 6.36e-3, 5e-3, torch=torch).explains
