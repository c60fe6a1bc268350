"""The verdict through pytest's channels (JUnit, terminal, GitHub job summary, pytest-html), the
progress indicator, and the CI templates."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_trtparity.artifacts import channels
from pytest_trtparity.artifacts.model import RunView, SuiteView
from pytest_trtparity.artifacts.summary import build_summary, ci_name
from pytest_trtparity.judge.results import SuiteResult
from pytest_trtparity.judge.tiers import Finding, Level
from pytest_trtparity.util import progress
from pytest_trtparity.util.jsonfloat import clean

from .conftest import REPO, SILERO_CONTRACT, short_reference


def run_gate(pytester: pytest.Pytester, engine: Path, *extra: str) -> Any:
    ref = short_reference(pytester.path / "ref.jsonl", 40)
    return pytester.runpytest(
        f"--trt-engine={engine}",
        f"--trt-contract={SILERO_CONTRACT}",
        f"--trt-ref={ref}",
        f"--trt-artifacts={pytester.path / 'artifacts'}",
        "-p",
        "no:cacheprovider",
        *extra,
    )


def test_junit_terminal_and_github_summary(
    pytester: pytest.Pytester, loop_dir: Path, silero_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_summary = pytester.path / "step_summary.md"
    job_summary.write_text("## an earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job_summary))
    monkeypatch.delenv("CI", raising=False)
    result = run_gate(pytester, silero_onnx, f"--junitxml={pytester.path / 'junit.xml'}")
    result.assert_outcomes(passed=3)

    result.stdout.fnmatch_lines(
        [
            "*trtparity gate*",
            "closed_loop: pass (40 chunks)",
            "  drift stateN: max *, mean *, trend */chunk (p=*, * at alpha 0.01), growth * of bound",
            "functional vs closed loop:",
            "  output * max_abs *x*",
            "  stateN * max_abs *x*",
            "artifacts: * (summary.json, report.md, 2 plot(s)), run *",
            "verdict: PASS*",
        ]
    )
    assert "chunks/s" not in result.stdout.str()  # no progress line when output is not a terminal

    tree = ET.parse(pytester.path / "junit.xml")
    props = {}
    for case in tree.iter("testcase"):
        props[case.get("name")] = {p.get("name"): p.get("value") for p in case.iter("property")}
    loop = props["test_closed_loop_stability"]
    assert loop["trtparity.verdict"] == "pass" and loop["trtparity.chunks"] == "40"
    assert float(loop["trtparity.stateN.worst_max_abs"]) < 1e-3
    assert "trtparity.stateN.trend_p" in loop
    assert props["test_functional_parity"]["trtparity.suite"] == "functional"

    text = job_summary.read_text()
    assert text.startswith("## an earlier step\n")  # appended, never overwritten
    assert "## TensorRT parity gate: \u2705 PASS" in text
    assert "No monotonic error growth in closed loop" in text
    assert "| `stateN` | max_abs |" in text
    assert "](plots/" not in text  # no images that cannot resolve on the job page


FAKE_HTML_EXTRAS = """
def png(content, name="Image"):
    return {"name": name, "format_type": "image", "content": content, "mime_type": "image/png", "extension": "png"}
"""

RECORD_EXTRAS = """
import json

def pytest_runtest_logreport(report):
    if report.when == "call":
        with open("extras.jsonl", "a") as fh:
            fh.write(json.dumps({"test": report.nodeid, "extras": [
                (e["name"], e["mime_type"], e["content"][:8]) for e in getattr(report, "extras", [])]}) + "\\n")
"""


def test_plots_attached_as_pytest_html_extras(
    pytester: pytest.Pytester, loop_dir: Path, silero_onnx: Path
) -> None:
    """pytest-html is optional and not installed here: a stand-in module with its `extras.png`
    API shows that the plots are attached when it is importable."""
    pkg = pytester.mkpydir("pytest_html")
    (pkg / "extras.py").write_text(FAKE_HTML_EXTRAS)
    pytester.syspathinsert()
    pytester.makeconftest(RECORD_EXTRAS)
    run_gate(pytester, silero_onnx).assert_outcomes(passed=3)
    rows = {
        json.loads(line)["test"]: json.loads(line)["extras"]
        for line in (pytester.path / "extras.jsonl").read_text().splitlines()
    }
    assert rows["test_contract.py::test_engine_matches_contract"] == []
    loop = rows["test_closed_loop.py::test_closed_loop_stability"]
    assert [(name, mime) for name, mime, _ in loop] == [
        ("output stability", "image/png"),
        ("stateN stability", "image/png"),
    ]
    assert all(head == "iVBORw0K" for _, _, head in loop)  # base64 of the PNG signature


def test_without_pytest_html_there_are_no_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pytest_html", None)
    assert not channels.html_available()
    assert channels.html_extras({"o": b"\x89PNG"}) == []


def test_junit_properties_of_an_errored_suite() -> None:
    result = SuiteResult("closed_loop", error="reader stopped at line 42")
    result.series("o").add("default#0", {"max_abs": float("nan")})
    view = SuiteView.from_json(result.suite, clean(result.to_json()))
    props = dict(channels.junit_properties(view, {"o": "max_abs"}))
    assert props["trtparity.verdict"] == "fail" and props["trtparity.complete"] == "false"
    assert props["trtparity.error"] == "reader stopped at line 42"
    assert props["trtparity.o.worst_max_abs"] == "NaN"


def test_github_summary_lists_failures_and_is_skipped_outside_actions(tmp_path: Path) -> None:
    result = SuiteResult("functional", complete=True)
    result.findings.append(
        Finding(Level.FAIL, "functional", "o", "max_abs", "output 'o': max_abs 1 is above 0.1")
    )
    summary = build_summary(
        results=[result],
        environment={},
        inputs={
            "engine": "e",
            "contract": None,
            "reference": None,
            "mode": "auto",
            "backend": None,
        },
        contract_raw=None,
        aggregates={},
    )
    summary = RunView.from_summary(summary)
    text = channels.github_markdown(summary, "trtparity-artifacts")
    assert "\u274c FAIL" in text and "- output 'o': max_abs 1 is above 0.1" in text
    assert channels.append_github_summary(summary, environ={}) is None
    target = tmp_path / "s.md"
    assert (
        channels.append_github_summary(summary, environ={"GITHUB_STEP_SUMMARY": str(target)})
        == target
    )
    channels.append_github_summary(summary, environ={"GITHUB_STEP_SUMMARY": str(target)})
    assert target.read_text().count("## TensorRT parity gate") == 2


# -- progress -------------------------------------------------------------------------------------


class FakeSink:
    def __init__(self) -> None:
        self.updates: list[str] = []
        self.ends: list[str] = []

    def update(self, text: str) -> None:
        self.updates.append(text)

    def end(self, text: str) -> None:
        self.ends.append(text)


def test_progress_redraws_at_most_every_interval() -> None:
    now = [0.0]
    sink = FakeSink()
    bar = progress.Progress(sink, "closed_loop", total=300, interval=0.25, clock=lambda: now[0])
    for done in range(1, 301):
        now[0] = done * 0.01  # 100 chunks per second
        bar(done)
    bar.close()
    assert 10 <= len(sink.updates) <= 13
    assert sink.updates[0] == "closed_loop: 1/300 chunks (0%), 0.0 s"
    assert sink.ends == ["closed_loop: 300/300 chunks (100%), 3.0 s, 100 chunks/s"]


def test_progress_without_a_total_and_past_it() -> None:
    sink = FakeSink()
    bar = progress.Progress(sink, "loop", total=None, clock=lambda: 0.0)
    bar(5)
    assert sink.updates == ["loop: 5 chunks, 0.0 s"]
    bar.close()
    bar.close()
    assert len(sink.ends) == 1


class StubConfig:
    def __init__(self, verbosity: int = 0, tty: bool = True) -> None:
        self.verbosity = verbosity
        self.pluginmanager = self
        self.reporter = type("R", (), {"isatty": tty})()

    def get_verbosity(self) -> int:
        return self.verbosity

    def get_plugin(self, name: str) -> Any:
        return self.reporter if name == "terminalreporter" else None


@pytest.mark.parametrize(
    ("verbosity", "tty", "ci", "shown"),
    [
        (0, True, None, True),
        (-1, True, None, False),
        (0, False, None, False),
        (0, True, "true", False),
        (1, True, "0", True),
    ],
)
def test_progress_is_quiet_under_q_in_ci_and_when_piped(
    monkeypatch: pytest.MonkeyPatch, verbosity: int, tty: bool, ci: str | None, shown: bool
) -> None:
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    bar = progress.for_config(StubConfig(verbosity, tty), "loop", 10)  # type: ignore[arg-type]
    assert (bar is not None) is shown


def test_terminal_sink_returns_the_line_to_pytest(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    class Reporter:
        currentfspath: Any = tmp_path / "suites" / "test_closed_loop.py"
        startpath = tmp_path

        def ensure_newline(self) -> None:
            calls.append(("newline", ""))
            self.currentfspath = None

        def rewrite(self, text: str, erase: bool = False) -> None:
            calls.append(("rewrite", text))

        def write(self, text: str, flush: bool = False) -> None:
            calls.append(("write", text))

        def flush(self) -> None:
            pass

    reporter = Reporter()
    sink = progress._TerminalSink(reporter, None)
    sink.update("a")
    sink.update("b")
    sink.end("done")
    assert calls == [
        ("newline", ""),
        ("rewrite", "a"),
        ("rewrite", "b"),
        ("rewrite", "done"),
        ("write", "\n"),
        ("write", "suites/test_closed_loop.py "),
    ]
    assert reporter.currentfspath == tmp_path / "suites" / "test_closed_loop.py"


def test_ci_detection() -> None:
    assert ci_name({"GITHUB_ACTIONS": "true", "CI": "true"}) == "github-actions"
    assert ci_name({"GITLAB_CI": "true"}) == "gitlab-ci"
    assert ci_name({"CI": "1"}) == "ci"
    assert ci_name({"CI": "false"}) is None and ci_name({}) is None


# -- CI templates -----------------------------------------------------------------------------------


def test_github_actions_template_uploads_artifacts_always() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the CI templates")
    workflow = yaml.safe_load((REPO / "ci" / "github-actions.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    upload = next(
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")
    )
    assert upload["if"] == "always()"
    assert "trtparity-artifacts" in str(upload["with"]["path"])
    assert any("ci/run-gate.sh" in str(s.get("run", "")) for s in job["steps"])
    assert "--junitxml" in (REPO / "ci" / "run-gate.sh").read_text()


def test_gitlab_template_keeps_artifacts_when_the_gate_fails() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the CI templates")
    config = yaml.safe_load((REPO / "ci" / "gitlab-ci.yml").read_text())
    job = config["trtparity-gate"]
    assert job["artifacts"]["when"] == "always"
    assert "trtparity-artifacts/" in job["artifacts"]["paths"]
    assert job["artifacts"]["reports"]["junit"]


def test_run_gate_script_is_executable_and_strict() -> None:
    script = REPO / "ci" / "run-gate.sh"
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
