"""Task-aware head scores: Michel et al.'s importance on a downstream probe's loss through the frozen upstream.

The paper scores heads by weights or by the self-supervised loss only. Here a probe trained on the
upstream's cached hidden states (`downstream.train_probe`) is applied to fresh hidden states of the same
upstream, with gradients, over the task's training split; each head's score is |<context, dL/dcontext>|
summed over frames. Utterance tasks mean-pool each layer over the valid frames first, as the cache does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .downstream import Probe, probe_loss
from .frames import FrameStore
from .head_pruning import gradient_head_importance
from .layer_features import split_inputs
from .model import MelHuBERT
from .tasks import TaskData
from .workspace import Workspace

BATCH_FRAMES = 8_000  # upstream frames per backward pass


def task_head_importance(ws: Workspace, model: MelHuBERT, task: TaskData, probe: Probe,
                         fraction: float = 0.5) -> list[torch.Tensor]:
    """Per layer, the importance of each head for `task` (its probe's loss), over `fraction` of the train split."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must lie in (0, 1]")
    if probe.mean.shape[0] != model.config.depth + 1:
        raise ValueError(f"the {task.spec.name} probe reads {probe.mean.shape[0]} hidden states, the model has "
                         f"{model.config.depth + 1}: train the probe on this model's features")
    inputs = split_inputs(ws, task, "train")
    labels = task.splits["train"].labels
    n = max(1, int(round(len(labels) * fraction)))
    probe = probe.eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    return gradient_head_importance(model, _task_losses(inputs, labels, n, probe, task.spec.kind == "utterance"))


def _task_losses(inputs: FrameStore, labels: list, n: int, probe: Probe,
                 pooled: bool) -> Iterator[Callable[[MelHuBERT], torch.Tensor]]:
    """Loss functions over batches of the first `n` utterances (in order: the score is a sum, order is moot)."""
    lengths = inputs.lengths()
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and int(lengths[start:stop + 1].max()) * (stop + 1 - start) <= BATCH_FRAMES:
            stop += 1
        rows = list(range(start, stop))
        start = stop
        yield _batch_loss(inputs, labels, rows, probe, pooled)


def _batch_loss(inputs: FrameStore, labels: list, rows: list[int], probe: Probe,
                pooled: bool) -> Callable[[MelHuBERT], torch.Tensor]:
    lens = torch.tensor([len(inputs[i]) for i in rows])
    feats = torch.zeros(len(rows), int(lens.max()), inputs.data.shape[1])
    for j, i in enumerate(rows):
        feats[j, : lens[j]] = torch.from_numpy(inputs[i]).float()
    batch_labels = [labels[i] for i in rows]

    def loss(model: MelHuBERT) -> torch.Tensor:
        layers = torch.stack(model(feats, lens).hidden_states, dim=2)  # (B, T, L, D)
        if pooled:
            valid = (torch.arange(layers.shape[1])[None, :] < lens[:, None]).float()[:, :, None, None]
            layers = (layers * valid).sum(1, keepdim=True) / lens[:, None, None, None]
            return probe_loss(probe, layers, torch.ones_like(lens), torch.tensor(batch_labels))
        return probe_loss(probe, layers, lens, batch_labels)

    return loss
