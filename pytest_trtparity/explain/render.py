"""Text forms of a diagnosis: a markdown section for report.md and one line for the terminal."""

from __future__ import annotations

from ..util import fmt
from .diagnosis import Diagnosis, explaining_probes
from .names import display_name


def _short(tensor: str) -> str:
    return display_name(tensor)


def render_line(d: Diagnosis) -> str:
    """One terminal line per failing output."""
    head = f"explain {d.suite} {d.output!r} on chunk {d.chunk}:"
    first = d.first_divergence
    if first is None:
        return f"{head} no intermediate tensor diverges from the source model ({d.metric} {fmt.sig(d.output_error)}, tier {fmt.sig(d.tier)})"
    where = f"{first.op_type} {_short(first.node)}" + (
        f" (module {first.module})" if first.module else ""
    )
    line = f"{head} first divergence at {_short(first.tensor)} from {where}: {first.reason}"
    causes = explaining_probes(d.probes)
    if causes:
        line += f"; {causes[0].sentence}"
    return line


def render_markdown(d: Diagnosis, plot: str | None = None) -> str:
    """A report section: where, how much, the chain down to the output, the probes, the notes."""
    lines = [f"### Diagnosis: {d.suite} output `{d.output}`, chunk {d.chunk}", ""]
    lines.append(
        f"Output error ({d.metric}) {fmt.sig(d.output_error)} against the fail tier {fmt.sig(d.tier)}."
    )
    first = d.first_divergence
    if first is None:
        lines += ["", "No intermediate tensor diverges from the source model on this chunk."]
    else:
        lines += [
            "",
            "| first divergence | |",
            "|---|---|",
            f"| tensor | `{_short(first.tensor)}` |",
            f"| node | `{_short(first.node)}` ({first.op_type}) |",
            f"| module | `{first.module or '-'}` |",
            f"| error before (inputs) | {fmt.sig(first.inputs_error)} |",
            f"| error after | {fmt.sig(first.error)} |",
            f"| why | {first.reason} |",
            "",
            "Chain to the output: " + " → ".join(f"`{_short(t)}`" for t in d.chain),
        ]
        if first.inputs:
            lines.append(
                "Inputs' error: "
                + ", ".join(f"`{_short(k)}` {fmt.sig(v)}" for k, v in first.inputs.items())
            )
    if d.probes:
        lines += ["", "Probes:", *(f"- {p.sentence}" for p in d.probes)]
    if d.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in d.notes)]
    if plot:
        lines += ["", f"![error per layer]({plot})"]
    return "\n".join(lines) + "\n"
