"""The headline command as a new user types it: `pytest --trt-engine=... --trt-contract=... --trt-ref=...`
in an empty folder, in a folder of unrelated tests, beside copies of the suites; per-suite markers;
load failures that still leave a verdict."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.bundled import suites_dir
from pytest_trtparity.checks.registry import SUITES

from .conftest import SILERO_CONTRACT, SILERO_REF
from .conftest import SUITES as REPO_SUITES

QUIET = ("-p", "no:cacheprovider", "-rA")
BUNDLED_NOTE = "trtparity: no gating suite collected; running the bundled suites in *"


def options(engine: Path | str, out: Path, *, mode: str = "functional") -> list[str]:
    return [
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={SILERO_REF}",
        f"--trt-artifacts={out}",
        f"--trt-mode={mode}",
    ]


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def passed_nodes(result: pytest.RunResult) -> list[str]:
    """The node ids of the PASSED lines of -rA, to count how often each gate test ran."""
    return [m.group(1) for line in result.outlines if (m := re.match(r"PASSED (\S+)", line))]


def test_the_bundled_suites_are_the_repositorys_suites_in_an_editable_install() -> None:
    assert suites_dir().resolve() == REPO_SUITES.resolve()
    assert {p.name for p in suites_dir().glob("test_*.py")} >= {"test_functional.py"}


def test_gate_options_in_an_empty_folder_run_the_bundled_suites(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_onnx, out), *QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines([BUNDLED_NOTE, "verdict: PASS*"])
    ran = passed_nodes(result)
    assert sum("test_functional_parity" in node for node in ran) == 1, ran
    assert summary(out)["verdict"] == "pass"
    assert summary(out)["suites"]["functional"]["chunks_run"] == 300


def test_the_bundled_run_fails_a_bad_engine(
    pytester: pytest.Pytester, silero_half_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_half_onnx, out), *QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert summary(out)["verdict"] == "fail"


def test_no_gate_option_in_an_empty_folder_runs_nothing(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(*QUIET)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert not (pytester.path / "trtparity-artifacts").exists()


def test_gate_options_replace_unrelated_default_tests(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    """A repository whose testpaths hold only its own tests: the gate runs, its tests do not."""
    pytester.makeini("[pytest]\ntestpaths = unit\n")
    pytester.mkdir("unit")
    (pytester.path / "unit" / "test_unit.py").write_text("def test_unit():\n    pass\n")
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_onnx, out, mode="both"), *QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    ran = passed_nodes(result)
    assert not any("test_unit" in node for node in ran), ran
    assert any("test_functional_parity" in node for node in ran), ran
    assert result.parseoutcomes().get("deselected") == 1
    assert summary(out)["verdict"] == "pass"


def test_named_unrelated_tests_run_beside_the_bundled_suites(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    pytester.makepyfile(test_mine="def test_mine():\n    pass\n")
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess("test_mine.py", *options(silero_onnx, out), *QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    ran = passed_nodes(result)
    assert any("test_mine" in node for node in ran) and any("functional" in n for n in ran), ran


def test_a_copy_of_the_suites_runs_once_and_alone(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    for suite in REPO_SUITES.glob("test_*.py"):
        shutil.copy(suite, pytester.path / suite.name)
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_onnx, out), *QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert BUNDLED_NOTE.removesuffix("*") not in result.stdout.str()
    ran = passed_nodes(result)
    assert [n for n in ran if "test_functional_parity" in n] == [
        "test_functional.py::test_functional_parity"
    ]


def test_ini_keys_alone_do_not_turn_a_test_run_into_a_gate(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    pytester.makeini(f"""
        [pytest]
        trt_engine = {silero_onnx}
        trt_contract = {SILERO_CONTRACT}
        trt_ref = {SILERO_REF}
        trt_mode = functional
    """)
    pytester.makepyfile(test_unrelated="def test_unrelated():\n    pass\n")
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "trtparity-artifacts").exists()


def test_ini_keys_gate_a_folder_with_no_tests(pytester: pytest.Pytester, silero_onnx: Path) -> None:
    pytester.makeini(f"""
        [pytest]
        trt_engine = {silero_onnx}
        trt_contract = {SILERO_CONTRACT}
        trt_ref = {SILERO_REF}
        trt_mode = functional
    """)
    result = pytester.runpytest_subprocess(*QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert summary(pytester.path / "trtparity-artifacts")["verdict"] == "pass"


# -- per-suite markers -------------------------------------------------------------------------


def test_every_suite_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines([f"@pytest.mark.trt_{suite}:*" for suite in SUITES])


def test_not_trt_latency_deselects_latency_alone_and_still_gates(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(
        *options(silero_onnx, out, mode="both"), "-m", "not trt_latency", "--strict-markers", *QUIET
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert result.parseoutcomes().get("deselected") == 1
    ran = passed_nodes(result)
    assert not any("latency" in node for node in ran), ran
    suites = summary(out)["suites"]
    assert "latency" not in suites and {"contract", "functional", "closed_loop"} <= set(suites)
    assert summary(out)["verdict"] == "pass"


def test_a_copied_suite_gets_its_marker_from_trtparity(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    """A user's copy made before the per-suite markers existed carries only `trtparity("latency")`."""
    for name in ("test_contract.py", "test_latency.py"):
        text = (REPO_SUITES / name).read_text()
        (pytester.path / name).write_text(re.sub(r"@pytest\.mark\.trt_\w+.*\n", "", text))
    assert "mark.trt_latency" not in (pytester.path / "test_latency.py").read_text()
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(
        *options(silero_onnx, out), "-m", "not trt_latency", *QUIET
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert result.parseoutcomes().get("deselected") == 1
    assert passed_nodes(result) == ["test_contract.py::test_engine_matches_contract"]


# -- load failures still leave a verdict --------------------------------------------------------


def _assert_failed_with_summary(result: pytest.RunResult, out: Path, sentence: str) -> None:
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines([f"*{sentence}*", "verdict: FAIL*"])
    written = summary(out)
    assert written["verdict"] == "fail"
    assert any(sentence in error for error in written["errors"]), written["errors"]


def test_missing_package_engine_leaves_a_failing_summary(pytester: pytest.Pytester) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options("pkg:nonexistent_pkg/x.onnx", out), *QUIET)
    _assert_failed_with_summary(
        result,
        out,
        "option --trt-engine: 'pkg:nonexistent_pkg/x.onnx': package 'nonexistent_pkg' is not installed",
    )


def test_missing_package_baseline_fails_instead_of_skipping(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(
        *options(silero_onnx, out), "--trt-baseline=pkg:nonexistent_pkg/b.onnx", *QUIET
    )
    _assert_failed_with_summary(
        result,
        out,
        "option --trt-baseline: 'pkg:nonexistent_pkg/b.onnx': package 'nonexistent_pkg' is not installed",
    )


def test_unreadable_contract_leaves_a_failing_summary(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    bad = pytester.path / "broken.contract.json"
    bad.write_text('{"trtparity": "contract/1",\n  "model": }\n')
    out = pytester.path / "artifacts"
    args = [a for a in options(silero_onnx, out) if not a.startswith("--trt-contract")]
    result = pytester.runpytest_subprocess(*args, f"--trt-contract={bad}", *QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*broken.contract.json:2: invalid JSON*", "verdict: FAIL*"])
    written = summary(out)
    assert written["verdict"] == "fail"
    assert any("broken.contract.json" in error for error in written["errors"])


def test_missing_reference_leaves_a_failing_summary(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    args = [a for a in options(silero_onnx, out) if not a.startswith("--trt-ref")]
    missing = pytester.path / "missing.jsonl"
    result = pytester.runpytest_subprocess(*args, f"--trt-ref={missing}", *QUIET)
    _assert_failed_with_summary(result, out, f"{missing}: reference file not found")


def test_deselecting_every_gate_test_still_leaves_a_failing_summary(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_onnx, out), "-k", "no_such_test", *QUIET)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert summary(out)["verdict"] == "fail"


def test_collect_only_writes_no_artifacts(pytester: pytest.Pytester, silero_onnx: Path) -> None:
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_onnx, out), "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_functional.py::test_functional_parity*"])
    assert not (out / "summary.json").exists()


def test_the_bundled_suites_under_xdist(pytester: pytest.Pytester, silero_onnx: Path) -> None:
    pytest.importorskip("xdist")
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(*options(silero_onnx, out), "-n", "2", *QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert summary(out)["verdict"] == "pass"
    assert summary(out)["suites"]["functional"]["chunks_run"] == 300
