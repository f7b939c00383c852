"""The LibriSpeech layout: writing its index files and reading a split (synthetic or real).

Layout under the LibriSpeech root (the folder holding the split folders):

    <split>/<spk>/<chapter>/<spk>-<chapter>-<NNNN>.flac
    <split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt      "UTTID WORD WORD ..." (upper case), one per line
    <split>/<spk>/<chapter>/<spk>-<chapter>.alignment.txt  synthetic corpus only, one line per utterance:
        "UTTID phone start end phone start end ..." (phones of `phones.PHONES`, seconds, 3 decimals)

Real LibriSpeech has no alignment files; its utterances are read with `phones=None`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..atomic import write_text_atomic
from ..audio import AUDIO_SUFFIXES
from .alignment import format_alignment, parse_alignment
from .errors import CorpusError, require_root
from .records import PhoneSegment, Utterance
from .render import RenderedSpeech, SpeechJob


class LibriSpeechIndexWriter:
    """Writes each chapter's transcript and alignment file as soon as the chapter's last utterance is in.

    Utterances must arrive grouped by chapter (as `plan.py` orders them); call `close()` at the end.
    """

    def __init__(self, root: Path) -> None:
        self.root = root  # the corpus root
        self._chapter: PurePosixPath | None = None
        self._entries: list[tuple[str, SpeechJob, RenderedSpeech]] = []

    def add(self, job: SpeechJob, result: RenderedSpeech) -> None:
        """Take one rendered utterance; write the previous chapter if this one starts a new chapter."""
        rel = PurePosixPath(job.rel_path)
        if rel.parent != self._chapter:
            self.close()
            self._chapter = rel.parent
        self._entries.append((rel.stem, job, result))

    def close(self) -> None:
        """Write the pending chapter, if any."""
        if self._chapter is None:
            return
        self._entries.sort(key=lambda entry: entry[0])
        prefix = f"{self._chapter.parent.name}-{self._chapter.name}"
        folder = self.root / self._chapter
        transcripts = [f"{utt_id} {job.text.upper()}" for utt_id, job, _ in self._entries]
        alignments = [format_alignment(utt_id, result.phones) for utt_id, _, result in self._entries]
        write_text_atomic(folder / f"{prefix}.trans.txt", "\n".join(transcripts) + "\n")
        write_text_atomic(folder / f"{prefix}.alignment.txt", "\n".join(alignments) + "\n")
        self._chapter, self._entries = None, []


def librispeech_root(root: Path) -> Path:
    """`root` as a Path once it looks like a LibriSpeech root (a folder of split folders), else a CorpusError.

    A split folder passed by mistake (it holds <speaker>/<chapter>/ transcripts itself) is named with its parent.
    Which splits must exist is left to the stages that read them.
    """
    root = require_root(root, "LibriSpeech", "the split folders", "LibriSpeech")
    if next(root.glob("*/*/*.trans.txt"), None) is not None:
        raise CorpusError(f"{root}: this looks like one split folder (it holds <speaker>/<chapter>/ transcripts), not "
                          f"the LibriSpeech root; pass its parent, {root.parent}, which holds the split folders")
    return root


def read_librispeech(root: Path, split: str) -> list[Utterance]:
    """Read one split of a LibriSpeech-layout folder (`root` holds the split folders), sorted by id."""
    root = librispeech_root(root)
    split_dir = root / split
    if not split_dir.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise CorpusError(
            f"{split_dir}: split {split!r} not found; splits under {root}: {', '.join(available) or 'none'}"
        )
    transcript_files = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcript_files:
        raise CorpusError(
            f"{split_dir}: no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt files; this is not a "
            "LibriSpeech split folder (point `root` at the folder that holds the split folders)"
        )
    utterances = []
    for transcript_file in transcript_files:
        utterances += _read_chapter(transcript_file)
    return sorted(utterances, key=lambda u: u.utt_id)


def _read_chapter(transcript_file: Path) -> list[Utterance]:
    chapter_dir = transcript_file.parent
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    prefix = f"{speaker}-{chapter}"
    if transcript_file.name != f"{prefix}.trans.txt":
        raise CorpusError(
            f"{transcript_file}: expected the name {prefix}.trans.txt in {chapter_dir}; fix the layout"
        )
    alignment_file = chapter_dir / f"{prefix}.alignment.txt"
    alignments = _read_alignments(alignment_file) if alignment_file.is_file() else None
    utterances = []
    for number, line in enumerate(transcript_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        utt_id, _, words = line.strip().partition(" ")
        if not utt_id.startswith(prefix + "-"):
            raise CorpusError(
                f"{transcript_file}:{number}: utterance id {utt_id!r} does not start with {prefix}-; "
                "fix the layout"
            )
        phones = None
        if alignments is not None:
            if utt_id not in alignments:
                raise CorpusError(f"{alignment_file}: no alignment for {utt_id}; rebuild the corpus")
            phones = alignments[utt_id]
        utterances.append(Utterance(utt_id, _audio_path(chapter_dir, utt_id), speaker, words, phones))
    return utterances


def _audio_path(chapter_dir: Path, utt_id: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        path = chapter_dir / f"{utt_id}{suffix}"
        if path.is_file():
            return path
    raise CorpusError(
        f"{chapter_dir}: audio for {utt_id} not found ({' or '.join(AUDIO_SUFFIXES)}); restore it"
    )


def _read_alignments(path: Path) -> dict[str, tuple[PhoneSegment, ...]]:
    alignments = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            alignment = parse_alignment(line, f"{path}:{number}")
            alignments[alignment.utt_id] = alignment.phones
    return alignments
