"""Attention-head pruning: score every head, choose the heads to drop, and remove them physically.

Scores: the L1 norm of each head's rows of W_q, W_k, W_v and their biases (the authors' default, the
slides' "l1 norm of the heads"), or the data-driven importance of Michel et al. (2019): the sum over
frames of |<context_h, dL/dcontext_h>| on the masked-prediction loss, normalised per layer. Removal is
the model's own `MelHuBERT.prune_heads` (q/k/v rows and out-projection columns sliced), so params and MACs fall.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..data.batching import collate, epoch_batches
from ..model import MelHuBERT, SelfAttention, compute_span_mask, require_full_rank
from ..training.pretrain import SSLData


def head_l1_scores(model: MelHuBERT) -> list[torch.Tensor]:
    """Per layer, the L1 norm of each head's q/k/v weight rows and bias entries: a (heads,) tensor each."""
    model.require_heads("head pruning")
    scores = []
    for layer in model.layers:
        att = layer.attention
        require_full_rank(att.q_proj, att.k_proj, att.v_proj)
        total = torch.zeros(att.n_heads)
        for lin in (att.q_proj, att.k_proj, att.v_proj):
            rows = lin.weight.detach().abs().sum(1) + lin.bias.detach().abs()
            total += rows.view(att.n_heads, att.head_dim).sum(1)
        scores.append(total)
    return scores


def fraction_count(n: int, fraction: float) -> int:
    """How many of `n` items (batches, utterances) an importance estimate over `fraction` of them reads: at least one;
    `fraction` must lie in (0, 1]."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must lie in (0, 1]")
    return max(1, int(round(n * fraction)))


def head_importance(model: MelHuBERT, data: SSLData, fraction: float = 0.25, batch_seconds: float = 32.0,
                    seed: int = 0) -> list[torch.Tensor]:
    """Michel et al. importance on the SSL loss over `fraction` of `data`, each layer's scores L2-normalised."""
    fraction_count(1, fraction)  # refuse a bad fraction before any work
    cfg = model.config
    per_sec = 1000 // cfg.frame_ms
    lengths = data.feats.lengths()
    crop = int(lengths.max(initial=1))
    batches = epoch_batches(lengths, crop, int(batch_seconds * per_sec), seed, 0)
    batches = batches[: fraction_count(len(batches), fraction)]
    gen = torch.Generator().manual_seed(seed)

    def ssl_loss(crops: list) -> Callable[[MelHuBERT], torch.Tensor]:
        def loss(m: MelHuBERT) -> torch.Tensor:
            batch = collate(crops, data.feats, data.targets)
            mask = compute_span_mask(tuple(batch.feats.shape[:2]), cfg.mask_prob, cfg.mask_span, batch.lengths, gen)
            return m(batch.feats, batch.lengths, targets=batch.targets, mask=mask).loss

        return loss

    return gradient_head_importance(model, (ssl_loss(crops) for crops in batches))


def gradient_head_importance(model: MelHuBERT, losses: Iterable[Callable[[MelHuBERT], torch.Tensor]]) -> list[
        torch.Tensor]:
    """Michel et al. importance of every head for any objective: |<context_h, dL/dcontext_h>| summed over the frames
    of every loss in `losses` (each a function of the model, run in eval mode), each layer's scores L2-normalised.
    """
    model.require_heads("head importance")
    scores = [torch.zeros(h) for h in model.config.heads]
    handles = []

    def capture(index: int, att: SelfAttention):
        def pre_hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            ctx = args[0]  # (B, T, H * Dh): the concatenated head contexts entering the out-projection

            def on_grad(grad: torch.Tensor) -> None:
                dot = (ctx.detach() * grad).view(*ctx.shape[:2], att.n_heads, att.head_dim).sum(-1)
                scores[index] += dot.abs().sum((0, 1))

            ctx.register_hook(on_grad)

        return pre_hook

    for i, layer in enumerate(model.layers):
        handles.append(layer.attention.out_proj.register_forward_pre_hook(capture(i, layer.attention)))
    was_training = model.training
    model.eval()
    try:
        for loss in losses:
            model.zero_grad(set_to_none=True)
            loss(model).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return [s / s.norm().clamp_min(1e-12) for s in scores]


def select_heads(scores: list[torch.Tensor], n_remove: int | None = None) -> dict[int, list[int]]:
    """Heads to remove: the lowest of every layer (`n_remove` None), or the `n_remove` lowest overall.

    Global selection never removes a layer's best head, so every layer keeps at least one.
    """
    if n_remove is None:
        return {i: [int(s.argmin())] for i, s in enumerate(scores) if len(s) > 1}
    candidates = [(float(v), i, h) for i, s in enumerate(scores) for h, v in enumerate(s) if h != int(s.argmax())]
    if not 0 < n_remove <= len(candidates):
        raise ValueError(f"cannot remove {n_remove} heads: {len(candidates)} removable "
                         f"({sum(len(s) for s in scores)} heads, one kept per layer)")
    chosen: dict[int, list[int]] = {}
    for _, i, h in sorted(candidates)[:n_remove]:
        chosen.setdefault(i, []).append(h)
    return {i: sorted(hs) for i, hs in sorted(chosen.items())}


Scorer = Callable[[MelHuBERT], list[torch.Tensor]]


def pruning_step(score: str | Scorer = "l1", per_layer: bool = False, data: SSLData | None = None) -> Callable[
        [MelHuBERT, float], MelHuBERT]:
    """A compression step that prunes down to `heads_kept` heads in all (the level's setting).

    `score`: "l1" (weights), "importance" (SSL loss; needs `data`), or any function model -> per-layer head
    scores (e.g. a downstream task's importance). `per_layer`: remove the lowest head of every layer at once
    (the authors' schedule; the setting must match) instead of the globally lowest heads.
    """
    if not callable(score) and score not in ("l1", "importance"):
        raise ValueError(f"score={score!r}: choose 'l1', 'importance' or a scoring function")
    if score == "importance" and data is None:
        raise ValueError("score='importance' needs `data` (the SSL training set) to compute gradients")
    scorer: Scorer = (score if callable(score) else head_l1_scores if score == "l1"
                      else lambda m: head_importance(m, data))

    def step(model: MelHuBERT, heads_kept: float) -> MelHuBERT:
        total = sum(model.config.heads)
        n_remove = total - int(heads_kept)
        if not 0 < n_remove <= total - model.config.depth:
            raise ValueError(f"cannot go from {total} heads to {int(heads_kept)}: at least one head per layer "
                             f"({model.config.depth}) stays and each level must remove some")
        remove = select_heads(scorer(model), None if per_layer else n_remove)
        if per_layer and sum(len(h) for h in remove.values()) != n_remove:
            raise ValueError(f"per-layer pruning removes one head per layer, not {n_remove}; set the levels to "
                             f"{total - len(remove)}, {total - 2 * len(remove)}, ... heads")
        return copy.deepcopy(model).prune_heads(remove)

    return step
