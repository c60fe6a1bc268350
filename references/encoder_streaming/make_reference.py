"""Write the small streaming encoder's references from the PyTorch module, chunk by chunk.

    pip install torch==2.13.0
    python references/encoder_streaming/make_reference.py            # both files below
    python references/encoder_streaming/make_reference.py --chunks 50 -o my_ref.jsonl

One stream, run exactly as a deployment runs it: the first chunk has 592 frames, every later one
584; each chunk's caches are the previous chunk's cache outputs, so the records hold the closed-loop
trajectory of the PyTorch model. The loop is `pytest_trtparity.reference.recording.record_reference`, fed the
state pairs of contracts/encoder_streaming_small.contract.json, so the references and the gate
agree on which output feeds which input. A record holds the chunk's five inputs and five outputs.
The mel features are seeded Gaussian noise around per-band levels that wander slowly from chunk to
chunk (so consecutive chunks differ, and what the caches remember matters).

The 50-chunk file (functional mode) is the first 50 chunks of the 300-chunk one (closed loop).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pytest_trtparity.contract.model import load_contract
from pytest_trtparity.reference import ReferenceWriter
from pytest_trtparity.reference.recording import Chunk, record_reference

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTRACT = ROOT.parent / "contracts" / "encoder_streaming_small.contract.json"
sys.path.insert(0, str(HERE))

from model import (  # noqa: E402 - the model module sits beside this script
    FIRST_CHUNK,
    INPUT_NAMES,
    LATER_CHUNK,
    OUTPUT_NAMES,
    SEED,
    build,
    zero_state,
)

DEFAULT_OUTPUTS = {
    50: ROOT / "encoder_streaming_small_50.jsonl",
    300: ROOT / "encoder_streaming_small_300.jsonl",
}


def features(n_mels: int, chunks: int, seed: int) -> Iterator[np.ndarray]:
    """Mel-like features [1, n_mels, T] per chunk: band levels follow a slow AR(1) walk."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0.0, 1.0, size=(n_mels, 1))
    for i in range(chunks):
        frames = FIRST_CHUNK if i == 0 else LATER_CHUNK
        level = 0.9 * level + 0.45 * rng.normal(0.0, 1.0, size=(n_mels, 1))
        spread = 0.5 + rng.random(size=(n_mels, 1))
        x = level + spread * rng.normal(0.0, 1.0, size=(n_mels, frames))
        yield x[None].astype(np.float32)


def chunks_of(n_mels: int, chunks: int, seed: int) -> Iterator[Chunk]:
    """Each chunk's fresh inputs; the caches are the harness's to feed back."""
    for i, audio in enumerate(features(n_mels, chunks, seed)):
        frames = audio.shape[2]
        fresh = {"audio_signal": audio, "length": np.array([frames], dtype=np.int64)}
        yield Chunk(fresh, meta={"frames": frames, "first": i == 0})


def write(path: Path, chunks: int, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    model = build("none", seed=SEED)
    cfg = model.cfg
    contract = load_contract(CONTRACT)
    onnx_file = HERE / "encoder_streaming_small.onnx"
    header = {
        "model": "encoder_streaming_small",
        "generator": "references/encoder_streaming/make_reference.py",
        "pytorch_model": f"references/encoder_streaming/model.py, weights seed {SEED}",
        "config": {
            k: getattr(cfg, k)
            for k in ("n_mels", "d_model", "layers", "channel_cache", "time_cache")
        },
        "onnx_sha256": hashlib.sha256(onnx_file.read_bytes()).hexdigest()
        if onnx_file.is_file()
        else None,
        "torch": torch.__version__,
        "device": "cpu",
        "seed": seed,
        "chunk_frames": {"first": FIRST_CHUNK, "later": LATER_CHUNK},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with ReferenceWriter(path, metadata=header) as writer:
        count = record_reference(
            model,
            chunks_of(cfg.n_mels, chunks, seed),
            writer,
            state_pairs=contract.state,
            initial_state={k: v.numpy() for k, v in zero_state(cfg).items()},
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            record_order=INPUT_NAMES,
        )
    print(f"wrote {count} chunks to {path} ({path.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--chunks", type=int, help="chunks to write (default: the 50- and 300-chunk files)"
    )
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the input features")
    ap.add_argument("-o", "--output", type=Path, help="output file (with --chunks)")
    args = ap.parse_args()
    if args.chunks is None:
        for chunks, path in DEFAULT_OUTPUTS.items():
            write(path, chunks, args.seed)
        return
    write(
        args.output or ROOT / f"encoder_streaming_small_{args.chunks}.jsonl", args.chunks, args.seed
    )


if __name__ == "__main__":
    main()
