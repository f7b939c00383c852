"""Length-bucketed batches of random crops, reproducible from (seed, epoch) so training can resume exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .frames import FrameStore


@dataclass(frozen=True)
class Crop:
    """One training example: frames [start, start + length) of utterance `index`."""

    index: int
    start: int
    length: int


@dataclass
class Batch:
    """A padded batch of model inputs and their cluster targets."""

    feats: torch.Tensor  # (B, T, D)
    targets: torch.Tensor | None  # (B, T) int64, -100 at padding; None for feature extraction
    lengths: torch.Tensor  # (B,)

    def select(self, rows: slice | list[int]) -> Batch:
        """The sub-batch of the given rows (a micro-batch or one process's share)."""
        targets = None if self.targets is None else self.targets[rows]
        return Batch(self.feats[rows], targets, self.lengths[rows])


def epoch_batches(lengths: np.ndarray, crop_frames: int, batch_frames: int, seed: int, epoch: int) -> list[list[Crop]]:
    """All batches of one epoch: shuffled, bucketed by length so padding is small, random crops.

    Every utterance appears once per epoch; a batch holds at most `batch_frames` cropped frames.
    The result depends only on (lengths, crop_frames, batch_frames, seed, epoch).
    """
    if batch_frames < crop_frames:
        raise ValueError(f"batch of {batch_frames} frames cannot hold one crop of {crop_frames} frames")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    crop_len = np.minimum(lengths, crop_frames)
    per_batch = max(1, batch_frames // crop_frames)
    bucket = per_batch * 32
    batches: list[list[Crop]] = []
    for b0 in range(0, len(order), bucket):
        chunk = order[b0 : b0 + bucket]
        chunk = chunk[np.argsort(crop_len[chunk], kind="stable")]
        current: list[Crop] = []
        longest = 0
        for i in chunk:
            n = int(crop_len[i])
            if current and max(longest, n) * (len(current) + 1) > batch_frames:
                batches.append(current)
                current, longest = [], 0
            start = int(rng.integers(0, lengths[i] - n + 1))
            current.append(Crop(int(i), start, n))
            longest = max(longest, n)
        if current:
            batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(crops: list[Crop], feats: FrameStore, targets: FrameStore | None = None,
            rows: Sequence[int] | None = None) -> Batch:
    """Pad the crops of one batch into tensors (targets only when a target store is given).

    With `rows`, only those rows' features are read (the others stay zero): one training process's share.
    """
    longest = max(c.length for c in crops)
    dim = feats.data.shape[1]
    x = torch.zeros(len(crops), longest, dim)
    y = None if targets is None else torch.full((len(crops), longest), -100, dtype=torch.long)
    read = set(range(len(crops)) if rows is None else rows)
    for row, c in enumerate(crops):
        if row in read:
            x[row, : c.length] = torch.from_numpy(feats[c.index][c.start : c.start + c.length])
        if y is not None:
            y[row, : c.length] = torch.from_numpy(targets[c.index][c.start : c.start + c.length, 0].astype(np.int64))
    return Batch(x, y, torch.tensor([c.length for c in crops]))


def eval_batches(lengths: np.ndarray, max_frames: int, batch_frames: int) -> list[list[Crop]]:
    """Deterministic batches over whole utterances (cut at `max_frames`), sorted by length."""
    order = np.argsort(lengths, kind="stable")
    batches, current = [], []
    for i in order:
        n = int(min(lengths[i], max_frames))
        if current and n * (len(current) + 1) > batch_frames:
            batches.append(current)
            current = []
        current.append(Crop(int(i), 0, n))
    if current:
        batches.append(current)
    return batches
