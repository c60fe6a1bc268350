"""The artifacts folder as a reader finds it at any moment: marked in progress from a run's start,
one consistent set at its end, never an earlier run's verdict, one run at a time, no leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.artifacts import lock, report
from pytest_trtparity.artifacts.model import RunView
from pytest_trtparity.artifacts.summary import schema
from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.errors import ContractError
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.judge.tiers import Finding, Level
from pytest_trtparity.session import GateSession
from pytest_trtparity.settings import resolve_settings
from pytest_trtparity.util import atomic

from .conftest import SILERO_CONTRACT, SUITES, short_reference

PNG = b"\x89PNG\r\n\x1a\n"
OLD_RUN = "20000101T000000Z-1-aaaaaa"


def validate(summary: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    errors = list(Draft202012Validator(schema()).iter_errors(summary))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def gate_for(folder: Path, **options: str) -> GateSession:
    """A session as the plugin makes one; the contract is loaded only when it is Silero's."""
    cli = {"trt_artifacts": str(folder), "trt_contract": str(SILERO_CONTRACT), **options}
    gate = GateSession(settings=resolve_settings(cli, {}, cli_base=folder, ini_base=folder))
    if "trt_contract" not in options:
        gate.contract = load_contract(SILERO_CONTRACT)
    return gate


def passing_result() -> SuiteResult:
    result = SuiteResult("functional")
    for k in range(5):
        result.series("stateN").add(f"s#{k}", {"max_abs": 1e-6 * (k + 1)})
        result.series("output").add(f"s#{k}", {"max_abs": 1e-7})
        result.chunk_done("s")
    result.finish()
    return result


def failing_result() -> SuiteResult:
    result = passing_result()
    result.findings.append(Finding(Level.FAIL, "functional", "stateN", "max", "stateN too far"))
    return result


def earlier_passing_run(folder: Path) -> dict[str, Any]:
    """What a finished passing run left: summary, report, plots, and a killed writer's litter."""
    gate = gate_for(folder)
    gate.run_id = OLD_RUN
    gate.record(passing_result())
    gate.write()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["status"] == "complete"
    (folder / ".summary.json.k1ll3d.tmp").write_text("{half")
    (folder / ".report.md.k1ll3d.tmp").write_text("# half")
    (folder / "plots" / ".stability-stateN.png.k1ll3d.tmp").write_bytes(PNG)
    (folder / ".trtparity-probe.x1y2").write_text("")
    return summary


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or "probe" in p.name)


# -- start: the folder says "in progress" at once ------------------------------------------------


def test_start_replaces_the_earlier_verdict_report_and_plots(tmp_path: Path) -> None:
    earlier_passing_run(tmp_path)
    assert len(list((tmp_path / "plots").glob("stability-*.png"))) == 2
    gate = gate_for(tmp_path)
    gate.start()
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate(summary)
    assert (summary["status"], summary["verdict"]) == ("in_progress", "running")
    assert summary["run_id"] == gate.run_id != OLD_RUN
    page = (tmp_path / "report.md").read_text()
    assert page.startswith("# TensorRT parity sign-off: \u23f3 IN PROGRESS")
    assert gate.run_id in page and "PASS" not in page
    assert not list((tmp_path / "plots").glob("*.png"))  # stale plots go
    assert leftovers(tmp_path) == []  # killed runs' temporaries go
    holder = lock.read_holder(tmp_path / lock.LOCK_NAME)
    assert holder is not None and (holder.pid, holder.run_id) == (os.getpid(), gate.run_id)
    gate.start()  # idempotent: still ours
    gate.record(failing_result())
    gate.write()
    assert not (tmp_path / lock.LOCK_NAME).exists()  # released
    final = json.loads((tmp_path / "summary.json").read_text())
    validate(final)
    assert (final["status"], final["verdict"], final["run_id"]) == ("complete", "fail", gate.run_id)
    assert final["started"] == summary["started"]


def test_the_schema_rejects_an_in_progress_summary_that_claims_a_verdict(tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    gate = gate_for(tmp_path)
    running = gate.build_summary(status="in_progress")
    validate(running)
    assert list(Draft202012Validator(schema()).iter_errors({**running, "verdict": "pass"}))
    gate.record(passing_result())
    done = gate.build_summary()
    validate(done)
    assert list(Draft202012Validator(schema()).iter_errors({**done, "verdict": "running"}))
    assert list(Draft202012Validator(schema()).iter_errors({**done, "status": "finished"}))


# -- a crash between any two steps never shows a mix -----------------------------------------------


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (BaseException: no `except Exception` sees it)."""


def count_replaces(folder: Path) -> int:
    calls = 0
    real = os.replace

    def counting(src: Any, dst: Any) -> None:
        nonlocal calls
        calls += 1
        real(src, dst)

    shutil.rmtree(folder, ignore_errors=True)
    earlier_passing_run(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic.os, "replace", counting)
        gate = gate_for(folder)
        gate.start()
        gate.record(failing_result())
        gate.write()
    return calls


def check_never_mixed(folder: Path, run_id: str) -> str:
    """The invariant a reader relies on; returns the summary's status."""
    summary = json.loads((folder / "summary.json").read_text())
    validate(summary)
    assert summary["run_id"] == run_id, "the earlier run's summary is still showing"
    page = (folder / "report.md").read_text()
    plots = sorted(p.name for p in (folder / "plots").glob("stability-*.png"))
    if summary["status"] == "complete":
        assert summary["verdict"] == "fail"
        assert f"run `{run_id}`" in page and "FAIL" in page  # report of the same run, same verdict
        assert plots == sorted(Path(p).name for p in summary["artifacts"]["plots"].values())
    else:
        assert summary["verdict"] == "running"
        if OLD_RUN in page:  # only between the two renames of the start: not this run's page
            assert run_id not in page
        else:
            assert run_id in page
    return str(summary["status"])


def test_a_crash_at_any_step_leaves_no_earlier_verdict_and_no_mix(tmp_path: Path) -> None:
    steps = count_replaces(tmp_path / "count")
    assert steps >= 5  # summary and report at the start; two plots, report, summary at the end
    seen = []
    real = os.replace
    for crash_at in range(2, steps + 1):  # after the first rename: the in-progress summary
        folder = tmp_path / f"crash{crash_at}"
        earlier_passing_run(folder)
        calls = [0]

        def replace(src: Any, dst: Any, crash_at: int = crash_at, calls: list[int] = calls) -> None:
            calls[0] += 1
            if calls[0] == crash_at:
                raise Killed
            real(src, dst)

        gate = gate_for(folder)
        with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
            mp.setattr(atomic.os, "replace", replace)
            gate.start()
            gate.record(failing_result())
            gate.write()
        seen.append(check_never_mixed(folder, gate.run_id))
        gate.release()
    assert seen[-1] == "in_progress" and "in_progress" in seen  # the last rename is the commit
    assert (
        check_never_mixed(
            tmp_path / "count",
            json.loads((tmp_path / "count" / "summary.json").read_text())["run_id"],
        )
        == "complete"
    )


# -- write() never loses the verdict to a bad input --------------------------------------------


def test_a_contract_error_while_writing_still_writes_a_failing_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_trtparity.artifacts import summary as summary_module

    def broken(contract: Any) -> Any:
        raise ContractError("c.json:12: at $.closed_loop.default.max: tier is not a number")

    monkeypatch.setattr(summary_module, "thresholds", broken)
    gate = gate_for(tmp_path)
    gate.record(passing_result())
    assert gate.write() == tmp_path / "summary.json"
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate(summary)
    assert (summary["status"], summary["verdict"]) == ("complete", "fail")
    assert summary["errors"] == ["c.json:12: at $.closed_loop.default.max: tier is not a number"]
    assert summary["suites"]["functional"]["verdict"] == "pass"  # what was measured is kept
    assert "c.json:12" in (tmp_path / "report.md").read_text()
    assert not list((tmp_path / "plots").glob("*.png"))  # they belonged to the lost summary


def test_a_contract_parser_bug_names_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytest_trtparity.contract.model as contract_module

    def crash(path: Path) -> Any:
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")

    monkeypatch.setattr(contract_module, "load_contract", crash)
    gate = gate_for(tmp_path)
    gate.contract = None  # no fixture loaded it: the writer loads it itself
    gate.record(passing_result())
    gate.write()
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate(summary)
    assert summary["verdict"] == "fail"
    assert summary["errors"] == [
        f"{SILERO_CONTRACT}: contract cannot be read: ValueError: Exceeds the limit (4300 digits) "
        "for integer string conversion"
    ]


def test_results_json_cannot_hold_still_leave_the_verdict(tmp_path: Path) -> None:
    gate = gate_for(tmp_path)
    result = passing_result()
    result.payload.other["count"] = 10**5000  # json.dumps refuses integers of over 4300 digits
    gate.record(result)
    gate.environment["clock"] = 10**5000
    gate.write()
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate(summary)
    assert summary["verdict"] == "fail" and summary["suites"] == {}
    assert "clock" not in summary["environment"]
    assert len(summary["errors"]) == 2
    assert all("summary.json" in e and "ValueError" in e for e in summary["errors"])


def test_a_clean_write_has_no_errors(tmp_path: Path) -> None:
    gate = gate_for(tmp_path)
    gate.record(passing_result())
    gate.write()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["verdict"], summary["errors"]) == ("pass", [])
    assert set(summary["artifacts"]["plots"]) == {"output", "stateN"}


# -- one run per folder --------------------------------------------------------------------------


def test_a_second_run_stops_with_one_sentence_naming_the_holder(tmp_path: Path) -> None:
    held = lock.claim(tmp_path, "first-run")
    (tmp_path / "summary.json").write_text('{"theirs": true}\n')
    try:
        second = gate_for(tmp_path)
        with pytest.raises(pytest.UsageError) as info:
            second.start()
        message = str(info.value)
        assert message == (
            f"{tmp_path}: another gate run is writing into this artifacts folder (pid "
            f"{os.getpid()} on host {held.holder.host}, started {held.holder.started}, run "
            "first-run); wait for it to finish or pass --trt-artifacts with another folder"
        )
        second.record(passing_result())
        assert second.write() is None  # writes nothing into the holder's folder
        assert (tmp_path / "summary.json").read_text() == '{"theirs": true}\n'
        assert lock.read_holder(tmp_path / lock.LOCK_NAME) == held.holder
    finally:
        held.release()
    third = gate_for(tmp_path)
    third.start()  # free again
    third.release()


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(dead.stdout)
    stale = lock.Holder(pid, lock.this_holder("x").host, "2000-01-01T00:00:00+00:00", "dead")
    (tmp_path / lock.LOCK_NAME).write_text(json.dumps(stale.to_json()))
    assert not lock.pid_alive(pid)
    gate = gate_for(tmp_path)
    gate.start()
    holder = lock.read_holder(tmp_path / lock.LOCK_NAME)
    assert holder is not None and holder.pid == os.getpid()
    gate.release()


# -- as users run it: killed by SIGKILL, and two pytest processes ---------------------------------


KILL_AT_COMMIT = """
import os, signal
from pytest_trtparity.util import atomic

real = atomic.os.replace
seen = []

def replace(src, dst):
    if str(dst).endswith("summary.json"):
        seen.append(dst)
        if len(seen) == 2:  # the final summary: killed just before its rename
            os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)

if os.environ.get("KILL_AT_COMMIT"):
    atomic.os.replace = replace
"""

KILL_MID_RUN = """

def pytest_runtest_call(item):
    if os.environ.get("KILL_MID_RUN") and "closed_loop" in item.nodeid:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def gate_dir(pytester: pytest.Pytester) -> Path:
    for name in ("test_contract.py", "test_functional.py", "test_closed_loop.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(KILL_AT_COMMIT + KILL_MID_RUN)
    return pytester.path


def run(pytester: pytest.Pytester, engine: Path, out: Path, **env: str) -> Any:
    ref = pytester.path / "ref.jsonl"
    if not ref.exists():
        short_reference(ref, 20)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        return pytester.runpytest_subprocess(
            f"--trt-engine={engine}",
            f"--trt-contract={SILERO_CONTRACT}",
            f"--trt-ref={ref}",
            f"--trt-artifacts={out}",
            "-p",
            "no:cacheprovider",
            "-q",
        )


def folder_state(out: Path) -> tuple[str, str, str]:
    summary = json.loads((out / "summary.json").read_text())
    return summary["status"], summary["verdict"], summary["run_id"]


def test_a_run_killed_mid_way_or_at_its_commit_never_shows_the_earlier_pass(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    out = pytester.path / "out"
    run(pytester, silero_onnx, out).assert_outcomes(passed=3)
    status, verdict, first = folder_state(out)
    assert (status, verdict) == ("complete", "pass") and (out / "plots").is_dir()

    killed = run(pytester, silero_onnx, out, KILL_MID_RUN="1")
    assert killed.ret == -signal.SIGKILL
    status, verdict, second = folder_state(out)
    assert (status, verdict) == ("in_progress", "running") and second != first
    assert "IN PROGRESS" in (out / "report.md").read_text()
    assert not list((out / "plots").glob("*.png"))  # the first run's plots are gone

    killed = run(pytester, silero_onnx, out, KILL_AT_COMMIT="1")
    assert killed.ret == -signal.SIGKILL
    status, verdict, third = folder_state(out)
    assert (status, verdict) == ("in_progress", "running") and third not in (first, second)
    page = (out / "report.md").read_text()
    assert f"run `{third}`" in page  # the report already written is this run's, never the first's
    assert leftovers(out) == [next(p.name for p in out.glob(".summary.json.*.tmp"))]
    assert (out / lock.LOCK_NAME).exists()  # the dead run's lock stays behind...

    run(pytester, silero_onnx, out).assert_outcomes(passed=3)  # ...and is taken over
    status, verdict, fourth = folder_state(out)
    assert (status, verdict) == ("complete", "pass") and fourth != third
    assert leftovers(out) == [] and not (out / lock.LOCK_NAME).exists()


HOLD = """
import sys, time
from pathlib import Path
from pytest_trtparity.artifacts.lock import claim
held = claim(Path(sys.argv[1]), "the-other-run")
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_pytest_run_into_a_held_folder_stops(
    pytester: pytest.Pytester, gate_dir: Path, silero_onnx: Path
) -> None:
    out = pytester.path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = run(pytester, silero_onnx, out)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                f"ERROR: {out}: another gate run is writing into this artifacts folder "
                f"(pid {holder.pid} on host *, started *, run the-other-run); wait for it to "
                "finish or pass --trt-artifacts with another folder"
            ]
        )
        assert not (out / "summary.json").exists()  # nothing written into the holder's folder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run(pytester, silero_onnx, out).assert_outcomes(
        passed=3
    )  # the dead holder's lock is taken over


# -- report.md: what did not run, and the environment ---------------------------------------------


def test_report_names_the_suites_that_did_not_run_and_why(tmp_path: Path) -> None:
    gate = gate_for(tmp_path, trt_mode="functional")
    gate.record(passing_result())
    gate.note_skip("throughput", "the engine has no batch dimension")
    summary = gate.build_summary()
    validate(summary)
    assert summary["not_run"] == {
        "contract": "not run: not collected, or deselected (-k, -m)",
        "closed_loop": "not selected by --trt-mode functional",
        "profiles": "no --trt-onnx given (the ONNX file the engine was built from)",
        "latency": "not run: not collected, or deselected (-k, -m)",
        "throughput": "skipped: the engine has no batch dimension",
        "memory": "not run: not collected, or deselected (-k, -m)",
        "baseline": "no --trt-baseline given (a PyTorch or ONNX model to compare with)",
        "invariance": "not run: not collected, or deselected (-k, -m)",
        "regression": "no --trt-previous given (an earlier run's artifacts or summary.json)",
    }
    page = report.render(RunView.from_summary(summary))
    assert "## Suites that did not run" in page
    assert "- \u2796 `baseline` (baseline comparison): no --trt-baseline given" in page
    assert "- \u2796 `profiles` (profile sweep): no --trt-onnx given" in page
    # the Performance line lists only limits this run could apply
    assert "**Performance meets targets (p95_ms warn 10, fail 21)**" in page
    assert "baseline_ratio, baseline_error not applied: the baseline suite did not run" in page


def test_not_run_reasons_when_the_run_stopped_or_auto_mode_dropped_closed_loop(
    tmp_path: Path,
) -> None:
    contract = json.loads(SILERO_CONTRACT.read_text())
    contract.pop("$schema", None)
    contract["state"] = []
    contract.pop("closed_loop", None)
    stateless = tmp_path / "stateless.json"
    stateless.write_text(json.dumps(contract))
    gate = gate_for(tmp_path, trt_contract=str(stateless), trt_baseline="b.onnx")
    gate.errors.append("e.onnx: engine cannot be loaded")
    reasons = gate.not_run()
    assert reasons["closed_loop"] == (
        "not selected: --trt-mode auto and the contract declares no state pairs"
    )
    assert reasons["baseline"] == "did not start: an error stopped the run first (see errors)"
    gate.record(SuiteResult("baseline", chunks_run=3, complete=True))
    assert "baseline" not in gate.not_run()


def test_the_performance_line_keeps_baseline_limits_when_the_baseline_ran(tmp_path: Path) -> None:
    gate = gate_for(tmp_path)
    gate.record(SuiteResult("baseline", chunks_run=3, complete=True))
    page = report.render(RunView.from_summary(gate.build_summary()))
    assert "baseline_ratio warn 1, fail 1.5, baseline_error warn 2, fail 10" in page
    assert "not applied" not in page


def test_environment_block_renders_every_key(tmp_path: Path) -> None:
    gate = gate_for(tmp_path)
    gate.record(passing_result())
    gate.environment.update(
        {
            "backend": "torch",
            "device": "NVIDIA H200",
            "tf32": False,
            "cudnn_version": 91002,
            "cublas_version": "12.8.4",
            "gpu_clocks": {"sm_mhz": 1980, "mem_mhz": 3201},
            "baseline": {"backend": "onnxruntime", "version": "1.22.0"},
        }
    )
    page = report.render(RunView.from_summary(gate.build_summary()))
    env = page[page.index("## Environment") :]
    for row in (
        f"| run | `{gate.run_id}` |",
        "| device | `NVIDIA H200` |",
        "| tf32 | `false` |",
        "| cudnn_version | `91002` |",
        "| cublas_version | `12.8.4` |",
        "| gpu_clocks | `SM 1980 MHz, memory 3201 MHz` |",
        "| baseline.backend | `onnxruntime` |",
    ):
        assert row in env
    assert env.index("| device |") < env.index("| cudnn_version |")  # known keys first


def test_a_suite_that_skips_itself_is_listed_with_its_reason(
    pytester: pytest.Pytester, silero_onnx: Path
) -> None:
    for name in ("test_contract.py", "test_profiles.py"):
        shutil.copy(SUITES / name, pytester.path / name)
    pytester.makeini("[pytest]\n")
    out = pytester.path / "out"
    result = pytester.runpytest(
        f"--trt-engine={silero_onnx}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={short_reference(pytester.path / 'ref.jsonl', 5)}",
        f"--trt-artifacts={out}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1, skipped=1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["not_run"]["profiles"] == (
        "skipped: profile sweep needs the ONNX the engine came from: pass --trt-onnx PATH"
    )
    assert (
        "`profiles` (profile sweep): skipped: profile sweep needs"
        in (out / "report.md").read_text()
    )
