"""Reading and writing 16 kHz mono audio with soundfile, with clear errors for bad files."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
AUDIO_SUFFIXES = (".flac", ".wav")  # the audio files the corpus readers take

T = TypeVar("T")


class AudioError(ValueError):
    """An audio file that the suite cannot use; the message names the file and the fix."""


def check_audio_header(path: str | os.PathLike) -> None:
    """Raise AudioError naming the file unless its header says: readable, 16 kHz, mono, not empty (no samples read)."""
    path = Path(path)
    info = _open(path, sf.info)
    _check_layout(path, info.samplerate, info.channels, info.frames)


def _open(path: Path, reader: Callable[[str], T]) -> T:
    """`reader(path)`, with a missing or unreadable file reported as an AudioError naming it."""
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        return reader(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path}: not a readable audio file ({err}); re-create or remove it") from None


def _check_layout(path: Path, rate: int, channels: int, frames: int) -> None:
    if rate != SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz; resample it "
            f"(e.g. sox in.flac -r {SAMPLE_RATE} out.flac)"
        )
    if channels != 1:
        raise AudioError(f"{path}: {channels} channels, expected mono; mix it down first")
    if frames == 0:
        raise AudioError(f"{path}: the file holds no samples; remove it from the corpus")


def check_audio_files(paths: Sequence[str | os.PathLike], what: str = "audio files") -> None:
    """Check the header of every file (`check_audio_header`) and raise one AudioError listing all bad files."""
    problems = []
    for path in paths:
        try:
            check_audio_header(path)
        except AudioError as err:
            problems.append(str(err))
    raise_if_problems(problems, len(paths), what)


def raise_if_problems(problems: Sequence[str], total: int, what: str) -> None:
    """Raise one AudioError naming every problem (one per bad file), if there are any."""
    if problems:
        raise AudioError(f"{len(problems)} of {total} {what} are unusable; fix or remove each: " + " | ".join(problems))


def load_audio(path: str | os.PathLike, *, allow_silent: bool = False) -> np.ndarray:
    """Load a 16 kHz mono file as float32 in [-1, 1]; raise AudioError naming the file if unusable."""
    path = Path(path)
    wav, rate = _open(path, lambda p: sf.read(p, dtype="float32", always_2d=True))
    _check_layout(path, rate, wav.shape[1], wav.shape[0])
    wav = wav[:, 0]
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: {int((~np.isfinite(wav)).sum())} NaN or infinite samples; re-create the file "
                         "from its source or remove it from the corpus")
    if not allow_silent and float(np.abs(wav).max()) == 0.0:
        raise AudioError(f"{path}: the file is digital silence; remove it from the corpus")
    return wav


def save_audio(path: str | os.PathLike, wav: np.ndarray) -> None:
    """Write a mono 16 kHz FLAC atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    sf.write(str(tmp), np.asarray(wav, dtype=np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
