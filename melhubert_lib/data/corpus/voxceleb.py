"""The VoxCeleb1 identification layout: writing `iden_split.txt` and reading a subset (synthetic or real).

Layout under the VoxCeleb1 root:

    wav/<id1xxxx>/<video id>/<NNNNN>.flac      (real VoxCeleb1: .wav)
    iden_split.txt                             "1 id10001/1zcIwhmdeo4/00001.wav", 1 = train, 2 = dev, 3 = test
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..atomic import write_text_atomic
from .errors import CorpusError, require_choice, require_root
from .records import LabeledClip
from .render import SpeechJob

SPLIT_FILE = "iden_split.txt"
AUDIO_DIR = "wav"
SUBSET_CODES = {"train": "1", "dev": "2", "test": "3"}


def write_iden_split(root: Path, jobs: Sequence[SpeechJob]) -> None:
    """Write `iden_split.txt` for the VoxCeleb1 jobs; `root` is the VoxCeleb1 folder."""
    lines = []
    for job in jobs:
        inside = PurePosixPath(*PurePosixPath(job.rel_path).parts[-3:])  # id1xxxx/<video>/00001.flac
        lines.append(f"{SUBSET_CODES[job.subset]} {inside}")
    write_text_atomic(root / SPLIT_FILE, "\n".join(sorted(lines, key=lambda line: line[2:])) + "\n")


def read_voxceleb1(root: Path, subset: str) -> list[LabeledClip]:
    """Read the `subset` ("train", "dev" or "test") of a VoxCeleb1 folder; labels are speaker ids."""
    require_choice("subset", subset, SUBSET_CODES, "VoxCeleb1")
    root = require_root(root, "VoxCeleb1", f"{AUDIO_DIR}/ and {SPLIT_FILE}", "VoxCeleb1")
    split_file = root / SPLIT_FILE
    if not split_file.is_file() or not (root / AUDIO_DIR).is_dir():
        raise CorpusError(
            f"{root}: not a VoxCeleb1 folder (needs {SPLIT_FILE} and {AUDIO_DIR}/); point `root` at the "
            "folder that holds them"
        )
    code = SUBSET_CODES[subset]
    clips = []
    for number, line in enumerate(split_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if (
            len(fields) != 2
            or fields[0] not in SUBSET_CODES.values()
            or len(PurePosixPath(fields[1]).parts) != 3
        ):
            raise CorpusError(
                f"{split_file}:{number}: expected '<1|2|3> id1xxxx/<video>/<n>.wav', got {line[:80]!r}"
            )
        if fields[0] != code:
            continue
        path = root / AUDIO_DIR / fields[1]
        if not path.is_file():
            raise CorpusError(
                f"{split_file}:{number}: {path} not found; restore the file or fix {SPLIT_FILE}"
            )
        clips.append(LabeledClip(path, PurePosixPath(fields[1]).parts[0]))
    return clips
