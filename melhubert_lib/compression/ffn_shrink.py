"""The FFN-width shrink of the authors' code (structured pruning of FFN units).

From every layer it removes the units with the smallest L1 of their fc1 row + fc1 bias + fc2 column (in a FLASH
layer, the gate and value units: u and v rows + biases + out-projection column).
"""

from __future__ import annotations

import copy

import torch

from ..model import MelHuBERT, require_full_rank


def ffn_unit_scores(model: MelHuBERT) -> list[torch.Tensor]:
    """Per layer, each FFN unit's L1 of its fc1 row, fc1 bias and fc2 column (the authors' score); in a FLASH layer,
    each gate/value unit's L1 of its u and v rows and biases and its out-projection column."""
    scores = []
    for layer in model.layers:
        rows, cols = layer.unit_maps()
        maps = layer.linear_maps()
        require_full_rank(*(maps[name] for name in rows + cols))
        score = sum(maps[name].weight.abs().sum(1) + maps[name].bias.abs() for name in rows)
        scores.append((score + sum(maps[name].weight.abs().sum(0) for name in cols)).detach())
    return scores


def shrink_ffn(model: MelHuBERT, n_remove: int) -> MelHuBERT:
    """A new model with the `n_remove` lowest-scoring FFN units removed from every layer."""
    if n_remove < 1:
        raise ValueError(f"n_remove={n_remove}: the FFN shrink removes at least one unit per layer")
    scores = ffn_unit_scores(model)
    if any(n_remove >= len(s) for s in scores):
        raise ValueError(f"cannot remove {n_remove} FFN units per layer: widths are {model.config.ffn_dims}")
    keep = [torch.sort(torch.argsort(s, descending=True)[: len(s) - n_remove]).values for s in scores]
    return copy.deepcopy(model).keep_ffn_units(keep)


def ffn_step(model: MelHuBERT, width: float) -> MelHuBERT:
    """A compression step: every layer's FFN shrunk to `width` units (from the same current width)."""
    widths = set(model.config.ffn_dims)
    if len(widths) != 1:
        raise ValueError(f"the FFN shrink expects one width in every layer, got {model.config.ffn_dims}")
    current, target = widths.pop(), int(width)
    if target >= current:
        raise ValueError(f"FFN width {target} is not below the current width {current}: the shrink only removes "
                         f"units, choose a width in [1, {current - 1}]")
    return shrink_ffn(model, current - target)
