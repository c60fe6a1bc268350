"""Failure localization at the end of a gate run (`--trt-explain`), as diagnosis entries of summary.json.

A red gate says *that* an output diverged; the diagnosis says where in the network. Once the verdict
is known, each failing output of the functional and closed-loop checks is explained on the chunk
that matters (functional: its worst chunk; closed loop: the first chunk whose error crosses the fail
tier, replayed with the engine's own state from the start of its stream) by
`explain.api.explain_failure`. Explanation never changes the verdict: a missing source model or a
crash inside explain becomes an entry whose `why` is one sentence, never an error of the run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TrtParityError
from ..judge.tiers import Level
from .model import CHUNK_SUITES

if TYPE_CHECKING:
    from ..contract.model import Contract
    from ..explain.api import EngineSpec
    from ..judge.results import OutputSeries, SuiteResult
    from ..reference.reader import Record
    from ..settings import GateSettings

#: Where the per-layer plots go, under the artifacts' plots folder.
PLOT_PREFIX = "explain-"
#: Said when an .onnx engine has no other source model: its layers can only agree with themselves.
SELF_SOURCE = (
    "no --trt-onnx given, and an ONNX engine compared with itself cannot diverge: pass --trt-onnx "
    "with the model it was exported or converted from"
)
#: Engine suffixes TensorRT runs; their build report names the ONNX they were built from.
TRT_SUFFIXES = (".plan", ".engine", ".trt")


@dataclass(frozen=True)
class Target:
    """One output of one chunk suite to explain, on chunk `chunk` (`stream#index`); `chunks` are
    the labels replayed (the chunk alone, or in closed loop its stream up to it)."""

    suite: str
    output: str
    chunk: str
    chunks: tuple[str, ...]
    failing: bool


def _failing(result: SuiteResult, output: str, strict: bool) -> bool:
    levels = {Level.FAIL, Level.WARN} if strict else {Level.FAIL}
    return any(f.output == output and f.level in levels for f in result.findings)


def _worst(values: Sequence[float]) -> int:
    """The worst chunk; a NaN is worse than any number."""
    return max(range(len(values)), key=lambda i: math.inf if math.isnan(values[i]) else values[i])


def pick_chunk(series: OutputSeries, metric: str, tier: float, *, closed_loop: bool) -> Target:
    """Functional: the worst chunk alone. Closed loop: the first chunk whose error is over `tier`
    (else the worst), with its stream's chunks before it, in the order the gate ran them."""
    values = series.series(metric)
    index = _worst(values)
    if closed_loop:
        over = [i for i, v in enumerate(values) if math.isnan(v) or v > tier]
        index = over[0] if over else index
    label = series.chunks[index]
    if not closed_loop:
        return Target("functional", series.output, label, (label,), True)
    stream = label.rpartition("#")[0]
    before = tuple(c for c in series.chunks[: index + 1] if c.rpartition("#")[0] == stream)
    return Target("closed_loop", series.output, label, before, True)


def targets(
    results: Sequence[SuiteResult], contract: Contract, mode: str, *, strict: bool = False
) -> list[Target]:
    """What `--trt-explain` explains: each failing output of the chunk suites (auto), and with
    `always` the worst chunk of the passing ones too; nothing with `off`."""
    from ..explain.api import fail_tier

    if mode == "off":
        return []
    found: list[Target] = []
    by_suite = {r.suite: r for r in results}
    for suite in CHUNK_SUITES:
        result = by_suite.get(suite)
        if result is None:
            continue
        for output in contract.output_names:
            series = result.outputs.get(output)
            if series is None or not series.chunks:
                continue
            failing = _failing(result, output, strict)
            if not failing and mode != "always":
                continue
            metric = _metric(contract, output, suite)
            tier = fail_tier(contract, output, suite)
            target = pick_chunk(series, metric, tier, closed_loop=suite == "closed_loop")
            if not failing:
                target = Target(suite, output, target.chunk, target.chunks, False)
            found.append(target)
    return found


def _metric(contract: Contract, output: str, suite: str) -> str:
    tol = contract.tolerance(output)
    if suite == "closed_loop":
        crit = contract.closed_loop.for_output(output)
        if crit is not None and crit.metric:
            return crit.metric
    return tol.metric


# -- the source model and the engine ----------------------------------------------------------


def source_onnx(settings: GateSettings) -> tuple[Path | None, str]:
    """The ONNX the engine came from, or None and the sentence saying why there is none:
    `--trt-onnx`, or a TensorRT engine's build report. An .onnx engine is not its own source: its
    layers can only agree with themselves, so explaining it that way would name nothing."""
    if settings.onnx is not None:
        return settings.onnx, ""
    engine = settings.engine
    if engine is None:
        return None, "no engine was given"
    suffix = engine.suffix.lower()
    if suffix == ".onnx":
        return None, SELF_SOURCE
    if suffix in TRT_SUFFIXES or (settings.backend or "").startswith("tensorrt"):
        return _from_build_report(engine)
    return None, (
        f"no source model for {engine.name}: pass --trt-onnx (the ONNX file the engine was "
        f"exported or built from) to localize its failures"
    )


def _from_build_report(engine: Path) -> tuple[Path | None, str]:
    from ..trt.compat import report_path

    report = report_path(engine)
    try:
        path = json.loads(report.read_text(encoding="utf-8"))["onnx"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, (
            f"no source model: {report.name} (the engine's build report) is missing or names no "
            f"onnx.path, and no --trt-onnx was given"
        )
    source = Path(str(path))
    if not source.is_file():
        return None, f"no source model: {report.name} field 'onnx.path' names {source}, not a file"
    return source, ""


def engine_spec(settings: GateSettings) -> EngineSpec:
    """The engine as the gate opened it (backend, PyTorch entry, device, TF32)."""
    from ..explain.api import EngineSpec

    assert settings.engine is not None
    return EngineSpec(
        path=settings.engine,
        backend=settings.backend or "",
        entry=settings.torch_entry or "",
        device=settings.torch_device,
        tf32=settings.tf32,
    )


# -- explaining ---------------------------------------------------------------------------------


def diagnose(
    settings: GateSettings,
    contract: Contract,
    results: Sequence[SuiteResult],
    *,
    strict: bool = False,
) -> list[dict[str, Any]]:
    """One summary entry per target: the diagnosis, or why none was made (one sentence)."""
    wanted = targets(results, contract, settings.explain, strict=strict)
    if not wanted:
        return []
    source, why = source_onnx(settings)
    entries: list[dict[str, Any]] = []
    for target in wanted:
        if source is None or settings.ref is None:
            reason = why or "no reference was given"
            entries.append(unmade(target, f"no diagnosis: {reason}"))
            continue
        entries.append(_explain_one(settings, contract, source, target))
    return _with_plot_paths(entries)


def _explain_one(
    settings: GateSettings, contract: Contract, source: Path, target: Target
) -> dict[str, Any]:
    from ..explain.api import explain_failure

    try:
        records = read_chunks(settings, target.chunks)
        found = explain_failure(
            engine_spec(settings),
            source,
            contract,
            records,
            suite=target.suite,
            outputs=[target.output],
            budget_s=settings.explain_budget,
        )
    except Exception as exc:  # explain must never cost the verdict or print a traceback
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        if isinstance(exc, TrtParityError):  # our own errors are already one sentence for users
            return unmade(target, f"no diagnosis: {first}")
        return unmade(target, f"no diagnosis: explain stopped: {type(exc).__name__}: {first}")
    if not found:
        return unmade(target, "no diagnosis: the replayed chunk is under its fail tier")
    entry = found[0].to_json()
    entry["failing"] = target.failing
    return entry


def read_chunks(settings: GateSettings, labels: Sequence[str]) -> list[Record]:
    """The reference records of `labels` (`stream#index`), in that order."""
    from ..reference.reader import ReferenceReader

    assert settings.ref is not None
    keys = []
    for label in labels:
        stream, _, index = label.rpartition("#")
        keys.append((stream, int(index)))
    return list(ReferenceReader(settings.ref).records(keys))


def unmade(target: Target, why: str) -> dict[str, Any]:
    """The entry of an output that was not localized, with the sentence saying why."""
    return {
        "suite": target.suite,
        "output": target.output,
        "chunk": target.chunk,
        "first_divergence": None,
        "chain": [],
        "probes": [],
        "failing": target.failing,
        "why": why,
    }


def _with_plot_paths(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each diagnosis with layers gets its plot's path under plots/ (unique per entry)."""
    from .plots import PLOTS_DIR

    taken: set[str] = set()
    for entry in entries:
        if not entry.get("layers"):
            continue
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{PLOT_PREFIX}{entry['suite']}-{entry['output']}")
        name = f"{stem}.png"
        while name in taken:
            name = name.replace(".png", "_.png")
        taken.add(name)
        entry["plot"] = f"{PLOTS_DIR}/{name}"
    return entries


def without_plots(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entries with their plot paths dropped (the plots could not be drawn)."""
    return [{k: v for k, v in e.items() if k != "plot"} for e in entries]
