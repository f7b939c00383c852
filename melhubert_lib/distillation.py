"""Distillation into shallower students, and the untrained first-N-layers depth baseline.

The authors' loss: KL divergence from the teacher's cluster distribution to the student's (T = 1,
unmasked input), over every non-padded frame. A student keeps the teacher's width and its first
`depth` layers' shapes; it starts from the teacher's first layers (and cluster head) or at random.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .batching import Batch
from .model import MelHuBERT
from .pretrain import Objective


class ClusterKL(Objective):
    """KL(teacher || student) between cluster distributions at temperature `temperature`, unmasked input."""

    def __init__(self, teacher: MelHuBERT, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be positive")
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature

    def frames(self, batch: Batch, mask: torch.Tensor) -> int:
        """Every non-padded frame counts (the input is not masked)."""
        return int(batch.lengths.sum())

    def __call__(self, model: torch.nn.Module, part: Batch, mask: torch.Tensor,
                 device: torch.device) -> tuple[torch.Tensor, float]:
        """Summed per-frame KL (scaled by T^2) and how often the student's argmax cluster equals the teacher's."""
        feats = part.feats.to(device)
        with torch.no_grad():
            teacher_logits = self.teacher.to(device)(feats, part.lengths).logits
        student_logits = model(feats, part.lengths).logits
        valid = torch.arange(feats.shape[1], device=device)[None, :] < part.lengths.to(device)[:, None]
        t = self.temperature
        kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                      log_target=True, reduction="none").sum(-1)
        agree = (student_logits.argmax(-1) == teacher_logits.argmax(-1)) & valid
        return kl[valid].sum() * t * t, float(agree.sum())


def student_from_teacher(teacher: MelHuBERT, depth: int, init: str = "teacher", seed: int = 0) -> MelHuBERT:
    """A `depth`-layer model shaped like the teacher's first layers; weights from them ("teacher") or random."""
    cfg = teacher.config
    if not 1 <= depth <= cfg.depth:
        raise ValueError(f"a student of depth {depth} needs a teacher at least that deep (teacher depth {cfg.depth})")
    if init not in ("teacher", "random"):
        raise ValueError(f"init={init!r}: choose 'teacher' or 'random'")
    ranks = {k: v for k, v in cfg.ranks.items() if int(k.split(".")[1]) < depth}
    student_cfg = dataclasses.replace(cfg, heads=cfg.heads[:depth], ffn_dims=cfg.ffn_dims[:depth], ranks=ranks,
                                      head_ids=cfg.head_ids[:depth])
    torch.manual_seed(seed)
    student = MelHuBERT(student_cfg)
    if init == "teacher":
        own = student.state_dict()
        student.load_state_dict({k: v for k, v in teacher.state_dict().items() if k in own})
    student.feature_stats = teacher.feature_stats
    return student


def first_layers(teacher: MelHuBERT, depth: int) -> MelHuBERT:
    """The depth baseline (MelHuBERT-firstN): the teacher's first `depth` layers, untrained further."""
    return student_from_teacher(teacher, depth, "teacher").eval()


def distillation_step(teacher: MelHuBERT, init: str = "teacher") -> Callable[[MelHuBERT, float], MelHuBERT]:
    """A one-shot compression step: the student of depth `setting` (trained afterwards with `ClusterKL`)."""
    return lambda _model, depth: student_from_teacher(teacher, int(depth), init)
