"""A larger streaming model for the performance numbers: a conv-attention encoder with a carried cache.

Silero VAD takes about 0.1 ms a chunk on a CPU, too little to show what the harness costs next to
a real model. This encoder takes a few milliseconds: 64 frames of 80 features per chunk, 4 layers of
causal depthwise convolution (each keeps the last 4 frames of its input as state for the next
chunk), self-attention within the chunk and a feed-forward block; about 1.9 M parameters.

    python benchmarks/stream_model.py --out build/bench/stream

writes stream_encoder.pt (TorchScript), stream_encoder.onnx, stream_encoder.contract.json and a
64-chunk reference stream_encoder_ref.jsonl, recorded from the TorchScript model on the CPU with
`pytest_trtparity.reference.recording.record_reference` (seeded, so every run writes the same weights and data).
Nothing here is committed: the files are a few MB each and rebuild in seconds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 80
FRAMES = 64
DIM = 192
LAYERS = 4
KERNEL = 5
HEADS = 4
FFN = 768
SEED = 1234


def build_model() -> Any:
    """The encoder with seeded weights, in eval mode."""
    import torch
    from torch import nn
    from torch.nn import functional

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.depthwise = nn.Conv1d(DIM, DIM, KERNEL, groups=DIM)
            self.pointwise = nn.Linear(DIM, DIM)
            self.norm1 = nn.LayerNorm(DIM)
            self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
            self.norm2 = nn.LayerNorm(DIM)
            self.ffn = nn.Sequential(nn.Linear(DIM, FFN), nn.GELU(), nn.Linear(FFN, DIM))
            self.keep = KERNEL - 1

        def forward(
            self, x: torch.Tensor, cache: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            full = torch.cat([cache, x], dim=1)  # [B, K-1+T, D]
            new_cache = full[:, full.shape[1] - self.keep :]
            conv = self.depthwise(full.transpose(1, 2)).transpose(1, 2)  # causal: T frames out
            x = x + self.pointwise(functional.gelu(conv))
            a = self.norm1(x)
            x = x + self.attn(a, a, a, need_weights=False)[0]
            x = x + self.ffn(self.norm2(x))
            return x, new_cache

    class StreamEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(FEATURES, DIM)
            self.layers = nn.ModuleList([Layer() for _ in range(LAYERS)])
            self.out = nn.Linear(DIM, DIM)

        def forward(
            self, features: torch.Tensor, cache: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.proj(features)
            caches: list[torch.Tensor] = []
            for i, layer in enumerate(self.layers):
                x, c = layer(x, cache[i])
                caches.append(c)
            return self.out(x), torch.stack(caches)

    torch.manual_seed(SEED)
    return StreamEncoder().eval()


def example_inputs(batch: int = 1) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(SEED)
    return (
        torch.randn(batch, FRAMES, FEATURES, generator=gen),
        torch.zeros(LAYERS, batch, KERNEL - 1, DIM),
    )


def contract() -> dict[str, Any]:
    cache = [LAYERS, "B", KERNEL - 1, DIM]
    return {
        "trtparity": "contract/1",
        "model": "stream_encoder",
        "description": "Benchmark encoder (benchmarks/stream_model.py): 64 frames x 80 features a chunk, "
        "per-layer convolution cache carried from chunk to chunk.",
        "inputs": [
            {"name": "features", "dtype": "float32", "shape": ["B", FRAMES, FEATURES]},
            {"name": "cache", "dtype": "float32", "shape": cache},
        ],
        "outputs": [
            {"name": "encoded", "dtype": "float32", "shape": ["B", FRAMES, DIM]},
            {"name": "cacheN", "dtype": "float32", "shape": cache},
        ],
        "profiles": {
            "stream": {
                "shapes": {
                    "features": {
                        "min": [1, FRAMES, FEATURES],
                        "opt": [1, FRAMES, FEATURES],
                        "max": [1, FRAMES, FEATURES],
                    }
                }
            },
            "batched": {
                "shapes": {
                    "features": {
                        "min": [1, FRAMES, FEATURES],
                        "opt": [4, FRAMES, FEATURES],
                        "max": [8, FRAMES, FEATURES],
                    }
                }
            },
        },
        "state": [{"output": "cacheN", "input": "cache", "initial": "reference"}],
        "invariants": [{"output": "encoded", "check": "finite"}],
        "default_tolerance": {
            "metric": "max_abs",
            "chunk": {"warn": 1e-4, "fail": 1e-3},
            "p95": {"warn": 5e-5, "fail": 5e-4},
        },
        "closed_loop": {"default": {"max": {"warn": 1e-4, "fail": 1e-3}}},
        "latency": {
            "warmup": 20,
            "iterations": 200,
            "chunks": 32,
            "p95_ms": {"warn": 50.0, "fail": 200.0},
            "overhead_share": {"warn": 0.05},
            "baseline_ratio": {"warn": 1.0, "fail": 2.0},
            "baseline_error": {"warn": 2.0, "fail": 10.0},
            "baseline_error_floor": 1e-5,
            "throughput_iterations": 30,
        },
        "memory": {
            "engine_bytes": {"warn": 5e7, "fail": 1e8},
            "host_rss_bytes": {"warn": 2e9, "fail": 4e9},
        },
    }


def feature_chunks(chunks: int, batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Seeded, smoothly varying features (never all zeros), one [B, 64, 80] block a chunk."""
    rng = np.random.default_rng(SEED)
    drift = np.zeros((batch, 1, FEATURES), dtype=np.float32)
    for _ in range(chunks):
        drift = 0.9 * drift + 0.1 * rng.standard_normal(drift.shape).astype(np.float32)
        block = rng.standard_normal((batch, FRAMES, FEATURES)).astype(np.float32) + drift
        yield {"features": block.astype(np.float32)}


def export(out: Path, chunks: int) -> dict[str, Path]:
    import torch

    from pytest_trtparity.reference import ReferenceWriter
    from pytest_trtparity.reference.recording import record_reference

    out.mkdir(parents=True, exist_ok=True)
    model = build_model()
    scripted = torch.jit.script(model)
    paths = {
        "torchscript": out / "stream_encoder.pt",
        "onnx": out / "stream_encoder.onnx",
        "contract": out / "stream_encoder.contract.json",
        "reference": out / "stream_encoder_ref.jsonl",
    }
    torch.jit.save(scripted, str(paths["torchscript"]))
    torch.onnx.export(
        model,
        example_inputs(),
        str(paths["onnx"]),
        input_names=["features", "cache"],
        output_names=["encoded", "cacheN"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={
            "features": {0: "B"},
            "cache": {1: "B"},
            "encoded": {0: "B"},
            "cacheN": {1: "B"},
        },
    )
    paths["contract"].write_text(json.dumps(contract(), indent=2) + "\n")
    header = {
        "model": "stream_encoder",
        "generator": "benchmarks/stream_model.py",
        "torch": torch.__version__,
        "device": "cpu",
        "seed": SEED,
    }
    with torch.inference_mode(), ReferenceWriter(paths["reference"], metadata=header) as writer:
        record_reference(
            scripted,
            feature_chunks(chunks),
            writer,
            state_pairs={"cacheN": "cache"},
            initial_state={"cache": np.zeros((LAYERS, 1, KERNEL - 1, DIM), dtype=np.float32)},
            input_names=("features", "cache"),
            output_names=("encoded", "cacheN"),
        )
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("build/bench/stream"))
    ap.add_argument("--chunks", type=int, default=64)
    args = ap.parse_args()
    for kind, path in export(args.out, args.chunks).items():
        print(f"{kind:<12} {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
