"""Write the committed Silero VAD reference from its TorchScript model on the CPU.

    pip install torch==2.13.0 && pip install --no-deps silero-vad==6.2.3
    python references/make_silero_reference.py

Reads references/speech_16k.wav (espeak-ng speech, 16 kHz mono), adds seeded Gaussian noise, and
runs the TorchScript model chunk by chunk exactly as silero-vad's own streaming wrapper does:
512 new samples plus the previous 64 as context, the state [2, 1, 128] fed back each chunk. Each
record holds the chunk's inputs (input, state, sr) and the model's outputs (output, stateN).
The loop itself is `pytest_trtparity.reference.recording.record_reference`, the documented way to write a
reference from any PyTorch model.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pytest_trtparity.reference import ReferenceWriter
from pytest_trtparity.reference.recording import Chunk, record_reference

HERE = Path(__file__).resolve().parent
CHUNK = 512
CONTEXT = 64
RATE = 16000


def load_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def noisy_audio(wav: Path, chunks: int, seed: int, noise: float) -> np.ndarray:
    audio = load_wav(wav)
    need = chunks * CHUNK
    audio = np.pad(audio, (0, max(0, need - audio.size)))[:need]
    rng = np.random.default_rng(seed)
    return (audio + rng.normal(0.0, noise, audio.size)).astype(np.float32)


def stream_chunks(audio: np.ndarray, chunks: int) -> Iterator[Chunk]:
    """[1, 576] inputs: the previous chunk's last 64 samples (zeros at first), then 512 new ones."""
    context = np.zeros(CONTEXT, dtype=np.float32)
    for i in range(chunks):
        x = np.concatenate([context, audio[i * CHUNK : (i + 1) * CHUNK]])[None, :]
        yield Chunk({"input": x}, meta={"sample_offset": i * CHUNK})
        context = x[0, -CONTEXT:]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--wav", type=Path, default=HERE / "speech_16k.wav")
    ap.add_argument("--chunks", type=int, default=300)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--noise", type=float, default=0.003, help="noise standard deviation (full scale 1.0)"
    )
    ap.add_argument("-o", "--output", type=Path, default=HERE / "silero_vad_300.jsonl")
    args = ap.parse_args()

    import silero_vad
    import torch

    torch.set_num_threads(1)
    model = silero_vad.load_silero_vad(onnx=False)  # TorchScript
    core = model._model  # the 16 kHz network: forward(x[1, 576], state[2, 1, 128]) -> (prob, state)

    header = {
        "model": "silero_vad",
        "generator": "references/make_silero_reference.py",
        "pytorch_model": f"silero-vad {getattr(silero_vad, '__version__', '6.2.3')} silero_vad.jit",
        "torch": torch.__version__,
        "device": "cpu",
        "seed": args.seed,
        "noise_std": args.noise,
        "audio": args.wav.name,
        "audio_sha256": hashlib.sha256(args.wav.read_bytes()).hexdigest(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    audio = noisy_audio(args.wav, args.chunks, args.seed, args.noise)
    with ReferenceWriter(args.output, metadata=header) as writer:
        count = record_reference(
            core,
            stream_chunks(audio, args.chunks),
            writer,
            state_pairs={"stateN": "state"},
            initial_state={"state": np.zeros((2, 1, 128), dtype=np.float32)},
            constants={"sr": np.array(RATE, dtype=np.int64)},
            input_names=("input", "state"),
            output_names=("output", "stateN"),
            record_order=("input", "state", "sr"),
        )
    print(f"wrote {count} chunks to {args.output}")


if __name__ == "__main__":
    main()
