"""Low-rank approximation: truncated SVD of linear layers.

W ~ U_r S_r V_r^T becomes two Linear layers (down = S_r^1/2 V_r^T, up = U_r S_r^1/2, bias on up),
recorded in `config.ranks`, with ranks from a parameter budget (the same kept fraction for every
layer) or from an energy threshold (the smallest rank keeping that share of sum S^2).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..model import LowRankLinear, MelHuBERT


def factorisable(model: MelHuBERT) -> dict[str, nn.Linear]:
    """Full-rank linear layers of the Transformer, by the names `config.ranks` uses."""
    return {name: module for name, module in model.linear_maps().items() if isinstance(module, nn.Linear)}


def singular_values(model: MelHuBERT) -> dict[str, list[torch.Tensor]]:
    """Per kind of linear map ("attention.q_proj", ...), the singular values of its weight in every layer, largest
    first (full-rank maps only)."""
    spectra: dict[str, list[torch.Tensor]] = {}
    for layer in model.layers:
        for kind, lin in layer.linear_maps().items():
            if isinstance(lin, nn.Linear):
                spectra.setdefault(kind, []).append(torch.linalg.svdvals(lin.weight.detach()))
    return spectra


def break_even_rank(lin: nn.Linear) -> int:
    """Largest rank whose two factors hold fewer parameters than the dense weight."""
    return (lin.in_features * lin.out_features - 1) // (lin.in_features + lin.out_features)


def uniform_ranks(model: MelHuBERT, keep: float) -> dict[str, int]:
    """Ranks keeping about `keep` of each layer's weight parameters (0 < keep < 1)."""
    if not 0 < keep < 1:
        raise ValueError(f"keep={keep} must lie in (0, 1): the fraction of each layer's parameters to keep")
    return {name: max(1, math.floor(keep * lin.in_features * lin.out_features / (lin.in_features + lin.out_features)))
            for name, lin in factorisable(model).items()}


def energy_ranks(model: MelHuBERT, energy: float) -> dict[str, int]:
    """Per layer, the smallest rank keeping `energy` of sum S^2; layers where that saves nothing stay dense."""
    if not 0 < energy < 1:
        raise ValueError(f"energy={energy} must lie in (0, 1)")
    ranks = {}
    for name, lin in factorisable(model).items():
        s2 = torch.linalg.svdvals(lin.weight.detach()) ** 2
        rank = int(torch.searchsorted(torch.cumsum(s2, 0) / s2.sum(), torch.tensor(energy))) + 1
        if rank <= break_even_rank(lin):
            ranks[name] = rank
    return ranks


def factorise(model: MelHuBERT, ranks: dict[str, int]) -> MelHuBERT:
    """A new model whose named layers are truncated-SVD factorisations of the given ranks."""
    layers = factorisable(model)
    zeros = sum(int((lin.weight == 0).sum()) for lin in layers.values()) / max(1, sum(
        lin.weight.numel() for lin in layers.values()))
    if zeros > 0.01:
        raise ValueError(f"the model is weight-pruned ({zeros:.0%} of its linear weights are zero): a truncated SVD "
                         "would fill the zeros back in; factorise the dense model instead")
    unknown = sorted(set(ranks) - layers.keys())
    if unknown:
        raise ValueError(f"cannot factorise {unknown[:3]}: not full-rank Transformer linear layers of this model")
    for name, rank in ranks.items():
        lin = layers[name]
        if not 1 <= rank <= min(lin.in_features, lin.out_features):
            raise ValueError(f"rank {rank} for {name} outside [1, {min(lin.in_features, lin.out_features)}]")
    new = copy.deepcopy(model)
    for name, rank in ranks.items():
        lin = layers[name]
        u, s, vh = torch.linalg.svd(lin.weight.detach().double(), full_matrices=False)
        root = s[:rank].sqrt()
        factors = LowRankLinear(lin.in_features, lin.out_features, rank)
        with torch.no_grad():
            factors.down.weight.copy_(root[:, None] * vh[:rank])
            factors.up.weight.copy_(u[:, :rank] * root[None, :])
            factors.up.bias.copy_(lin.bias.detach())
        new.replace_linear(name, factors.train(model.training))
    return new


def svd_step(model: MelHuBERT, keep: float) -> MelHuBERT:
    """A compression step: every Transformer linear layer factorised to keep about `keep` of its parameters."""
    return factorise(model, uniform_ranks(model, keep))


def energy_step(model: MelHuBERT, energy: float) -> MelHuBERT:
    """A compression step: each layer at the smallest rank keeping `energy` of its spectrum (where that saves)."""
    return factorise(model, energy_ranks(model, energy))
