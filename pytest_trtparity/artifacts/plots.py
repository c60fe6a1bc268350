"""Stability plots: per output, the error of every chunk, functional and closed loop, on one page.

What a reviewer needs to see at a glance: does the closed-loop error stay near the functional one or
climb away from it, how far below the limits it stays, and whether the trend the gate judged is real.
So: a log scale (errors span decades), warn and fail lines, a rolling mean over the noise, the
Theil-Sen trend with its slope and p-value written next to it, and every line labelled where it
ends rather than in a legend. Exact zeros cannot sit on a log scale: they are drawn on a floor line
and say so. NaN chunks are shaded red across the whole height, so a hole never looks like a pass.

matplotlib is imported only here, through its object API and the Agg canvas: no pyplot state, no
display, nothing changed for a user's own plots.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..judge.drift import rolling_mean
from ..judge.tiers import Level, verdict_of
from ..util import fmt
from ..util.atomic import write_bytes
from ..util.jsonfloat import decode_number
from .model import OutputLimits, RunView, SuiteView

PLOTS_DIR = "plots"
PREFIX = "stability-"
#: The per-layer plots of diagnoses (artifacts/diagnose.py names them).
EXPLAIN_PREFIX = "explain-"
#: Every plot a run writes starts with one of these: what an earlier run left is removed by them.
PREFIXES = (PREFIX, EXPLAIN_PREFIX)
COLORS = {"functional": "#6b6b6b", "closed_loop": "#1f5fa8"}
NAMES = {"functional": "functional", "closed_loop": "closed loop"}
WARN_COLOR = "#e08a00"
FAIL_COLOR = "#c62828"
TREND_COLOR = "#7b1fa2"
NAN_COLOR = "#e53935"


@dataclass(frozen=True)
class Line:
    suite: str
    x: np.ndarray
    y: np.ndarray
    verdict: str = ""
    streams: tuple[str, ...] = ()  # per point; lines and rolling means never join two streams


@dataclass(frozen=True)
class TrendLine:
    x: np.ndarray  # run-order positions of the stream's chunks (the fit's 0, 1, 2, ...)
    slope: float
    intercept: float
    p_value: float
    alpha: float
    stream: str = ""


@dataclass(frozen=True)
class Limit:
    label: str
    value: float
    color: str


@dataclass
class PlotData:
    output: str
    metric: str
    lines: list[Line] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    trends: list[TrendLine] = field(default_factory=list)
    streams: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    title: str = ""


def file_name(output: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", output).strip(".") or "output"
    return f"{PREFIX}{safe}.png"


def _limits(limits: OutputLimits, suites: Sequence[str]) -> list[Limit]:
    tol = limits.chunk
    pairs: list[tuple[str, Any]] = []
    if "functional" in suites:
        pairs.append(("functional", tol))
    if "closed_loop" in suites:
        pairs.append(("closed loop", limits.loop_max or tol))
    out: list[Limit] = []
    seen: dict[tuple[str, float], int] = {}
    for who, tier in pairs:
        if not tier:
            continue
        for kind, color in (("warn", WARN_COLOR), ("fail", FAIL_COLOR)):
            value = tier.get(kind)
            if not _finite(value) or value <= 0:
                continue
            key = (kind, float(value))
            if key in seen:  # the same limit for both suites: one line, no suite in its label
                out[seen[key]] = Limit(f"{kind} {value:g}", float(value), color)
                continue
            seen[key] = len(out)
            out.append(Limit(f"{who} {kind} {value:g}", float(value), color))
    return out


def plot_data(run: RunView, output: str) -> PlotData:
    """Everything one output's plot shows, taken from the run's summary."""
    by_suite = {name: s for name, s in run.suites.items() if name in COLORS and output in s.outputs}
    limits = run.thresholds[output]
    metric = limits.metric
    loop_metric = limits.loop_metric or metric
    order: dict[str, int] = {}
    for suite in ("functional", "closed_loop"):
        if suite in by_suite:
            for label in by_suite[suite].outputs[output].chunks:
                order.setdefault(label, len(order))
    data = PlotData(output=output, metric=metric)
    if loop_metric != metric and "closed_loop" in by_suite:
        data.notes.append(f"closed loop judged on {loop_metric}; both lines show {metric}")
    for suite, result in by_suite.items():
        series = result.outputs[output]
        x = np.array([order[c] for c in series.chunks], dtype=np.float64)
        y = np.asarray(series.series(metric), dtype=np.float64)
        streams_of = tuple(c.rpartition("#")[0] for c in series.chunks)
        data.lines.append(Line(suite, x, y, output_verdict(result, output).word, streams_of))
        if result.error:
            data.notes.append(f"{NAMES[suite]} stopped early: {result.error}")
    streams: dict[str, int] = {}
    for label, pos in order.items():
        streams.setdefault(label.rpartition("#")[0], pos)
    if len(streams) > 1:
        data.streams = [(pos, name) for name, pos in streams.items()]
    data.limits = _limits(limits, list(by_suite) or list(COLORS))
    loop = by_suite.get("closed_loop")
    if loop is not None and limits.trend_alpha is not None:
        data.trends = _trends(loop, output, order, limits.trend_alpha)
    verdicts = ", ".join(f"{NAMES[line.suite]} {line.verdict}" for line in data.lines)
    data.title = f"{output}: {metric} per chunk" + (f"  ({verdicts})" if verdicts else "")
    return data


def _trends(loop: SuiteView, output: str, order: dict[str, int], alpha: float) -> list[TrendLine]:
    """The Theil-Sen line of each stream the closed loop fitted a finite trend to."""
    stats = loop.drift.get(output, {}).get("streams", {})
    out = []
    for stream, st in stats.items():
        tr = st.get("trend")
        if not tr or not _finite(tr.get("slope")):
            continue
        labels = [c for c in loop.outputs[output].chunks if c.rpartition("#")[0] == stream]
        if not labels:
            continue
        xs = np.array([order[c] for c in labels], dtype=np.float64)
        out.append(
            TrendLine(
                xs,
                float(tr["slope"]),
                decode_number(tr.get("intercept")),
                decode_number(tr.get("p_value")),
                alpha,
                stream if len(stats) > 1 else "",
            )
        )
    return out


def output_verdict(suite: SuiteView, output: str) -> Level:
    """One output's verdict within a suite: its own findings, and FAIL if the suite stopped early."""
    levels = [Level[level.upper()] for level in suite.levels_for(output)]
    if suite.error or not suite.complete:
        levels.append(Level.FAIL)
    return verdict_of(levels)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _floor(data: PlotData) -> float:
    """Where zeros are drawn: a decade below the smallest positive value shown (or limit)."""
    positive = [float(v) for line in data.lines for v in line.y if math.isfinite(v) and v > 0]
    positive += [lim.value for lim in data.limits]
    if not positive:
        return 1e-12
    return float(10.0 ** (math.floor(math.log10(min(positive))) - 1))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [start, end] of consecutive True values."""
    out: list[tuple[int, int]] = []
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return out
    start = prev = int(idx[0])
    for i in idx[1:]:
        if i != prev + 1:
            out.append((start, prev))
            start = int(i)
        prev = int(i)
    out.append((start, prev))
    return out


def _isolated(drawable: np.ndarray, streams: Sequence[str]) -> np.ndarray:
    """Drawable points with no drawable neighbour in their stream: a line cannot show them."""
    lone = np.zeros(drawable.size, dtype=bool)
    for a, b in _segments(streams, drawable.size):
        seg = drawable[a:b]
        left = np.concatenate(([False], seg[:-1]))
        right = np.concatenate((seg[1:], [False]))
        lone[a:b] = seg & ~left & ~right
    return lone


def _segments(streams: Sequence[str], n: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive points from the same stream."""
    if len(streams) != n or n == 0:
        return [(0, n)] if n else []
    cuts = [0] + [i for i in range(1, n) if streams[i] != streams[i - 1]] + [n]
    return list(itertools.pairwise(cuts))


def _spread(wanted: list[float], heights: list[float], lo: float, hi: float) -> list[float]:
    """Label centres (axes fraction) moved apart so that labels of the given heights never overlap,
    keeping their order and staying inside [lo, hi] where they fit."""
    if not wanted:
        return []
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    pos = [wanted[i] for i in order]
    h = [heights[i] for i in order]
    pos[0] = max(pos[0], lo + h[0] / 2)
    for k in range(1, len(pos)):
        pos[k] = max(pos[k], pos[k - 1] + (h[k - 1] + h[k]) / 2)
    overflow = pos[-1] + h[-1] / 2 - hi
    if overflow > 0:
        pos[-1] -= overflow
        for k in range(len(pos) - 2, -1, -1):
            pos[k] = min(pos[k], pos[k + 1] - (h[k] + h[k + 1]) / 2)
    out = [0.0] * len(wanted)
    for k, i in enumerate(order):
        out[i] = pos[k]
    return out


#: One direct label: (height in data units, text, colour).
Label = tuple[float, str, str]


def render(data: PlotData) -> bytes:
    """The PNG for one output."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.17, 0.66, 0.74))
    ax.set_yscale("log")
    floor = _floor(data)
    n = max((int(line.x.max()) + 1 for line in data.lines if line.x.size), default=1)
    ax.set_xlim(-0.5, n - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # chunks, never halved
    labels: list[Label] = []
    nan_total = zero_total = 0
    for line in sorted(data.lines, key=lambda ln: ln.suite != "functional"):
        nans, zeros = _draw_line(ax, line, floor, labels)
        nan_total, zero_total = nan_total + nans, zero_total + zeros
    for lim in data.limits:
        ax.axhline(lim.value, color=lim.color, ls="--", lw=1.3, zorder=3)
        labels.append((lim.value, lim.label, lim.color))
    for tr in data.trends:
        labels.append(_draw_trend(ax, tr, _lowest(data), floor))
    _draw_streams(ax, data.streams)
    if zero_total:
        ax.axhline(floor, color="#999999", lw=0.6, zorder=1)
        labels.append(
            (floor, f"exact 0 ({zero_total} chunk values)\ndrawn on this floor", "#555555")
        )
    _set_ylim(ax, data, floor if zero_total else None)
    ymin, ymax = ax.get_ylim()
    _texts(fig, ax, data, nan_total)
    _direct_labels(ax, labels, ymin, ymax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _texts(fig: Any, ax: Any, data: PlotData, nan_total: int) -> None:
    """Axis labels, title, the NaN note, the notes line, and a word where nothing was measured."""
    if nan_total:
        fig.text(
            0.08,
            0.045,
            f"NaN error on {nan_total} chunk value(s): the red bands",
            color=NAN_COLOR,
            fontsize=9,
            fontweight="bold",
        )
    if not data.lines:
        ax.text(
            0.5,
            0.5,
            "no chunk was measured for this output",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=12,
            color=FAIL_COLOR,
        )
        ax.set_xticks([])
    ax.set_xlabel("chunk (in run order)")
    ax.set_ylabel(f"{data.metric} error vs reference (log scale)")
    ax.grid(True, which="major", alpha=0.25)
    ax.set_title(data.title, loc="left", fontsize=11)
    if data.notes:
        fig.text(0.08, 0.015, "; ".join(data.notes)[:200], fontsize=8, color="#555555")


def _draw_line(ax: Any, line: Line, floor: float, labels: list[Label]) -> tuple[int, int]:
    """One suite's raw values and rolling mean per stream, lone points as markers, zeros on the
    floor, NaN chunks as red bands; its label goes to `labels`. Returns (NaN count, zero count)."""
    color = COLORS[line.suite]
    y = line.y.copy()
    nan = ~np.isfinite(y)
    zero = (y <= 0) & ~nan
    raw_alpha = 0.35 if line.suite == "functional" else 0.45
    window = max(5, line.x.size // 20)
    smooth = np.full(y.size, np.nan)
    for a, b in _segments(line.streams, y.size):
        xs = line.x[a:b]
        raw = np.where((zero | nan)[a:b], np.nan, y[a:b])
        ax.plot(xs, raw, color=color, lw=0.8, alpha=raw_alpha, zorder=2)
        smooth[a:b] = rolling_mean(np.where(nan[a:b], np.nan, y[a:b]), window)
        ax.plot(xs, np.where(smooth[a:b] > 0, smooth[a:b], np.nan), color=color, lw=2.2, zorder=4)
    lone = _isolated(~(zero | nan), line.streams)
    if lone.any():  # a line through one point draws nothing: mark it
        ax.plot(line.x[lone], y[lone], ls="none", marker="o", ms=6, color=color, zorder=4)
    if zero.any():
        zeros = np.full(int(zero.sum()), floor)
        ax.plot(line.x[zero], zeros, ls="none", marker="v", ms=3, color=color, alpha=0.7, zorder=3)
    last = next((float(v) for v in smooth[::-1] if math.isfinite(v) and v > 0), None)
    if last is not None:
        shown = min(window, y.size)
        what = f"rolling mean, {shown} chunks" if shown > 1 else "1 chunk"
        labels.append((last, f"{NAMES[line.suite]}\n({what})", color))
    for a, b in _runs(nan):
        ax.axvspan(line.x[a] - 0.5, line.x[b] + 0.5, color=NAN_COLOR, alpha=0.18, lw=0, zorder=1)
    return int(nan.sum()), int(zero.sum())


def _draw_trend(ax: Any, tr: TrendLine, lowest: float, floor: float) -> Label:
    """The fitted trend where it stays above the lowest value shown, and its label."""
    xs = tr.x
    ys = tr.intercept + tr.slope * np.arange(xs.size, dtype=np.float64)
    ok = ys >= lowest
    if ok.any():
        ax.plot(xs[ok], ys[ok], color=TREND_COLOR, lw=1.6, ls=(0, (6, 2)), zorder=5)
    verdict = "significant" if tr.p_value < tr.alpha else "not significant"
    text = (
        f"trend{' ' + tr.stream if tr.stream else ''} (Theil-Sen)\n"
        f"{fmt.signed(tr.slope, 2)} per chunk\n"
        f"Mann-Kendall p = {fmt.sig(tr.p_value, 2)}\n{verdict} at \u03b1 = {tr.alpha:g}"
    )
    anchor = float(ys[ok][-1]) if ok.any() else floor
    return (max(anchor, floor), text, TREND_COLOR)


def _draw_streams(ax: Any, streams: Sequence[tuple[int, str]]) -> None:
    """A dotted line where each stream starts, named at the top."""
    for x, name in streams:
        ax.axvline(x - 0.5, color="#999999", lw=0.8, ls=":", zorder=1)
        ax.annotate(
            name,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="#555555",
        )


def _lowest(data: PlotData) -> float:
    values = [float(v) for line in data.lines for v in line.y if math.isfinite(v) and v > 0]
    return min(values, default=0.0)


def _set_ylim(ax: Any, data: PlotData, floor: float | None) -> None:
    values = [float(v) for line in data.lines for v in line.y if math.isfinite(v) and v > 0]
    values += [lim.value for lim in data.limits] + ([floor] if floor is not None else [])
    if not values:
        values = [1e-12, 1.0]
    lo, hi = min(values), max(values)
    ax.set_ylim(lo / 3, hi * 3 if hi > lo else lo * 100)


def _direct_labels(ax: Any, labels: list[tuple[float, str, str]], ymin: float, ymax: float) -> None:
    """Each label at the right edge, at its line's height, nudged apart so none overlap."""
    span = math.log10(ymax) - math.log10(ymin)

    def frac(y: float) -> float:
        y = min(max(y, ymin), ymax)
        return (math.log10(y) - math.log10(ymin)) / span

    heights = [0.045 * (text.count("\n") + 1) + 0.01 for _, text, _ in labels]
    placed = _spread([frac(y) for y, _, _ in labels], heights, 0.0, 1.0)
    for (y, text, color), at in zip(labels, placed, strict=True):
        ax.annotate(
            text,
            xy=(1.0, frac(y)),
            xycoords="axes fraction",
            xytext=(1.015, at),
            textcoords="axes fraction",
            fontsize=8,
            color=color,
            va="center",
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.6},
        )


@dataclass(frozen=True)
class Drawing:
    """One output's plot: where it goes under the artifacts folder, and its PNG."""

    path: str
    png: bytes


def draw(
    run: RunView, notes: Sequence[str] = (), cache: dict[str, bytes] | None = None
) -> dict[str, Drawing]:
    """One plot per output the run's thresholds name (the contract's outputs, in order), drawn
    once: a picture whose content is in `cache` (by fingerprint) is reused, not drawn again."""
    cache = {} if cache is None else cache
    out: dict[str, Drawing] = {}
    for output in run.thresholds:
        name = file_name(output)
        while any(d.path == f"{PLOTS_DIR}/{name}" for d in out.values()):
            name = name.replace(".png", "_.png")
        data = plot_data(run, output)
        data.notes += list(notes)
        key = _fingerprint(data)
        if key not in cache:
            cache[key] = render(data)
        out[output] = Drawing(f"{PLOTS_DIR}/{name}", cache[key])
    return out


def _fingerprint(data: PlotData) -> str:
    """A digest of everything a plot shows: equal digests, equal pictures."""
    digest = hashlib.sha256(repr((data.output, data.metric, data.title, data.notes)).encode())
    for line in data.lines:
        digest.update(repr((line.suite, line.verdict, line.streams)).encode())
        digest.update(line.x.tobytes() + line.y.tobytes())
    for tr in data.trends:
        digest.update(repr((tr.slope, tr.intercept, tr.p_value, tr.alpha, tr.stream)).encode())
        digest.update(tr.x.tobytes())
    digest.update(repr((data.limits, data.streams)).encode())
    return digest.hexdigest()


def draw_diagnoses(run: RunView) -> dict[str, bytes]:
    """The per-layer plot of each diagnosis that names one (path relative to the folder -> PNG)."""
    from ..explain.plot import plot_layers

    return {d.plot: plot_layers(d.made) for d in run.diagnosis if d.made is not None and d.plot}


def write_plots(
    folder: Path, drawings: Mapping[str, Drawing], explained: Mapping[str, bytes] | None = None
) -> dict[str, str]:
    """Write the drawings (and the diagnoses' plots, `explained`: path -> PNG) under
    `folder/plots`; returns output -> path relative to folder, for the stability plots.

    Plots a previous run left for outputs this run did not draw are removed, so the folder never
    shows a stale picture next to a new summary.
    """
    target = folder / PLOTS_DIR
    explained = explained or {}
    for drawing in drawings.values():
        write_bytes(folder / drawing.path, drawing.png)
    for path, png in explained.items():
        write_bytes(folder / path, png)
    keep = {Path(d.path).name for d in drawings.values()} | {Path(p).name for p in explained}
    for prefix in PREFIXES:
        for old in target.glob(f"{prefix}*.png"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    return {output: d.path for output, d in drawings.items()}
