"""The deterministic plan of a corpus: its speakers and every file to synthesise, derived from scale and seed.

Speakers: one pool of `n_speakers`. The LibriSpeech splits use disjoint parts of it (about
60/20/10/10 % for train-clean-360 (pretraining), train-clean-100, dev-clean and test-clean, at least
one speaker each); VoxCeleb1 and Speech Commands use the whole pool. Sentences are never reused, so
no utterance is shared between pretraining and the downstream sets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ...scales import CorpusScale
from .errors import CorpusError
from .render import SpeechJob
from .speakers import SpeakerProfile, make_speakers
from .text import SentenceGenerator

LIBRISPEECH = "LibriSpeech"
VOXCELEB = "VoxCeleb1"
SPEECH_COMMANDS = "speech_commands"

PRETRAIN_SPLIT = "train-clean-360"
LABELED_SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
SPEAKER_SHARES = {PRETRAIN_SPLIT: 0.6, "train-clean-100": 0.2, "dev-clean": 0.1, "test-clean": 0.1}
UTTERANCES_PER_CHAPTER = 25

VOXCELEB_SUBSETS = ("train", "dev", "test")
UTTERANCES_PER_VIDEO = (1, 4)  # range of utterances that share a VoxCeleb "video" id
_VIDEO_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "happy", "house", "tree", "wow", "zero")
KS_SUBSET_SHARES = {"validation": 0.1, "test": 0.1}  # of speakers and of each word's clips
CLIP_SECONDS = 1.0

# eSpeak speaks about 0.052 s per character of text at 175 words per minute; pauses add about 0.45 s.
_SECONDS_PER_CHARACTER = 0.052
_REFERENCE_RATE = 175
_MEAN_PAUSES_S = 0.45


@dataclass(frozen=True)
class CorpusPlan:
    """Speakers, which speakers each LibriSpeech split and Speech Commands subset uses, and all jobs."""

    speakers: tuple[SpeakerProfile, ...]
    librispeech_speakers: dict[str, tuple[int, ...]]
    speech_commands_speakers: dict[str, tuple[int, ...]]
    jobs: tuple[SpeechJob, ...]


def plan_corpus(scale: CorpusScale, seed: int) -> CorpusPlan:
    """Plan every file of the corpus for `scale` and `seed` (no audio is made here)."""
    if scale.n_speakers < 4:
        raise CorpusError(
            f"n_speakers={scale.n_speakers} is too small: the four LibriSpeech splits need disjoint "
            "speakers; use at least 4 (CorpusScale.n_speakers)"
        )
    for name, needed, given in (
        ("labeled_utts", LABELED_SPLITS, scale.labeled_utts),
        ("sid_utts_per_speaker", VOXCELEB_SUBSETS, scale.sid_utts_per_speaker),
    ):
        if not set(needed) <= set(given):
            raise CorpusError(f"CorpusScale.{name} needs the keys {sorted(needed)}; got {sorted(given)}")
    speakers = make_speakers(scale.n_speakers, seed)
    rng = np.random.default_rng([seed, 2])
    sentences = SentenceGenerator(np.random.default_rng([seed, 3]), scale.min_words, scale.max_words)
    librispeech_speakers = _split_speakers(speakers, rng)
    jobs = _librispeech_jobs(scale, speakers, librispeech_speakers, sentences, rng)
    jobs += _voxceleb_jobs(scale, speakers, sentences, rng)
    ks_speakers = _speech_commands_speakers(len(speakers), rng)
    jobs += _speech_commands_jobs(scale, speakers, ks_speakers, seed, rng)
    return CorpusPlan(speakers, librispeech_speakers, ks_speakers, tuple(jobs))


def _estimated_seconds(text: str, speaker: SpeakerProfile) -> float:
    """Rough duration of a sentence spoken by `speaker`, pauses included (used to meet pretrain_hours)."""
    speech = _SECONDS_PER_CHARACTER * len(text) * _REFERENCE_RATE / speaker.rate / speaker.speed
    return speech + _MEAN_PAUSES_S


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**63))


def _split_speakers(
    speakers: tuple[SpeakerProfile, ...], rng: np.random.Generator
) -> dict[str, tuple[int, ...]]:
    order = [int(i) for i in rng.permutation(len(speakers))]
    counts = {split: max(1, round(share * len(speakers))) for split, share in SPEAKER_SHARES.items()}
    counts[PRETRAIN_SPLIT] = len(speakers) - sum(n for split, n in counts.items() if split != PRETRAIN_SPLIT)
    split_speakers, start = {}, 0
    for split, count in counts.items():
        split_speakers[split] = tuple(sorted(order[start : start + count]))
        start += count
    return split_speakers


def _librispeech_jobs(
    scale: CorpusScale,
    speakers: tuple[SpeakerProfile, ...],
    split_speakers: dict[str, tuple[int, ...]],
    sentences: SentenceGenerator,
    rng: np.random.Generator,
) -> list[SpeechJob]:
    chapter_ids = iter(range(1000, 1_000_000))
    jobs = []
    for split, pool in split_speakers.items():
        texts: list[tuple[str, SpeakerProfile]] = []
        if split == PRETRAIN_SPLIT:
            seconds = 0.0
            while seconds < scale.pretrain_hours * 3600:
                speaker = speakers[pool[len(texts) % len(pool)]]
                texts.append((sentences.sentence(), speaker))
                seconds += _estimated_seconds(texts[-1][0], speaker)
        else:
            task = next(task for task, name in LABELED_SPLITS.items() if name == split)
            texts = [
                (sentences.sentence(), speakers[pool[k % len(pool)]]) for k in range(scale.labeled_utts[task])
            ]
        per_speaker: dict[int, list[str]] = {}
        for text, speaker in texts:
            per_speaker.setdefault(speaker.index, []).append(text)
        for index, speaker_texts in per_speaker.items():
            speaker = speakers[index]
            for first in range(0, len(speaker_texts), UTTERANCES_PER_CHAPTER):
                chapter = next(chapter_ids)
                for k, text in enumerate(speaker_texts[first : first + UTTERANCES_PER_CHAPTER]):
                    utt_id = f"{speaker.librispeech_id}-{chapter}-{k:04d}"
                    rel = f"{LIBRISPEECH}/{split}/{speaker.librispeech_id}/{chapter}/{utt_id}.flac"
                    jobs.append(SpeechJob(rel, text, speaker, _seed(rng), split))
    return jobs


def _voxceleb_jobs(
    scale: CorpusScale,
    speakers: tuple[SpeakerProfile, ...],
    sentences: SentenceGenerator,
    rng: np.random.Generator,
) -> list[SpeechJob]:
    jobs = []
    for speaker in speakers:
        subsets = [s for s in VOXCELEB_SUBSETS for _ in range(scale.sid_utts_per_speaker[s])]
        subsets = [subsets[i] for i in rng.permutation(len(subsets))]
        video, left_in_video, number = "", 0, 0
        for subset in subsets:
            if left_in_video == 0:
                video = "".join(_VIDEO_ID_CHARS[i] for i in rng.integers(len(_VIDEO_ID_CHARS), size=11))
                left_in_video = int(rng.integers(UTTERANCES_PER_VIDEO[0], UTTERANCES_PER_VIDEO[1] + 1))
                number = 0
            number += 1
            left_in_video -= 1
            rel = f"{VOXCELEB}/wav/{speaker.voxceleb_id}/{video}/{number:05d}.flac"
            jobs.append(SpeechJob(rel, sentences.sentence(), speaker, _seed(rng), subset))
    return jobs


def _speech_commands_speakers(n_speakers: int, rng: np.random.Generator) -> dict[str, tuple[int, ...]]:
    order = [int(i) for i in rng.permutation(n_speakers)]
    subsets, start = {}, 0
    for subset, share in KS_SUBSET_SHARES.items():
        count = max(1, round(share * n_speakers))
        subsets[subset] = tuple(sorted(order[start : start + count]))
        start += count
    subsets["train"] = tuple(sorted(order[start:]))
    return subsets


def clip_subsets(n_clips: int, rng: np.random.Generator, test_clips: int | None = None) -> list[str]:
    """Subsets for the clips of one class: about 10 % of `n_clips` validation and 10 % test (one each if n >= 3),
    the rest train; `test_clips` (if given) replaces the test count, leaving train and validation as they were."""
    counts = {
        s: max(1, round(share * n_clips)) if n_clips >= 3 else 0 for s, share in KS_SUBSET_SHARES.items()
    }
    n_train = n_clips - sum(counts.values())
    if test_clips is not None:
        counts["test"] = test_clips
    subsets = [s for s, n in counts.items() for _ in range(n)] + ["train"] * n_train
    return [subsets[i] for i in rng.permutation(len(subsets))]


def _speech_commands_jobs(
    scale: CorpusScale,
    speakers: tuple[SpeakerProfile, ...],
    subset_speakers: dict[str, tuple[int, ...]],
    seed: int,
    rng: np.random.Generator,
) -> list[SpeechJob]:
    jobs = []
    takes: Counter[tuple[str, int]] = Counter()
    cursor: Counter[str] = Counter()
    for word in KEYWORDS + UNKNOWN_WORDS:
        for subset in clip_subsets(scale.ks_per_keyword, rng, scale.ks_test_per_keyword):
            pool = subset_speakers[subset]
            speaker = speakers[pool[cursor[subset] % len(pool)]]
            cursor[subset] += 1
            take = takes[word, speaker.index]
            takes[word, speaker.index] += 1
            rel = f"{SPEECH_COMMANDS}/{word}/{speaker.speech_commands_hash(seed)}_nohash_{take}.flac"
            jobs.append(SpeechJob(rel, word, speaker, _seed(rng), subset, clip_seconds=CLIP_SECONDS))
    return jobs
