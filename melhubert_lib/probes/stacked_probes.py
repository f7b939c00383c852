"""Several linear probes (one per probe seed) trained as one batched computation over shared features.

Own code rather than one s3prl `Featurizer` per seed: the Featurizer's weighted sum, written as a broadcast product,
makes autograd build a full-size product per layer on every backward pass (about 11 of a PR batch's 14 ms per seed,
profiled); here every seed's weighted sum is one matrix product over the layers, and so is its gradient, so the
features are read once for all seeds. The result is the same function as each seed's `Probe` (s3prl's softmax-weighted
sum over layers, then a linear layer), the seeds share no parameter, and each seed's gradient is clipped on its own,
so a seed trains exactly as it would alone up to floating-point summation order. The trained parameters are written
back into the seeds' `Probe` modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .superb import Probe

CLIP_NORM = 5.0  # per seed, as nn.utils.clip_grad_norm_ on one probe's parameters


class StackedLinearProbes(nn.Module):
    """S probes without a BiLSTM: softmax-weighted sum over layers (per seed) and a linear output layer (per seed)."""

    def __init__(self, probes: list[Probe]) -> None:
        super().__init__()
        if any(p.lstm is not None for p in probes):
            raise ValueError("StackedLinearProbes stacks linear probes only (a probe with a BiLSTM trains on its own)")
        self.single_layer = not hasattr(probes[0].featurizer, "weights")
        self.layer_weights = None if self.single_layer else nn.Parameter(
            torch.stack([p.featurizer.weights.detach() for p in probes]).clone())  # (S, L) before the softmax
        self.out_weight = nn.Parameter(torch.stack([p.out.weight.detach().T for p in probes]).contiguous())  # (S, D, C)
        self.out_bias = nn.Parameter(torch.stack([p.out.bias.detach() for p in probes]).clone())  # (S, C)

    @property
    def n_seeds(self) -> int:
        """Number of stacked probes."""
        return self.out_bias.shape[0]

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        """Standardised layer-major (L, B, T, D) features -> (S, B, T, C) logits of every seed's probe."""
        n_layers, b, t, d = layers.shape
        if self.single_layer:
            hs = layers.reshape(1, b * t, d).expand(self.n_seeds, -1, -1)
        else:  # one product reads the batch for all seeds, as it is laid out (no copy when it is contiguous)
            by_layer = layers.reshape(n_layers, b * t * d)
            hs = (F.softmax(self.layer_weights, dim=-1) @ by_layer).view(self.n_seeds, b * t, d)
        logits = torch.baddbmm(self.out_bias[:, None, :], hs, self.out_weight)
        return logits.view(self.n_seeds, b, t, -1)

    def clip_each_seed(self) -> None:
        """Scale each seed's gradients so that their joint norm is at most CLIP_NORM (clip_grad_norm_'s rule)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norms = torch.stack([g.reshape(self.n_seeds, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        coef = (CLIP_NORM / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))

    def seed_state(self, seed_index: int) -> dict[str, torch.Tensor]:
        """A copy of one seed's parameters."""
        return {k: v.detach()[seed_index].clone() for k, v in self.named_parameters()}

    def load_seed_state(self, seed_index: int, state: dict[str, torch.Tensor]) -> None:
        """Set one seed's parameters from `seed_state`'s copy."""
        with torch.no_grad():
            for k, v in self.named_parameters():
                v[seed_index] = state[k]

    def write_back(self, probes: list[Probe]) -> None:
        """Copy every seed's parameters into its `Probe` (the same function, computed by s3prl's Featurizer)."""
        with torch.no_grad():
            for i, probe in enumerate(probes):
                if self.layer_weights is not None:
                    probe.featurizer.weights.copy_(self.layer_weights[i])
                probe.out.weight.copy_(self.out_weight[i].T)
                probe.out.bias.copy_(self.out_bias[i])
