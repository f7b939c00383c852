"""Reading and writing 16 kHz mono audio with soundfile, with clear errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """An audio file that the suite cannot use; the message names the file and the fix."""


def load_audio(path: str | os.PathLike, *, allow_silent: bool = False) -> np.ndarray:
    """Load a 16 kHz mono file as float32 in [-1, 1]; raise AudioError naming the file if unusable."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path}: not a readable audio file ({err}); re-create or remove it") from None
    if rate != SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz; resample it "
            f"(e.g. sox in.flac -r {SAMPLE_RATE} out.flac)"
        )
    if wav.shape[1] != 1:
        raise AudioError(f"{path}: {wav.shape[1]} channels, expected mono; mix it down first")
    wav = wav[:, 0]
    if wav.size == 0:
        raise AudioError(f"{path}: the file holds no samples; remove it from the corpus")
    if not allow_silent and float(np.abs(wav).max()) == 0.0:
        raise AudioError(f"{path}: the file is digital silence; remove it from the corpus")
    return wav


def save_audio(path: str | os.PathLike, wav: np.ndarray) -> None:
    """Write a mono 16 kHz FLAC atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    sf.write(str(tmp), np.asarray(wav, dtype=np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
