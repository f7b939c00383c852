"""Render one utterance: eSpeak, speed change, channel, pauses, room, noise and level; write the FLAC.

Every random choice comes from the job's own seed, eSpeak's breath noise included, so a job renders the same way
whichever process runs it and in whatever order (see `espeak.py`).
Per-utterance variation around the speaker's identity: speaking rate, pitch, pitch range, speed
factor and equaliser gains are jittered, and each utterance gets its own pauses, room, noise and level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from ..audio import SAMPLE_RATE, save_audio
from .alignment import event_segments, place_segments
from .augment import add_noise, apply_channel, draw_conditions, reverberate, set_level
from .espeak import PITCH_LIMITS, RATE_LIMITS, SEED_LIMITS, ESpeak
from .phones import SILENCE
from .records import PhoneSegment
from .speakers import SpeakerProfile

RATE_JITTER = 0.1  # standard deviation of log speaking rate
PITCH_JITTER = 6.0  # standard deviation of eSpeak pitch (0-99 scale)
INTONATION_JITTER = 10.0  # standard deviation of eSpeak pitch range
SPEED_JITTER = 0.02  # standard deviation of log speed factor
CHANNEL_JITTER_DB = 4.0  # standard deviation added to each equaliser band (session channel)
PAUSE_RANGE_S = (0.05, 0.4)  # silence before and after a sentence
RESAMPLE_GRID_HZ = 50  # speed factors are quantised so that 22050 Hz -> target rate is a cheap ratio


@dataclass(frozen=True)
class SpeechJob:
    """One file to synthesise: `rel_path` (POSIX, relative to the corpus root) and how to speak it."""

    rel_path: str
    text: str
    speaker: SpeakerProfile
    seed: int
    subset: str  # the split or subset the file belongs to, for the layout's index files
    clip_seconds: float | None = None  # fixed-length clip (Speech Commands); None: sentence with pauses


@dataclass(frozen=True)
class RenderedSpeech:
    """What was written for a job: its duration and phone alignment."""

    rel_path: str
    duration: float
    phones: tuple[PhoneSegment, ...]


def render(job: SpeechJob, root: Path) -> RenderedSpeech:
    """Synthesise `job` and write it as 16 kHz FLAC under `root`."""
    rng = np.random.default_rng(job.seed)
    speaker = job.speaker
    rate = _round_clamped(speaker.rate * math.exp(rng.normal(0.0, RATE_JITTER)), RATE_LIMITS)
    pitch = _round_clamped(speaker.pitch + rng.normal(0.0, PITCH_JITTER), PITCH_LIMITS)
    pitch_range = _round_clamped(speaker.pitch_range + rng.normal(0.0, INTONATION_JITTER), PITCH_LIMITS)
    with ESpeak() as engine:  # a fresh library per job: its audio depends on nothing else
        synthesis = engine.synthesize(job.text, speaker.accent, speaker.variant, rate, pitch, pitch_range,
                                       seed=job.seed % (SEED_LIMITS[1] + 1))

    speed = speaker.speed * math.exp(rng.normal(0.0, SPEED_JITTER))
    target_rate = RESAMPLE_GRID_HZ * round(SAMPLE_RATE / speed / RESAMPLE_GRID_HZ)
    divisor = math.gcd(target_rate, synthesis.sample_rate)
    speech = resample_poly(synthesis.wav, target_rate // divisor, synthesis.sample_rate // divisor)
    scale = target_rate / SAMPLE_RATE  # seconds of output per second of eSpeak audio
    bands = len(speaker.channel.band_gains_db)
    speech = apply_channel(
        speech.astype(np.float32), speaker.channel, rng.normal(0.0, CHANNEL_JITTER_DB, bands)
    )
    segments = event_segments(synthesis.phonemes, speaker.accent, len(synthesis.wav) / synthesis.sample_rate)

    if job.clip_seconds is None:
        placed = _place_sentence(speech, rng)
    else:
        placed = _place_word(speech, segments, scale, job.clip_seconds, rng)
    wav, active = placed.wav, placed.active

    conditions = draw_conditions(rng)
    if conditions.rt60_s is not None:
        wav = reverberate(wav, conditions.rt60_s, conditions.direct_to_reverb_db, rng)
    wav = add_noise(wav, active, conditions.noise_colour, conditions.snr_db, rng)
    wav = set_level(wav, active, conditions.level_dbfs)
    path = root / job.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, wav)
    duration = len(wav) / SAMPLE_RATE
    return RenderedSpeech(job.rel_path, duration, place_segments(segments, placed.offset, scale, duration))


@dataclass(frozen=True)
class _Placement:
    """Speech placed in its file: the audio, where the speech is, and the file time of eSpeak's time 0."""

    wav: np.ndarray
    active: slice
    offset: float


def _place_sentence(speech: np.ndarray, rng: np.random.Generator) -> _Placement:
    """Surround the whole of eSpeak's output with random pauses."""
    lead, trail = (int(rng.uniform(*PAUSE_RANGE_S) * SAMPLE_RATE) for _ in range(2))
    wav = np.zeros(lead + len(speech) + trail, dtype=np.float32)
    wav[lead : lead + len(speech)] = speech
    return _Placement(wav, slice(lead, lead + len(speech)), lead / SAMPLE_RATE)


def _place_word(
    speech: np.ndarray, segments: list[PhoneSegment], scale: float, seconds: float, rng: np.random.Generator
) -> _Placement:
    """Cut the spoken part (first to last non-silent phone) and put it at a random place in the clip."""
    spoken = [s for s in segments if s.phone != SILENCE] or segments
    first = int(spoken[0].start * scale * SAMPLE_RATE)
    last = min(math.ceil(spoken[-1].end * scale * SAMPLE_RATE), len(speech))
    n_clip = round(seconds * SAMPLE_RATE)
    words = speech[first:last][:n_clip]
    place = int(rng.integers(0, n_clip - len(words) + 1))
    wav = np.zeros(n_clip, dtype=np.float32)
    wav[place : place + len(words)] = words
    return _Placement(wav, slice(place, place + len(words)), (place - first) / SAMPLE_RATE)


def _round_clamped(value: float, limits: tuple[int, int]) -> int:
    return int(min(max(round(value), limits[0]), limits[1]))
