"""The real TensorRT-RTX builder and parser, on a machine without a GPU.

TensorRT-RTX's library loads and builds ahead of time for named compute capabilities with no GPU
and no driver, so these tests run TensorRT's own parser and builder in CI. They skip, naming the
install command, where the TensorRT-RTX wheels are absent. Nothing here executes an engine: that
needs a GPU the TensorRT-RTX runtime supports (tests/gpu/test_rtx_runtime.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.checks.build import build_suite, check_network
from pytest_trtparity.cli import main
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import BuildError, ConfigError
from pytest_trtparity.trt.build import BuildOptions, build_engine
from pytest_trtparity.util.paths import package_file

from .conftest import SILERO_CONTRACT, SILERO_REF

if importlib.util.find_spec("tensorrt_rtx_bindings") is None:
    pytest.skip(
        "TensorRT-RTX not installed: pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
        "tensorrt-rtx-cu13-bindings==1.7.1.116 (.ci/run does)",
        allow_module_level=True,
    )

RTX89 = BuildOptions(builder="tensorrt-rtx", compute_capabilities=("8.9",), profiles=("stream",))


@pytest.fixture(scope="module")
def ifless() -> Path:
    return package_file("pkg:silero_vad/data/silero_vad_op18_ifless.onnx")


@pytest.fixture(scope="module")
def nested_if() -> Path:
    return package_file("pkg:silero_vad/data/silero_vad.onnx")


def _contract_file(tmp: Path, edit: Any) -> Path:
    raw = json.loads(SILERO_CONTRACT.read_text())
    edit(raw)
    raw.pop("$schema", None)
    path = tmp / "c.json"
    path.write_text(json.dumps(raw))
    return path


def test_aot_build_without_a_gpu_writes_plan_and_full_report(ifless: Path, tmp_path: Path) -> None:
    contract = load_contract(SILERO_CONTRACT)
    out = tmp_path / "vad.plan"
    result = build_engine(ifless, contract, RTX89, output=out, cache_dir=tmp_path / "cache")
    plan = out.read_bytes()
    report = result.report
    assert not result.cache_hit
    assert len(plan) > 1_000_000  # 3.56 MB measured; a plan, not an error stub
    assert report["tensorrt"] == {"version": "1.7.1.116", "flavour": "tensorrt-rtx"}
    assert report["targets"] == ["8.9"]
    assert report["device"]["compute_capability"] is None
    assert report["engine"] == {"bytes": len(plan), "sha256": hashlib.sha256(plan).hexdigest()}
    assert 0 < report["build_seconds"] < 120
    network = report["network"]
    assert [t["name"] for t in network["inputs"]] == ["input", "sr", "state"]
    assert network["inputs"][2] == {"name": "state", "dtype": "FLOAT", "shape": [2, -1, 128]}
    assert [t["name"] for t in network["outputs"]] == ["output", "stateN"]
    assert network["layer_count"] == len(network["layers"]) > 100
    assert sum(network["layer_types"].values()) == network["layer_count"]
    typed = [layer for layer in network["layers"] if layer["output_dtypes"]]
    assert len(typed) > 0.9 * network["layer_count"]  # a few layers (assertions) have no output
    assert network["output_dtypes"]["FLOAT"] > 0
    again = build_engine(ifless, contract, RTX89, cache_dir=tmp_path / "cache")
    assert again.cache_hit and again.report["cache_key"] == report["cache_key"]
    other = BuildOptions(
        builder="tensorrt-rtx", compute_capabilities=("8.6",), profiles=("stream",)
    )
    moved = build_engine(ifless, contract, other, cache_dir=tmp_path / "cache")
    assert not moved.cache_hit and moved.report["cache_key"] != report["cache_key"]


def test_nested_if_build_failure_is_one_sentence_with_tensorrts_words(
    nested_if: Path, tmp_path: Path
) -> None:
    contract = load_contract(SILERO_CONTRACT)
    with pytest.raises(BuildError) as err:
        build_engine(nested_if, contract, RTX89, cache_dir=tmp_path)
    text = str(err.value)
    assert text.startswith(f"{nested_if}: TensorRT-RTX 1.7.1.116 could not build the engine")
    assert "graphScope.cpp" in text and "ScopeType::kUNDEFINED" in text
    assert (
        "cudaError" not in text
    )  # the no-driver noise TensorRT-RTX logs after it is not the cause
    assert "\n" not in text


def test_build_command_failure_prints_one_line_and_no_traceback(
    nested_if: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--onnx", str(nested_if), "--contract", str(SILERO_CONTRACT)]
    argv += ["-o", str(tmp_path / "x.plan"), "--builder", "tensorrt-rtx"]
    argv += ["--compute-capability", "8.9", "--profile", "stream", "--cache-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert str(nested_if) in err and "graphScope" in err


def test_build_without_targets_or_gpu_says_what_to_pass(ifless: Path, tmp_path: Path) -> None:
    from pytest_trtparity.trt import cuda

    try:
        cuda.require_device(0)
        pytest.skip("a GPU is present here: the build would target it")
    except Exception:
        pass
    options = BuildOptions(builder="tensorrt-rtx", profiles=("stream",))
    with pytest.raises(ConfigError, match=r"--compute-capability X\.Y .*8\.9"):
        build_engine(ifless, load_contract(SILERO_CONTRACT), options, cache_dir=tmp_path)


def test_unoffered_target_is_refused_before_building(ifless: Path, tmp_path: Path) -> None:
    options = BuildOptions(builder="tensorrt-rtx", compute_capabilities=("9.0",))
    with pytest.raises(ConfigError, match=r"--compute-capability 9\.0: .* targets only 7\.5, 8\.0"):
        build_engine(ifless, load_contract(SILERO_CONTRACT), options, cache_dir=tmp_path)


def test_contract_matches_the_network_tensorrt_parsed(ifless: Path) -> None:
    result = check_network(ifless, load_contract(SILERO_CONTRACT), "tensorrt-rtx")
    assert result.problems == []
    assert result.who == "TensorRT-RTX 1.7.1.116"


def _wrong(raw: dict[str, Any]) -> None:
    raw["inputs"][2]["dtype"] = "int32"  # sr
    raw["outputs"][0]["shape"] = ["B", "K"]  # TensorRT parsed [-1, 1]: K cannot vary
    raw["outputs"].append({"name": "logits", "dtype": "float32", "shape": ["B", 1]})
    raw["tolerances"]["logits"] = raw["tolerances"]["output"]


def test_contract_check_names_each_disagreement_with_the_parsed_network(
    ifless: Path, tmp_path: Path
) -> None:
    contract = load_contract(_contract_file(tmp_path, _wrong))
    problems = check_network(ifless, contract, "tensorrt-rtx").problems
    assert "input 'sr': engine dtype int64, contract says int32" in problems
    assert any(p.startswith("output 'logits' is in the contract but not") for p in problems)
    assert any("output 'output': dimension 1 is fixed at 1" in p for p in problems)
    assert len(problems) == 3


def test_tensorrt_accepts_good_profile_shapes_and_names_why_it_refuses_bad_ones(
    ifless: Path,
) -> None:
    from pytest_trtparity.trt import api

    trt = api.import_builder("tensorrt-rtx")
    logger = api.new_logger(trt)
    parsed = api.parse_network(trt, str(ifless), logger)
    good = {
        "input": ((1, 576), (4, 576), (8, 576)),
        "state": ((2, 1, 128), (2, 4, 128), (2, 8, 128)),
    }
    assert api.check_profile(trt, parsed, good, logger) is None
    bad = {"input": ((1, 576), (4, 576), (2, 576))}  # opt above max
    why = api.check_profile(trt, parsed, bad, logger)
    assert why is not None and "MIN<=OPT<=MAX" in why and "cudaError" not in why


def test_contract_command_with_builder(
    ifless: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["contract", "check", str(SILERO_CONTRACT), "--onnx", str(ifless)]
    assert main([*args, "--builder", "tensorrt-rtx"]) == 0
    assert (
        "the network TensorRT-RTX 1.7.1.116 parsed (3 inputs, 2 outputs" in capsys.readouterr().out
    )
    bad = _contract_file(tmp_path, _wrong)
    assert (
        main(["contract", "check", str(bad), "--onnx", str(ifless), "--builder", "tensorrt-rtx"])
        == 1
    )
    assert "MISMATCH" in capsys.readouterr().out


def test_build_check_passes_fails_on_budget_and_on_builder_failure(
    ifless: Path, nested_if: Path, tmp_path: Path
) -> None:
    good = build_suite(ifless, load_contract(SILERO_CONTRACT), RTX89, cache_dir=tmp_path)
    assert good.verdict.word == "pass" and good.complete and good.findings == []
    assert good.payload.to_json()["engine"]["bytes"] > 1_000_000 and good.payload.to_json()[
        "targets"
    ] == ["8.9"]

    def tight(raw: dict[str, Any]) -> None:
        raw["memory"] = {"engine_bytes": {"warn": 500_000, "fail": 1_000_000}}

    over = build_suite(
        ifless, load_contract(_contract_file(tmp_path, tight)), RTX89, cache_dir=tmp_path
    )
    assert over.verdict.word == "fail"
    assert [f.criterion for f in over.findings] == ["engine_bytes"]
    assert "above the fail tier" in over.findings[0].message

    broken = build_suite(nested_if, load_contract(SILERO_CONTRACT), RTX89, cache_dir=tmp_path)
    assert broken.verdict.word == "fail"
    assert "graphScope" in broken.findings[0].message


def _gate(pytester: pytest.Pytester, engine: Path, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        f"--trt-engine={engine}",
        "--trt-backend=tensorrt-rtx",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={pytester.path / 'art'}",
        f"--trt-cache-dir={pytester.path / 'cache'}",
        "-p",
        "no:cacheprovider",
        "-rs",
        *extra,
    )


def test_gate_without_gpu_rests_on_the_build_check(
    pytester: pytest.Pytester, gate_dir: Path, ifless: Path
) -> None:
    result = _gate(pytester, ifless, "--trt-compute-capability=8.9")
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=1, skipped=9)  # every suite but the build check
    out = result.stdout.str()
    assert "the engine cannot execute here" in out
    summary = json.loads((pytester.path / "art" / "summary.json").read_text())
    assert summary["suites"]["build"]["verdict"] == "pass"


def test_gate_fails_on_the_nested_if_model_naming_tensorrts_error(
    pytester: pytest.Pytester, gate_dir: Path, nested_if: Path
) -> None:
    result = _gate(pytester, nested_if, "--trt-compute-capability=8.9")
    assert result.ret == 1
    assert "graphScope" in result.stdout.str()


def test_gate_without_targets_or_gpu_fails_with_the_fix(
    pytester: pytest.Pytester, gate_dir: Path, ifless: Path
) -> None:
    result = _gate(pytester, ifless)
    assert result.ret == 1
    assert "--compute-capability" in result.stdout.str()
