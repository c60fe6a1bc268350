"""A small cache-aware streaming encoder with the bindings of parakeet-tdt-0.6b-v3's streaming export.

The real encoder cannot be shipped, but the workflow around it can run for real on a model with the
same five inputs, four outputs and three contract assertions:

- `audio_signal [B, F, T]` mel features and `length [B]` valid frames; the first chunk of a stream
  is 592 frames, every later one 584 (so an engine needs a second optimization profile, or a
  unified one, and the runtime switches once);
- `cache_last_channel [L, B, C, D]`: per layer, the last C frames each attention layer saw; the
  new frame attends over them;
- `cache_last_time [L, B, D, K]`: per layer, the last K inputs of a causal depthwise convolution
  (kernel K + 1);
- `cache_last_channel_len [B]`: how many of the oldest cache slots attention must skip. The
  chunk-isolated contract keeps it 0 (every slot, the first chunk's zeros included, is attended),
  and the model reports the count left after one frame is pushed, which is 0 again;
- outputs: `encoder_output [B, D, 1]` (one frame per chunk: the chunk is pooled over time),
  `encoded_lengths [B]` (1 for any chunk with valid frames) and the three `*_out` caches.

Both caches carry real state, so an engine that mishandles one drifts in closed loop. `bug` builds
the two classic export faults, for the gate's own tests:

- ``"cache_len"``: the length output counts frames (as a non-isolated export does) instead of
  staying 0;
- ``"time_shift"``: the time cache is shifted by one frame (the newest frame dropped, a stale
  one kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

BUGS = ("none", "cache_len", "time_shift")


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = 4
    d_model: int = 16
    layers: int = 2
    channel_cache: int = 8
    time_cache: int = 4


class StreamingLayer(nn.Module):
    """One layer: attention of the new frame over the channel cache, then a causal convolution
    over the time cache. Both caches are updated with the newest frame."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_att = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.norm_conv = nn.LayerNorm(d)
        self.depthwise = nn.Parameter(
            torch.randn(d, cfg.time_cache + 1) / math.sqrt(cfg.time_cache + 1)
        )
        self.conv_bias = nn.Parameter(torch.zeros(d))
        self.pointwise = nn.Linear(d, d)
        self.scale = 1.0 / math.sqrt(d)

    def forward(
        self,
        h: torch.Tensor,
        channel: torch.Tensor,
        time: torch.Tensor,
        skip: torch.Tensor,
        bug: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # h [B, D]; channel [B, C, D]; time [B, D, K]; skip [B] (oldest slots to leave out)
        x = self.norm_att(h)
        frames = torch.cat([channel, x.unsqueeze(1)], dim=1)  # [B, C + 1, D]
        logits = torch.matmul(self.k(frames), self.q(x).unsqueeze(2)).squeeze(2) * self.scale
        slot = torch.arange(frames.shape[1], device=h.device).unsqueeze(0)
        logits = logits.masked_fill(slot < skip.unsqueeze(1), -1e9)
        weights = torch.softmax(logits, dim=1)
        h = h + self.out(torch.matmul(weights.unsqueeze(1), self.v(frames)).squeeze(1))
        channel_next = frames[:, 1:, :]

        y = self.norm_conv(h)
        window = torch.cat([time, y.unsqueeze(2)], dim=2)  # [B, D, K + 1]
        conv = (window * self.depthwise).sum(dim=2) + self.conv_bias
        h = h + self.pointwise(nn.functional.silu(conv))
        time_next = window[:, :, :-1] if bug == "time_shift" else window[:, :, 1:]
        return h, channel_next, time_next


class StreamingEncoder(nn.Module):
    """forward(audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len)
    -> (encoder_output, encoded_lengths, cache_last_channel_out, cache_last_time_out,
    cache_last_channel_len_out), in the order and with the names of the real export."""

    def __init__(self, cfg: EncoderConfig | None = None, bug: str = "none") -> None:
        super().__init__()
        if bug not in BUGS:
            raise ValueError(f"bug {bug!r}: expected one of {', '.join(BUGS)}")
        self.cfg = cfg or EncoderConfig()
        self.bug = bug
        d = self.cfg.d_model
        self.subsample = nn.Linear(2 * self.cfg.n_mels, d)
        self.layers = nn.ModuleList(StreamingLayer(self.cfg) for _ in range(self.cfg.layers))
        self.norm_out = nn.LayerNorm(d)

    def forward(
        self,
        audio_signal: torch.Tensor,
        length: torch.Tensor,
        cache_last_channel: torch.Tensor,
        cache_last_time: torch.Tensor,
        cache_last_channel_len: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        frames = audio_signal.shape[2]
        valid = torch.arange(frames, device=audio_signal.device).unsqueeze(0) < length.unsqueeze(1)
        valid = valid.to(audio_signal.dtype).unsqueeze(1)  # [B, 1, T]
        count = valid.sum(dim=2).clamp(min=1.0)  # [B, 1]
        mean = (audio_signal * valid).sum(dim=2) / count
        power = (audio_signal * audio_signal * valid).sum(dim=2) / count
        # Subsampling to a single frame per chunk: pooled statistics of the valid frames.
        h = torch.tanh(self.subsample(torch.cat([mean, torch.sqrt(power + 1e-6)], dim=1)))

        channels, times = [], []
        for i, layer in enumerate(self.layers):
            h, channel_next, time_next = layer(
                h, cache_last_channel[i], cache_last_time[i], cache_last_channel_len, self.bug
            )
            channels.append(channel_next)
            times.append(time_next)

        encoder_output = self.norm_out(h).unsqueeze(2)  # [B, D, 1]
        # Lengths are never negative, so truncating division is the ceiling's floor: 1 per chunk.
        encoded_lengths = torch.div(length + frames - 1, frames, rounding_mode="trunc")
        if self.bug == "cache_len":
            full = torch.full_like(cache_last_channel_len, self.cfg.channel_cache)
            cache_len_out = torch.minimum(cache_last_channel_len + 1, full)
        else:  # one frame pushed: one skipped slot fewer, never below 0
            cache_len_out = torch.maximum(
                cache_last_channel_len - 1, torch.zeros_like(cache_last_channel_len)
            )
        return (
            encoder_output,
            encoded_lengths,
            torch.stack(channels, dim=0),
            torch.stack(times, dim=0),
            cache_len_out,
        )


INPUT_NAMES = (
    "audio_signal",
    "length",
    "cache_last_channel",
    "cache_last_time",
    "cache_last_channel_len",
)
OUTPUT_NAMES = (
    "encoder_output",
    "encoded_lengths",
    "cache_last_channel_out",
    "cache_last_time_out",
    "cache_last_channel_len_out",
)
FIRST_CHUNK = 592
LATER_CHUNK = 584
SEED = 42


def build(bug: str = "none", seed: int = SEED) -> StreamingEncoder:
    """The committed model: weights drawn from `seed`, identical for every bug variant."""
    torch.manual_seed(seed)
    model = StreamingEncoder(EncoderConfig(), bug="none")
    model.eval()
    if bug != "none":
        buggy = StreamingEncoder(model.cfg, bug=bug)
        buggy.load_state_dict(model.state_dict())
        buggy.eval()
        return buggy
    return model


def zero_state(cfg: EncoderConfig, batch: int = 1) -> dict[str, torch.Tensor]:
    """The state of a new stream: empty caches, nothing to skip."""
    return {
        "cache_last_channel": torch.zeros(cfg.layers, batch, cfg.channel_cache, cfg.d_model),
        "cache_last_time": torch.zeros(cfg.layers, batch, cfg.d_model, cfg.time_cache),
        "cache_last_channel_len": torch.zeros(batch, dtype=torch.int64),
    }
