"""Offline synthetic multi-speaker English speech corpus (eSpeak NG), written in the layouts of real corpora.

`build_corpus` synthesises LibriSpeech-, Speech Commands- and VoxCeleb1-layout folders; the readers
serve those folders and real downloads alike.
"""

from .build import MARKER_FILE, CorpusInfo, build_corpus
from .errors import CorpusError
from .librispeech import librispeech_root, read_librispeech
from .phones import PHONES, SILENCE, phone_classes
from .plan import KEYWORDS, LABELED_SPLITS, PRETRAIN_SPLIT, UNKNOWN_WORDS
from .records import LabeledClip, PhoneSegment, Utterance
from .speech_commands import SILENCE_LABEL, UNKNOWN_LABEL, read_speech_commands
from .voxceleb import read_voxceleb1

__all__ = [
    "KEYWORDS",
    "LABELED_SPLITS",
    "MARKER_FILE",
    "PHONES",
    "PRETRAIN_SPLIT",
    "SILENCE",
    "SILENCE_LABEL",
    "UNKNOWN_LABEL",
    "UNKNOWN_WORDS",
    "CorpusError",
    "CorpusInfo",
    "LabeledClip",
    "PhoneSegment",
    "Utterance",
    "build_corpus",
    "librispeech_root",
    "phone_classes",
    "read_librispeech",
    "read_speech_commands",
    "read_voxceleb1",
]
