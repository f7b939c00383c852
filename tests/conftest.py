"""Shared fixtures: tiny learnable masked-prediction data that needs no corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from melhubert_lib.data.frames import FrameStore
from melhubert_lib.data.workspace import Workspace, open_workspace
from melhubert_lib.training.pretrain import SSLData


def segment_data(n_utts: int, n_classes: int, dim: int, seed: int) -> SSLData:
    """Utterances made of constant-class segments (6-12 frames) plus noise; target = segment class.

    A masked frame can be recovered from its unmasked neighbours in the same segment, so masked
    prediction is learnable from context.
    """
    protos = np.random.default_rng(12345).normal(size=(n_classes, dim)).astype(np.float32)  # shared by all sets
    rng = np.random.default_rng(seed)
    feats, targets = [], []
    for _ in range(n_utts):
        n_segments = rng.integers(4, 9)
        labels = np.concatenate([np.full(rng.integers(6, 13), rng.integers(n_classes)) for _ in range(n_segments)])
        feats.append(protos[labels] + 0.3 * rng.normal(size=(len(labels), dim)).astype(np.float32))
        targets.append(labels.astype(np.int16)[:, None])
    ids = [f"utt{i:04d}" for i in range(n_utts)]
    return SSLData(FrameStore.from_arrays(feats, ids), FrameStore.from_arrays(targets, ids))


@pytest.fixture(scope="session")
def tiny_data() -> dict[str, SSLData]:
    """Train and validation sets for the smoke model (80-dim inputs, 16 classes)."""
    return {"train": segment_data(48, 16, 80, seed=0), "valid": segment_data(12, 16, 80, seed=1)}


@pytest.fixture(scope="session")
def smoke_ws(tmp_path_factory) -> Workspace:
    """The smoke-scale workspace with its synthetic corpus (built once per test session)."""
    yield open_workspace("smoke", tmp_path_factory.mktemp("work"), seed=0, workers=1)
    torch.use_deterministic_algorithms(False)  # the smoke scale turns it on for the whole process
