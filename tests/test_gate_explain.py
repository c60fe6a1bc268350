"""--trt-explain through the gate as users run it (pytester on the bundled suites and Silero).

A failing engine gets a diagnosis per failing output (summary.json, report.md, the terminal, a
per-layer plot); a clean one gets none; explaining never changes the verdict.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnx")

from pytest_trtparity.artifacts.summary import schema
from pytest_trtparity.backends import open_backend
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.explain.api import chunk_errors, chunk_that_matters, fail_tier
from pytest_trtparity.explain.names import display_name
from pytest_trtparity.reference.reader import ReferenceReader

from .conftest import SILERO_CONTRACT, SILERO_REF, short_reference
from .onnx_edits import scale_output

SOURCE = "pkg:silero_vad/data/silero_vad.onnx"
PNG = b"\x89PNG\r\n\x1a\n"


def _gate(
    pytester: pytest.Pytester, engine: Path | str, *extra: str, ref: Path = SILERO_REF
) -> tuple[pytest.RunResult, dict[str, Any], Path]:
    out = pytester.path / "art"
    result = pytester.runpytest(
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
        *extra,
    )
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return result, summary, out


def _validate(summary: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(summary, schema())


def _entry(summary: dict[str, Any], suite: str, output: str) -> dict[str, Any]:
    found = [d for d in summary["diagnosis"] if d["suite"] == suite and d["output"] == output]
    assert len(found) == 1, summary.get("diagnosis")
    return found[0]


def test_half_precision_silero_is_localized_to_the_first_conv(
    loop_dir: Path, pytester: pytest.Pytester, silero_half_onnx: Path
) -> None:
    result, summary, out = _gate(pytester, silero_half_onnx, f"--trt-onnx={SOURCE}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED and summary["verdict"] == "fail"
    _validate(summary)
    entry = _entry(summary, "functional", "stateN")
    first = entry["first_divergence"]
    assert display_name(first["tensor"]) == "/encoder/0/reparam_conv/Conv_output_0"
    assert first["op_type"] == "Conv" and first["inputs_error"] == 0 and first["error"] > 1
    assert entry["chunk"] == summary["suites"]["functional"]["aggregates"]["stateN"]["worst_chunk"]
    # every failing output of both chunk suites is explained, and each points at the same Conv
    assert {(d["suite"], d["output"]) for d in summary["diagnosis"]} == {
        (s, o) for s in ("functional", "closed_loop") for o in ("output", "stateN")
    }
    report = (out / "report.md").read_text()
    assert "## Diagnosis" in report and "`/encoder/0/reparam_conv/Conv_output_0`" in report
    line = (
        "explain functional 'stateN' on chunk default#159: first divergence at "
        "/encoder/0/reparam_conv/Conv_output_0 from Conv"
    )
    assert any(x.startswith(line) for x in result.outlines), result.stdout.str()[-3000:]
    plot = out / entry["plot"]
    assert plot.read_bytes().startswith(PNG) and f"]({entry['plot']})" in report
    drawn = len(list((out / "plots").glob("*.png")))
    assert drawn == 6  # two stability plots and four per-layer plots, all counted
    assert any(f"report.md, {drawn} plot(s))" in x for x in result.outlines)

    # explaining did not change the verdict: the same run with --trt-explain off judges the same
    result_off, off, out_off = _gate(
        pytester, silero_half_onnx, f"--trt-onnx={SOURCE}", "--trt-explain=off"
    )
    assert "diagnosis" not in off and "## Diagnosis" not in (out_off / "report.md").read_text()
    assert not any(x.startswith("explain ") for x in result_off.outlines)
    assert not list((out_off / "plots").glob("explain-*.png"))  # the earlier run's are gone
    assert off["verdict"] == summary["verdict"] and result_off.ret == result.ret
    for suite in ("functional", "closed_loop"):
        assert off["suites"][suite]["findings"] == summary["suites"][suite]["findings"]


def test_clean_silero_gets_no_diagnosis(
    loop_dir: Path, pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    result, summary, out = _gate(pytester, silero_onnx, f"--trt-onnx={SOURCE}")
    assert result.ret == pytest.ExitCode.OK and summary["verdict"] == "pass"
    assert "diagnosis" not in summary
    assert "## Diagnosis" not in (out / "report.md").read_text()
    assert not list((out / "plots").glob("explain-*.png"))


def test_always_explains_passing_outputs_without_failing_them(
    loop_dir: Path, pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    ref = short_reference(pytester.path / "short.jsonl", 20)
    result, summary, _ = _gate(
        pytester, silero_onnx, "--trt-explain=always", "--trt-mode=functional", ref=ref
    )
    assert result.ret == pytest.ExitCode.OK and summary["verdict"] == "pass"
    _validate(summary)
    entries = summary["diagnosis"]
    assert [(d["output"], d["failing"]) for d in entries] == [("output", False), ("stateN", False)]
    # no --trt-onnx: an .onnx engine compared with itself could name nothing, so no entry pretends to
    assert all("compared with itself cannot diverge" in d["why"] for d in entries)
    result, summary, _ = _gate(
        pytester,
        silero_onnx,
        "--trt-explain=always",
        "--trt-mode=functional",
        f"--trt-onnx={SOURCE}",
        ref=ref,
    )
    assert result.ret == pytest.ExitCode.OK and summary["verdict"] == "pass"
    entries = summary["diagnosis"]
    assert [(d["output"], d["failing"]) for d in entries] == [("output", False), ("stateN", False)]
    assert all(d["first_divergence"] is None for d in entries)  # a clean engine: nothing diverges


#: Silero's 16 kHz branch, as the model names its tensors (the LSTM's sits two `If`s deep).
P = "If_0_then_branch__Inline_0__"


@pytest.mark.parametrize(
    "tensor",
    [f"{P}/decoder/rnn/LSTM_output_1", f"{P}/encoder/2/reparam_conv/Conv_output_0"],
)
def test_a_perturbed_tensor_is_named_through_the_gate(
    loop_dir: Path, pytester: pytest.Pytester, silero_onnx: Path, tensor: str
) -> None:
    import onnx

    from .test_explain_edits import perturb

    engine = pytester.path / "perturbed.onnx"
    onnx.save(perturb(onnx.load(str(silero_onnx)), tensor, "Mul", 1.02), str(engine))
    result, summary, _ = _gate(pytester, engine, f"--trt-onnx={SOURCE}", "--trt-mode=functional")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert summary["verdict"] == "fail" and summary["diagnosis"]
    named = {d["first_divergence"]["tensor"] for d in summary["diagnosis"]}
    assert named == {tensor}, summary["diagnosis"]


def test_a_closed_loop_only_failure_gets_a_closed_loop_diagnosis(
    loop_dir: Path, pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    engine = scale_output(silero_onnx, pytester.path / "drift.onnx", "stateN", 1 + 3e-6)
    result, summary, _ = _gate(pytester, engine, f"--trt-onnx={SOURCE}")
    assert summary["suites"]["functional"]["verdict"] == "pass"
    assert summary["suites"]["closed_loop"]["verdict"] == "fail"
    _validate(summary)
    assert [(d["suite"], d["output"]) for d in summary["diagnosis"]] == [("closed_loop", "stateN")]
    entry = summary["diagnosis"][0]
    series = summary["suites"]["closed_loop"]["outputs"]["stateN"]
    contract = load_contract(SILERO_CONTRACT)
    tier = fail_tier(contract, "stateN", "closed_loop")
    gate_errors = [float(v) for v in series["metrics"]["max_abs"]]
    first_over = next(i for i, v in enumerate(gate_errors) if v > tier)
    assert entry["chunk"] == series["chunks"][first_over]  # the gate's first chunk over the tier
    # explain's own replay of the stream picks the same chunk and sees the same error there
    backend = open_backend(engine).load()
    records = list(ReferenceReader(SILERO_REF))[: first_over + 1]
    errors = chunk_errors(backend, contract, records, "stateN", closed_loop=True)
    assert chunk_that_matters(errors, tier, closed_loop=True) == first_over
    assert math.isclose(entry["output_error"], gate_errors[first_over], rel_tol=1e-3)
    assert any(x.startswith("explain closed_loop 'stateN'") for x in result.outlines)


def test_an_explain_crash_is_a_sentence_not_a_verdict(
    loop_dir: Path, pytester: pytest.Pytester, silero_half_onnx: Path
) -> None:
    broken = pytester.path / "broken.onnx"
    broken.write_text("not an ONNX model")
    ref = short_reference(pytester.path / "short.jsonl", 20)
    result, summary, _ = _gate(
        pytester, silero_half_onnx, f"--trt-onnx={broken}", "--trt-mode=functional", ref=ref
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED and summary["verdict"] == "fail"
    _validate(summary)
    assert summary["errors"] == []
    whys = [d["why"] for d in summary["diagnosis"]]
    assert whys and all(w.startswith("no diagnosis: explain stopped: ") for w in whys)
    assert "Traceback" not in result.stdout.str()


def test_a_torch_engine_without_source_says_why(tmp_path: Path) -> None:
    from pytest_trtparity.artifacts.diagnose import source_onnx
    from pytest_trtparity.settings import resolve_settings

    settings = resolve_settings(
        {"trt_engine": "model.jit"}, {}, cli_base=tmp_path, ini_base=tmp_path
    )
    source, why = source_onnx(settings)
    assert source is None and "pass --trt-onnx" in why
    settings = resolve_settings(
        {"trt_engine": "model.plan"}, {}, cli_base=tmp_path, ini_base=tmp_path
    )
    assert source_onnx(settings) == (None, source_onnx(settings)[1])
    assert "build report" in source_onnx(settings)[1]
    (tmp_path / "src.onnx").write_bytes(b"x")
    (tmp_path / "model.plan.build.json").write_text(
        json.dumps({"onnx": {"path": str(tmp_path / "src.onnx")}})
    )
    assert source_onnx(settings) == (tmp_path / "src.onnx", "")


def test_explain_budget_is_checked(tmp_path: Path) -> None:
    from pytest_trtparity.errors import ConfigError
    from pytest_trtparity.settings import resolve_settings

    def budget(text: str) -> float:
        cli = {"trt_explain_budget": text}
        return resolve_settings(cli, {}, cli_base=tmp_path, ini_base=tmp_path).explain_budget

    assert budget("2.5") == 2.5
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="--trt-explain-budget"):
            budget(bad)


def test_an_error_of_ours_inside_explain_is_its_own_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TensorRT engine on a machine that cannot run it: the entry is the sentence itself, not
    wrapped in an exception's type name."""
    from pytest_trtparity.artifacts import diagnose
    from pytest_trtparity.errors import ExecutionUnavailable
    from pytest_trtparity.settings import resolve_settings

    said = "vad.plan: the debug engine was built (0.6 s) but could not run: no GPU"

    def refuse(*_: Any, **__: Any) -> list[Any]:
        raise ExecutionUnavailable(said)

    monkeypatch.setattr("pytest_trtparity.explain.api.explain_failure", refuse)
    monkeypatch.setattr(diagnose, "read_chunks", lambda *_: [])
    settings = resolve_settings(
        {"trt_engine": str(tmp_path / "vad.plan")}, {}, cli_base=tmp_path, ini_base=tmp_path
    )
    target = diagnose.Target("functional", "stateN", "default#3", ("default#3",), True)
    entry = diagnose._explain_one(
        settings, load_contract(SILERO_CONTRACT), tmp_path / "m.onnx", target
    )
    assert entry["why"] == f"no diagnosis: {said}"


def test_a_plain_install_without_the_explain_extra_gets_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain install has no onnx: the diagnosis entry names the extra to install, instead of a
    bare ModuleNotFoundError."""
    from pytest_trtparity.artifacts import diagnose
    from pytest_trtparity.settings import resolve_settings

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    monkeypatch.setattr(diagnose, "read_chunks", lambda *_: [])
    settings = resolve_settings(
        {"trt_engine": str(tmp_path / "m.onnx")}, {}, cli_base=tmp_path, ini_base=tmp_path
    )
    target = diagnose.Target("functional", "stateN", "default#3", ("default#3",), True)
    entry = diagnose._explain_one(
        settings, load_contract(SILERO_CONTRACT), tmp_path / "src.onnx", target
    )
    assert entry["why"].startswith("no diagnosis: explaining a failure needs onnx and onnxscript")
    assert "pip install 'pytest-trtparity[explain]'" in entry["why"]
