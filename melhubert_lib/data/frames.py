"""Per-utterance frame matrices of one corpus split, computed once and cached on disk.

`FrameStore` is a ragged array (one (T_i, D) matrix per utterance) kept as a single concatenated
array plus offsets. On disk a store is a folder (`data.npy`, `offsets.npy`, `utt_ids.txt`; no pickle)
that loads memory-mapped, so a process holds in memory only the frames it reads: resident memory stays
flat as the corpus grows, and each training process reads only its own batches. Large stores (a split's
frames, a model's inputs) are written utterance by utterance (`FrameWriter`) and never held whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path, build_lock
from .audio import AudioError, check_audio_files, load_audio, raise_if_problems


@dataclass
class FrameStore:
    """Frame matrices of many utterances: `data[offsets[i]:offsets[i+1]]` belongs to `utt_ids[i]`."""

    data: np.ndarray
    offsets: np.ndarray
    utt_ids: list[str]
    path: Path | None = field(default=None, compare=False)  # the folder it is memory-mapped from, if any

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        frames = self.data[self.offsets[i] : self.offsets[i + 1]]
        return np.array(frames) if isinstance(frames, np.memmap) else frames  # read from disk into a writable copy

    def content_hash(self) -> str:
        """A short hash of the frames, their utterance boundaries and ids (what a cached result was computed from);
        computed once per store (stores are not changed after they are made)."""
        if "_content_hash" not in self.__dict__:
            self.__dict__["_content_hash"] = self._hash()
        return self.__dict__["_content_hash"]

    @property
    def key(self) -> str:
        """What identifies the store in the key of a cache derived from it: the name of the cache folder it was
        loaded from (keyed on everything that made it), else a hash of its content."""
        return self.path.name if self.path is not None else self.content_hash()

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

    def map(self, fn: Callable[[np.ndarray], np.ndarray], out: str | os.PathLike | None = None) -> FrameStore:
        """Apply `fn` to every utterance's matrix; with `out`, stream the result into a store there (memory-mapped)."""
        if out is None:
            return FrameStore.from_arrays([fn(self[i]) for i in range(len(self))], self.utt_ids)
        with FrameWriter(out) as writer:
            for i, utt_id in enumerate(self.utt_ids):
                writer.append(utt_id, fn(self[i]))
        return writer.store

    def non_finite_utts(self) -> list[str]:
        """Ids of the utterances whose frames hold NaN or infinite values."""
        bad_rows = np.flatnonzero(~np.isfinite(self.data).all(axis=tuple(range(1, self.data.ndim))))
        return [self.utt_ids[i] for i in np.unique(np.searchsorted(self.offsets, bad_rows, side="right") - 1)]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as a store folder (no pickle); a store holding NaN or infinite values is refused."""
        bad = self.non_finite_utts()
        if bad:
            raise ValueError(f"{path}: not written, the frames of {len(bad)} utterances hold NaN or infinite values "
                             f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            np.save(tmp / DATA_NAME, self.data)
            write_index(tmp, self.offsets, self.utt_ids)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FrameStore:
        """Open a store written by `save` or a `FrameWriter`, memory-mapped read-only (`store[i]` reads a copy)."""
        path = Path(path)
        if not is_store(path):
            raise FileNotFoundError(f"{path}: not a frame store (expected {DATA_NAME}, {OFFSETS_NAME} and "
                                    f"{IDS_NAME} inside); delete it and let the stage compute it again")
        ids = (path / IDS_NAME).read_text().split("\n")[:-1]
        return cls(data=np.load(path / DATA_NAME, mmap_mode="r"), offsets=np.load(path / OFFSETS_NAME),
                   utt_ids=ids, path=path)


DATA_NAME, OFFSETS_NAME, IDS_NAME = "data.npy", "offsets.npy", "utt_ids.txt"
# the .npy header is written last, when the number of frames is known, into this much room reserved at the start
# (numpy's open_memmap needs the final shape first, which a streamed extraction learns only at its end)
_HEADER_BYTES = 256


def is_store(path: str | os.PathLike) -> bool:
    """Whether `path` holds a complete store (written atomically, so a folder with its files is complete)."""
    path = Path(path)
    return all((path / name).is_file() for name in (DATA_NAME, OFFSETS_NAME, IDS_NAME))


def write_index(folder: Path, offsets: np.ndarray, utt_ids: Sequence[str]) -> None:
    """Write a store's utterance boundaries and ids beside its data."""
    bad = [u for u in utt_ids if "\n" in u]
    if bad:
        raise ValueError(f"utterance ids {bad[:3]} hold a newline; ids are one line each")
    np.save(folder / OFFSETS_NAME, np.asarray(offsets, dtype=np.int64))
    (folder / IDS_NAME).write_text("".join(f"{u}\n" for u in utt_ids))


class FrameWriter:
    """Write a store utterance by utterance without holding it in memory; the folder appears complete or not at all.

    `with FrameWriter(path) as w: w.append(utt_id, frames) ...`; afterwards `w.store` is the memory-mapped store.
    Every utterance must have the same trailing shape and dtype; one with NaN or infinite values aborts the write.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.store: FrameStore | None = None
        self._lengths: list[int] = []
        self._ids: list[str] = []
        self._row: tuple[tuple[int, ...], np.dtype] | None = None

    def __enter__(self) -> FrameWriter:
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._tmp.mkdir(parents=True)
        self._fh = open(self._tmp / DATA_NAME, "wb")
        self._fh.write(b"\0" * _HEADER_BYTES)
        return self

    def append(self, utt_id: str, frames: np.ndarray) -> None:
        """Add one utterance's (T, ...) frames."""
        frames = np.ascontiguousarray(frames)
        row = (frames.shape[1:], frames.dtype)
        if self._row is None:
            self._row = row
        elif row != self._row:
            raise ValueError(f"{self.path}: utterance {utt_id!r} has frames of shape {frames.shape[1:]} and dtype "
                             f"{frames.dtype}, the store's are {self._row[0]} and {self._row[1]}")
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():
            raise ValueError(f"{self.path}: not written, the frames of utterance {utt_id} hold NaN or infinite values")
        self._fh.write(memoryview(frames).cast("B"))
        self._lengths.append(len(frames))
        self._ids.append(utt_id)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:  # the block failed: nothing appears at the path
            self._fh.close()
            self._atomic.__exit__(exc_type, exc, tb)
            return
        try:
            self._finish()
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)
        self.store = FrameStore.load(self.path)

    def _finish(self) -> None:
        """Write the .npy header into its reserved room, then the offsets and ids."""
        try:
            shape, dtype = self._row if self._row is not None else ((0,), np.dtype(np.float32))  # as from_arrays
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": (sum(self._lengths), *shape)}
            self._fh.seek(0)
            self._fh.write(npy_header(header))
        finally:
            self._fh.close()
        offsets = np.zeros(len(self._lengths) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(self._lengths)
        write_index(self._tmp, offsets, self._ids)


def npy_header(header: dict) -> bytes:
    """A version 1.0 .npy header padded with spaces to exactly _HEADER_BYTES (numpy pads its own the same way)."""
    text = repr(header)
    room = _HEADER_BYTES - 10 - 1  # magic and version (8), header length (2); a closing newline
    if len(text) > room:
        raise ValueError(f"the .npy header {text} does not fit the {_HEADER_BYTES} bytes reserved for it")
    body = (text + " " * (room - len(text)) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def extract(
    paths: Sequence[str | os.PathLike],
    utt_ids: Sequence[str],
    featurize: Callable[[np.ndarray], torch.Tensor],
    desc: str = "features",
    out: str | os.PathLike | None = None,
) -> FrameStore:
    """Load every file, apply `featurize` to its waveform and collect the frame matrices (float32); with `out`,
    stream them into a store there instead of memory.

    Every file's header is checked before any work; files whose samples are unusable (unreadable, NaN or
    infinite, silent) are found as they are read. Either way one AudioError names every bad file, and nothing
    is written.
    """
    what = f"audio files of {desc}"
    check_audio_files(paths, what)
    arrays, problems = [], []
    writer = FrameWriter(out) if out is not None else None
    with writer or nullcontext():
        for path, utt_id in zip(tqdm(paths, desc=desc, unit="utt", leave=False), utt_ids, strict=True):
            try:
                wav = load_audio(path)
            except AudioError as err:
                problems.append(str(err))
                continue
            if problems:  # after a bad file the rest are only read, to report every bad one
                continue
            frames = featurize(wav).numpy().astype(np.float32)
            if writer is None:
                arrays.append(frames)
            else:
                writer.append(utt_id, frames)
        raise_if_problems(problems, len(paths), what)  # inside the writer: a failed extraction writes nothing
    return writer.store if writer is not None else FrameStore.from_arrays(arrays, utt_ids)


def cached(path: str | os.PathLike, build: Callable[[], FrameStore]) -> FrameStore:
    """Load the store at `path`, or build it, save it atomically and return it (a store holding NaN or infinite
    values is never written, so a cache never holds one). A `build` that streams its store to `path` itself
    (`extract(..., out=path)`, `FrameStore.map(..., out=path)`) is not saved twice."""
    path = Path(path)
    if is_store(path):
        return FrameStore.load(path)
    with build_lock(path):
        if is_store(path):  # made by another process while this one waited
            return FrameStore.load(path)
        store = build()
        if store.path != path:
            store.save(path)
        return store
