"""What the corpus readers return: utterances with optional phone alignments, and labelled clips."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PhoneSegment:
    """One phone class from `start` to `end` (seconds from the start of the file)."""

    phone: str
    start: float
    end: float


@dataclass(frozen=True)
class Utterance:
    """One LibriSpeech-layout utterance; `phones` is None where the corpus has no alignments."""

    utt_id: str
    path: Path
    speaker: str
    transcript: str
    phones: tuple[PhoneSegment, ...] | None


@dataclass(frozen=True)
class LabeledClip:
    """One audio file with its class label (a keyword, `_unknown_`, `_silence_` or a speaker id)."""

    path: Path
    label: str
