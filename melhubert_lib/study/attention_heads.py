"""What each attention head looks at: its attention maps, and a kind by a stated rule.

Rule, on the head's attention maps averaged over utterances (each row of a map sums to one):
- diagonal: at least `DIAGONAL_SHARE` of each query's attention falls within +-`DIAGONAL_FRAMES` frames
  of itself (a local, convolution-like head);
- vertical: otherwise, if the `VERTICAL_TOP` share of key frames that receive the most attention
  (averaged over queries) take at least `VERTICAL_SHARE` of it, three times what uniform attention gives
  (every query looks at the same few frames);
- global: neither (attention spread broadly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data.frames import FrameStore
from ..model import MelHuBERT

DIAGONAL_FRAMES = 2
DIAGONAL_SHARE = 0.5
VERTICAL_TOP = 0.1
VERTICAL_SHARE = 0.3
KINDS = ("diagonal", "vertical", "global")


@dataclass
class HeadStatistics:
    """Per head (one row each: layer, head, original id): the two statistics of the rule and the kind."""

    table: pd.DataFrame
    example_maps: list[np.ndarray]  # per layer, (H, T, T) maps of the first utterance


@torch.no_grad()
def attention_maps(model: MelHuBERT, feats: torch.Tensor) -> list[torch.Tensor]:
    """Attention weights of every layer for one utterance's (T, input_dim) features: a list of (H, T, T)."""
    inputs: list[torch.Tensor] = []
    hooks = [layer.attention.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
             for layer in model.layers]
    was_training = model.training
    model.eval()
    try:
        model(feats[None])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [layer.attention.probabilities(x)[0] for layer, x in zip(model.layers, inputs, strict=True)]


def diagonal_share(maps: torch.Tensor, frames: int = DIAGONAL_FRAMES) -> torch.Tensor:
    """(H, T, T) maps -> (H,) mean share of a query's attention within +-`frames` of itself."""
    t = maps.shape[-1]
    idx = torch.arange(t)
    band = (idx[:, None] - idx[None, :]).abs() <= frames
    return (maps * band).sum(-1).mean(-1)


def vertical_share(maps: torch.Tensor, top: float = VERTICAL_TOP) -> torch.Tensor:
    """(H, T, T) maps -> (H,) share of attention taken by the `top` fraction of most-attended key frames."""
    received = maps.mean(1)  # (H, T_key), sums to one per head
    k = max(1, math.ceil(top * maps.shape[-1]))
    return received.topk(k, dim=-1).values.sum(-1)


def classify(diagonal: float, vertical: float) -> str:
    """The head's kind under the module's rule."""
    if diagonal >= DIAGONAL_SHARE:
        return "diagonal"
    return "vertical" if vertical >= VERTICAL_SHARE else "global"


def head_statistics(model: MelHuBERT, inputs: FrameStore, n_utterances: int = 8) -> HeadStatistics:
    """Both statistics of every head, averaged over the first `n_utterances` of `inputs`, and each head's kind."""
    if n_utterances < 1 or len(inputs) == 0:
        raise ValueError(f"n_utterances={n_utterances} on {len(inputs)} utterances: need at least one of each")
    ids = model.config.original_heads()
    diag = [torch.zeros(h) for h in model.config.heads]
    vert = [torch.zeros(h) for h in model.config.heads]
    n = min(n_utterances, len(inputs))
    example: list[np.ndarray] = []
    for u in range(n):
        maps = attention_maps(model, torch.from_numpy(inputs[u]).float())
        for i, m in enumerate(maps):
            diag[i] += diagonal_share(m) / n
            vert[i] += vertical_share(m) / n
        if u == 0:
            example = [m.numpy() for m in maps]
    rows = [{"layer": i, "head": h, "head_id": ids[i][h], "diagonal_share": float(diag[i][h]),
             "vertical_share": float(vert[i][h]), "kind": classify(float(diag[i][h]), float(vert[i][h]))}
            for i in range(model.config.depth) for h in range(model.config.heads[i])]
    return HeadStatistics(pd.DataFrame(rows), example)
