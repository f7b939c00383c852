"""The Speech Commands (v0.02 style) layout: background noise, silence clips, split lists, and a reader.

Layout under the speech_commands root:

    <word>/<speaker hash>_nohash_<n>.flac    1 s clips (real data: .wav)
    _background_noise_/<name>.flac           long noise recordings
    _silence_/<noise name>_nohash_<n>.flac   1 s clips cut from the background noise (synthetic corpus)
    validation_list.txt, testing_list.txt    "<word>/<file>" per line; training = every other clip

Validation and test speakers are disjoint from training speakers, as in the original lists. The
10 SUPERB keywords keep their labels, every other word becomes `_unknown_` and `_silence_/` clips
`_silence_`. Real v0.02 has no `_silence_/` folder, so no silence clips are read from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..atomic import write_text_atomic
from ..audio import AUDIO_SUFFIXES, SAMPLE_RATE, save_audio
from .augment import coloured_noise, set_level
from .errors import CorpusError, require_choice, require_root
from .plan import CLIP_SECONDS, KEYWORDS, clip_subsets
from .records import LabeledClip
from .render import SpeechJob

BACKGROUND_DIR = "_background_noise_"
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}
SUBSETS = ("train", "validation", "test")

BACKGROUND_NOISES = {"white_noise": "white", "pink_noise": "pink", "brown_noise": "brown",
                     "blue_noise": "blue", "mains_hum": "hum"}  # fmt: skip
BACKGROUND_SECONDS = 30.0
BACKGROUND_LEVEL_DBFS = -25.0
SILENCE_LEVEL_DBFS = (-55.0, -25.0)


@dataclass(frozen=True)
class ListedClip:
    """A clip for the split lists: path relative to the speech_commands folder and its subset."""

    rel_path: str
    subset: str


def listed_clip(job: SpeechJob) -> ListedClip:
    """The split-list entry of a rendered Speech Commands job."""
    return ListedClip(str(PurePosixPath(*PurePosixPath(job.rel_path).parts[-2:])), job.subset)


def write_background_noise(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Write the `_background_noise_` files under the speech_commands `root`; return them by name."""
    noises = {}
    n_samples = int(BACKGROUND_SECONDS * SAMPLE_RATE)
    (root / BACKGROUND_DIR).mkdir(parents=True, exist_ok=True)
    for name, colour in BACKGROUND_NOISES.items():
        noise = set_level(coloured_noise(n_samples, colour, rng), slice(None), BACKGROUND_LEVEL_DBFS)
        save_audio(root / BACKGROUND_DIR / f"{name}.flac", noise)
        noises[name] = noise
    return noises


def write_silence_clips(
    root: Path, noises: dict[str, np.ndarray], n_clips: int, rng: np.random.Generator, test_clips: int | None = None
) -> list[ListedClip]:
    """Cut 1 s clips at random levels from the noises into `_silence_/`, split as `clip_subsets` does."""
    (root / SILENCE_LABEL).mkdir(parents=True, exist_ok=True)
    names = sorted(noises)
    subsets = clip_subsets(n_clips, rng, test_clips)
    n_clip = round(CLIP_SECONDS * SAMPLE_RATE)
    clips = []
    for k, subset in enumerate(subsets):
        name = names[int(rng.integers(len(names)))]
        start = int(rng.integers(0, len(noises[name]) - n_clip + 1))
        clip = set_level(
            noises[name][start : start + n_clip], slice(None), float(rng.uniform(*SILENCE_LEVEL_DBFS))
        )
        rel = f"{SILENCE_LABEL}/{name}_nohash_{k}.flac"
        save_audio(root / rel, clip)
        clips.append(ListedClip(rel, subset))
    return clips


def write_split_lists(root: Path, clips: Sequence[ListedClip]) -> None:
    """Write validation_list.txt and testing_list.txt under `root`, the speech_commands folder."""
    for subset, list_file in LIST_FILES.items():
        listed = sorted(clip.rel_path for clip in clips if clip.subset == subset)
        write_text_atomic(root / list_file, "\n".join(listed) + "\n")


def read_speech_commands(root: Path, subset: str) -> list[LabeledClip]:
    """Read the `subset` ("train", "validation" or "test") of a Speech Commands folder, sorted by path."""
    require_choice("subset", subset, SUBSETS, "Speech Commands")
    root = require_root(root, "Speech Commands", f"the word folders and {LIST_FILES['validation']}",
                        "speech_commands")
    missing = [name for name in LIST_FILES.values() if not (root / name).is_file()]
    if missing:
        raise CorpusError(
            f"{root}: not a Speech Commands v0.02 folder ({', '.join(missing)} missing); point `root` at the "
            "folder that holds the word folders and the split lists"
        )
    listed = {name: set((root / f).read_text().split()) for name, f in LIST_FILES.items()}
    clips = []
    for path in sorted(root.glob("*/*")):
        if path.suffix not in AUDIO_SUFFIXES or path.parent.name == BACKGROUND_DIR:
            continue
        rel = f"{path.parent.name}/{path.name}"
        in_subset = next((name for name, files in listed.items() if rel in files), "train")
        if in_subset == subset:
            clips.append(LabeledClip(path, _label(path.parent.name)))
    if not clips:
        raise CorpusError(
            f"{root}: no {subset} clips found (<word>/<name>{'|'.join(AUDIO_SUFFIXES)}); fix the layout"
        )
    return clips


def _label(word: str) -> str:
    if word in KEYWORDS or word == SILENCE_LABEL:
        return word
    return UNKNOWN_LABEL
