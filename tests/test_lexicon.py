"""PR labels of real LibriSpeech: transcripts read by eSpeak NG onto the corpus's phone set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from melhubert_lib.data import tasks
from melhubert_lib.data.corpus import SILENCE, read_librispeech
from melhubert_lib.data.corpus.espeak import ESpeak
from melhubert_lib.data.corpus.lexicon import read_words
from melhubert_lib.data.corpus.phones import phone_classes
from melhubert_lib.data.tasks import load_task
from melhubert_lib.data.workspace import open_workspace


def test_words_are_read_as_the_cmu_dictionary_writes_them_and_non_words_are_reported():
    lexicon = read_words(["Hello", "world", "1984", "o'brien's"])
    assert lexicon.phones["hello"] == ("hh", "ah", "l", "ow")  # CMUdict: HH AH0 L OW1
    assert lexicon.phones["world"] == ("w", "er", "l", "d")  # CMUdict: W ER1 L D
    assert lexicon.phones["o'brien's"][:3] == ("ow", "b", "r")
    assert set(lexicon.unreadable) == {"1984"} and "not a plain word" in lexicon.unreadable["1984"]
    assert lexicon.sequence("HELLO 1984 WORLD") == ["hh", "ah", "l", "ow", "w", "er", "l", "d"]


@pytest.mark.parametrize("text", ["the cat sat on the mat", "she hoped there would be stew for dinner"])
def test_reading_word_by_word_gives_the_phones_the_synthesiser_speaks(text):
    """Where no word changes its form in context, the lexicon's sequence is the one the corpus's alignments hold."""
    with ESpeak() as speaker:
        spoken = speaker.synthesize(text, "en-us", "m1", 175, 50, 50, seed=0).phonemes
    aligned = [c for event in spoken for c in phone_classes(event.mnemonic, "en-us") if c != SILENCE]
    assert read_words(text.split()).sequence(text) == aligned


def test_pr_reads_a_librispeech_folder_without_alignments_from_its_transcripts(smoke_ws, tmp_path, monkeypatch,
                                                                                capsys):
    root = tmp_path / "LibriSpeech"
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        shutil.copytree(smoke_ws.librispeech / split, root / split,
                        ignore=shutil.ignore_patterns("*.alignment.txt"))
    transcript = next((root / "dev-clean").rglob("*.trans.txt"))
    first, *rest = transcript.read_text().splitlines()
    transcript.write_text("\n".join([f"{first} 1984", *rest]) + "\n")  # a token eSpeak cannot read as a word
    real = open_workspace("smoke", tmp_path / "work", librispeech=root)
    task = load_task(real, "PR")
    report = capsys.readouterr().out
    assert "1 of" in report and "'1984'" in report
    assert "1984" in json.loads(next(real.cache.glob("lexicon-*.json")).read_text())["unreadable"]
    utts = {u.utt_id: u for u in read_librispeech(root, "dev-clean")}
    lexicon = read_words(w for u in utts.values() for w in u.transcript.split())
    for utt_id, labels in zip(task.splits["dev"].ids, task.splits["dev"].labels, strict=True):
        assert [task.vocabulary[i] for i in labels] == lexicon.sequence(utts[utt_id].transcript)
    assert all(task.splits[s].labels and all(task.splits[s].labels) for s in ("train", "dev", "test"))

    def refuse(*args, **kwargs):
        raise AssertionError("eSpeak read the words again instead of the cached lexicon")

    monkeypatch.setattr(tasks, "read_words", refuse)
    again = load_task(real, "PR")
    assert again.splits["test"].labels == task.splits["test"].labels


def test_the_synthetic_corpus_keeps_its_alignment_labels(smoke_ws, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an aligned corpus was read from its transcripts")

    monkeypatch.setattr(tasks, "read_words", refuse)
    task = load_task(smoke_ws, "PR")
    utt = read_librispeech(Path(smoke_ws.librispeech), "test-clean")[0]
    assert [task.vocabulary[i] for i in task.splits["test"].labels[0]] == [
        s.phone for s in utt.phones if s.phone != SILENCE]


def test_the_frame_level_phone_probe_says_why_it_skips_a_corpus_without_phone_times(smoke_ws, tmp_path):
    import numpy as np

    from melhubert_lib.data.tasks import NO_ALIGNMENT, frame_phone_labels, has_alignments

    root = tmp_path / "LibriSpeech"
    shutil.copytree(smoke_ws.librispeech / "dev-clean", root / "dev-clean",
                    ignore=shutil.ignore_patterns("*.alignment.txt"))
    utts = read_librispeech(root, "dev-clean")
    assert not has_alignments(utts) and has_alignments(read_librispeech(smoke_ws.librispeech, "dev-clean"))
    with pytest.raises(ValueError, match="no phone alignment. The corpus has no phone times"):
        frame_phone_labels(utts, np.full(len(utts), 10), 20)
    assert "skipped" in NO_ALIGNMENT
