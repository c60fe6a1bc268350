"""Explain one chunk of one failing output: prepare, observe, localize, probe.

The caller (the gate, or `trtparity explain`) picks the chunk that matters: in functional mode the
worst chunk, fed the reference inputs; in closed loop the first chunk over the fail tier, fed the
engine's own carried state at that point (`feeds`), so the replay is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .diagnosis import Diagnosis, Probe
from .engines import EngineTaps
from .graph import prepare_graph
from .intermediates import comparable, run_with_outputs, tensor_nodes
from .localize import chain, first_divergence, layer_errors, tensor_error

#: Default time budget per failing output, in seconds; probes are skipped once it is spent.
DEFAULT_BUDGET_S = 5.0

#: A probe gets the diagnosis so far and returns its finding, or None when it does not apply.
ProbeFn = Callable[[Diagnosis], Probe | None]


@dataclass(frozen=True)
class Chunk:
    """The chunk to replay: its feeds (as the engine saw them) and the reference's."""

    label: str
    feeds: Mapping[str, np.ndarray]
    reference_feeds: Mapping[str, np.ndarray]
    expected: Mapping[str, np.ndarray]  # the recorded reference outputs


def explain_chunk(
    *,
    source: Any,
    engine: EngineTaps,
    chunk: Chunk,
    output: str,
    tier: float,
    metric: str = "max_abs",
    suite: str = "functional",
    probes: Sequence[ProbeFn] = (),
    budget_s: float = DEFAULT_BUDGET_S,
) -> Diagnosis:
    """The diagnosis of `output` on `chunk`; `source` is the source onnx.ModelProto."""
    start = time.perf_counter()
    prepared = prepare_graph(source, chunk.reference_feeds)
    nodes = tensor_nodes(prepared.model)
    compared = comparable(nodes)
    names = [n.tensor for n in compared]
    reference = run_with_outputs(prepared.model, chunk.reference_feeds, names, optimize=False)
    got = engine.run(chunk.feeds, names, [output], reference=reference, nodes=nodes)
    input_errors = {
        k: tensor_error(v, chunk.feeds[k], metric)
        for k, v in chunk.reference_feeds.items()
        if k in chunk.feeds and np.asarray(v).dtype.kind == "f"
    }
    layers = layer_errors(nodes, reference, got, input_errors, metric)
    errors = {**input_errors, **{layer.tensor: layer.error for layer in layers}}
    inputs_of = {n.tensor: n.inputs for n in nodes}
    first = first_divergence(layers, tier, inputs_of, errors)
    expected = chunk.expected.get(output, reference.get(output))
    output_error = tensor_error(expected, got[output], metric) if expected is not None else 0.0
    notes = (*prepared.notes, *engine.notes)
    if len(layers) < len(names):
        notes += (f"{len(names) - len(layers)} reference tensor(s) had no engine counterpart",)
    diagnosis = Diagnosis(
        suite=suite,
        output=output,
        chunk=chunk.label,
        metric=metric,
        output_error=output_error,
        tier=tier,
        first_divergence=first,
        chain=chain(nodes, first.tensor, output) if first else (),
        layers=tuple(layers),
        notes=notes,
    )
    found: list[Probe] = []
    for probe in probes if first is not None else ():
        if time.perf_counter() - start > budget_s:
            notes += (f"probes after {len(found)} skipped: the {budget_s:g} s budget was spent",)
            break
        result = probe(diagnosis)
        if result is not None:
            found.append(result)
    return _replace(diagnosis, probes=tuple(found), notes=notes, start=start)


def _replace(
    d: Diagnosis, *, probes: tuple[Probe, ...], notes: tuple[str, ...], start: float
) -> Diagnosis:
    from dataclasses import replace

    return replace(d, probes=probes, notes=notes, seconds=round(time.perf_counter() - start, 3))


def onnx_probes(
    engine_model: Any,
    source_model: Any,
    chunk: Chunk,
    output: str,
    threads: int = 1,
) -> list[ProbeFn]:
    """The probes for an ONNX Runtime engine: the first diverging node in fp32, the source's weights."""
    from .probes import fp32_node_probe, source_weights_probe

    prepared: dict[str, Any] = {}

    def run(model: Any) -> np.ndarray:
        return run_with_outputs(model, chunk.feeds, [output], threads=threads)[output]

    def engine_prepared() -> Any:
        if "engine" not in prepared:
            prepared["engine"] = prepare_graph(engine_model, chunk.feeds).model
        return prepared["engine"]

    expected = chunk.expected[output]

    def fp32(d: Diagnosis) -> Probe | None:
        assert d.first_divergence is not None
        model = engine_prepared()
        node = _engine_node(model, d.first_divergence.tensor)
        if node is None:
            return None
        return fp32_node_probe(model, node, run, expected, d.output_error, d.tier, d.metric)

    def weights(d: Diagnosis) -> Probe | None:
        source = prepare_graph(source_model, chunk.reference_feeds).model
        return source_weights_probe(
            engine_prepared(), source, run, expected, d.output_error, d.tier, d.metric
        )

    return [fp32, weights]


def _engine_node(model: Any, tensor: str) -> str | None:
    """The name of the engine node that produces reference tensor `tensor`."""
    from .names import match_names

    outs = {o: n.name for n in model.graph.node for o in n.output}
    hit = match_names([tensor], list(outs)).get(tensor)
    return outs[hit] if hit is not None else None
