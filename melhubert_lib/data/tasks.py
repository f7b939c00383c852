"""The downstream tasks of the SUPERB protocol: which corpus each reads, its labels and its metric.

PR (phoneme recognition, CTC over the phone set, PER) and ASR (characters, CTC, WER) read the
LibriSpeech-layout labeled splits (PR's phones come from the alignments of the synthetic corpus, or, on real
LibriSpeech, which has none, from the transcripts read by eSpeak NG: `data/corpus/lexicon.py`); SID (speaker
identification, accuracy) reads VoxCeleb1; KS (keyword spotting with unknown and silence classes, accuracy)
reads Speech Commands. PC (frame-level phone classification, s3prl's `phone_linear`, accuracy) reads the same
splits as PR and needs phone times: the baseline's learning check, not a SUPERB task.
"""

from __future__ import annotations

import importlib.metadata
import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import corpus
from .atomic import write_json_atomic
from .corpus import LABELED_SPLITS, PHONES, SILENCE, CorpusError, Utterance
from .corpus import espeak as espeak_module
from .corpus import lexicon as lexicon_module
from .corpus import phones as phones_module
from .corpus.lexicon import Lexicon, read_words
from .frames import FrameStore
from .provenance import code_version, fingerprint
from .workspace import Workspace, model_inputs, split_utterances

SPLITS = ("train", "dev", "test")
SPEECH_COMMANDS_SUBSETS = {"train": "train", "dev": "validation", "test": "test"}
ASR_CHARACTERS = tuple(string.ascii_lowercase + "' ")  # space separates words
NO_ALIGNMENT = ("The corpus has no phone times (real LibriSpeech has transcripts only), so the frame-level phone "
                "probe and the clusters' phone purity are skipped; PR, which needs phone sequences only, reads them "
                "from the transcripts.")


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its features (frame sequences, or pooled utterances), its labels (a sequence, a class per
    frame or a class per utterance), its metric and its corpus."""

    name: str
    # "sequence": CTC over frame features; "frame": one class per frame; "utterance": one class from mean-pooled
    # features
    kind: str
    metric: str
    lower_is_better: bool
    source: str  # corpus layout the task reads: "librispeech", "voxceleb1" or "speech_commands"
    description: str
    selection: str = ""  # dev metric that picks the epoch when not `metric` (ASR: CER, as WER sits near 1)

    @property
    def select_metric(self) -> str:
        """The dev metric that selects the probe's epoch."""
        return self.selection or self.metric

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the task reports: its own, then the selection metric if another (ASR: WER, CER)."""
        return (self.metric, self.selection) if self.selection else (self.metric,)


TASKS: dict[str, TaskSpec] = {
    "PR": TaskSpec("PR", "sequence", "PER", True, "librispeech", "phoneme recognition, linear CTC head"),
    "SID": TaskSpec("SID", "utterance", "accuracy", False, "voxceleb1", "speaker identification, mean pool + linear"),
    "KS": TaskSpec("KS", "utterance", "accuracy", False, "speech_commands",
                   "keyword spotting (+ unknown, silence), mean pool + linear"),
    "ASR": TaskSpec("ASR", "sequence", "WER", True, "librispeech", "characters, BiLSTM CTC, greedy decoding",
                    selection="CER"),
    "PC": TaskSpec("PC", "frame", "accuracy", False, "librispeech",
                   "frame-level phone classification (s3prl's phone_linear), linear head on every frame"),
}


@dataclass
class TaskSplit:
    """One split of a task: audio files, their ids and labels (token sequences or class indices)."""

    ids: list[str]
    paths: list[Path]
    labels: list[list[int]] | list[int] | list[np.ndarray]  # sequence, utterance, frame tasks (one class a frame)


@dataclass
class TaskData:
    """A task's specification, its label vocabulary and its train/dev/test splits."""

    spec: TaskSpec
    # sequence tasks: tokens (index 0 is the CTC blank); frame and utterance tasks: classes
    vocabulary: list[str]
    splits: dict[str, TaskSplit]

    def cache_name(self, split: str) -> str:
        """Name under which the split's frames are cached (tasks reading the same audio share it)."""
        return f"{self.spec.source}-{split}"


def get_task(name: str) -> TaskSpec:
    """The task called `name`, or a ValueError naming the choices."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (parameter 'tasks'): choose from {', '.join(TASKS)}")
    return TASKS[name]


def load_task(ws: Workspace, name: str) -> TaskData:
    """Read the three splits of task `name` from the workspace's corpora."""
    spec = get_task(name)
    if spec.source == "librispeech":
        return _librispeech_task(ws, spec)
    root = ws.voxceleb1 if spec.source == "voxceleb1" else ws.speech_commands
    if root is None:
        raise CorpusError(f"task {name} needs a {spec.source} folder: pass {spec.source}=<path> to open_workspace "
                          "(or use the synthetic corpus, which has one)")
    if spec.source == "voxceleb1":
        clips = {s: corpus.read_voxceleb1(root, s) for s in SPLITS}
    else:
        clips = {s: corpus.read_speech_commands(root, SPEECH_COMMANDS_SUBSETS[s]) for s in SPLITS}
    classes = sorted({c.label for c in clips["train"]})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for s, items in clips.items():
        unseen = sorted({c.label for c in items} - index.keys())
        if unseen:
            raise CorpusError(f"{root}: {s} split of task {name} has classes absent from its train split: "
                              f"{', '.join(unseen[:5])}")
        ids = [str(c.path.relative_to(root)) for c in items]
        splits[s] = TaskSplit(ids, [c.path for c in items], [index[c.label] for c in items])
    return TaskData(spec, classes, splits)


def _librispeech_task(ws: Workspace, spec: TaskSpec) -> TaskData:
    if spec.name == "PC":
        return _frame_phone_task(ws, spec)
    if spec.name == "PR":
        vocabulary = ["<blank>", *(p for p in PHONES if p != SILENCE)]
    else:
        vocabulary = ["<blank>", *ASR_CHARACTERS]
    index = {t: i for i, t in enumerate(vocabulary)}
    utts = {s: split_utterances(ws, LABELED_SPLITS[s]) for s in SPLITS}
    # PR: phones from the alignments where every utterance has one (the synthetic corpus), else from the transcripts
    aligned = all(has_alignments(split) for split in utts.values())
    lexicon = None if spec.name != "PR" or aligned else transcript_lexicon(ws, [u for s in SPLITS for u in utts[s]])
    splits = {}
    for s in SPLITS:
        if spec.name != "PR":
            labels = [_characters(u, index) for u in utts[s]]
        elif lexicon is None:
            labels = [[index[seg.phone] for seg in u.phones if seg.phone != SILENCE] for u in utts[s]]
        else:
            labels = [[index[p] for p in lexicon.sequence(u.transcript)] for u in utts[s]]
        splits[s] = TaskSplit([u.utt_id for u in utts[s]], [u.path for u in utts[s]], labels)
    return TaskData(spec, vocabulary, splits)


def _frame_phone_task(ws: Workspace, spec: TaskSpec) -> TaskData:
    """PC: the phone at every model frame of the workspace's frame rate (the alignments' phone set, silence too)."""
    splits = {}
    for s in SPLITS:
        utts = split_utterances(ws, LABELED_SPLITS[s])
        if not has_alignments(utts):
            raise CorpusError(f"task {spec.name} needs phone times in split {LABELED_SPLITS[s]}. {NO_ALIGNMENT}")
        store = frame_phone_labels(utts, model_inputs(ws, LABELED_SPLITS[s]).lengths(), ws.scale.frame_ms)
        splits[s] = TaskSplit([u.utt_id for u in utts], [u.path for u in utts],
                              [store[i][:, 0] for i in range(len(store))])
    return TaskData(spec, list(PHONES), splits)


def has_alignments(utts: list[Utterance]) -> bool:
    """Whether every utterance has phone times (the synthetic corpus does; real LibriSpeech does not)."""
    return all(u.phones is not None for u in utts)


def frame_phone_labels(utts: list[Utterance], lengths: np.ndarray, frame_ms: int) -> FrameStore:
    """Phone index (into `PHONES`) at the centre of each model frame (10 ms Kaldi frames of 25 ms, stacked to
    `frame_ms`), one (T, 1) array per utterance."""
    index = {p: i for i, p in enumerate(PHONES)}
    factor = frame_ms // 10
    centre_offset = (0.025 + 0.010 * (factor - 1)) / 2
    arrays = []
    for utt, n in zip(utts, lengths, strict=True):
        if utt.phones is None:
            raise ValueError(f"{utt.path}: no phone alignment. {NO_ALIGNMENT}")
        starts = np.array([s.start for s in utt.phones])
        labels = np.array([index[s.phone] for s in utt.phones])
        centres = np.arange(n) * frame_ms / 1000 + centre_offset
        pos = np.clip(np.searchsorted(starts, centres, side="right") - 1, 0, len(labels) - 1)
        arrays.append(labels[pos].astype(np.int64)[:, None])
    return FrameStore.from_arrays(arrays, [u.utt_id for u in utts])


def transcript_lexicon(ws: Workspace, utts: list[corpus.Utterance]) -> Lexicon:
    """The phones of every word of the transcripts, read by eSpeak NG (cached; unreadable words reported once)."""
    words = sorted({w for u in utts for w in u.transcript.lower().split()})
    engine = importlib.metadata.version("espeakng-loader")  # another eSpeak NG may read a word otherwise
    key = fingerprint(words, engine, code_version(lexicon_module, phones_module, espeak_module))
    path = ws.cache / f"lexicon-{key}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        return Lexicon({w: tuple(p) for w, p in stored["phones"].items()}, stored["unreadable"])
    lexicon = read_words(words)
    if lexicon.unreadable:
        shown = ", ".join(f"{w!r} ({why})" for w, why in list(lexicon.unreadable.items())[:10])
        more = f" and {len(lexicon.unreadable) - 10} more" if len(lexicon.unreadable) > 10 else ""
        print(f"PR labels from transcripts: {len(lexicon.unreadable)} of {len(words)} words unreadable by eSpeak NG, "
              f"left out of the phone sequences (listed in {path.name}): {shown}{more}")
    write_json_atomic(path, {"phones": lexicon.phones, "unreadable": lexicon.unreadable})
    return lexicon


def _characters(utt: corpus.Utterance, index: dict[str, int]) -> list[int]:
    text = " ".join(utt.transcript.lower().split())
    return [index[ch] for ch in text if ch in index]
