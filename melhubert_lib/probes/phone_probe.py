"""Frame-level linear phoneme probe: the baseline's "did it learn?" check against its three floors.

A softmax classifier on frozen frames (trained on train-clean-100 speakers, layer chosen on
dev-clean, reported on test-clean: speakers the probe never saw), with a bootstrap confidence
interval over test utterances. The full SUPERB-style probes live in the downstream modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.corpus import PHONES, Utterance
from ..data.frames import FrameStore
from .bootstrap import Difference, Interval, paired_rate_difference, rate_interval

NO_ALIGNMENT = ("The corpus has no phone times (real LibriSpeech has transcripts only), so the frame-level phone "
                "probe and the clusters' phone purity are skipped; PR, which needs phone sequences only, reads them "
                "from the transcripts.")


def has_alignments(utts: list[Utterance]) -> bool:
    """Whether every utterance has phone times (the synthetic corpus does; real LibriSpeech does not)."""
    return all(u.phones is not None for u in utts)


def frame_phone_labels(utts: list[Utterance], lengths: np.ndarray, frame_ms: int) -> FrameStore:
    """Phone index at the centre of each model frame (10 ms Kaldi frames of 25 ms, stacked to `frame_ms`)."""
    index = {p: i for i, p in enumerate(PHONES)}
    factor = frame_ms // 10
    centre_offset = (0.025 + 0.010 * (factor - 1)) / 2
    arrays = []
    for utt, n in zip(utts, lengths, strict=True):
        if utt.phones is None:
            raise ValueError(f"{utt.path}: no phone alignment. {NO_ALIGNMENT}")
        starts = np.array([s.start for s in utt.phones])
        labels = np.array([index[s.phone] for s in utt.phones])
        centres = np.arange(n) * frame_ms / 1000 + centre_offset
        pos = np.clip(np.searchsorted(starts, centres, side="right") - 1, 0, len(labels) - 1)
        arrays.append(labels[pos].astype(np.int64)[:, None])
    return FrameStore.from_arrays(arrays, [u.utt_id for u in utts])


def stack_context(store: FrameStore, width: int) -> FrameStore:
    """Concatenate each frame with its `width` neighbours on either side (zeros beyond the edges)."""

    def stack(f: np.ndarray) -> np.ndarray:
        padded = np.pad(f, ((width, width), (0, 0)))
        return np.concatenate([padded[i : i + len(f)] for i in range(2 * width + 1)], axis=1)

    return store.map(stack)


@dataclass
class ProbeScore:
    """Accuracy of one probe on one split, with per-utterance counts for bootstrapping."""

    accuracy: float
    correct: np.ndarray  # per utterance
    total: np.ndarray  # per utterance

    def interval(self, seed: int = 0) -> Interval:
        """95 % bootstrap interval over utterances."""
        return rate_interval(self.correct, self.total, seed=seed)


def paired_difference(a: ProbeScore, b: ProbeScore, seed: int = 0) -> Difference:
    """Accuracy of a minus b on the same utterances, with a 95 % paired bootstrap interval."""
    return paired_rate_difference(a.correct, a.total, b.correct, b.total, seed=seed)


@dataclass
class ProbeRun:
    """A trained probe's dev and test scores."""

    dev: ProbeScore
    test: ProbeScore
    epochs: int


def train_linear_probe(
    train: tuple[FrameStore, FrameStore], dev: tuple[FrameStore, FrameStore], test: tuple[FrameStore, FrameStore],
    n_classes: int = len(PHONES), epochs: int = 20, lr: float = 2e-3, batch: int = 4096, seed: int = 0,
) -> ProbeRun:
    """Train softmax regression on standardised frames; keep the epoch with the best dev accuracy."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train[0].data.astype(np.float32))
    y = torch.from_numpy(np.array(train[1].data[:, 0]))  # a copy: the store may be read-only
    mean, std = x.mean(0), x.std(0) + 1e-5
    x = (x - mean) / std
    torch.manual_seed(seed)
    probe = nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    best_acc, best_state, best_epoch = -1.0, None, 0
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(probe(x[idx]), y[idx]).backward()
            opt.step()
        score = _score(probe, dev, mean, std)
        if score.accuracy > best_acc:
            best_acc, best_epoch = score.accuracy, epoch
            best_state = {k: v.clone() for k, v in probe.state_dict().items()}
    probe.load_state_dict(best_state)
    return ProbeRun(dev=_score(probe, dev, mean, std), test=_score(probe, test, mean, std), epochs=best_epoch)


@torch.no_grad()
def _score(probe: nn.Linear, split: tuple[FrameStore, FrameStore], mean: torch.Tensor, std: torch.Tensor) -> ProbeScore:
    x = (torch.from_numpy(split[0].data.astype(np.float32)) - mean) / std
    hit = (probe(x).argmax(1).numpy() == split[1].data[:, 0]).astype(np.int64)
    offsets = split[0].offsets
    correct = np.add.reduceat(hit, offsets[:-1]) if len(hit) else np.zeros(0)
    total = np.diff(offsets)
    return ProbeScore(accuracy=float(hit.mean()), correct=correct, total=total)
