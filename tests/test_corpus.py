"""Tests of the synthetic corpus: layouts, alignments, speaker splits, rebuilds, crash safety and readers."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from melhubert_lib.data.audio import SAMPLE_RATE, load_audio, save_audio
from melhubert_lib.data.corpus import (
    KEYWORDS,
    PHONES,
    SILENCE,
    SILENCE_LABEL,
    UNKNOWN_LABEL,
    CorpusError,
    build_corpus,
    librispeech_root,
    phone_classes,
    read_librispeech,
    read_speech_commands,
    read_voxceleb1,
)
from melhubert_lib.data.corpus import build as build_module
from melhubert_lib.data.corpus import espeak as espeak_module
from melhubert_lib.data.corpus.alignment import event_segments
from melhubert_lib.data.corpus.espeak import ESpeak
from melhubert_lib.data.corpus.phones import ACCENT_OVERRIDES, DEFAULT_MAPPING
from melhubert_lib.data.corpus.plan import KEYWORDS as PLANNED_KEYWORDS
from melhubert_lib.data.corpus.plan import clip_subsets, plan_corpus
from melhubert_lib.data.corpus.records import LabeledClip
from melhubert_lib.data.corpus.speakers import ACCENTS, VARIANTS, SpeakerProfile
from melhubert_lib.data.corpus.text import SentenceGenerator, default_vocabulary
from melhubert_lib.data.corpus_stats import speaker_pitch
from melhubert_lib.scales import get_scale

SCALE = get_scale("smoke").corpus
LIBRISPEECH_SPLITS = ("train-clean-360", "train-clean-100", "dev-clean", "test-clean")
SEED = 3


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "synthetic"
    build_corpus(root, SCALE, seed=SEED, workers=2)
    return root


def test_layout_files_exist(corpus_root: Path) -> None:
    for split in LIBRISPEECH_SPLITS:
        chapters = sorted((corpus_root / "LibriSpeech" / split).glob("*/*"))
        assert chapters, split
        for chapter in chapters:
            prefix = f"{chapter.parent.name}-{chapter.name}"
            assert (chapter / f"{prefix}.trans.txt").is_file()
            assert (chapter / f"{prefix}.alignment.txt").is_file()
            assert sorted(chapter.glob(f"{prefix}-[0-9][0-9][0-9][0-9].flac"))
    commands = corpus_root / "speech_commands"
    assert (commands / "validation_list.txt").is_file() and (commands / "testing_list.txt").is_file()
    assert len(list((commands / "_background_noise_").glob("*.flac"))) >= 3
    assert (corpus_root / "VoxCeleb1" / "iden_split.txt").is_file()
    vox_files = list(
        (corpus_root / "VoxCeleb1" / "wav").glob("id1[0-9][0-9][0-9][0-9]/*/[0-9][0-9][0-9][0-9][0-9].flac")
    )
    assert len(vox_files) == SCALE.n_speakers * sum(SCALE.sid_utts_per_speaker.values())
    assert (corpus_root / "corpus.json").is_file() and (corpus_root / "speakers.json").is_file()
    for path in [*vox_files[:5], *sorted(commands.glob("yes/*.flac"))[:5]]:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "FLAC")


@pytest.mark.parametrize("split", LIBRISPEECH_SPLITS)
def test_alignments_tile_the_audio(corpus_root: Path, split: str) -> None:
    utterances = read_librispeech(corpus_root / "LibriSpeech", split)
    assert utterances
    for utt in utterances:
        assert utt.phones is not None
        duration = sf.info(str(utt.path)).frames / SAMPLE_RATE
        assert utt.phones[0].start == 0.0
        assert abs(utt.phones[-1].end - duration) <= 0.001, utt.utt_id
        for before, after in zip(utt.phones, utt.phones[1:], strict=False):
            assert before.end == after.start, utt.utt_id
        assert all(seg.end > seg.start for seg in utt.phones)
        assert {seg.phone for seg in utt.phones} <= set(PHONES)
        assert sum(seg.phone != SILENCE for seg in utt.phones) >= len(utt.transcript.split())
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", utt.transcript), utt.transcript


def test_phone_segments_match_the_audio(corpus_root: Path) -> None:
    """Speech segments are louder than silence segments: the labels line up with the sound."""
    ratios = []
    for utt in read_librispeech(corpus_root / "LibriSpeech", "train-clean-100"):
        wav = load_audio(utt.path)
        energy = {SILENCE: [], "speech": []}
        for seg in utt.phones:
            samples = wav[int(seg.start * SAMPLE_RATE) : int(seg.end * SAMPLE_RATE)]
            energy[SILENCE if seg.phone == SILENCE else "speech"].append(samples**2)
        ratios.append(np.mean(np.concatenate(energy["speech"])) / np.mean(np.concatenate(energy[SILENCE])))
    assert np.median(ratios) > 2.0


def test_librispeech_speakers_and_sentences_are_disjoint(corpus_root: Path) -> None:
    speakers = {
        s: {u.speaker for u in read_librispeech(corpus_root / "LibriSpeech", s)} for s in LIBRISPEECH_SPLITS
    }
    texts = {
        s: {u.transcript for u in read_librispeech(corpus_root / "LibriSpeech", s)}
        for s in LIBRISPEECH_SPLITS
    }
    for i, first in enumerate(LIBRISPEECH_SPLITS):
        assert speakers[first]
        for second in LIBRISPEECH_SPLITS[i + 1 :]:
            assert not speakers[first] & speakers[second], (first, second)
            assert not texts[first] & texts[second], (first, second)
    assert sum(len(s) for s in speakers.values()) == SCALE.n_speakers


def test_split_sizes_follow_the_scale(corpus_root: Path) -> None:
    for task, split in (("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean")):
        assert len(read_librispeech(corpus_root / "LibriSpeech", split)) == SCALE.labeled_utts[task]
    info = build_corpus(corpus_root, SCALE, seed=SEED)
    pretrain_hours = info.hours["LibriSpeech/train-clean-360"]
    assert 0.7 * SCALE.pretrain_hours < pretrain_hours < 1.4 * SCALE.pretrain_hours
    assert info.n_speakers == SCALE.n_speakers and info.n_phones == len(PHONES)
    assert info.n_files == len(list(corpus_root.rglob("*.flac")))


def test_rebuild_with_same_settings_is_a_no_op(corpus_root: Path) -> None:
    marker = corpus_root / "corpus.json"
    audio = next((corpus_root / "LibriSpeech" / "dev-clean").rglob("*.flac"))
    before = (marker.stat().st_mtime_ns, audio.stat().st_mtime_ns)
    info = build_corpus(corpus_root, SCALE, seed=SEED)
    assert (marker.stat().st_mtime_ns, audio.stat().st_mtime_ns) == before
    assert info.root == corpus_root


def test_rebuild_with_other_settings_raises(corpus_root: Path) -> None:
    with pytest.raises(CorpusError, match=re.escape(str(corpus_root))):
        build_corpus(corpus_root, SCALE, seed=SEED + 1)
    with pytest.raises(CorpusError, match="choose another root"):
        build_corpus(corpus_root, replace(SCALE, ks_per_keyword=5), seed=SEED)


def test_non_corpus_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("keep me")
    with pytest.raises(CorpusError, match=re.escape(str(tmp_path))):
        build_corpus(tmp_path, SCALE, seed=SEED)
    assert (tmp_path / "data.txt").read_text() == "keep me"


def test_interrupted_build_leaves_nothing_and_rebuild_is_deterministic(
    corpus_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "again"
    real_render = build_module.render
    calls = []

    def crash_after_some_files(job, root):
        calls.append(job)
        if len(calls) > 20:
            raise RuntimeError("simulated crash")
        return real_render(job, root)

    monkeypatch.setattr(build_module, "render", crash_after_some_files)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_corpus(root, SCALE, seed=SEED, workers=1)
    assert not root.exists()
    assert not list(tmp_path.glob(".again.partial-*"))
    monkeypatch.undo()

    abandoned = tmp_path / ".again.partial-4194305-0123456789ab"  # above Linux's largest pid: cannot be alive
    abandoned.mkdir()
    running = tmp_path / f".again.partial-{os.getpid()}-0123456789ab"  # a build of a live process: kept
    running.mkdir()
    build_corpus(root, SCALE, seed=SEED, workers=1)
    assert (root / "corpus.json").is_file()
    assert not abandoned.exists() and running.exists()
    # every file, audio included, is byte-identical to the fixture's build, made by 2 worker processes
    assert _file_hashes(root) == _file_hashes(corpus_root)


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_job_sounds_the_same_whatever_was_synthesised_before() -> None:
    jobs = plan_corpus(SCALE, SEED).jobs
    first, other = jobs[0], next(j for j in jobs if j.speaker.variant != jobs[0].speaker.variant)
    # f2 has breath noise, drawn from eSpeak's own random generator (the next test pins both generators' seeding)
    breathy = replace(first.speaker, variant="f2")

    def speak(text: str, s: SpeakerProfile, seed: int) -> bytes:
        with ESpeak() as engine:
            return engine.synthesize(text, s.accent, s.variant, s.rate, s.pitch, s.pitch_range, seed=seed).wav.tobytes()

    for speaker in (first.speaker, breathy):
        alone = speak(first.text, speaker, 1)
        speak(other.text, other.speaker, 2)
        assert speak(first.text, speaker, 1) == alone and speak(first.text, speaker, 1) == alone
    assert speak(first.text, breathy, 2) != speak(first.text, breathy, 1)  # the seed reaches the breath noise
    with pytest.raises(CorpusError, match="seed"):
        speak(first.text, breathy, -1)


class _EspeakSeedFixed:
    """The eSpeak library with its own random generator always seeded with 0 (every other call passed through)."""

    def __init__(self, lib) -> None:
        self._lib = lib

    def __getattr__(self, name: str):
        return getattr(self._lib, name)

    def espeak_ng_SetRandSeed(self, seed: int) -> None:
        self._lib.espeak_ng_SetRandSeed(0)


class _LibcSeedFixed:
    """The C library with rand() always seeded with 0."""

    def __init__(self, libc) -> None:
        self._libc = libc

    def srand(self, seed: int) -> None:
        self._libc.srand(0)


@pytest.mark.parametrize(("generator", "variant"), [("espeak", "f2"), ("libc", "caleb")])
def test_each_generator_of_the_breath_noise_takes_the_seed(monkeypatch, generator: str, variant: str) -> None:
    # f2 draws its breath noise from eSpeak's own generator, caleb from the C library's rand(): with the other
    # generator's seed held fixed, the seed must still change the audio, so neither seeding can be dropped
    job = plan_corpus(SCALE, SEED).jobs[0]
    voice = replace(job.speaker, variant=variant)
    if generator == "espeak":
        monkeypatch.setattr(espeak_module, "_LIBC", _LibcSeedFixed(espeak_module._LIBC))

    def speak(seed: int) -> bytes:
        with ESpeak() as engine:
            lib = engine._lib
            if generator == "libc":
                engine._lib = _EspeakSeedFixed(lib)
            try:
                return engine.synthesize(job.text, voice.accent, voice.variant, voice.rate, voice.pitch,
                                         voice.pitch_range, seed=seed).wav.tobytes()
            finally:
                engine._lib = lib

    assert speak(1) == speak(1)
    assert speak(1) != speak(2)


def test_librispeech_reader_errors_name_the_path(corpus_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CorpusError, match=re.escape(str(missing))):
        read_librispeech(missing, "dev-clean")
    with pytest.raises(CorpusError, match=re.escape(str(corpus_root / "dev-clean"))):
        read_librispeech(corpus_root, "dev-clean")  # the corpus root, not its LibriSpeech folder
    flat = tmp_path / "flat" / "dev-clean"
    flat.mkdir(parents=True)
    shutil.copy(next((corpus_root / "LibriSpeech" / "dev-clean").rglob("*.flac")), flat)
    with pytest.raises(CorpusError, match=re.escape(str(flat))):
        read_librispeech(flat.parent, "dev-clean")


def test_a_split_folder_passed_as_the_librispeech_root_is_named_with_its_parent(corpus_root: Path) -> None:
    split = corpus_root / "LibriSpeech" / "dev-clean"
    parent = re.escape(str(split.parent))
    expected = f"{re.escape(str(split))}: this looks like one split folder.*pass its parent, {parent}"
    with pytest.raises(CorpusError, match=expected):
        read_librispeech(split, "dev-clean")
    assert librispeech_root(split.parent) == split.parent


def test_librispeech_reader_serves_real_layout_without_alignments(corpus_root: Path, tmp_path: Path) -> None:
    chapter = next((corpus_root / "LibriSpeech" / "dev-clean").glob("*/*"))
    real_chapter = tmp_path / "LibriSpeech" / "dev-clean" / chapter.parent.name / chapter.name
    real_chapter.mkdir(parents=True)
    for path in chapter.iterdir():
        if not path.name.endswith(".alignment.txt"):
            shutil.copy(path, real_chapter)
    utterances = read_librispeech(tmp_path / "LibriSpeech", "dev-clean")
    synthetic = [
        u for u in read_librispeech(corpus_root / "LibriSpeech", "dev-clean") if u.path.parent == chapter
    ]
    assert [u.utt_id for u in utterances] == [u.utt_id for u in synthetic]
    assert [u.transcript for u in utterances] == [u.transcript for u in synthetic]
    assert all(u.phones is None for u in utterances)


def test_speech_commands_lists_and_classes(corpus_root: Path) -> None:
    root = corpus_root / "speech_commands"
    subsets = {name: read_speech_commands(root, name) for name in ("train", "validation", "test")}
    expected = set(KEYWORDS) | {UNKNOWN_LABEL, SILENCE_LABEL}
    for clips in subsets.values():
        assert {clip.label for clip in clips} == expected
    paths = [clip.path for clips in subsets.values() for clip in clips]
    assert len(paths) == len(set(paths))
    words = Counter(p.parent.name for p in paths)
    assert set(words.values()) == {SCALE.ks_per_keyword}
    assert words[SILENCE_LABEL] == SCALE.ks_per_keyword
    speakers = {
        name: {c.path.name.split("_nohash_")[0] for c in clips if c.label != SILENCE_LABEL}
        for name, clips in subsets.items()
    }
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["validation"] & speakers["test"]
    for clip in subsets["test"]:
        assert len(load_audio(clip.path)) == SAMPLE_RATE


def test_voxceleb_split_counts_match_the_scale(corpus_root: Path) -> None:
    for subset, per_speaker in SCALE.sid_utts_per_speaker.items():
        clips = read_voxceleb1(corpus_root / "VoxCeleb1", subset)
        counts = Counter(clip.label for clip in clips)
        assert len(counts) == SCALE.n_speakers
        assert set(counts.values()) == {per_speaker}
        assert all(clip.path.parts[-3] == clip.label for clip in clips)


def test_other_readers_reject_missing_and_wrong_roots(corpus_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for reader, subset in ((read_speech_commands, "train"), (read_voxceleb1, "train")):
        with pytest.raises(CorpusError, match=re.escape(str(missing))):
            reader(missing, subset)
        with pytest.raises(CorpusError, match=re.escape(str(corpus_root / "LibriSpeech"))):
            reader(corpus_root / "LibriSpeech", subset)
    with pytest.raises(CorpusError, match="subset"):
        read_voxceleb1(corpus_root / "VoxCeleb1", "validation")
    with pytest.raises(CorpusError, match="subset"):
        read_speech_commands(corpus_root / "speech_commands", "dev")


def test_phone_mapping_covers_a_fixed_set() -> None:
    assert PHONES[0] == SILENCE and len(set(PHONES)) == len(PHONES)
    tables = [DEFAULT_MAPPING, *ACCENT_OVERRIDES.values()]
    assert {phone for table in tables for classes in table.values() for phone in classes} <= set(PHONES)
    assert phone_classes("'aI", "en-us") == phone_classes("aI", "en-us") == ("ay",)
    assert phone_classes("aI", "en-gb-x-gbcwmd") == ("oy",)
    with pytest.raises(CorpusError, match="phones.py"):
        phone_classes("#unknown#", "en-us")


def test_every_listed_voice_loads_and_a_bad_one_is_refused() -> None:
    with ESpeak() as engine:
        for accent in ACCENTS:
            for variant in VARIANTS:
                engine.set_voice(accent, variant)
        with pytest.raises(CorpusError, match="did not load"):
            engine.set_voice("en-us", "no-such-variant")
        with pytest.raises(CorpusError, match="did not load"):
            engine.set_voice("en-gb", "m1")
        with pytest.raises(CorpusError, match="already open"):
            ESpeak()


def test_synthesised_phonemes_all_map_for_every_accent() -> None:
    text = SentenceGenerator(np.random.default_rng(0), 12, 16).sentence()
    for accent in ACCENTS:
        with ESpeak() as engine:
            synthesis = engine.synthesize(text, accent, "m1", 175, 50, 50, seed=0)
        segments = event_segments(synthesis.phonemes, accent, len(synthesis.wav) / synthesis.sample_rate)
        assert sum(seg.phone != SILENCE for seg in segments) > len(text.split())
        assert {seg.phone for seg in segments} <= set(PHONES)


def test_sentence_generator_is_seeded_grammatical_text() -> None:
    vocabulary = default_vocabulary()
    assert len(vocabulary.nouns) + len(vocabulary.verbs) + len(vocabulary.adjectives) > 3000
    generator = SentenceGenerator(np.random.default_rng(7), 3, 8, vocabulary)
    sentences = [generator.sentence() for _ in range(300)]
    assert SentenceGenerator(np.random.default_rng(7), 3, 8, vocabulary).sentence() == sentences[0]
    assert SentenceGenerator(np.random.default_rng(8), 3, 8, vocabulary).sentence() != sentences[0]
    assert len(set(sentences)) == len(sentences)
    words = vocabulary.words()
    for sentence in sentences:
        tokens = sentence.split()
        assert 3 <= len(tokens) <= 8
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", sentence)
        assert set(tokens) <= words
    counts = Counter(token for sentence in sentences for token in sentence.split())
    assert counts["the"] > 10  # function words recur, as in real text


def test_a_larger_keyword_test_set_leaves_training_and_validation_clips_as_they_were() -> None:
    assert Counter(clip_subsets(120, np.random.default_rng(0))) == {"train": 96, "validation": 12, "test": 12}
    assert Counter(clip_subsets(120, np.random.default_rng(0), 48)) == {"train": 96, "validation": 12, "test": 48}
    # the Speech Commands split is unchanged where no test size is given
    assert clip_subsets(120, np.random.default_rng(0), None) == clip_subsets(120, np.random.default_rng(0))
    jobs = plan_corpus(replace(SCALE, ks_per_keyword=10, ks_test_per_keyword=5), SEED).jobs
    per_word = Counter((j.text, j.subset) for j in jobs if j.rel_path.startswith("speech_commands/"))
    assert {per_word[w, "test"] for w in PLANNED_KEYWORDS} == {5}
    assert {per_word[w, "train"] for w in PLANNED_KEYWORDS} == {8}


def test_a_setting_left_at_none_is_not_part_of_a_corpus_identity():
    plain = build_module.corpus_settings(SCALE, SEED)["corpus"]
    assert "ks_test_per_keyword" not in plain  # a corpus built before the setting existed still matches
    larger = build_module.corpus_settings(replace(SCALE, ks_test_per_keyword=48), SEED)["corpus"]
    assert larger == {**plain, "ks_test_per_keyword": 48}


def test_speaker_pitch_finds_a_tones_frequency_and_restores_the_thread_count(tmp_path):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    clips = []
    for name, hz in (("low", 120.0), ("high", 220.0)):
        save_audio(tmp_path / f"{name}.flac", 0.5 * np.sin(2 * np.pi * hz * t))
        clips.append(LabeledClip(tmp_path / f"{name}.flac", name))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1, which the detector runs on, so a missing restore shows
    try:
        pitch = speaker_pitch(clips).set_index("speaker").pitch_hz
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert pitch["low"] == pytest.approx(120.0, rel=0.05) and pitch["high"] == pytest.approx(220.0, rel=0.05)
