"""PyTorch engines in explain: module outputs captured by module path (TorchScript graph taps,
forward hooks), matched to the source ONNX's nodes, and the first divergence named by module.

Every case compares a perturbed torch copy with the ONNX export of the clean model, and the clean
copy must name nothing: the perturbation (one submodule's weights scaled) is far above the
float32 difference between PyTorch and ONNX Runtime on the CPU (about 1e-6 here), so the checks
do not depend on which CPU computes them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_trtparity.explain.names import module_of_name, module_of_scopes
from pytest_trtparity.explain.probes import sentence

from .test_explain_edits import ROOT, silero

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

SILERO_REF = ROOT / "references" / "silero_vad_300.jsonl"
SILERO_CONTRACT = ROOT / "contracts" / "silero_vad.contract.json"


# -- names -------------------------------------------------------------------------------------


def test_exporter_scopes_give_the_torch_module_path() -> None:
    # the TorchScript exporter repeats a container child's full path (`encoder.0`) as a segment
    assert module_of_name("/encoder/encoder.0/proj/Gemm") == "encoder.0.proj"
    assert module_of_name("If_0_then_branch__Inline_0__/encoder/0/reparam_conv/Conv") == (
        "encoder.0.reparam_conv"
    )
    assert module_of_name("/Squeeze") == ""
    # the dynamo exporter's name_scopes: each module's full path, then the op
    assert (
        module_of_scopes(["encoder", "encoder.0", "encoder.0.proj", "linear"]) == "encoder.0.proj"
    )
    assert module_of_scopes(["head", "linear_3"]) == "head"


# -- a small model exported in the test --------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.act = torch.nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(Block(), Block(), Block())
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _net() -> Any:
    torch.manual_seed(0)
    return Net().eval()


def _export(model: Any, path: Path, dynamo: bool) -> Any:
    torch.onnx.export(
        model,
        (torch.zeros(1, 8),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamo=dynamo,
    )
    return onnx.load(str(path))


def _perturbed(model: Any, module: str | None) -> Any:
    other = copy.deepcopy(model)
    if module is not None:
        with torch.no_grad():
            other.get_submodule(module).weight.mul_(1.5)
    return other


def _script_backend(model: Any, tmp: Path) -> Any:
    from pytest_trtparity.backends import open_backend

    path = tmp / "net.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    specs = {"x": ("float32", (1, 8)), "y": ("float32", (1, 2))}
    return open_backend(path, "torch", input_names=("x",), output_names=("y",), specs=specs).load()


def _diagnose(source: Any, backend: Any, x: np.ndarray, expected: np.ndarray) -> Any:
    from pytest_trtparity.explain.run import Chunk, explain_chunk
    from pytest_trtparity.explain.torch_hooks import TorchTaps

    chunk = Chunk("default#0", {"x": x}, {"x": x}, {"y": expected})
    return explain_chunk(
        source=source, engine=TorchTaps(backend), chunk=chunk, output="y", tier=1e-3
    )


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
@pytest.mark.parametrize("module", ["encoder.1.proj", "head", None])
def test_perturbed_torchscript_submodule_is_named(
    tmp_path: Path, dynamo: bool, module: str | None
) -> None:
    model = _net()
    source = _export(model, tmp_path / "net.onnx", dynamo)
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    backend = _script_backend(_perturbed(model, module), tmp_path)
    try:
        d = _diagnose(source, backend, x, expected)
    finally:
        backend.close()
    modules = {layer.module for layer in d.layers}
    assert {"encoder.0.proj", "encoder.2.act", "head"} <= modules  # every module was observed
    if module is None:
        assert d.first_divergence is None and d.output_error < 1e-5
        return
    assert d.first_divergence is not None
    assert d.first_divergence.module == module
    assert d.first_divergence.op_type == "Gemm"
    assert d.first_divergence.inputs_error < 1e-5  # what feeds it still agrees


def test_forward_hooks_capture_a_python_module_by_path() -> None:
    from pytest_trtparity.explain.torch_hooks import capture_modules

    model = _net()
    x = torch.ones(1, 8)
    with torch.no_grad():
        result, captured = capture_modules(model, [x])
        want = model.encoder[0].proj(x).numpy()
    np.testing.assert_allclose(captured["encoder.0.proj"][0], want, rtol=1e-6)
    np.testing.assert_array_equal(captured["head"][0], result.numpy())
    assert not model.encoder[0].proj._forward_hooks  # hooks removed after the run


def test_torchscript_taps_see_submodules_inside_both_branches_of_an_if() -> None:
    from pytest_trtparity.explain.torch_hooks import capture_script

    class Gate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, flag: bool) -> torch.Tensor:
            y = self.cell(x) if flag else self.cell(x * 2.0)  # a prim::If in TorchScript
            return y + 1.0

    scripted = torch.jit.script(Gate().eval())
    x = torch.ones(1, 4)
    with torch.no_grad():
        result, captured = capture_script(scripted, [x, False])
        want = scripted.cell(x * 2.0).numpy()
    np.testing.assert_allclose(captured["cell"][0], want, rtol=1e-6)
    np.testing.assert_allclose(result.numpy(), want + 1.0, rtol=1e-6)


def test_module_output_is_matched_to_the_nearest_tensor_of_that_module() -> None:
    from pytest_trtparity.explain.intermediates import TensorNode
    from pytest_trtparity.explain.torch_hooks import match_module_outputs

    nodes = [
        TensorNode("h_lstm", "/rnn/LSTM", "LSTM", "rnn", ("x",), 1),
        TensorNode("c_lstm", "/rnn/LSTM", "LSTM", "rnn", ("x",), 1),
        TensorNode("h", "/rnn/Squeeze", "Squeeze", "rnn", ("h_lstm",), 1),
        TensorNode("other", "/head/Gemm", "Gemm", "head", ("h",), 1),
    ]
    h, c = np.full((1, 1, 4), 0.5, np.float32), np.full((1, 1, 4), -2.0, np.float32)
    reference = {"h_lstm": h, "c_lstm": c, "h": h.reshape(1, 4), "other": h.reshape(1, 4)}
    got = match_module_outputs({"rnn": [h.reshape(1, 4) + 1e-4, c.reshape(1, 4)]}, nodes, reference)
    # h ties between the LSTM's output and the Squeeze after it: the earliest (the LSTM) wins;
    # `other` has the same values but belongs to another module
    assert sorted(got) == ["c_lstm", "h_lstm"]
    assert got["h_lstm"].shape == (1, 1, 4)


# -- Silero's TorchScript against silero_vad.onnx ----------------------------------------------


def _silero_jit(tmp: Path, module: str | None) -> Path:
    model = torch.jit.load(str(silero("silero_vad.jit")))
    if module is not None:
        with torch.no_grad():
            dict(model._model.named_modules())[module].weight.mul_(1.02)
    path = tmp / "silero.jit"
    torch.jit.save(model, str(path))
    return path


def _records(index: int) -> list[Any]:
    from pytest_trtparity.reference.reader import ReferenceReader

    return [r for r in ReferenceReader(SILERO_REF) if r.chunk_index == index]


def test_silero_torchscript_modules_map_to_the_onnx_nodes(tmp_path: Path) -> None:
    from pytest_trtparity.contract.model import load_contract
    from pytest_trtparity.explain.api import EngineSpec, explain_failure

    spec = EngineSpec(_silero_jit(tmp_path, None), entry="_model")
    contract = load_contract(SILERO_CONTRACT)
    records = _records(120)
    assert explain_failure(spec, silero(), contract, records) == []  # the clean model fails nothing
    (d,) = explain_failure(spec, silero(), contract, records, outputs=["stateN"])
    assert d.first_divergence is None
    by_module = {layer.module: layer.tensor.rsplit("__", 1)[-1] for layer in d.layers}
    assert by_module["stft"] == "/stft/Sqrt_output_0"
    assert by_module["encoder.3.reparam_conv"] == "/encoder/3/reparam_conv/Conv_output_0"
    assert by_module["decoder.decoder.3"] == "/decoder/decoder/3/Sigmoid_output_0"
    rnn = sorted(
        layer.tensor.rsplit("/", 1)[-1] for layer in d.layers if layer.module == "decoder.rnn"
    )
    assert rnn == ["LSTM_output_1", "LSTM_output_2"]  # the cell's h and c, inside the decoder's If
    assert len(d.layers) == 16
    assert max(layer.error for layer in d.layers) < 1e-4  # fp32 CPU vs ONNX Runtime


def test_perturbed_silero_torchscript_is_named_by_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_trtparity.cli import main

    path = _silero_jit(tmp_path, "encoder.2.reparam_conv")
    json_out = tmp_path / "d.json"
    code = main(
        [
            "explain",
            "--engine",
            str(path),
            "--entry",
            "_model",
            "--onnx",
            str(silero()),
            "--contract",
            str(SILERO_CONTRACT),
            "--ref",
            str(SILERO_REF),
            "--chunk",
            "120",
            "--output",
            "stateN",
            "--json",
            str(json_out),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Conv /encoder/2/reparam_conv/Conv (module encoder.2.reparam_conv)" in out
    assert "PyTorch TorchScript graph taps" in json_out.read_text()


def test_auto_chunk_needs_one_output(tmp_path: Path) -> None:
    from pytest_trtparity.cli import build_parser
    from pytest_trtparity.errors import ConfigError

    args = build_parser().parse_args(
        [
            "explain",
            "--engine",
            str(_silero_jit(tmp_path, None)),
            "--entry",
            "_model",
            "--onnx",
            str(silero()),
            "--contract",
            str(SILERO_CONTRACT),
            "--ref",
            str(SILERO_REF),
            "--chunk",
            "auto",
        ]
    )
    with pytest.raises(ConfigError, match="auto needs exactly one --output"):
        args.func(args)


def test_chunk_that_matters() -> None:
    from pytest_trtparity.explain.api import chunk_that_matters

    errors = [1e-4, 6e-3, 2e-2, 1e-3]
    assert chunk_that_matters(errors, 5e-3, closed_loop=True) == 1  # the first over the tier
    assert chunk_that_matters(errors, 5e-3, closed_loop=False) == 2  # the worst
    assert chunk_that_matters([1e-4, 3e-4], 5e-3, closed_loop=True) == 1  # none over: the worst


def test_probe_sentence_when_the_chunk_was_under_the_tier() -> None:
    text = sentence("TF32 off", 3.34e-3, 1.91e-6, 5e-3, "TF32")
    assert text == (
        "with TF32 off the error falls from 0.00334 to 1.91e-06 (the chunk was already under the "
        "fail tier 0.005): TF32 is the likely cause of the error"
    )
    assert "part of the cause" in sentence("TF32 off", 3e-3, 1e-3, 5e-3, "TF32")
    assert "under the fail tier 0.005: TF32 is the likely cause" in sentence(
        "TF32 off", 6.36e-3, 2.5e-5, 5e-3, "TF32"
    )
