"""Phone sequences of real LibriSpeech transcripts, read by eSpeak NG (SUPERB's PR needs sequences, not times).

Each distinct word of a split is read once by eSpeak NG in General American (`en-us`: LibriSpeech is read mostly
by American speakers) and mapped onto the corpus's 39 phones with the synthetic corpus's own mapping
(`phones.phone_classes`). A word eSpeak reads with a phoneme the mapping lacks, or a token that is no plain word
(digits, symbols), is reported in the result, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import CorpusError
from .espeak import ESpeak
from .phones import SILENCE, phone_classes

ACCENT = "en-us"
PLAIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]*)*")


@dataclass
class Lexicon:
    """Phones of every word read so far, and the words that could not be read (with the reason)."""

    phones: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    def sequence(self, transcript: str) -> list[str]:
        """The phones of a transcript whose words are all in the lexicon (unreadable words contribute none)."""
        return [p for word in transcript.lower().split() for p in self.phones.get(word, ())]


def read_words(words: Iterable[str], lexicon: Lexicon | None = None) -> Lexicon:
    """Add the phones of every new word (lower-cased) to `lexicon`, reading them with one eSpeak engine."""
    lexicon = lexicon or Lexicon()
    new = sorted({w.lower() for w in words} - lexicon.phones.keys() - lexicon.unreadable.keys())
    if not new:
        return lexicon
    with ESpeak() as speaker:
        for word in new:
            if not PLAIN_WORD.fullmatch(word):
                lexicon.unreadable[word] = "not a plain word (letters and apostrophes only)"
                continue
            try:
                classes = [c for m in speaker.phonemes(word, ACCENT) for c in phone_classes(m, ACCENT)]
            except CorpusError as err:
                lexicon.unreadable[word] = str(err).split(";")[0]
                continue
            lexicon.phones[word] = tuple(c for c in classes if c != SILENCE)
    return lexicon
