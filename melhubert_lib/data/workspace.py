"""Where a scale's corpus, caches, targets and runs live, and the cached data each stage reads.

Layout under `<work_root>/<scale>/`: `corpus/` (synthetic corpus; absent when a real LibriSpeech
path is given), `cache/` (fbank/MFCC frames per split, feature statistics), `targets/<name>/`
(codebook + labels), `runs/<name>/` (training runs), `results/` (tidy CSV/JSON).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..scales import Scale, get_scale
from . import audio, corpus
from . import features as features_module
from . import frames as frames_module
from .corpus import PRETRAIN_SPLIT
from .features import FeatureStats, fbank, mfcc_with_deltas, model_input_from_fbank
from .frames import FrameStore, cached, extract
from .provenance import code_version, fingerprint

STATS_CHUNK = 1 << 18  # frames read at a time when the feature statistics are accumulated
VALID_EVERY = 25  # every 25th pretraining utterance (by sorted id) is held out for validation


@dataclass(frozen=True)
class Workspace:
    """The folders of one scale's runs and the corpus they read."""

    scale: Scale
    root: Path
    librispeech: Path  # folder holding the LibriSpeech split folders
    corpus_root: Path | None  # the synthetic corpus (all three layouts), None for real data
    seed: int = 0
    voxceleb1: Path | None = None  # VoxCeleb1 identification folder (speaker ID), None when absent
    speech_commands: Path | None = None  # Speech Commands v0.02 folder (keyword spotting), None when absent

    @property
    def cache(self) -> Path:
        """Cached frames and statistics."""
        return self.root / "cache"

    @property
    def results(self) -> Path:
        """Tidy result files that the figure notebooks read."""
        return self.root / "results"

    def run_dir(self, name: str) -> Path:
        """Folder of the training run `name`."""
        return self.root / "runs" / name

    def level_dir(self, run: str, level: int) -> Path:
        """Folder of level `level` (0: the run's start) of the compression run `run`."""
        return self.run_dir(run) / f"level-{level:02d}"

    def targets_dir(self, name: str) -> Path:
        """Folder of the target set `name` (codebook and labels)."""
        return self.root / "targets" / name

    def data_identity(self) -> dict:
        """What identifies the audio this workspace reads: the synthetic corpus's settings (its marker file), or the
        real corpora's folders."""
        if self.corpus_root is not None:
            return {"synthetic": json.loads((self.corpus_root / corpus.MARKER_FILE).read_text())["settings"]}
        return {"librispeech": _absolute(self.librispeech), "voxceleb1": _absolute(self.voxceleb1),
                "speech_commands": _absolute(self.speech_commands),
                "pretrain_splits": list(self.scale.corpus.pretrain_splits)}

    def path_keys(self, paths: list[Path]) -> list[str]:
        """How audio files enter a cache key: each one's path inside the workspace where it lies there, else its
        absolute path; so one workspace opened as `work` (the CLI, the benchmarks) or `../work` (the notebooks) finds
        the same caches, and a workspace moved whole keeps them. (Absolute by spelling, not by resolving links: no
        file system call per file.)"""
        root = os.path.join(os.path.abspath(self.root), "")
        return [path[len(root) :] if path.startswith(root) else path for path in map(os.path.abspath, paths)]

    @property
    def pretrain_splits(self) -> tuple[str, ...]:
        """The LibriSpeech split folders read as the pretraining split (the synthetic corpus writes one)."""
        return (PRETRAIN_SPLIT,) if self.corpus_root is not None else self.scale.corpus.pretrain_splits


def _absolute(path: Path | None) -> str | None:
    """A corpus folder as it enters the data identity: absolute, however it was spelt (None when absent)."""
    return None if path is None else os.path.abspath(path)


def frames_version(ws: Workspace) -> str:
    """Fingerprint of the cached frames and statistics: the audio read and the code that turns it into frames."""
    return fingerprint(ws.data_identity(), code_version(audio, features_module, frames_module))


def open_workspace(
    scale: str | Scale, work_root: str | os.PathLike = "work", seed: int = 0,
    librispeech: str | os.PathLike | None = None, workers: int = 2,
    voxceleb1: str | os.PathLike | None = None, speech_commands: str | os.PathLike | None = None,
) -> Workspace:
    """Build (once) the synthetic corpus for `scale`, or point at real corpora, and return the workspace.

    With `librispeech` given, the synthetic corpus is not built; speaker ID and keyword spotting then
    read the `voxceleb1` and `speech_commands` folders when given.
    """
    scale = get_scale(scale) if isinstance(scale, str) else scale
    torch.use_deterministic_algorithms(scale.deterministic)
    root = Path(work_root) / scale.name
    if librispeech is not None:
        libri = Path(librispeech)
        corpus.librispeech_root(libri)  # a wrong folder fails here; each split is required where it is read
        return Workspace(scale, root, libri, None, seed, _optional_path(voxceleb1), _optional_path(speech_commands))
    corpus_root = root / "corpus"
    corpus.build_corpus(corpus_root, scale.corpus, seed=seed, workers=workers)
    return Workspace(scale, root, corpus_root / "LibriSpeech", corpus_root, seed,
                     _optional_path(voxceleb1) or corpus_root / "VoxCeleb1",
                     _optional_path(speech_commands) or corpus_root / "speech_commands")


def _optional_path(path: str | os.PathLike | None) -> Path | None:
    return None if path is None else Path(path)


def split_utterances(ws: Workspace, split: str) -> list[corpus.Utterance]:
    """The utterances of a LibriSpeech-layout split, sorted by id; the pretraining split is divided in two.

    `split` may be a LibriSpeech split name, or "pretrain-train" / "pretrain-valid" for the two parts
    of the pretraining split (validation = every `VALID_EVERY`-th utterance).
    """
    if split in ("pretrain-train", "pretrain-valid"):
        utts = sorted((u for split in ws.pretrain_splits for u in corpus.read_librispeech(ws.librispeech, split)),
                      key=lambda u: u.utt_id)
        held = split == "pretrain-valid"
        return [u for i, u in enumerate(utts) if (i % VALID_EVERY == VALID_EVERY - 1) == held]
    return sorted(corpus.read_librispeech(ws.librispeech, split), key=lambda u: u.utt_id)


FEATURIZERS = {"fbank": fbank, "mfcc": mfcc_with_deltas}


def raw_frames(ws: Workspace, split: str, kind: str) -> FrameStore:
    """Unnormalised 10 ms frames of a split: kind 'fbank' (40 log-Mel bins) or 'mfcc' (MFCC + deltas)."""
    if kind not in FEATURIZERS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(FEATURIZERS)}")
    utts = split_utterances(ws, split)
    return _cached_frames(ws, f"{kind}-{split}", [u.path for u in utts], [u.utt_id for u in utts], kind)


def _cached_frames(ws: Workspace, name: str, paths: list[Path], ids: list[str], kind: str) -> FrameStore:
    path = ws.cache / f"{name}-{fingerprint(frames_version(ws), ws.path_keys(paths), ids)}.frames"
    return cached(path, lambda: extract(paths, ids, FEATURIZERS[kind], name, out=path))


def feature_stats(ws: Workspace) -> FeatureStats:
    """Global log-Mel mean/std over the pretraining part of the pretraining split (cached)."""
    path = ws.cache / f"fbank-mean-std-{frames_version(ws)}.npy"
    if path.is_file():
        return FeatureStats.load(path)
    frames = raw_frames(ws, "pretrain-train", "fbank").data
    chunks = (torch.from_numpy(np.array(frames[i : i + STATS_CHUNK])) for i in range(0, len(frames), STATS_CHUNK))
    stats = FeatureStats.from_features(chunks)  # chunk by chunk: the frames are memory-mapped, never read whole
    stats.save(path)
    return stats


def model_inputs(ws: Workspace, split: str, stats: FeatureStats | None = None,
                 frame_ms: int | None = None) -> FrameStore:
    """Normalised log-Mel frames of a split, stacked to a model frame rate (cached on disk, memory-mapped).

    `stats` and `frame_ms` are those a model was trained with (an imported checkpoint's own); by default the
    workspace's statistics and the scale's frame rate.
    """
    return _normalised(ws, f"fbank-{split}", raw_frames(ws, split, "fbank"), stats, frame_ms)


def clip_inputs(ws: Workspace, name: str, paths: list[Path], ids: list[str], stats: FeatureStats | None = None,
                frame_ms: int | None = None) -> FrameStore:
    """Model inputs of any list of audio files (a downstream task's split), cached under `name` (as model_inputs)."""
    return _normalised(ws, f"fbank-{name}", _cached_frames(ws, f"fbank-{name}", paths, ids, "fbank"), stats, frame_ms)


def _normalised(ws: Workspace, name: str, frames: FrameStore, stats: FeatureStats | None,
                frame_ms: int | None) -> FrameStore:
    """The model inputs of cached log-Mel frames, streamed once into their own cache (keyed on the frames, the
    statistics, the frame rate and the code), so that no process holds a split's inputs whole."""
    stats = stats or feature_stats(ws)
    frame_ms = frame_ms or ws.scale.frame_ms
    key = fingerprint(frames.key, stats.digest(), frame_ms, code_version(features_module))
    path = ws.cache / f"{name}-inputs-{key}.frames"
    return cached(path, lambda: frames.map(lambda f: model_input_from_fbank(torch.from_numpy(np.array(f)), stats,
                                                                           frame_ms).numpy(), out=path))
