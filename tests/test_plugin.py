"""The plugin as users run it: options, ini keys, fixtures, verdicts and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import SILERO_CONTRACT, SILERO_REF, assert_gate_passed

FUNCTIONAL = ("--trt-mode=functional", "-p", "no:cacheprovider")


def gate_args(engine: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        *FUNCTIONAL,
        *extra,
    ]


def test_help_lists_every_option_in_one_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        [
            "TensorRT parity gate:",
            "*--trt-engine=PATH*",
            "*--trt-contract=PATH*",
            "*--trt-ref=PATH*",
            "*--trt-artifacts=DIR*",
            "*--trt-strict*",
            "*--trt-mode=*",
        ]
    )
    result.stdout.fnmatch_lines(["*trt_engine (string):*", "*trt_strict (bool):*"])


def test_silero_fp32_passes_and_writes_summary(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*gate_args(silero_onnx, out))
    assert_gate_passed(result)
    result.stdout.fnmatch_lines(
        [
            "*trtparity gate*",
            "functional: pass (300 chunks)",
            "*output*max_abs*100%",
            "*stateN*max_abs*100%",
            "verdict: PASS*",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    assert summary["suites"]["functional"]["chunks_run"] == 300
    assert summary["suites"]["functional"]["aggregates"]["output"]["worst"] < 1e-5


def test_silero_half_fails_naming_output_and_metric(
    pytester: pytest.Pytester, gate_dir: Path, silero_half_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*gate_args(silero_half_onnx, out))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes().get("failed", 0) >= 1
    result.stdout.fnmatch_lines(
        [
            "functional parity failed: * finding(s)",
            "output 'output': max_abs 0.9* on chunk default#* is above the fail tier 0.001",
        ]
    )
    assert json.loads((out / "summary.json").read_text())["verdict"] == "fail"


def test_ini_keys_configure_the_gate(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    pytester.makeini(f"""
        [pytest]
        trt_engine = {silero_onnx}
        trt_contract = {SILERO_CONTRACT}
        trt_ref = {SILERO_REF}
        trt_artifacts = ini-artifacts
        trt_mode = functional
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert_gate_passed(result)
    assert (pytester.path / "ini-artifacts" / "summary.json").is_file()


def test_command_line_overrides_ini(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path, silero_half_onnx: Path
) -> None:
    pytester.makeini(f"""
        [pytest]
        trt_engine = {silero_onnx}
        trt_contract = {SILERO_CONTRACT}
        trt_ref = {SILERO_REF}
        trt_mode = functional
    """)
    result = pytester.runpytest_subprocess(
        f"--trt-engine={silero_half_onnx}", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_missing_engine_option_is_an_error_not_a_pass(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    result = pytester.runpytest_subprocess(
        f"--trt-contract={SILERO_CONTRACT}", f"--trt-ref={SILERO_REF}", *FUNCTIONAL
    )
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*no engine given: pass --trt-engine PATH or set trt_engine in your ini file*"]
    )
    assert "passed" not in result.stdout.lines[-1] or "error" in result.stdout.lines[-1]


def test_missing_engine_file_names_the_path(pytester: pytest.Pytester, gate_dir: Path) -> None:
    result = pytester.runpytest_subprocess(
        *gate_args(pytester.path / "nope.onnx", pytester.path / "a")
    )
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*nope.onnx: engine file not found*"])


def test_unknown_extension_says_how_to_fix(pytester: pytest.Pytester, gate_dir: Path) -> None:
    engine = pytester.path / "model.bin"
    engine.write_bytes(b"x")
    result = pytester.runpytest_subprocess(*gate_args(engine, pytester.path / "a"))
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*model.bin: cannot tell the backend from the extension '.bin'*--trt-backend*"]
    )


def test_bad_choice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--trt-mode=sideways")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--trt-mode: invalid choice: 'sideways'*"])


def test_bad_ini_bool_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrt_threads = many\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key trt_threads: expected an integer, got 'many'*"])


def test_uninstalled_package_engine_is_named_and_fails_the_gate(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    """Not a usage error: the run still owes its verdict, so it fails with a summary."""
    out = pytester.path / "a"
    result = pytester.runpytest_subprocess(
        "--trt-engine=pkg:no_such_pkg_xyz/model.onnx", f"--trt-artifacts={out}", *FUNCTIONAL
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*option --trt-engine: 'pkg:no_such_pkg_xyz/model.onnx': package 'no_such_pkg_xyz' is not installed*"
        ]
    )
    assert json.loads((out / "summary.json").read_text())["verdict"] == "fail"


def test_unresolvable_ini_engine_fails_the_gate_but_not_other_tests(
    pytester: pytest.Pytester, gate_dir: Path
) -> None:
    pytester.makeini(f"""
        [pytest]
        trt_engine = pkg:no_such_pkg_xyz/model.onnx
        trt_contract = {SILERO_CONTRACT}
        trt_ref = {SILERO_REF}
    """)
    pytester.makepyfile(test_unrelated="def test_unrelated():\n    assert 1 + 1 == 2\n")
    unrelated = pytester.runpytest_subprocess("test_unrelated.py", "-p", "no:cacheprovider")
    unrelated.assert_outcomes(passed=1)
    gate = pytester.runpytest_subprocess("test_functional.py", "-p", "no:cacheprovider")
    assert gate.ret == pytest.ExitCode.TESTS_FAILED
    gate.stdout.fnmatch_lines(
        [
            "*ini key trt_engine: 'pkg:no_such_pkg_xyz/model.onnx': package 'no_such_pkg_xyz' is not installed*"
        ]
    )


def _tight_contract(tmp: Path, **tiers: dict[str, float]) -> Path:
    raw = json.loads(SILERO_CONTRACT.read_text())
    for name, tier in tiers.items():
        raw["tolerances"][name]["chunk"] = tier
        raw["tolerances"][name].pop("p95", None)
        raw["tolerances"][name].pop("pass_rate", None)
    path = tmp / "tight.contract.json"
    path.write_text(json.dumps(raw))
    return path


def test_warn_tier_warns_and_strict_fails(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    contract = _tight_contract(pytester.path, output={"warn": 1e-7, "fail": 1e-3})
    args = [
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={contract}",
        f"--trt-ref={SILERO_REF}",
        *FUNCTIONAL,
    ]
    result = pytester.runpytest_subprocess(*args)
    assert_gate_passed(result)
    assert result.parseoutcomes().get("warnings", 0) >= 1
    result.stdout.fnmatch_lines(
        [
            "*ParityWarning: output 'output': max_abs * is above the warn tier 1e-07*",
            "verdict: WARN*",
        ]
    )
    strict = pytester.runpytest_subprocess(*args, "--trt-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["*(--trt-strict: warnings fail)*", "verdict: FAIL*"])


def test_non_blocking_output_only_warns(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    raw = json.loads(SILERO_CONTRACT.read_text())
    raw["tolerances"]["stateN"] = {
        "chunk": {"fail": 1e-9},
        "blocking": False,
        "note": "known issue",
    }
    contract = pytester.path / "nb.json"
    contract.write_text(json.dumps(raw))
    result = pytester.runpytest_subprocess(
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={contract}",
        f"--trt-ref={SILERO_REF}",
        *FUNCTIONAL,
    )
    assert_gate_passed(result)
    assert result.parseoutcomes().get("warnings", 0) >= 1
    result.stdout.fnmatch_lines(
        ["*output 'stateN': max_abs * is above the fail tier 1e-09 (non-blocking: known issue)*"]
    )


def test_gate_run_whose_suites_all_skip_fails(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    pytester.makeconftest("""
        import pytest
        def pytest_runtest_setup(item):
            pytest.skip("no GPU on this runner")
    """)
    result = pytester.runpytest_subprocess(*gate_args(silero_onnx, pytester.path / "a"))
    outcomes = result.parseoutcomes()
    assert outcomes["skipped"] >= 2 and "passed" not in outcomes
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["ERROR: no gating suite produced a result", "verdict: FAIL*"])


def test_gate_run_with_nothing_selected_is_not_a_pass(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    result = pytester.runpytest_subprocess(
        *gate_args(silero_onnx, pytester.path / "a", "-k", "no_such_test")
    )
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_environment_hook_adds_facts_to_the_summary(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    pytester.makeconftest("""
        def pytest_trtparity_environment(config):
            return {"gpu_driver": "580.159.04", "runner": "gpu-runner-7"}
    """)
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*gate_args(silero_onnx, out))
    assert_gate_passed(result)
    environment = json.loads((out / "summary.json").read_text())["environment"]
    assert environment["gpu_driver"] == "580.159.04" and environment["runner"] == "gpu-runner-7"
    assert environment["backend"] == "onnxruntime"  # the plugin's own facts stay


COUNTING_CONFTEST = """
import pytest
from pytest_trtparity.contract import model

calls = []
_load = model.load_contract


def _counted(path):
    calls.append(str(path))
    return _load(path)


model.load_contract = _counted


def pytest_unconfigure(config):
    (config.rootpath / "loads.txt").write_text(str(len(calls)))
"""


def test_a_gate_run_parses_its_contract_once(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    """Collection (mode auto), the contract fixture, the engine and the artifacts all use the one
    contract the run loaded (it was parsed 3 times per run before)."""
    pytester.makeconftest(COUNTING_CONFTEST)
    out = pytester.path / "artifacts"
    args = [a for a in gate_args(silero_onnx, out) if a != "--trt-mode=functional"]
    result = pytester.runpytest_subprocess(*args, "--trt-mode=auto")
    assert_gate_passed(result)
    assert (pytester.path / "loads.txt").read_text() == "1"


def _session(folder: Path, **flags: bool) -> Any:
    from pytest_trtparity.session import GateSession
    from pytest_trtparity.settings import resolve_settings

    cli = {"trt_artifacts": str(folder)}
    return GateSession(resolve_settings(cli, {}, cli_base=folder, ini_base=folder), **flags)


def test_session_finish_judges_only_a_gate_run_and_returns_the_exit_status(
    tmp_path: Path,
) -> None:
    asked: list[int] = []

    def facts() -> list[dict[str, str]]:
        asked.append(1)
        return [{"runner": "ci-7"}]

    assert _session(tmp_path / "plain").finish(0, facts) == 0  # no gate test, nothing asked for
    assert _session(tmp_path / "worker", writes=False, requested=True).finish(0, facts) == 0
    assert not asked and not (tmp_path / "plain").exists() and not (tmp_path / "worker").exists()
    owed = _session(tmp_path / "owed", requested=True)  # asked for, and nothing ran: a fail
    assert owed.finish(pytest.ExitCode.OK, facts) == pytest.ExitCode.TESTS_FAILED
    summary = json.loads((tmp_path / "owed" / "summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["environment"]["runner"] == "ci-7"
    stopped = _session(tmp_path / "stopped", requested=True)  # pytest's own status is kept
    assert stopped.finish(pytest.ExitCode.INTERRUPTED) == pytest.ExitCode.INTERRUPTED


def test_one_fixture_error_handler_records_the_error_and_fails_with_its_sentence(
    tmp_path: Path,
) -> None:
    from pytest_trtparity.errors import ContractError
    from pytest_trtparity.plugin import gate_errors

    gate = _session(tmp_path)
    with gate_errors(gate):
        pass
    sentence = r"^c\.json:3: at \$\.model: broken$"
    with pytest.raises(pytest.fail.Exception, match=sentence), gate_errors(gate):
        raise ContractError("c.json:3: at $.model: broken")
    with pytest.raises(KeyError), gate_errors(gate):  # not a gate error: it stays a traceback
        raise KeyError("bug")
    assert gate.errors == ["c.json:3: at $.model: broken"]
