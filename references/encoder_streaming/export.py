"""Export the small streaming encoder, and its two deliberately broken variants, to ONNX.

    pip install torch==2.13.0 onnx onnxruntime
    python references/encoder_streaming/export.py

Writes, next to this file:

- encoder_streaming_small.onnx: the model the gate is shown on;
- buggy_cache_len.onnx: cache_last_channel_len_out counts frames instead of staying 0;
- buggy_time_shift.onnx: cache_last_time_out is shifted by one frame.

Batch and chunk length are dynamic axes (`B`, `T`), as in the real export, so one ONNX file serves
the first chunk (T=592) and every later one (T=584). Each file is checked against PyTorch with
ONNX Runtime on a first and a second chunk before the script reports it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from model import (  # noqa: E402 - the model module sits beside this script
    FIRST_CHUNK,
    INPUT_NAMES,
    LATER_CHUNK,
    OUTPUT_NAMES,
    StreamingEncoder,
    build,
    zero_state,
)

OPSET = 17
TARGETS = {
    "none": "encoder_streaming_small.onnx",
    "cache_len": "buggy_cache_len.onnx",
    "time_shift": "buggy_time_shift.onnx",
}
DYNAMIC_AXES = {
    "audio_signal": {0: "B", 2: "T"},
    "length": {0: "B"},
    "cache_last_channel": {1: "B"},
    "cache_last_time": {1: "B"},
    "cache_last_channel_len": {0: "B"},
    "encoder_output": {0: "B", 2: "T_out"},
    "encoded_lengths": {0: "B"},
    "cache_last_channel_out": {1: "B"},
    "cache_last_time_out": {1: "B"},
    "cache_last_channel_len_out": {0: "B"},
}


def export(bug: str, path: Path) -> None:
    import torch

    model = build(bug)
    cfg = model.cfg
    state = zero_state(cfg)
    audio = torch.randn(1, cfg.n_mels, FIRST_CHUNK)
    args = (audio, torch.tensor([FIRST_CHUNK]), *state.values())
    with torch.inference_mode():
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=DYNAMIC_AXES,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    check(model, path)


def check(model: StreamingEncoder, path: Path) -> None:
    """Run a first and a second chunk through PyTorch and ONNX Runtime; stop on any difference
    above 1e-5, so a broken export never reaches the references."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = {k: v.numpy() for k, v in zero_state(model.cfg).items()}
    rng = np.random.default_rng(0)
    for frames in (FIRST_CHUNK, LATER_CHUNK):
        audio = rng.normal(size=(1, model.cfg.n_mels, frames)).astype(np.float32)
        feeds = {"audio_signal": audio, "length": np.array([frames], dtype=np.int64), **state}
        got = session.run(list(OUTPUT_NAMES), feeds)
        with torch.inference_mode():
            want = model(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))
        for name, g, w in zip(OUTPUT_NAMES, got, want, strict=True):
            err = float(np.max(np.abs(g.astype(np.float64) - w.numpy().astype(np.float64))))
            if g.shape != tuple(w.shape) or err > 1e-5:
                raise SystemExit(
                    f"{path.name}: {name} differs from PyTorch (T={frames}, error {err:g})"
                )
        state = {
            "cache_last_channel": got[2],
            "cache_last_time": got[3],
            "cache_last_channel_len": got[4],
        }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--bug", choices=[*TARGETS, "all"], default="all", help="which variant to export"
    )
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()
    bugs = list(TARGETS) if args.bug == "all" else [args.bug]
    for bug in bugs:
        path = args.out_dir / TARGETS[bug]
        export(bug, path)
        print(f"wrote {path} ({path.stat().st_size} bytes), checked against PyTorch")


if __name__ == "__main__":
    main()
