"""Descriptive statistics of a corpus (sizes, per-speaker durations and pitch) and the speaker-ID floor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import corpus
from .audio import SAMPLE_RATE, load_audio
from .corpus import LABELED_SPLITS, PRETRAIN_SPLIT
from .features import fbank
from .workspace import Workspace, split_utterances


def split_summary(ws: Workspace) -> pd.DataFrame:
    """Utterances, speakers and hours of every LibriSpeech-layout split."""
    rows = []
    for split in (PRETRAIN_SPLIT, *LABELED_SPLITS.values()):
        utts = split_utterances(ws, split)
        seconds = sum(sf.info(str(u.path)).duration for u in utts)
        rows.append({"split": split, "utterances": len(utts), "speakers": len({u.speaker for u in utts}),
                     "hours": seconds / 3600})
    return pd.DataFrame(rows)


def speaker_durations(utts: list[corpus.Utterance]) -> pd.DataFrame:
    """Total seconds of speech per speaker."""
    rows = [{"speaker": u.speaker, "seconds": sf.info(str(u.path)).duration} for u in utts]
    return pd.DataFrame(rows).groupby("speaker", as_index=False)["seconds"].sum()


def median_pitch(wav: np.ndarray) -> float:
    """Median fundamental frequency (Hz) of a waveform by torchaudio's normalised-correlation detector."""
    f0 = torchaudio.functional.detect_pitch_frequency(torch.from_numpy(wav), SAMPLE_RATE, freq_low=60, freq_high=400)
    return float(f0.median())


def speaker_pitch(clips: list[corpus.LabeledClip], per_speaker: int = 3) -> pd.DataFrame:
    """Median pitch of up to `per_speaker` clips of every speaker. The detector runs many tiny operations: on one
    intra-op thread, since with two any other process on the cores stalls each one (measured: a clip 8.2 s on two
    busy threads against 0.06 s on one)."""
    seen: dict[str, int] = {}
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for clip in clips:
            if seen.get(clip.label, 0) >= per_speaker:
                continue
            seen[clip.label] = seen.get(clip.label, 0) + 1
            rows.append({"speaker": clip.label, "pitch_hz": median_pitch(load_audio(clip.path))})
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows)


@dataclass
class SpeakerFloor:
    """Speaker-ID accuracy of a linear classifier on mean+std pooled log-Mel (the SID floor)."""

    accuracy: float
    n_speakers: int
    n_test: int

    @property
    def chance(self) -> float:
        """Accuracy of guessing one speaker."""
        return 1.0 / self.n_speakers


def _pooled_logmel(clips: list[corpus.LabeledClip]) -> np.ndarray:
    feats = [fbank(load_audio(c.path)) for c in clips]
    return np.stack([torch.cat([f.mean(0), f.std(0)]).numpy() for f in feats])


def speaker_floor(ws: Workspace) -> SpeakerFloor:
    """Train on the VoxCeleb1-layout train subset, report accuracy on its test subset."""
    root = ws.corpus_root / "VoxCeleb1"
    train = corpus.read_voxceleb1(root, "train")
    test = corpus.read_voxceleb1(root, "test")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(_pooled_logmel(train), [c.label for c in train])
    accuracy = float(clf.score(_pooled_logmel(test), [c.label for c in test]))
    return SpeakerFloor(accuracy=accuracy, n_speakers=len({c.label for c in train}), n_test=len(test))
