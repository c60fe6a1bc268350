"""Localization and probes on engines with one known fault: the diagnosis must name exactly it."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.explain import Diagnosis
from pytest_trtparity.explain.engines import OnnxTaps
from pytest_trtparity.explain.graph import prepare_graph
from pytest_trtparity.explain.run import Chunk, explain_chunk, onnx_probes
from pytest_trtparity.reference.reader import ReferenceReader

from .test_explain_edits import ROOT, conv_in_fp16, onnx, perturb, silero

SILERO_REF = ROOT / "references" / "silero_vad_300.jsonl"
ENCODER_ONNX = ROOT / "references" / "encoder_streaming" / "encoder_streaming_small.onnx"
ENCODER_REF = ROOT / "references" / "encoder_streaming_small_50.jsonl"
ENCODER_CONTRACT = ROOT / "contracts" / "encoder_streaming_small.contract.json"
P = "If_0_then_branch__Inline_0__"
#: One tensor per depth: the STFT, the encoder, the decoder (inside If_0's selected branch), and
#: the LSTM's state inside the nested decoder If (two Ifs deep), and a branch output of the
#: decoder's own If (its name survives only because preparation adopts the branch's names).
SILERO_TENSORS = [
    f"{P}/stft/Pow_output_0",
    f"{P}/encoder/1/activation/Relu_output_0",
    f"{P}/encoder/3/reparam_conv/Conv_output_0",
    f"{P}/decoder/rnn/LSTM_output_1",
    f"{P}/decoder/Squeeze_output_0",
]


def _record(path: Path, index: int):  # type: ignore[no-untyped-def]
    return next(itertools.islice(ReferenceReader(path), index, None))


def _chunk(path: Path, index: int) -> Chunk:
    rec = _record(path, index)
    return Chunk(
        f"{rec.stream}#{rec.chunk_index}", dict(rec.inputs), dict(rec.inputs), dict(rec.outputs)
    )


def _diagnose(
    source, engine, chunk: Chunk, output: str, tier: float, probes: bool = False
) -> Diagnosis:  # type: ignore[no-untyped-def]
    return explain_chunk(
        source=source,
        engine=OnnxTaps(engine),
        chunk=chunk,
        output=output,
        tier=tier,
        probes=onnx_probes(engine, source, chunk, output) if probes else (),
    )


@pytest.fixture(scope="module")
def silero_src():  # type: ignore[no-untyped-def]
    return onnx.load(str(silero()))


@pytest.fixture(scope="module")
def silero_chunk() -> Chunk:
    return _chunk(SILERO_REF, 120)


def test_preparation_inlines_every_if_the_chunk_selects(silero_src, silero_chunk) -> None:  # type: ignore[no-untyped-def]
    prepared = prepare_graph(silero_src, silero_chunk.feeds)
    assert not [n for n in prepared.model.graph.node if n.op_type == "If"]
    assert len(prepared.selected) >= 3  # If_0, decoder/If_1 and the Ifs below them
    outs = {o for n in prepared.model.graph.node for o in n.output}
    assert set(SILERO_TENSORS) <= outs
    assert silero_src.graph.node[-3].op_type == "If"  # the source itself is left as it was


@pytest.mark.parametrize("tensor", SILERO_TENSORS)
@pytest.mark.parametrize(("op", "value"), [("Mul", 1.25), ("Add", 0.05)])
def test_silero_perturbation_is_named_exactly(silero_src, silero_chunk, tensor, op, value) -> None:  # type: ignore[no-untyped-def]
    bad = perturb(silero_src, tensor, op, value)
    d = _diagnose(silero_src, bad, silero_chunk, "stateN", 5e-3)
    assert d.first_divergence is not None
    assert d.first_divergence.tensor == tensor
    assert d.chain[0] == tensor and d.chain[-1] == "stateN"
    assert d.first_divergence.inputs_error < d.first_divergence.error


def test_silero_clean_engine_has_no_first_divergence(silero_src, silero_chunk) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    d = _diagnose(silero_src, silero_src, silero_chunk, "stateN", 5e-3, probes=True)
    assert time.perf_counter() - start < 20  # "within seconds" on a loaded 2-core CPU
    assert d.first_divergence is None and d.chain == () and d.probes == ()
    assert d.output_error < 1e-4
    assert len(d.layers) > 40  # it did look inside the If branches


def test_module_path_comes_from_the_exporter_name(silero_src, silero_chunk) -> None:  # type: ignore[no-untyped-def]
    bad = perturb(silero_src, SILERO_TENSORS[1], "Mul", 1.25)
    d = _diagnose(silero_src, bad, silero_chunk, "stateN", 5e-3)
    assert d.first_divergence is not None
    # the perturbing Mul is named `perturb_Mul`; the Relu before it carries the module path
    relu = next(x for x in d.layers if x.op_type == "Relu")
    assert relu.module == "encoder.0.activation"


def test_half_model_is_localized_and_its_cause_named(silero_src, silero_chunk) -> None:  # type: ignore[no-untyped-def]
    half = onnx.load(str(silero("silero_vad_half.onnx")))
    chunk = Chunk(
        silero_chunk.label,
        {k: v for k, v in silero_chunk.feeds.items() if k != "sr"},
        silero_chunk.reference_feeds,
        silero_chunk.expected,
    )
    d = _diagnose(silero_src, half, chunk, "stateN", 5e-3, probes=True)
    assert d.output_error > 5e-3
    assert d.first_divergence is not None
    assert d.first_divergence.tensor == f"{P}/encoder/0/reparam_conv/Conv_output_0"
    assert d.first_divergence.module == "encoder.0.reparam_conv"
    # silero_vad_half.onnx computes in float32: no fp16 probe applies; its weights differ
    assert not any("fp16" in p.setting for p in d.probes)
    (weights,) = [p for p in d.probes if "constant" in p.setting]
    assert weights.explains and "weight mismatch is the likely cause" in weights.sentence


def test_fp16_node_gets_a_probe_naming_fp16(silero_src, silero_chunk) -> None:  # type: ignore[no-untyped-def]
    tensor = f"{P}/encoder/1/reparam_conv/Conv_output_0"
    half = conv_in_fp16(silero_src, tensor)
    tier = 1e-5  # fp16 rounding of one conv moves stateN by about 1e-4 on this chunk
    d = _diagnose(silero_src, half, silero_chunk, "stateN", tier, probes=True)
    assert d.first_divergence is not None and d.first_divergence.tensor == tensor
    (fp16,) = [p for p in d.probes if "fp16" in p.setting]
    assert fp16.explains, fp16.sentence
    assert "fp16 precision is the likely cause" in fp16.sentence


def test_encoder_perturbations_are_named_exactly() -> None:
    src = onnx.load(str(ENCODER_ONNX))
    contract = load_contract(ENCODER_CONTRACT)
    chunk = _chunk(ENCODER_REF, 3)
    prepared = prepare_graph(src, chunk.feeds).model
    floats = [
        n.output[0]
        for n in prepared.graph.node
        if n.op_type in ("MatMul", "Conv", "Add", "Relu", "Softmax", "Mul")
    ]
    assert len(floats) >= 6
    picks = [floats[1], floats[len(floats) // 2], floats[-2]]
    output = "encoder_output"
    tier = contract.tolerance(output).chunk.fail  # type: ignore[union-attr]
    clean = _diagnose(src, src, chunk, output, tier)
    assert clean.first_divergence is None
    for tensor in picks:
        d = _diagnose(src, perturb(src, tensor, "Add", 0.5), chunk, output, tier)
        assert d.first_divergence is not None, tensor
        assert d.first_divergence.tensor == tensor


def test_diagnosis_json_round_trips_and_matches_the_schema(silero_src, silero_chunk) -> None:  # type: ignore[no-untyped-def]
    jsonschema = pytest.importorskip("jsonschema")
    half = onnx.load(str(silero("silero_vad_half.onnx")))
    chunk = Chunk(
        silero_chunk.label,
        {k: v for k, v in silero_chunk.feeds.items() if k != "sr"},
        silero_chunk.reference_feeds,
        silero_chunk.expected,
    )
    d = _diagnose(silero_src, half, chunk, "stateN", 5e-3, probes=True)
    raw = json.loads(json.dumps(d.to_json()))
    schema = json.loads(
        (ROOT / "pytest_trtparity" / "explain" / "diagnosis.schema.json").read_text()
    )
    jsonschema.validate(raw, schema)
    assert Diagnosis.from_json(raw) == d
    raw["first_divergence"].pop("tensor")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)


def test_inf_and_nan_travel_as_strings() -> None:
    from pytest_trtparity.explain.diagnosis import Probe

    p = Probe("x", float("inf"), float("nan"), 1.0, "s")
    raw = p.to_json()
    assert raw["error_before"] == "Infinity" and raw["error_after"] == "NaN"
    back = Probe.from_json(raw)
    assert back.error_before == float("inf") and np.isnan(back.error_after)
