"""Unstructured weight pruning: global L1 magnitude pruning of the Transformer layers' linear maps.

As the authors: `torch.nn.utils.prune.global_unstructured` with `L1Unstructured` over the weights and
biases of q/k/v/out and fc1/fc2 of every layer (the positional convolution, input projection,
LayerNorms and cluster head are left dense). Pruning is made permanent right away (zeros in the
dense tensors, so checkpoints keep their usual keys and shapes); `keep_zeros` then holds the zeros
at zero during fine-tuning by masking their gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from ..model import MelHuBERT, require_full_rank


def prunable(model: MelHuBERT) -> list[tuple[nn.Module, str]]:
    """(module, 'weight' | 'bias') pairs that global pruning ranks together."""
    maps = list(model.linear_maps().values())
    require_full_rank(*maps)
    return [(lin, name) for lin in maps for name in ("weight", "bias")]


def prune_to_sparsity(model: MelHuBERT, sparsity: float) -> MelHuBERT:
    """Zero the globally smallest-magnitude weights until `sparsity` of the prunable tensors is zero (in place)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} must lie in [0, 1)")
    pairs = prunable(model)
    total = sum(getattr(m, n).numel() for m, n in pairs)
    prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=int(round(sparsity * total)))
    for module, name in pairs:
        prune.remove(module, name)  # permanent: the zeros now live in the ordinary parameter
    return model


def sparsity(model: MelHuBERT) -> float:
    """Fraction of zeros over the prunable tensors."""
    pairs = prunable(model)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in pairs)
    return zeros / sum(getattr(m, n).numel() for m, n in pairs)


def layer_sparsity(model: MelHuBERT) -> dict[str, float]:
    """Fraction of zeros in each prunable weight matrix (which layers global pruning chose to thin)."""
    names = {id(m): name for name, m in model.named_modules()}
    return {names[id(m)]: float((getattr(m, n) == 0).float().mean()) for m, n in prunable(model) if n == "weight"}


def keep_zeros(model: MelHuBERT) -> None:
    """Mask the gradients of the prunable tensors where they are zero, so fine-tuning keeps them zero.

    With Adam from a fresh state a zero gradient gives a zero update, so the zeros stay exact.
    """
    for module, name in prunable(model):
        param = getattr(module, name)
        mask = (param != 0).to(param.dtype)
        param.register_hook(lambda grad, mask=mask: grad * mask)


def pruning_step(model: MelHuBERT, target: float) -> MelHuBERT:
    """A compression step: a copy of `model` pruned to global sparsity `target`."""
    return prune_to_sparsity(copy.deepcopy(model), target)


class SparseLinear(nn.Module):
    """Inference-only linear layer that multiplies with its weight in CSR form (zeros skipped)."""

    def __init__(self, dense: nn.Linear) -> None:
        super().__init__()
        self.weight = dense.weight.detach().to_sparse_csr()
        self.bias = dense.bias.detach().clone()
        self.in_features, self.out_features = dense.in_features, dense.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return (self.weight @ flat.T).T.add_(self.bias).reshape(*x.shape[:-1], self.out_features)


def with_sparse_kernels(model: MelHuBERT) -> MelHuBERT:
    """A copy of a weight-pruned model for inference whose pruned linear layers run as sparse (CSR) products."""
    sparse = copy.deepcopy(model).eval()
    for name, lin in sparse.linear_maps().items():
        sparse.replace_linear(name, SparseLinear(lin))
    return sparse
