"""Compute cost of a model: multiply-accumulates per second of audio.

Linear and convolution MACs come from `torch.utils.flop_counter.FlopCounterMode` (it reports 2 FLOPs
per MAC); CPU `scaled_dot_product_attention` counts zero there, so the two attention matmuls
(Q K^T and A V: 2 x T^2 x heads x head_dim MACs per layer) are added in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .model import MelHuBERT


@dataclass
class MacCount:
    """MACs of one forward pass over `seconds` of audio, split by source."""

    seconds: float
    linear_and_conv: int
    attention: int

    @property
    def total(self) -> int:
        """All MACs of the pass."""
        return self.linear_and_conv + self.attention

    @property
    def per_second(self) -> float:
        """MACs per second of audio."""
        return self.total / self.seconds


def attention_macs(model: MelHuBERT, frames: int) -> int:
    """Closed-form MACs of the score and context matmuls of every layer for one utterance of `frames`."""
    cfg = model.config
    return sum(2 * frames * frames * h * cfg.head_dim for h in cfg.heads)


@torch.no_grad()
def count_macs(model: MelHuBERT, seconds: float = 10.0) -> MacCount:
    """Dense MACs of one forward pass (batch 1, no masking) over `seconds` of audio."""
    frames = int(round(seconds * 1000 / model.config.frame_ms))
    x = torch.zeros(1, frames, model.config.input_dim)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    counts = counter.get_flop_counts()["Global"]
    counted = sum(v for op, v in counts.items() if "scaled_dot_product" not in str(op)) // 2
    return MacCount(seconds=seconds, linear_and_conv=int(counted), attention=attention_macs(model, frames))
