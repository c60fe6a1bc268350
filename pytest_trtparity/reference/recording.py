"""Generate a reference from the model it must hold the engine to: chunk by chunk, state fed back.

A reference is only as good as the loop that wrote it. The loop here is the one the gate's closed
loop checks: the first chunk takes the initial state, every later chunk takes the state the model
itself returned on the previous chunk, and every record holds exactly the inputs the model saw.

```python
import torch
from pytest_trtparity.harness import record_reference
from pytest_trtparity.reference import ReferenceWriter

model = torch.jit.load("silero_vad.jit")._model         # forward(x, state) -> (prob, state)
with ReferenceWriter("ref.jsonl", metadata={"model": "silero_vad"}) as writer:
    record_reference(
        model, ({"input": x} for x in chunks), writer,
        state_pairs={"stateN": "state"},                 # output -> the input it feeds next
        initial_state={"state": np.zeros((2, 1, 128), np.float32)},
        constants={"sr": np.array(16000)},               # recorded, not passed to the model
        input_names=("input", "state"), output_names=("output", "stateN"),
    )
```
torch is imported only when a module (rather than a plain step function) is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..contract.model import StatePair
from ..errors import BindingError

#: A step: the model's inputs by name -> its outputs by name.
StepFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class RecordSink(Protocol):
    """What `record_reference` writes to; `reference.ReferenceWriter` is one."""

    def write(
        self,
        *,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        stream: str | None = None,
        chunk_index: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int: ...


@dataclass(frozen=True)
class Chunk:
    """One chunk's fresh inputs (state excluded) and the metadata its record should carry."""

    inputs: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)


def module_step(
    module: Any,
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    device: str | None = None,
) -> StepFn:
    """Wrap a torch module (or any callable taking positional tensors) as a named step.

    Inputs are passed in `input_names` order; numpy arrays become tensors (on `device` when given);
    a tuple or list result is named by `output_names` in order, a single tensor by the first name.
    """
    import numpy as np
    import torch

    names_in = tuple(input_names)
    names_out = tuple(output_names)

    def to_tensor(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value if value.flags.writeable else value.copy())
        if device is not None and hasattr(value, "to"):
            value = value.to(device)
        return value

    def step(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        missing = [n for n in names_in if n not in inputs]
        if missing:
            raise BindingError(
                f"module step: input(s) {', '.join(missing)} not given (have {', '.join(inputs)})"
            )
        with torch.inference_mode():
            result = module(*(to_tensor(inputs[n]) for n in names_in))
        values = list(result) if isinstance(result, tuple | list) else [result]
        if len(values) != len(names_out):
            raise BindingError(
                f"module step: the module returned {len(values)} value(s) but {len(names_out)} output name(s) "
                f"were given ({', '.join(names_out)})"
            )
        return dict(zip(names_out, values, strict=True))

    return step


def _pairs(state_pairs: Mapping[str, str] | Iterable[StatePair]) -> dict[str, str]:
    """output -> input, from a mapping or the contract's state pairs."""
    if isinstance(state_pairs, Mapping):
        return dict(state_pairs)
    return {p.output: p.input for p in state_pairs}


def _is_plain_step(step: Any) -> bool:
    return not (hasattr(step, "forward") or type(step).__module__.startswith("torch"))


def _callable(
    step: StepFn | Any,
    names_in: Sequence[str],
    output_names: Sequence[str] | None,
    device: str | None,
) -> StepFn:
    """A plain step as it is; a torch module wrapped to take and return named tensors."""
    if _is_plain_step(step):
        plain: StepFn = step
        return plain
    if not names_in or not output_names:
        raise BindingError("record_reference: a module needs input_names and output_names")
    return module_step(step, names_in, output_names, device=device)


def _step_once(
    call: StepFn,
    seen: Mapping[str, Any],
    names_in: Sequence[str],
    pairs: Mapping[str, str],
    count: int,
) -> dict[str, Any]:
    """One chunk through the step, with every state output it must return checked."""
    taken = {k: v for k, v in seen.items() if not names_in or k in names_in}
    outputs = dict(call(taken))
    absent = sorted(set(pairs) - set(outputs))
    if absent:
        raise BindingError(
            f"record_reference: chunk {count}: the step returned no state output {', '.join(absent)}"
        )
    return outputs


def record_reference(
    step: StepFn | Any,
    chunks: Iterable[Mapping[str, Any] | Chunk],
    writer: RecordSink,
    *,
    state_pairs: Mapping[str, str] | Iterable[StatePair] = (),
    initial_state: Mapping[str, Any] | None = None,
    constants: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    record_order: Sequence[str] | None = None,
    stream: str | None = None,
    device: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Run `step` over `chunks` in order, feeding state back, and write one record per chunk.

    `step` is a step function (named inputs -> named outputs) or a torch module; a module needs
    `input_names` (the arguments it takes, in order) and `output_names` (what it returns, in order).
    `state_pairs` maps an output to the input it feeds on the next chunk; `initial_state` gives
    those inputs for the first chunk. `constants` are recorded with every chunk (a sample rate the
    engine may take) and passed to the step only when the step takes them. Records list inputs in
    `record_order` (default: the input names, then anything else in the order first seen).
    Returns the number of chunks written.
    """
    pairs = _pairs(state_pairs)
    names_in = tuple(input_names or ())
    call = _callable(step, names_in, output_names, device)
    state: dict[str, Any] = dict(initial_state or {})
    missing = sorted(set(pairs.values()) - set(state))
    if missing:
        raise BindingError(
            f"record_reference: initial_state lacks state input(s) {', '.join(missing)}"
        )
    fixed = dict(constants or {})
    order = list(record_order or names_in)
    count = 0
    for chunk in chunks:
        fresh, meta = (chunk.inputs, chunk.meta) if isinstance(chunk, Chunk) else (chunk, {})
        clash = sorted(set(fresh) & (set(state) | set(fixed)))
        if clash:
            raise BindingError(
                f"record_reference: chunk {count} sets {', '.join(clash)}, which state or constants own"
            )
        seen = {**fresh, **state, **fixed}
        outputs = _step_once(call, seen, names_in, pairs, count)
        keys = [k for k in order if k in seen] + [k for k in seen if k not in order]
        writer.write(
            inputs={k: seen[k] for k in keys}, outputs=outputs, stream=stream, meta=meta or None
        )
        state = {inp: outputs[out] for out, inp in pairs.items()}
        count += 1
        if on_chunk is not None:
            on_chunk(count)
    return count
