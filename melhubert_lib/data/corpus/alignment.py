"""Phone alignments: from eSpeak phoneme events to contiguous segments, and their one-line text form.

A phone lasts from its event's start to the next event's start (the last one to the end of eSpeak's
audio); stretches with no speech are silence. Times are kept to the millisecond, and the segments of
an utterance tile the whole file: the first starts at 0, each starts where the previous ended and
the last ends at the file's duration (to the millisecond).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import CorpusError
from .espeak import PhonemeEvent
from .phones import PHONE_INDEX, SILENCE, phone_classes
from .records import PhoneSegment

_DECIMALS = 3


def event_segments(events: Sequence[PhonemeEvent], accent: str, speech_end: float) -> list[PhoneSegment]:
    """Phone segments (seconds of eSpeak audio) of the phoneme events; gaps are not filled yet."""
    segments: list[PhoneSegment] = []
    for index, event in enumerate(events):
        end = events[index + 1].start if index + 1 < len(events) else speech_end
        if end <= event.start:
            continue
        classes = phone_classes(event.mnemonic, accent)
        if not classes:  # a transition marker: its time belongs to the phone before it
            if segments:
                segments[-1] = PhoneSegment(segments[-1].phone, segments[-1].start, end)
            continue
        step = (end - event.start) / len(classes)
        for k, phone in enumerate(classes):
            segments.append(PhoneSegment(phone, event.start + k * step, event.start + (k + 1) * step))
    return segments


def place_segments(
    segments: Sequence[PhoneSegment], offset: float, scale: float, duration: float
) -> tuple[PhoneSegment, ...]:
    """Map segment times t -> offset + scale * t, then tile [0, duration] with silence filling the gaps.

    Segments are clipped to the file, rounded to the millisecond, empty ones dropped and neighbouring
    silences merged.
    """
    placed: list[PhoneSegment] = []
    cursor = 0.0
    for segment in segments:
        start = min(max(offset + scale * segment.start, 0.0), duration)
        end = min(max(offset + scale * segment.end, 0.0), duration)
        if start > cursor:
            placed.append(PhoneSegment(SILENCE, cursor, start))
        placed.append(PhoneSegment(segment.phone, max(start, cursor), end))
        cursor = max(cursor, end)
    placed.append(PhoneSegment(SILENCE, cursor, duration))
    result: list[PhoneSegment] = []
    for segment in placed:
        start, end = round(segment.start, _DECIMALS), round(segment.end, _DECIMALS)
        if end <= start:
            continue
        if result and segment.phone == SILENCE and result[-1].phone == SILENCE:
            result[-1] = PhoneSegment(SILENCE, result[-1].start, end)
        else:
            result.append(PhoneSegment(segment.phone, start, end))
    return tuple(result)


def format_alignment(utt_id: str, segments: Sequence[PhoneSegment]) -> str:
    """One line: the utterance id, then `phone start end` for each segment (seconds, 3 decimals)."""
    fields = [utt_id] + [f"{s.phone} {s.start:.{_DECIMALS}f} {s.end:.{_DECIMALS}f}" for s in segments]
    return " ".join(fields)


@dataclass(frozen=True)
class Alignment:
    """The phone segments of one utterance."""

    utt_id: str
    phones: tuple[PhoneSegment, ...]


def parse_alignment(line: str, where: str) -> Alignment:
    """Parse a line written by `format_alignment`; `where` (file:line) names it in errors."""
    fields = line.split()
    if len(fields) < 4 or (len(fields) - 1) % 3:
        raise CorpusError(
            f"{where}: expected 'UTTID phone start end ...', got {line[:80]!r}; rebuild the corpus"
        )
    segments = []
    for k in range(1, len(fields), 3):
        phone = fields[k]
        if phone not in PHONE_INDEX:
            raise CorpusError(f"{where}: unknown phone {phone!r}; rebuild the corpus with this version")
        try:
            segments.append(PhoneSegment(phone, float(fields[k + 1]), float(fields[k + 2])))
        except ValueError:
            raise CorpusError(
                f"{where}: bad time in {' '.join(fields[k : k + 3])!r}; rebuild the corpus"
            ) from None
    return Alignment(fields[0], tuple(segments))
