"""Input features exactly as the official MelHuBERT computes them, plus the MFCC targets' features.

Log-Mel: waveform x 2**15, torchaudio's Kaldi fbank (40 bins, 25 ms Hamming window, 10 ms shift,
no dither), one global mean/std from the pretraining set, then frame pairs stacked to 80 dims at
20 ms (an odd frame count is padded with one zero frame, i.e. the mean after normalisation).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from .atomic import atomic_path
from .audio import SAMPLE_RATE

N_MELS = 40
N_MFCC = 13
_KALDI = dict(frame_length=25.0, frame_shift=10.0, window_type="hamming", dither=0.0, sample_frequency=SAMPLE_RATE)


def fbank(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """40-bin Kaldi log-Mel filterbank at 10 ms of a 16 kHz waveform in [-1, 1]: (frames, 40)."""
    wav = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1) * 2**15
    return torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=N_MELS, **_KALDI)


def mfcc_with_deltas(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """13 Kaldi MFCCs with first and second deltas at 10 ms: (frames, 39)."""
    wav = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1) * 2**15
    mfcc = torchaudio.compliance.kaldi.mfcc(wav, num_ceps=N_MFCC, num_mel_bins=23, **_KALDI)
    d1 = torchaudio.functional.compute_deltas(mfcc.T).T
    d2 = torchaudio.functional.compute_deltas(d1.T).T
    return torch.cat([mfcc, d1, d2], dim=1)


def stack_frames(feats: torch.Tensor, factor: int) -> torch.Tensor:
    """Concatenate `factor` consecutive frames (T, D) -> (ceil(T/factor), D*factor), zero-padding the end."""
    if factor == 1:
        return feats
    frames, dim = feats.shape
    pad = (-frames) % factor
    if pad:
        feats = torch.cat([feats, feats.new_zeros(pad, dim)])
    return feats.reshape(-1, dim * factor)


def frames_per_stack(frame_ms: int) -> int:
    """How many 10 ms frames make one model frame (1 at 10 ms, 2 at 20 ms)."""
    if frame_ms not in (10, 20):
        raise ValueError(f"frame_ms={frame_ms}: choose 10 or 20 (parameter 'frame_ms')")
    return frame_ms // 10


@dataclass(frozen=True)
class FeatureStats:
    """Global per-bin mean and std of the 40-bin log-Mel features over a training set."""

    mean: np.ndarray  # (40,)
    std: np.ndarray  # (40,)

    def save(self, path: str | os.PathLike) -> None:
        """Save as a (2, 40) .npy file, the layout of the authors' statistics files."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.stack([self.mean, self.std]).astype(np.float32))

    def digest(self) -> str:
        """A short hash of the statistics (part of the cache key of features computed with them)."""
        data = np.stack([self.mean, self.std]).astype(np.float32)
        return hashlib.sha1(data.tobytes()).hexdigest()[:12]

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Load a (2, 40) mean/std file such as the authors' libri-960-mean-std.npy."""
        arr = np.load(Path(path))
        if arr.shape != (2, N_MELS):
            raise ValueError(f"{path}: expected a (2, {N_MELS}) mean/std array, got shape {arr.shape}")
        return cls(mean=arr[0].astype(np.float32), std=arr[1].astype(np.float32))

    @classmethod
    def from_features(cls, feats: Iterable[torch.Tensor]) -> FeatureStats:
        """Accumulate mean and std over all frames of (T, 40) fbank arrays (any iterable: read one at a time)."""
        total = torch.zeros(N_MELS, dtype=torch.float64)
        total_sq = torch.zeros(N_MELS, dtype=torch.float64)
        count = 0
        for f in feats:
            f64 = f.double()
            total += f64.sum(0)
            total_sq += (f64**2).sum(0)
            count += f.shape[0]
        if count == 0:
            raise ValueError("cannot compute feature statistics from zero frames")
        mean = total / count
        std = (total_sq / count - mean**2).clamp_min(1e-10).sqrt()
        return cls(mean=mean.float().numpy(), std=std.float().numpy())


def normalise(feats: torch.Tensor, stats: FeatureStats) -> torch.Tensor:
    """Apply the global mean/std normalisation to (T, 40) fbank frames."""
    return (feats - torch.from_numpy(stats.mean)) / torch.from_numpy(stats.std)


def model_input_from_fbank(feats: torch.Tensor, stats: FeatureStats, frame_ms: int = 20) -> torch.Tensor:
    """The model's input from (T, 40) fbank frames: normalised, then stacked to the model frame rate."""
    return stack_frames(normalise(feats, stats), frames_per_stack(frame_ms))


def model_input(wav: np.ndarray | torch.Tensor, stats: FeatureStats, frame_ms: int = 20) -> torch.Tensor:
    """The model's input for one waveform."""
    return model_input_from_fbank(fbank(wav), stats, frame_ms)
