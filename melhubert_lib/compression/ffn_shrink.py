"""The FFN-width shrink of the authors' code (structured pruning of FFN units).

From every layer it removes the units with the smallest L1 of their fc1 row + fc1 bias + fc2 column.
"""

from __future__ import annotations

import copy

import torch

from ..model import MelHuBERT, require_full_rank


def ffn_unit_scores(model: MelHuBERT) -> list[torch.Tensor]:
    """Per layer, each FFN unit's L1 of its fc1 row, fc1 bias and fc2 column (the authors' score)."""
    scores = []
    for layer in model.layers:
        fc1, fc2 = layer.ffn.fc1, layer.ffn.fc2
        require_full_rank(fc1, fc2)
        scores.append((fc1.weight.abs().sum(1) + fc1.bias.abs() + fc2.weight.abs().sum(0)).detach())
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
