"""Distillation into shallower students, and the untrained first-N-layers depth baseline.

Losses: the authors' KL divergence from the teacher's cluster distribution to the student's (T = 1,
unmasked input, every non-padded frame), or DistilHuBERT's prediction of chosen teacher layers
(L1 + cosine). A student takes the shapes of the teacher's first `depth` layers, optionally with a
narrower FFN; it starts from the teacher's first layers (and cluster head) or at random. Students are the
levels of a distillation run, each labelled by its share of the teacher's layer parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import Batch
from ..model import MelHuBERT, MelHuBERTOutput, padded_frames
from ..scales import StudentShape
from ..training.pretrain import Objective, PartLoss
from .ffn_shrink import shrink_ffn
from .levels import LevelPlan


class _TeacherObjective(Objective):
    """A loss against a frozen teacher on unmasked input: every non-padded frame counts."""

    def __init__(self, teacher: MelHuBERT) -> None:
        self.teacher = teacher.eval().requires_grad_(False)

    def frames(self, batch: Batch, mask: torch.Tensor) -> int:
        """Non-padded frames of the batch (the input is not masked)."""
        return int(batch.lengths.sum())

    def _run(self, model: torch.nn.Module, part: Batch,
             device: torch.device) -> tuple[MelHuBERTOutput, MelHuBERTOutput, torch.Tensor]:
        """(teacher output, student output, (B, T) mask of non-padded frames) for one micro-batch."""
        feats = part.feats.to(device)
        with torch.no_grad():
            teacher_out = self.teacher.to(device)(feats, part.lengths)
        valid = ~padded_frames(part.lengths.to(device), feats.shape[1])
        return teacher_out, model(feats, part.lengths), valid


class ClusterKL(_TeacherObjective):
    """KL(teacher || student) between cluster distributions at temperature `temperature`, unmasked input."""

    def __init__(self, teacher: MelHuBERT, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be positive")
        super().__init__(teacher)
        self.temperature = temperature

    def __call__(self, model: torch.nn.Module, part: Batch, mask: torch.Tensor,
                 device: torch.device) -> PartLoss:
        """Summed per-frame KL (scaled by T^2) and how often the student's argmax cluster equals the teacher's."""
        teacher_out, student_out, valid = self._run(model, part, device)
        # float32 loss also under bfloat16 autocast
        teacher_logits, student_logits = teacher_out.logits.float(), student_out.logits.float()
        t = self.temperature
        kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                      log_target=True, reduction="none").sum(-1)
        agree = (student_logits.argmax(-1) == teacher_logits.argmax(-1)) & valid
        return PartLoss(kl[valid].sum() * t * t, float(agree.sum()))


class LayerPrediction(_TeacherObjective):
    """DistilHuBERT's loss: linear heads on the student's last layer predict chosen teacher layers.

    Per frame and head: mean |prediction - target| - log sigmoid(cosine(prediction, target)), on
    unmasked input. The heads train with the student and are checkpointed with the trainer state; they
    are not part of the student checkpoint.
    """

    def __init__(self, teacher: MelHuBERT, student_width: int, teacher_layers: list[int]) -> None:
        depth = teacher.config.depth
        if not teacher_layers or any(not 1 <= j <= depth for j in teacher_layers):
            raise ValueError(f"teacher_layers={teacher_layers} must name layers 1..{depth}")
        super().__init__(teacher)
        self.teacher_layers = list(teacher_layers)
        self.heads = nn.ModuleList(nn.Linear(student_width, teacher.config.d_model) for _ in teacher_layers)

    def parameters(self) -> list[nn.Parameter]:
        """The prediction heads' parameters."""
        return list(self.heads.parameters())

    def state_dict(self) -> dict:
        """The prediction heads."""
        return self.heads.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the prediction heads (nothing stored: keep the fresh ones)."""
        if state:
            self.heads.load_state_dict(state)

    def to(self, device: torch.device) -> LayerPrediction:
        """Move the teacher and the heads."""
        self.teacher.to(device)
        self.heads.to(device)
        return self

    def __call__(self, model: torch.nn.Module, part: Batch, mask: torch.Tensor,
                 device: torch.device) -> PartLoss:
        """Summed per-frame L1 - log sigmoid(cosine) over heads; 'correct' counts frames with mean cosine > 0.5."""
        teacher_out, student_out, valid = self._run(model, part, device)
        targets, last = teacher_out.hidden_states, student_out.hidden_states[-1]
        loss = torch.zeros(last.shape[:2], device=device)
        cosine = torch.zeros_like(loss)
        for head, j in zip(self.heads, self.teacher_layers, strict=True):
            pred, target = head(last).float(), targets[j].float()  # float32 loss also under bfloat16 autocast
            cos = F.cosine_similarity(pred, target, dim=-1)
            loss = loss + (pred - target).abs().mean(-1) - F.logsigmoid(cos)
            cosine = cosine + cos.detach() / len(self.heads)
        return PartLoss(loss[valid].sum(), float(((cosine > 0.5) & valid).sum()))


def make_objective(name: str, teacher: MelHuBERT, teacher_layers: list[int] | None = None) -> Objective:
    """The distillation loss by name: "kl" (the authors') or "layers" (DistilHuBERT; default: every teacher layer)."""
    if name == "kl":
        return ClusterKL(teacher)
    if name == "layers":
        layers = teacher_layers or list(range(1, teacher.config.depth + 1))
        return LayerPrediction(teacher, teacher.config.d_model, layers)
    raise ValueError(f"loss={name!r}: choose 'kl' (cluster KL) or 'layers' (DistilHuBERT layer prediction)")


def student_from_teacher(teacher: MelHuBERT, depth: int, init: str = "teacher", seed: int = 0,
                         ffn_dim: int | None = None) -> MelHuBERT:
    """A `depth`-layer model shaped like the teacher's first layers; weights from them ("teacher") or random.

    `ffn_dim` narrows every student FFN to that many units, keeping the units of highest L1 score
    (the FFN-shrink score), so a teacher-initialised narrow student starts from the teacher's strongest units.
    """
    cfg = teacher.config
    if depth < 1:
        raise ValueError(f"a student needs at least one layer, got depth {depth}")
    if depth > cfg.depth:
        raise ValueError(f"a student of depth {depth} needs a teacher at least that deep (teacher depth {cfg.depth})")
    if init not in ("teacher", "random"):
        raise ValueError(f"init={init!r}: choose 'teacher' or 'random'")
    if ffn_dim is not None and not 1 <= ffn_dim <= min(cfg.ffn_dims[:depth]):
        raise ValueError(f"student ffn_dim {ffn_dim} outside [1, {min(cfg.ffn_dims[:depth])}] (the teacher's width)")
    if init == "teacher":
        student = copy.deepcopy(teacher).truncate(depth).requires_grad_(True)  # trainable even if the teacher is frozen
    else:
        torch.manual_seed(seed)
        student = MelHuBERT(cfg.truncated(depth), teacher.feature_stats)
    widths = student.config.ffn_dims
    if ffn_dim is not None and ffn_dim < max(widths):
        if len(set(widths)) > 1:
            raise ValueError(f"narrow students need equal FFN widths in the teacher's first layers, got {widths}")
        student = shrink_ffn(student, widths[0] - ffn_dim)
    return student


def first_layers(teacher: MelHuBERT, depth: int) -> MelHuBERT:
    """The depth baseline (MelHuBERT-firstN): the teacher's first `depth` layers, untrained further."""
    return student_from_teacher(teacher, depth, "teacher").eval()


def truncation_step(model: MelHuBERT, depth: float) -> MelHuBERT:
    """A compression step: the model's first `depth` layers, untrained further (the first-N-layers depth baseline)."""
    return first_layers(model, int(depth))


def _layer_params(model: MelHuBERT) -> int:
    return sum(p.numel() for p in model.layers.parameters())


def distillation_ladder(teacher: MelHuBERT, students: Sequence[StudentShape],
                        init: str = "teacher") -> LevelPlan:
    """The levels of a distillation run: each student's setting is its share of the teacher's layer parameters."""
    shapes = {}
    for shape in students:
        student = student_from_teacher(teacher, shape.depth, init, ffn_dim=shape.ffn_dim)
        share = round(_layer_params(student) / _layer_params(teacher), 4)
        if share in shapes:
            raise ValueError(f"students {shapes[share]} and {shape} have the same size; give each a different one")
        shapes[share] = shape
    # the step ignores the model it is given: each student is made from the teacher
    return LevelPlan(list(shapes), lambda _model, share: student_from_teacher(
        teacher, shapes[share].depth, init, ffn_dim=shapes[share].ffn_dim))
