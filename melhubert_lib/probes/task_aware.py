"""Task-aware scores: Michel et al.'s head importance on a downstream probe's loss through the frozen upstream, and
each layer's importance as the rise of that loss when the layer is skipped.

The paper scores heads by weights or by the self-supervised loss only. Here a probe trained on the
upstream's cached hidden states (`superb.train_probes`) is applied to fresh hidden states of the same
upstream, with gradients, over the task's training split; each head's score is |<context, dL/dcontext>|
summed over frames. Utterance tasks mean-pool each layer over the valid frames first, as the cache does. The live
pass runs in float32, where the cache may have been computed under bfloat16 autocast (`DownstreamScale.precision`):
the two differ by bfloat16's rounding.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from ..compression.head_pruning import fraction_count, gradient_head_importance, pruning_step
from ..compression.layer_pruning import ranked_step
from ..compression.levels import CompressionRun, compress_levels
from ..data.batching import Batch, collate, eval_batches
from ..data.frames import FrameStore
from ..data.tasks import TaskData
from ..data.workspace import Workspace
from ..model import MelHuBERT, padded_frames
from ..training.baseline import BaselineResult, ssl_data
from .layer_features import split_inputs
from .superb import Probe, probe_loss

BATCH_FRAMES = 8_000  # upstream frames per backward pass
RESULTS_FILE = "task_aware_pruning.csv"  # Q3's pruned models, out of the study's compression table


def prune_by_scores(ws: Workspace, base: BaselineResult, head_scores: dict[str, list[torch.Tensor]],
                    budgets: Sequence[int]) -> dict[str, CompressionRun]:
    """For every criterion's head scores (computed once on the baseline), the baseline pruned one-shot to each head
    budget and fine-tuned, as run `q3-heads-<first word of the criterion, lower case>`; rows in `RESULTS_FILE`."""
    data = ssl_data(ws, base.targets[-1])
    return {name: compress_levels(ws, "head pruning", "q3-heads-" + name.split()[0].lower(), base.model_dir,
                                  [float(b) for b in budgets], pruning_step(lambda _model, s=scores: s), data,
                                  ws.scale.compression.finetune, iterative=False, results_file=RESULTS_FILE,
                                  provenance={"head_scores": _scores_hash(scores)})  # new scores: new levels
            for name, scores in head_scores.items()}


def prune_layers_by_rises(ws: Workspace, base: BaselineResult, rises: Sequence[float], name: str) -> CompressionRun:
    """The baseline pruned layer by layer down to one layer, each level removing the remaining layer whose absence
    raised a criterion's loss least on the baseline (`rises`, e.g. `task_layer_importance`), fine-tuned after each
    removal; run `q3-layers-<name>`, rows in `RESULTS_FILE`."""
    depth = MelHuBERT.from_pretrained(base.model_dir).config.depth
    if len(rises) != depth:
        raise ValueError(f"{len(rises)} layer scores for a baseline of {depth} layers: score every layer once")
    data = ssl_data(ws, base.targets[-1])
    order = [int(i) for i in sorted(range(depth), key=lambda i: rises[i])]
    return compress_levels(ws, "layer pruning", f"q3-layers-{name}", base.model_dir,
                           [float(d) for d in range(depth - 1, 0, -1)], ranked_step(rises), data,
                           ws.scale.compression.finetune, results_file=RESULTS_FILE,
                           provenance={"layer_order": order})  # another order: new levels


def _scores_hash(scores: list[torch.Tensor]) -> str:
    """A key of what the scores decide (the heads' order in every layer and across layers), not of their last bits,
    which differ between CPUs."""
    digest = hashlib.sha1(torch.cat([s.detach().cpu() for s in scores]).argsort().numpy().tobytes())
    for layer in scores:
        digest.update(layer.detach().cpu().argsort().numpy().tobytes())
    return digest.hexdigest()[:16]


def task_head_importance(ws: Workspace, model: MelHuBERT, task: TaskData, probe: Probe,
                         fraction: float = 0.5) -> list[torch.Tensor]:
    """Per layer, the importance of each head for `task` (its probe's loss), over `fraction` of the train split."""
    return gradient_head_importance(model, _probe_losses(ws, model, task, probe, fraction))


class _Skipped(nn.Module):
    """Stands in for a skipped layer: its output is its input."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return x


@torch.no_grad()
def task_layer_importance(ws: Workspace, model: MelHuBERT, task: TaskData, probe: Probe,
                          fraction: float = 0.5) -> list[float]:
    """Per layer, how much `task`'s probe loss over `fraction` of the train split rises when that layer is skipped
    (the task-aware counterpart of `compression.layer_pruning.layer_importance`). The skipped layer's output is its
    input, so the probe still reads every hidden state it was trained on."""
    model = copy.deepcopy(model).eval()

    def total() -> float:  # mean loss over the batches, collated afresh each pass (no split held in memory)
        losses = [float(loss(model)) for loss in _probe_losses(ws, model, task, probe, fraction)]
        return sum(losses) / len(losses)

    full, rises = total(), []
    for i in range(model.config.depth):
        layer, model.layers[i] = model.layers[i], _Skipped()
        rises.append(total() - full)
        model.layers[i] = layer
    return rises


def _probe_losses(ws: Workspace, model: MelHuBERT, task: TaskData, probe: Probe,
                  fraction: float) -> Iterator[Callable[[MelHuBERT], torch.Tensor]]:
    """The frozen probe's loss functions over `fraction` of `task`'s train split, checked against `model`."""
    labels = task.splits["train"].labels
    n = fraction_count(len(labels), fraction)
    if task.spec.kind == "frame":
        raise ValueError(f"task {task.spec.name} is the baseline's frame-level learning check, not a target of "
                         "task-aware pruning: choose PR, SID, KS or ASR")
    if probe.mean.shape[0] != model.config.depth + 1:
        raise ValueError(f"the {task.spec.name} probe reads {probe.mean.shape[0]} hidden states, the model has "
                         f"{model.config.depth + 1}: train the probe on this model's features")
    inputs = split_inputs(ws, task, "train", model.feature_stats, model.config.frame_ms)
    probe = probe.eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    return _task_losses(inputs, labels, n, probe, task.spec.kind == "utterance")


def _task_losses(inputs: FrameStore, labels: list, n: int, probe: Probe,
                 pooled: bool) -> Iterator[Callable[[MelHuBERT], torch.Tensor]]:
    """Loss functions over length-sorted batches of the first `n` utterances (the score is a sum: order is moot)."""
    lengths = inputs.lengths()[:n]
    for crops in eval_batches(lengths, int(lengths.max(initial=1)), BATCH_FRAMES):
        yield _batch_loss(collate(crops, inputs), [labels[c.index] for c in crops], probe, pooled)


def _batch_loss(batch: Batch, batch_labels: list, probe: Probe, pooled: bool) -> Callable[[MelHuBERT], torch.Tensor]:
    lens = batch.lengths

    def loss(model: MelHuBERT) -> torch.Tensor:
        layers = torch.stack(model(batch.feats, lens).hidden_states, dim=2)  # (B, T, L, D)
        if pooled:
            valid = (~padded_frames(lens, layers.shape[1])).float()[:, :, None, None]
            layers = (layers * valid).sum(1, keepdim=True) / lens[:, None, None, None]
            return probe_loss(probe, layers, torch.ones_like(lens), torch.tensor(batch_labels))
        return probe_loss(probe, layers, lens, batch_labels)

    return loss
