"""Pretraining targets: k-means (scikit-learn) over frames, and cluster assignments per utterance.

Stage 1 clusters acoustic features (MFCC + deltas, or log-Mel as the authors do); stage 2 clusters
a hidden layer of a trained model. Centroids are stored as plain .npy arrays (no pickle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

from .atomic import atomic_path
from .frames import FrameStore


@dataclass(frozen=True)
class Codebook:
    """K-means centroids over standardised frames, with the standardisation they expect."""

    centroids: np.ndarray  # (K, D)
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)

    @property
    def n_clusters(self) -> int:
        """K."""
        return int(self.centroids.shape[0])

    def assign(self, frames: np.ndarray) -> np.ndarray:
        """Nearest-centroid index of every frame: (T, D) -> (T,) int64."""
        x = torch.from_numpy(((frames - self.mean) / self.std).astype(np.float32))
        return torch.cdist(x, torch.from_numpy(self.centroids)).argmin(1).numpy()

    def assign_store(self, store: FrameStore, out: str | os.PathLike | None = None) -> FrameStore:
        """Cluster labels for every utterance of a store (as (T, 1) int16 matrices); with `out`, streamed there."""
        return store.map(lambda f: self.assign(f).astype(np.int16)[:, None], out=out)

    def save(self, path: str | os.PathLike) -> None:
        """Write as an .npz of three arrays, atomically."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, centroids=self.centroids, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codebook:
        """Read a codebook written by `save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(centroids=z["centroids"], mean=z["mean"], std=z["std"])


def fit_codebook(store: FrameStore, n_clusters: int, max_frames: int, seed: int = 0) -> Codebook:
    """Fit mini-batch k-means on up to `max_frames` frames sampled uniformly from the store."""
    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters}: k-means needs at least 2 clusters")
    rng = np.random.default_rng(seed)
    n = store.data.shape[0]
    if n < n_clusters:
        raise ValueError(f"only {n} frames to fit {n_clusters} clusters; use more data or fewer clusters")
    idx = rng.choice(n, size=min(n, max_frames), replace=False)
    sample = store.data[np.sort(idx)].astype(np.float64)
    mean, std = sample.mean(0), sample.std(0) + 1e-5
    km = MiniBatchKMeans(n_clusters=n_clusters, batch_size=10_000, n_init=3, max_iter=100, random_state=seed)
    km.fit((sample - mean) / std)
    return Codebook(km.cluster_centers_.astype(np.float32), mean.astype(np.float32), std.astype(np.float32))


def cluster_purity(labels: np.ndarray, classes: np.ndarray) -> float:
    """Fraction of frames whose class is the majority class of their cluster (phone purity)."""
    labels, classes = np.asarray(labels).ravel(), np.asarray(classes).ravel()
    if labels.shape != classes.shape:
        raise ValueError(f"{labels.shape[0]} labels for {classes.shape[0]} classes")
    joint = np.zeros((labels.max() + 1, classes.max() + 1), dtype=np.int64)
    np.add.at(joint, (labels, classes), 1)
    return float(joint.max(1).sum() / max(len(labels), 1))
