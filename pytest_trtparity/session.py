"""The state of one gate run: what each suite found, and the verdict and artifacts built from it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .artifacts.run_folder import new_run_id
from .artifacts.summary import COMPLETE, IN_PROGRESS, build_summary, output_aggregates
from .contract.model import Contract
from .errors import ConfigError, ParityWarning, TrtParityError
from .judge.results import SuiteResult
from .judge.tiers import Level, verdict_of
from .settings import GateSettings

if TYPE_CHECKING:
    from .artifacts.lock import FolderLock
    from .artifacts.model import RunView
    from .sharding.parts import Selection, ShardPart

#: Failures listed in a test's failure message before the rest are only counted.
MAX_LISTED = 12


@dataclass
class GateSession:
    settings: GateSettings
    results: list[SuiteResult] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    contract: Contract | None = None
    gate_items: int = 0
    summary_path: Path | None = None
    summary: dict[str, Any] | None = None
    #: Parts of sharded suites (pytest-xdist) waiting for their merge; see sharding.py.
    parts: list[ShardPart] = field(default_factory=list)
    #: Suites that skipped themselves, with their reason: the report says why they did not run.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Names this run in every artifact it writes, so none can pass for another run's.
    run_id: str = field(default_factory=new_run_id)
    started: str | None = None
    _lock: FolderLock | None = field(default=None, repr=False, compare=False)
    #: Why the folder could not be claimed, when another run holds it: then nothing is written.
    _busy: str | None = field(default=None, repr=False, compare=False)
    #: This process writes the artifacts (not an xdist worker, not --collect-only).
    writes: bool = True
    #: A gate option was given (or `trtparity gate` ran): the run owes a verdict even with no test.
    requested: bool = False
    #: The explained outputs (`--trt-explain`), summary.json's `diagnosis` entries; made once the
    #: verdict is known, at the end of the run.
    diagnosis: list[dict[str, Any]] = field(default_factory=list)
    #: Plots drawn this run, by content fingerprint: a picture is drawn once, whether pytest-html
    #: asked for it first or the final artifacts did.
    _drawn: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    # -- the pytest face: plugin.py registers the session as a plugin; its hooks are one line ----

    @pytest.hookimpl(trylast=True)  # after other plugins' ends, as a module hook of plugin.py ran
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        session.exitstatus = self.finish(
            session.exitstatus, lambda: config.hook.pytest_trtparity_environment(config=config)
        )

    def finish(
        self,
        exitstatus: int,
        facts: Callable[[], Iterable[Mapping[str, Any] | None]] = tuple,
    ) -> int:
        """The run's exit status once the gate has written its verdict: a failing verdict, or a
        folder that cannot be written, fails a run pytest alone would pass. A run that is no gate
        run (no gate test, nothing asked for) is left as it is and writes nothing. `facts` (the
        environment hook's answers) is asked only when there is a verdict to write."""
        if not self.writes or not (
            self.gate_items or self.results or self.errors or self.requested
        ):
            return exitstatus
        for found in facts():
            self.environment.update(found or {})
        try:
            self.write()
        except TrtParityError as exc:
            self.errors.append(str(exc))
            return pytest.ExitCode.TESTS_FAILED
        if self.verdict is Level.FAIL and exitstatus == pytest.ExitCode.OK:
            return pytest.ExitCode.TESTS_FAILED
        return exitstatus

    def record(self, result: SuiteResult) -> None:
        self.results = [r for r in self.results if r.suite != result.suite] + [result]

    def enforce(self, result: SuiteResult) -> None:
        """Record `result`, then fail the calling test on fail-tier findings and warn on warn-tier ones.

        The message lists each failure on its own line, worst first, so the first line is the one
        sentence a developer needs.
        """
        self.record(result)
        fails = result.failures()
        warns = result.warnings()
        if self.settings.strict:
            fails, warns = fails + warns, []
        for w in warns:
            warnings.warn(ParityWarning(w.message), stacklevel=2)
        if result.error and not fails:
            pytest.fail(f"{result.suite}: {result.error}", pytrace=False)
        if fails:
            lines = [f.message for f in fails[:MAX_LISTED]]
            if len(fails) > MAX_LISTED:
                lines.append(f"... and {len(fails) - MAX_LISTED} more failures (see summary.json)")
            head = f"{result.suite} parity failed: {len(fails)} finding(s)"
            if self.settings.strict and any(f.level is Level.WARN for f in fails):
                head += " (--trt-strict: warnings fail)"
            pytest.fail(head + "\n" + "\n".join(lines), pytrace=False)
        if not result.complete:
            pytest.fail(
                f"{result.suite}: did not complete ({result.error or 'no chunk ran'})",
                pytrace=False,
            )

    @property
    def verdict(self) -> Level:
        levels = [r.verdict for r in self.results]
        if self.errors or not self.results:
            levels.append(Level.FAIL)
        level = verdict_of(levels)
        if self.settings.strict and level is Level.WARN:
            return Level.FAIL
        return level

    def aggregates(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            if not r.outputs or self.contract is None:
                continue
            per: dict[str, Any] = {}
            for name in r.outputs:
                tol = self.contract.tolerance(name)
                per.update(
                    output_aggregates(
                        SuiteResult(r.suite, {name: r.outputs[name]}), tol.metric, tol.within
                    )
                )
            out[r.suite] = per
        return out

    def note_skip(self, suite: str, reason: str) -> None:
        """A gate suite skipped itself: kept for the report's list of suites that did not run."""
        self.skipped[suite] = reason

    def not_run(self) -> dict[str, str]:
        from .artifacts.not_run import reasons

        ran = {r.suite for r in self.results}
        return reasons(self.settings, ran, self.skipped, stopped=bool(self.errors))

    def build_summary(
        self,
        artifacts: dict[str, Any] | None = None,
        *,
        status: str = COMPLETE,
        bare: bool = False,
        results: list[SuiteResult] | None = None,
    ) -> dict[str, Any]:
        """summary.json's content. `bare`: without the contract (its criteria, thresholds and
        aggregates), for when they are what broke."""
        s = self.settings
        running = status == IN_PROGRESS
        contract = None if bare or running else self.contract
        results = ([] if running else self.results) if results is None else results
        return build_summary(
            results=results,
            environment=self.environment,
            inputs={
                "engine": str(s.engine) if s.engine else None,
                "contract": str(s.contract) if s.contract else None,
                "reference": str(s.ref) if s.ref else None,
                "mode": s.mode,
                "backend": s.backend,
            },
            contract_raw=contract.raw if contract else None,
            aggregates=self.aggregates() if contract is not None else {},
            errors=[] if running else self.errors,
            strict=s.strict,
            contract=contract,
            artifacts=artifacts,
            run_id=self.run_id,
            started=self.started,
            status=status,
            not_run={} if running else self.not_run(),
            diagnosis=() if running or bare else self.diagnosis,
        )

    def enforce_shard(self, result: SuiteResult, selection: Selection) -> None:
        """`enforce` for one shard of a suite. Unsharded it is `enforce`. Sharded, the part is kept
        for the merge, and the test fails on what its chunks alone show (per-chunk findings); the
        criteria over all chunks are judged by `merge_parts` once every shard has reported."""
        if selection.shard.whole:
            self.enforce(result)
            return
        from .sharding.parts import make_part, shard_view

        contract = self._merge_contract()
        part = make_part(result, selection, contract)
        self.parts.append(part)
        self.enforce(shard_view(part, contract))

    def merge_parts(self, *, final: bool = False) -> None:
        """Record each sharded suite whose shards have all reported (every one when `final`) as the
        merge of its parts, judged on the merged series exactly as one process would judge it."""
        from .sharding.parts import merge

        suites = list(dict.fromkeys(p.suite for p in self.parts))
        for suite in suites:
            parts = [p for p in self.parts if p.suite == suite]
            if not final and {p.shard.index for p in parts} != set(range(parts[0].shard.count)):
                continue
            self.parts = [p for p in self.parts if p.suite != suite]
            self.record(merge(parts, self._merge_contract()))

    def _merge_contract(self) -> Contract:
        if self.contract is None and self.settings.contract is not None:
            self.contract, _ = _contract_or_error(self.settings)
        if self.contract is None:
            raise TrtParityError(
                "sharded results cannot be judged: the contract could not be loaded"
            )
        return self.contract

    def note_crash(self, suite: str, message: str) -> None:
        """A gate test failed before its suite recorded a result: the run must not look like a pass."""
        self.record(
            SuiteResult(
                suite=suite, error=f"the {suite} test failed before recording a result: {message}"
            )
        )

    # -- pytest's channels: what the artifacts renderers produce, applied here ----------------------

    def latest(self, suite: str) -> SuiteResult | None:
        return next((r for r in reversed(self.results) if r.suite == suite), None)

    def metrics(self) -> dict[str, str]:
        """Per contract output, the metric its tolerance judges (JUnit shows the worst of it)."""
        if self.contract is None:
            return {}
        return {o.name: self.contract.tolerance(o.name).metric for o in self.contract.outputs}

    def before_report(self, item: pytest.Item, suite: str, failed: str | None) -> None:
        """Called for a gate test's call phase before its report exists: record a crash as the
        suite's result when the test failed without recording one, and attach JUnit properties."""
        from .artifacts.channels import junit_properties
        from .artifacts.model import SuiteView
        from .util.jsonfloat import clean

        if failed is not None and self.latest(suite) is None:
            self.note_crash(suite, failed)
        result = self.latest(suite)
        if result is not None:
            view = SuiteView.from_json(result.suite, clean(result.to_json()))
            item.user_properties.extend(junit_properties(view, self.metrics()))

    def after_report(self, rep: pytest.TestReport, suite: str) -> None:
        """A skipped suite's reason is kept for the report; with pytest-html the plots so far are
        attached to the test's report."""
        from .artifacts import channels

        reason = channels.skip_reason(rep)
        if reason is not None:
            self.note_skip(suite, reason)
        if suite not in ("functional", "closed_loop") or not channels.html_available():
            return
        found = channels.html_extras(self._pngs())
        if found:
            rep.extras = [*getattr(rep, "extras", []), *found]  # type: ignore[attr-defined]

    def _pngs(self) -> dict[str, bytes]:
        """The plots of the results so far, drawn into this run's cache (not written anywhere)."""
        from .artifacts import plots
        from .artifacts.model import RunView

        if self.contract is None:
            return {}
        view = RunView.from_summary(self.build_summary(self._artifacts_entry()))
        return {o: d.png for o, d in plots.draw(view, self.errors, self._drawn).items()}

    def terminal_lines(self) -> list[str]:
        """The terminal summary of the written summary.json (empty before `write()`)."""
        from .artifacts.model import RunView
        from .artifacts.terminal import summary_lines

        if self.summary is None:
            return []
        path = str(self.summary_path) if self.summary_path else None
        return summary_lines(RunView.from_summary(self.summary), path)

    # -- the artifacts folder: claimed and marked at the start, one set at the end ------------------

    def start(self) -> None:
        """Claim the artifacts folder and mark it in progress: from here on, no earlier run's
        verdict, report or plots can be read as this run's (protocol: artifacts/run_folder.py).

        Called once the process knows it runs the gate, by the process that writes the artifacts
        (never on an xdist worker); idempotent. A second live run in the same folder stops this one
        with one sentence naming the holder (pytest.UsageError). A folder that cannot be written is
        not raised here: `write()` reports it with the verdict it could not write.
        """
        from .artifacts.lock import ArtifactsBusyError

        try:
            self._claim()
        except ArtifactsBusyError as exc:
            raise pytest.UsageError(str(exc)) from None
        except TrtParityError:
            return

    def _claim(self) -> None:
        from .artifacts import report
        from .artifacts.lock import ArtifactsBusyError, claim
        from .artifacts.model import RunView
        from .artifacts.run_folder import mark_in_progress, remove_leftovers
        from .artifacts.summary import IN_PROGRESS, dumps

        if self._lock is not None and self._lock.held:
            return
        if self._busy is not None:
            raise ArtifactsBusyError(self._busy)
        folder = self.settings.artifacts
        try:
            self._lock = claim(folder, self.run_id)
        except ArtifactsBusyError as exc:
            self._busy = str(exc)
            raise
        self.started = self._lock.holder.started
        remove_leftovers(folder)
        marker = self.build_summary(self._artifacts_entry(), status=IN_PROGRESS)
        with contextlib.suppress(
            TrtParityError, ValueError
        ):  # write() reports an unwritable folder
            mark_in_progress(folder, dumps(marker), report.render(RunView.from_summary(marker)))

    def release(self) -> None:
        """Give the artifacts folder back (the end of `write()` does); idempotent."""
        if self._lock is not None:
            self._lock.release()

    def _artifacts_entry(self) -> dict[str, Any]:
        return {
            "folder": str(self.settings.artifacts),
            "summary": "summary.json",
            "report": "report.md",
            "plots": {},
            "errors": [],
        }

    def write(self) -> Path | None:
        """The final artifacts as one set: plots, report.md, then summary.json last (the commit),
        all with this run's id. Never a traceback for bad inputs: whatever breaks while the full
        summary is built, a failing summary with the error's sentence is written instead. Raises
        ConfigError only when the folder cannot be written (or another run holds it); returns None,
        writing nothing, when another run held the folder at `start()`."""
        if self._busy is not None:
            return None  # not ours: the other run's verdict stays
        self._claim()
        try:
            return self._write_set()
        except ConfigError:
            raise  # the folder cannot be written: nothing else can be either
        except Exception as exc:  # a bad input or a bug must still leave a verdict
            self.errors.append(_sentence(exc, self.settings.artifacts / "summary.json"))
            return self._write_fallback()
        finally:
            self.release()

    def _write_set(self) -> Path:
        from .artifacts import plots, report
        from .artifacts.diagnose import without_plots
        from .artifacts.model import RunView
        from .artifacts.summary import dumps
        from .util.atomic import write_text

        folder = self.settings.artifacts
        self._load_contract_for_artifacts()
        artifacts = self._artifacts_entry()
        self._against_previous(artifacts)
        self._explain()  # the verdict is known: explaining it never changes it
        summary = self.build_summary(artifacts)
        try:
            view = RunView.from_summary(summary)
            drawings = plots.draw(view, self.errors, self._drawn)
            explained = plots.draw_diagnoses(view)
        except TrtParityError:
            raise
        except Exception as exc:  # a plotting bug must not cost the summary and the report
            message = f"{folder / plots.PLOTS_DIR}: plots not written: {type(exc).__name__}: {exc}"
            artifacts["errors"].append(message)
            self.errors.append(message)
            drawings, explained = {}, {}
            self.diagnosis = without_plots(self.diagnosis)
            summary = self.build_summary(artifacts)
        summary["artifacts"]["plots"] = plots.write_plots(folder, drawings, explained)
        text = dumps(summary)
        view = RunView.from_summary(summary)
        write_text(folder / "report.md", report.render(view, summary["artifacts"]["plots"]))
        self.summary_path = write_text(folder / "summary.json", text)
        self.summary = summary
        self._job_summary(view)
        return self.summary_path

    def _against_previous(self, artifacts: dict[str, Any]) -> None:
        """`--trt-previous`: this run's summary against the earlier run's, recorded as the
        regression suite so it counts in the verdict. A previous run that cannot be used fails that
        suite with the one sentence saying why (file and field)."""
        from .signoff.regression import SUITE, regression_check

        previous = self.settings.previous
        deferred = self.settings.deferred.get("previous")
        if self.contract is None or (previous is None and deferred is None):
            return
        try:
            if previous is None:
                raise ConfigError(str(deferred))
            result = regression_check(self.build_summary(artifacts), previous, self.contract).result
        except TrtParityError as exc:
            result = SuiteResult(suite=SUITE, error=str(exc))
        except Exception as exc:  # a bug must fail the check, not cost the verdict
            detail = str(exc).splitlines()[0][:300] if str(exc) else ""
            result = SuiteResult(
                suite=SUITE,
                error=f"{previous}: the previous run could not be compared with this one "
                f"({type(exc).__name__}: {detail})",
            )
        self.record(result)

    def _explain(self) -> None:
        """`--trt-explain`: localize each failing output (on the controller, at the end)."""
        from .artifacts.diagnose import diagnose

        if self.contract is None or self.settings.engine is None:
            return
        self.diagnosis = diagnose(
            self.settings, self.contract, self.results, strict=self.settings.strict
        )

    def _write_fallback(self) -> Path:
        """A failing summary without the contract's criteria and, if even they cannot be written,
        without the suites' data: the verdict and the errors always reach the folder."""
        from .artifacts import report
        from .artifacts.model import RunView
        from .artifacts.run_folder import remove_plots
        from .artifacts.summary import dumps
        from .util.atomic import write_text

        folder = self.settings.artifacts
        remove_plots(folder)  # drawn for the summary that could not be written
        artifacts = self._artifacts_entry()
        try:
            summary = self.build_summary(artifacts, bare=True)
            text = dumps(summary)
        except Exception as exc:  # the suites' data itself cannot be written
            self.errors.append(_sentence(exc, folder / "summary.json", what="the suites' results"))
            summary = self.build_summary(artifacts, bare=True, results=[])
            summary["environment"] = _jsonable(summary["environment"])
            summary["errors"] = list(self.errors)  # suites ran: their results are what broke
            text = dumps(summary)
        write_text(folder / "report.md", report.render(RunView.from_summary(summary)))
        self.summary_path = write_text(folder / "summary.json", text)
        self.summary = summary
        return self.summary_path

    def _job_summary(self, view: RunView) -> None:
        from .artifacts import channels

        try:
            channels.append_github_summary(view, str(self.settings.artifacts))
        except OSError as exc:
            warnings.warn(ParityWarning(f"GITHUB_STEP_SUMMARY not written: {exc}"), stacklevel=3)

    def _load_contract_for_artifacts(self) -> None:
        """The contract for thresholds and plots when no fixture loaded it (the engine failed first,
        or the controller of an xdist run). A broken contract becomes an error of the run."""
        if self.contract is not None or self.settings.contract is None:
            return
        self.contract, error = _contract_or_error(self.settings)
        if error is not None and error not in self.errors:
            self.errors.append(error)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """The entries JSON can hold: the last resort keeps the verdict, not every fact."""
    import json

    out = {}
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


def _sentence(exc: BaseException, where: Path, what: str = "the full summary") -> str:
    """One sentence for an exception while the artifacts were built: a TrtParityError already is
    one (file, line, field); anything else is named with the file it stopped."""
    if isinstance(exc, TrtParityError):
        return str(exc)
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return (
        f"{where}: {what} could not be written ({type(exc).__name__}: {detail[:300]}); "
        f"written without it, and the run fails"
    )


def _contract_or_error(settings: GateSettings) -> tuple[Contract | None, str | None]:
    """The run's contract (loaded once, see contract/once.py), or the sentence of why not."""
    try:
        return settings.load_contract(), None
    except TrtParityError as exc:
        return None, str(exc)
    except Exception as exc:  # the parser's own bug must not cost the verdict
        return None, f"{settings.contract}: contract cannot be read: {type(exc).__name__}: {exc}"
