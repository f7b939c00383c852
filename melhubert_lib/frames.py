"""Per-utterance frame matrices of one corpus split, computed once and cached on disk.

`FrameStore` is a ragged array (one (T_i, D) matrix per utterance) kept as a single concatenated
array plus offsets, saved as an uncompressed .npz without pickled objects.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path
from .audio import AudioError, check_audio_files, load_audio, raise_if_problems


@dataclass
class FrameStore:
    """Frame matrices of many utterances: `data[offsets[i]:offsets[i+1]]` belongs to `utt_ids[i]`."""

    data: np.ndarray
    offsets: np.ndarray
    utt_ids: list[str]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def content_hash(self) -> str:
        """A short hash of the frames, their utterance boundaries and ids (what a cached result was computed from);
        computed once per store (stores are not changed after they are made)."""
        if "_content_hash" not in self.__dict__:
            self.__dict__["_content_hash"] = self._hash()
        return self.__dict__["_content_hash"]

    def _hash(self) -> str:
        digest = hashlib.sha256(str((self.data.dtype.str, self.data.shape)).encode())
        for part in (np.ascontiguousarray(self.data), np.asarray(self.offsets, dtype=np.int64)):
            digest.update(memoryview(part).cast("B"))
        digest.update("\n".join(self.utt_ids).encode())
        return digest.hexdigest()[:16]

    def lengths(self) -> np.ndarray:
        """Frames per utterance."""
        return np.diff(self.offsets)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], utt_ids: Sequence[str]) -> FrameStore:
        """Concatenate per-utterance arrays."""
        if len(arrays) != len(utt_ids):
            raise ValueError(f"{len(arrays)} arrays for {len(utt_ids)} utterance ids")
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(a) for a in arrays])
        data = np.concatenate(arrays) if arrays else np.zeros((0, 0), dtype=np.float32)
        return cls(data=data, offsets=offsets, utt_ids=list(utt_ids))

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> FrameStore:
        """Apply `fn` to every utterance's matrix."""
        return FrameStore.from_arrays([fn(self[i]) for i in range(len(self))], self.utt_ids)

    def non_finite_utts(self) -> list[str]:
        """Ids of the utterances whose frames hold NaN or infinite values."""
        bad_rows = np.flatnonzero(~np.isfinite(self.data).all(axis=tuple(range(1, self.data.ndim))))
        return [self.utt_ids[i] for i in np.unique(np.searchsorted(self.offsets, bad_rows, side="right") - 1)]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as .npz (no pickle); a store holding NaN or infinite values is refused."""
        bad = self.non_finite_utts()
        if bad:
            raise ValueError(f"{path}: not written, the frames of {len(bad)} utterances hold NaN or infinite values "
                             f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, data=self.data, offsets=self.offsets, utt_ids=np.array(self.utt_ids, dtype=str))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FrameStore:
        """Read a store written by `save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(data=z["data"], offsets=z["offsets"], utt_ids=[str(u) for u in z["utt_ids"]])


def extract(
    paths: Sequence[str | os.PathLike],
    utt_ids: Sequence[str],
    featurize: Callable[[np.ndarray], torch.Tensor],
    desc: str = "features",
) -> FrameStore:
    """Load every file, apply `featurize` to its waveform and collect the frame matrices (float32).

    Every file's header is checked before any work; files whose samples are unusable (unreadable, NaN or
    infinite, silent) are found as they are read. Either way one AudioError names every bad file.
    """
    what = f"audio files of {desc}"
    check_audio_files(paths, what)
    arrays, problems = [], []
    for path in tqdm(paths, desc=desc, unit="utt", leave=False):
        try:
            wav = load_audio(path)
        except AudioError as err:
            problems.append(str(err))
            continue
        if not problems:  # after a bad file the rest are only read, to report every bad one
            arrays.append(featurize(wav).numpy().astype(np.float32))
    raise_if_problems(problems, len(paths), what)
    return FrameStore.from_arrays(arrays, utt_ids)


def cached(path: str | os.PathLike, build: Callable[[], FrameStore]) -> FrameStore:
    """Load the store at `path`, or build it, save it atomically and return it (a store holding NaN or infinite
    values is never written, so a cache never holds one)."""
    path = Path(path)
    if path.is_file():
        return FrameStore.load(path)
    store = build()
    store.save(path)
    return store
