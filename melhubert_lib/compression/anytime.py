"""Anytime inference: one model usable at any depth, with a cluster head after every layer.

Level 1 of a run is the anytime model at full depth: the baseline with an exit head after every layer (each
starting as the baseline's cluster head), or a fresh model of the same shape ("random", trained with the same
budget), trained on the mean of every exit's masked-prediction loss. Every later level cuts that one model at an
exit (`MelHuBERT.truncate`: the exit's head becomes the cluster head), untrained further, so a user picks the depth
at inference time by choosing the level's checkpoint (or `n_layers`).
"""

from __future__ import annotations

import copy

import torch

from ..model import MelHuBERT
from .levels import Step

INITS = ("teacher", "random")


def exits_step(init: str) -> Step:
    """The anytime run's step: at full depth the model with exit heads (from the teacher, or fresh with the same
    shape), below it the anytime model cut at that exit."""
    if init not in INITS:
        raise ValueError(f"init={init!r}: choose one of {', '.join(INITS)}")

    def step(model: MelHuBERT, depth: float) -> MelHuBERT:
        if not model.config.exits:
            if int(depth) != model.config.depth:
                raise ValueError(f"the anytime model is made at full depth ({model.config.depth}), not {int(depth)}: "
                                 "its first level must keep every layer")
            if init == "teacher":
                return model.with_exits()
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return MelHuBERT(copy.deepcopy(model.config), model.feature_stats).with_exits()
        return copy.deepcopy(model).truncate(int(depth))

    return step
