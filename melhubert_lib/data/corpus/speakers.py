"""Synthetic speakers: stable identities built from an eSpeak accent and voice variant, prosody and a channel.

A speaker is a fixed combination of accent x voice variant x base pitch and pitch range x speaking
rate x speed factor (resampling, which moves pitch and formants together like a different vocal
tract length) x a channel colouring (a fixed random equaliser and band limits, like the speaker's
own microphone). Each utterance then varies around these values (see `render.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import CorpusError

# English accents that load in the espeakng-loader wheel ("en" is British English; "en-gb" does not load).
ACCENTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

# Human-sounding voice variants of espeak-ng-data/voices/!v (robotic, whispering and effect voices left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alex", "Alicia", "Andy", "Annie", "adam", "anika", "aunty", "belinda", "benjamin", "boris", "caleb",
    "david", "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "michel", "norbert", "paul",
    "quincy", "rob", "robert", "shelby", "steph", "travis", "victor", "zac",
)  # fmt: skip

RATE_RANGE = (130, 210)  # base speaking rate, words per minute
PITCH_RANGE = (15, 85)  # base eSpeak pitch (0-99)
INTONATION_RANGE = (20, 80)  # base eSpeak pitch range (0 = monotone)
SPEED_RANGE = (0.9, 1.1)  # base resampling speed factor
CHANNEL_BANDS = 8  # equaliser bands, log-spaced between 100 Hz and 7 kHz
CHANNEL_BAND_DB = 3.0  # standard deviation of each band's gain
LOWCUT_RANGE = (40.0, 300.0)  # Hz
HIGHCUT_RANGE = (3400.0, 8000.0)  # Hz (8000 = no cut at 16 kHz)


@dataclass(frozen=True)
class ChannelColour:
    """A speaker's fixed channel: band-limits plus smooth equaliser gains on a log-frequency grid."""

    lowcut_hz: float
    highcut_hz: float
    band_gains_db: tuple[float, ...]


@dataclass(frozen=True)
class SpeakerProfile:
    """One synthetic speaker; `index` is its position in the pool and names it in every layout."""

    index: int
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int
    speed: float
    channel: ChannelColour

    @property
    def librispeech_id(self) -> str:
        """Numeric speaker id, as in LibriSpeech."""
        return str(100 + self.index)

    @property
    def voxceleb_id(self) -> str:
        """`id1xxxx` speaker id, as in VoxCeleb1."""
        return f"id1{self.index + 1:04d}"

    def speech_commands_hash(self, seed: int) -> str:
        """Eight hex digits standing for the speaker, as in Speech Commands file names."""
        return hashlib.sha1(f"speaker-{seed}-{self.index}".encode()).hexdigest()[:8]


def make_speakers(n_speakers: int, seed: int) -> tuple[SpeakerProfile, ...]:
    """Draw `n_speakers` distinct speakers, deterministically from `seed`.

    Accent x variant pairs are dealt without repetition until all are used, so small pools get
    as many different voices as possible.
    """
    if not 1 <= n_speakers <= 9999:
        raise CorpusError(f"n_speakers={n_speakers} must be between 1 and 9999 (CorpusScale.n_speakers)")
    rng = np.random.default_rng([seed, 1])
    voices = [(accent, variant) for accent in ACCENTS for variant in VARIANTS]
    deck: list[int] = []
    speakers = []
    for index in range(n_speakers):
        if not deck:
            deck = list(rng.permutation(len(voices)))
        accent, variant = voices[deck.pop()]
        channel = ChannelColour(
            lowcut_hz=round(float(rng.uniform(*LOWCUT_RANGE)), 1),
            highcut_hz=round(float(rng.uniform(*HIGHCUT_RANGE)), 1),
            band_gains_db=tuple(round(float(g), 2) for g in rng.normal(0.0, CHANNEL_BAND_DB, CHANNEL_BANDS)),
        )
        speakers.append(
            SpeakerProfile(
                index=index,
                accent=accent,
                variant=variant,
                pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                pitch_range=int(rng.integers(INTONATION_RANGE[0], INTONATION_RANGE[1] + 1)),
                rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                speed=round(float(rng.uniform(*SPEED_RANGE)), 3),
                channel=channel,
            )
        )
    return tuple(speakers)
