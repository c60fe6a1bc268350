"""A one-line progress indicator for long loops, shown only to a person watching a terminal.

A 300-chunk closed loop on a large model runs for minutes with nothing on screen. In CI logs, under
`-q`, when output is piped, and on xdist workers, a progress line is noise (or, with carriage
returns, garbage), so there it stays silent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from _pytest.pathlib import bestrelpath

#: Seconds between two redraws: enough to look alive, few enough to cost nothing.
INTERVAL_S = 0.25


class Sink(Protocol):
    def update(self, text: str) -> None: ...

    def end(self, text: str) -> None: ...


@dataclass
class Progress:
    """Callable as a suite's `on_chunk(done)`; redraws at most every `interval` seconds."""

    sink: Sink
    label: str
    total: int | None = None
    interval: float = INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0, init=False)
    last_draw: float = field(default=-1.0, init=False)
    done: int = field(default=0, init=False)
    closed: bool = field(default=False, init=False)

    def __call__(self, done: int) -> None:
        now = self.clock()
        if self.done == 0 and self.last_draw < 0:
            self.started = now
        self.done = done
        if self.last_draw >= 0 and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        self.sink.update(self.text(now))

    def text(self, now: float | None = None) -> str:
        elapsed = max(0.0, (self.clock() if now is None else now) - self.started)
        rate = f", {self.done / elapsed:.0f} chunks/s" if elapsed > 0 and self.done else ""
        if self.total and self.done <= self.total:
            return f"{self.label}: {self.done}/{self.total} chunks ({self.done / self.total:.0%}), {elapsed:.1f} s{rate}"
        return f"{self.label}: {self.done} chunks, {elapsed:.1f} s{rate}"

    def close(self) -> None:
        """Leave one final line (only if anything was drawn)."""
        if not self.closed and self.last_draw >= 0:
            self.sink.end(self.text())
        self.closed = True


def ci_env(environ: Mapping[str, str] | None = None) -> bool:
    """True on CI runners: GitHub Actions, GitLab, Jenkins, Buildkite and others set CI."""
    env = os.environ if environ is None else environ
    value = env.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no") or "BUILD_NUMBER" in env


class _TerminalSink:
    """Draw through pytest's terminal reporter, with output capture paused while drawing."""

    def __init__(self, reporter: Any, capman: Any) -> None:
        self.reporter = reporter
        self.capman = capman
        self.started = False
        self.resume: Any = None

    def _paused(self) -> Any:
        if self.capman is None:
            import contextlib

            return contextlib.nullcontext()
        return self.capman.global_and_fixture_disabled()

    def update(self, text: str) -> None:
        with self._paused():
            if not self.started:
                self.resume = getattr(self.reporter, "currentfspath", None)
                self.reporter.ensure_newline()
                self.started = True
            self.reporter.rewrite(text, erase=True)
            self.reporter.flush()

    def end(self, text: str) -> None:
        with self._paused():
            self.reporter.rewrite(text, erase=True)
            self.reporter.write("\n", flush=True)
            if isinstance(
                self.resume, Path
            ):  # the file's result letters continue on their own line
                start = getattr(self.reporter, "startpath", self.resume.parent)
                self.reporter.write(bestrelpath(start, self.resume) + " ", flush=True)
                self.reporter.currentfspath = self.resume


def for_config(config: pytest.Config, label: str, total: int | None = None) -> Progress | None:
    """A progress indicator for this pytest run, or None where it would only be noise."""
    if hasattr(config, "workerinput") or ci_env():
        return None
    if config.get_verbosity() < 0:
        return None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not getattr(reporter, "isatty", False):
        return None
    capman = config.pluginmanager.get_plugin("capturemanager")
    return Progress(_TerminalSink(reporter, capman), label, total)
