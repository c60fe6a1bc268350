"""The artifacts folder through one run: marked in progress at the start, one set at the end.

CI uploads the folder even when a job is cancelled, so whatever moment a run is killed at, the
folder must not show an earlier run's verdict as this one's, nor a verdict with another run's
report or plots. The protocol (docs/artifacts.md):

- start: claim the folder (lock.py); remove what killed runs left (temporary files); replace
  summary.json by an in-progress summary (`status: in_progress`, `verdict: running`, this run's id),
  then report.md by an in-progress page; remove the old plots.
- end: plots, then report.md, then summary.json last, each by an atomic rename, all with the run id.
  summary.json is the commit: a reader trusts it, and report.md and the plots belong to it when it
  says `status: complete` (they were written before it, by the same run).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
from pathlib import Path

from ..util.atomic import write_text
from .plots import PLOTS_DIR, PREFIXES

SUMMARY = "summary.json"
REPORT = "report.md"
#: What a killed run leaves: atomic writes' temporaries and the writability probe.
LEFTOVERS = (
    f".{SUMMARY}.*.tmp",
    f".{REPORT}.*.tmp",
    ".trtparity-probe.*",
    *(f"{PLOTS_DIR}/.{prefix}*.tmp" for prefix in PREFIXES),
)


def new_run_id() -> str:
    """Sortable by start time, unique across hosts and processes: 20250101T120000Z-4711-3fa9c2."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{os.getpid()}-{secrets.token_hex(3)}"


def _remove(paths: list[Path]) -> list[Path]:
    gone = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            gone.append(path)
    return gone


def remove_leftovers(folder: Path) -> list[Path]:
    """Temporary files of killed runs. Only the holder of the folder's lock calls this, so no live
    run is writing them."""
    return _remove([p for pattern in LEFTOVERS for p in folder.glob(pattern) if p.is_file()])


def remove_plots(folder: Path) -> list[Path]:
    """Every plot (stability, diagnosis): a run that stops before drawing must not leave an
    earlier run's."""
    return _remove(sorted(p for x in PREFIXES for p in (folder / PLOTS_DIR).glob(f"{x}*.png")))


def mark_in_progress(folder: Path, summary_text: str, report_text: str) -> None:
    """summary.json first (a reader trusts it), then report.md, then the old plots go."""
    write_text(folder / SUMMARY, summary_text)
    write_text(folder / REPORT, report_text)
    remove_plots(folder)
