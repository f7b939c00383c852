"""Layer pruning: remove whole Transformer layers, the least important first, one at a time.

A layer's importance is the masked-prediction loss of the model with that layer skipped (the next layer reads what
it would have read), on a slice of the training data as large as the held-out set (the held-out set itself stays
for reporting): the layer whose absence raises the loss least goes first. Each removal re-scores
the layers that are left. The pruned model keeps the original index of every layer in its config.
`ranked_step` removes layers by a fixed score per original layer instead (a task-aware score computed once).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from ..model import MelHuBERT
from ..training.pretrain import SSLData, evaluate_ssl
from .levels import Step


def layer_importance(model: MelHuBERT, data: SSLData) -> list[float]:
    """Per layer, the masked-prediction loss on `data` of the model without it (higher: the layer matters more)."""
    return [evaluate_ssl(copy.deepcopy(model).drop_layers([i]), data).loss for i in range(model.config.depth)]


def _layers_to_keep(model: MelHuBERT, layers_kept: float) -> int:
    """`layers_kept` as a whole number, refused unless it keeps at least one layer and removes at least one."""
    depth, kept = model.config.depth, int(layers_kept)
    if not 1 <= kept < depth:
        raise ValueError(f"cannot go from {depth} layers to {kept}: keep at least one, and remove at least one")
    return kept


def pruning_step(data: SSLData) -> Step:
    """A compression step that removes the least important layers, one at a time, until `layers_kept` are left."""

    def step(model: MelHuBERT, layers_kept: float) -> MelHuBERT:
        kept = _layers_to_keep(model, layers_kept)
        pruned = copy.deepcopy(model)
        while pruned.config.depth > kept:
            pruned.drop_layers([int(np.argmin(layer_importance(pruned, data)))])
        return pruned

    return step


def ranked_step(scores: Sequence[float]) -> Step:
    """A compression step that removes the layers with the lowest of `scores` (one per original layer, computed once
    on the starting model), one at a time, until `layers_kept` are left."""

    def step(model: MelHuBERT, layers_kept: float) -> MelHuBERT:
        depth, kept, ids = model.config.depth, _layers_to_keep(model, layers_kept), model.config.original_layers()
        if max(ids) >= len(scores):
            raise ValueError(f"{len(scores)} layer scores for a model whose layers came from {max(ids) + 1}")
        order = sorted(range(depth), key=lambda i: scores[ids[i]])  # current positions, least important first
        return copy.deepcopy(model).drop_layers(order[: depth - kept])

    return step
