"""Explain a failing output: the first tensor where the engine leaves the source model, and why.

The small typed API the gate calls (and `trtparity explain` uses):

- `prepare_graph(model, feeds)`: the source ONNX with the `If` branches the chunk selects inlined,
  so localization sees inside control flow (graph.py);
- `explain_chunk(...)`: reference and engine intermediates, localization and probes for one chunk
  and one output, as a frozen `Diagnosis` (run.py);
- `Diagnosis.to_json` / `from_json`, `render_markdown`, `render_line`, `plot_layers`.

Everything heavy (onnx, onnxscript, matplotlib, torch, tensorrt) is imported inside the functions
that need it.
"""

from __future__ import annotations

from .diagnosis import Diagnosis, FirstDivergence, LayerError, Probe

__all__ = ["Diagnosis", "FirstDivergence", "LayerError", "Probe"]
