"""The plot people look at: error per layer in topological order.

Log scale (errors span decades), the tier as a red line, the first divergence marked and labelled.
Exact zeros cannot sit on a log scale: they are drawn on a floor line and the axis says so.
matplotlib is imported here only, through the Agg canvas (no pyplot state).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from .diagnosis import Diagnosis
from .names import display_name

FAIL_COLOR = "#c62828"
LINE_COLOR = "#1f5fa8"
MARK_COLOR = "#7b1fa2"


def plot_layers(d: Diagnosis, path: str | Path | None = None) -> bytes:
    """The PNG of `d`'s per-layer errors; written to `path` when given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    errors = [layer.error for layer in d.layers]
    positive = [e for e in errors if e > 0 and math.isfinite(e)]
    floor = min([*positive, d.tier]) / 100 if positive or d.tier > 0 else 1e-12
    top = max([*positive, d.tier])
    # zeros sit on the floor line, infinities and NaN at the top edge: never a hole in the line
    shown = [floor if e == 0 else (e if math.isfinite(e) else top * 10) for e in errors]
    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_yscale("log")
    xs = list(range(len(shown)))
    ax.plot(xs, shown, marker="o", markersize=3, color=LINE_COLOR, lw=1.2, label="engine vs source")
    ax.axhline(d.tier, color=FAIL_COLOR, lw=1, ls="--")
    ax.text(0, d.tier * 1.3, f"fail tier {d.tier:.3g}", color=FAIL_COLOR, fontsize=8)
    ax.axhline(floor, color="#9e9e9e", lw=0.6, ls=":")
    ax.text(0, floor * 1.3, "exact (0)", color="#757575", fontsize=7)
    first = d.first_divergence
    if first is not None:
        idx = next((i for i, x in enumerate(d.layers) if x.tensor == first.tensor), None)
        if idx is not None:
            ax.axvline(idx, color=MARK_COLOR, lw=1, alpha=0.6)
            ax.plot([idx], [shown[idx]], marker="o", markersize=8, color=MARK_COLOR)
            label = f"first divergence: {display_name(first.tensor)}\n{first.op_type}, error {first.error:.3g}"
            ax.annotate(
                label,
                (idx, shown[idx]),
                xytext=(12, 14) if idx < len(shown) * 0.6 else (-12, 14),
                ha="left" if idx < len(shown) * 0.6 else "right",
                textcoords="offset points",
                fontsize=8,
                color=MARK_COLOR,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": MARK_COLOR, "alpha": 0.9},
            )
    ax.set_ylim(floor / 3, top * 30)
    ax.set_xlabel("tensor, in topological order")
    ax.set_ylabel(f"{d.metric} vs source (log)")
    ax.set_title(f"{d.suite} '{d.output}' on chunk {d.chunk}: error per layer", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
