"""Build the whole synthetic corpus once, crash-safely, with several synthesis processes.

Layout of a corpus root:

    LibriSpeech/<split>/...      train-clean-360 (pretraining), train-clean-100, dev-clean, test-clean
    VoxCeleb1/wav/..., VoxCeleb1/iden_split.txt
    speech_commands/...
    speakers.json                every speaker's voice, prosody, channel and ids in each layout
    corpus.json                  marker: settings (format version, seed, CorpusScale) and summary

The corpus is built in a temporary sibling folder that is renamed onto `root` only when complete;
the marker is written last. A root that already holds a corpus built from the same settings is
reused as is.

Parallel synthesis uses "spawn" processes (eSpeak is not thread-safe and each process initialises its
own library), so a script that calls `build_corpus` at import level needs the usual
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from ...scales import CorpusScale
from ..atomic import atomic_path, write_json_atomic
from .errors import CorpusError
from .librispeech import LibriSpeechIndexWriter
from .phones import PHONES
from .plan import CLIP_SECONDS, LIBRISPEECH, SPEECH_COMMANDS, VOXCELEB, CorpusPlan, plan_corpus
from .render import RenderedSpeech, SpeechJob, render
from .speech_commands import (
    BACKGROUND_NOISES,
    ListedClip,
    listed_clip,
    write_background_noise,
    write_silence_clips,
    write_split_lists,
)
from .voxceleb import write_iden_split

# Bump when the generator changes what a given scale and seed produce (2: a fresh eSpeak per job; 3: eSpeak's breath
# noise seeded per job).
FORMAT_VERSION = 3
MARKER_FILE = "corpus.json"
SPEAKERS_FILE = "speakers.json"
_CHUNK_SIZE = 8  # jobs handed to a worker at a time


@dataclass(frozen=True)
class CorpusInfo:
    """Summary of a built corpus: hours per split, speakers, audio files and phone classes."""

    root: Path
    hours: dict[str, float]
    n_speakers: int
    n_files: int
    n_phones: int


def corpus_settings(corpus: CorpusScale, seed: int) -> dict:
    """The settings a corpus is built from, as stored in its marker file (a setting left at None, the layout's own
    default, is not written: a corpus built before that setting existed is the same corpus)."""
    given = {key: value for key, value in asdict(corpus).items() if value is not None}
    return json.loads(json.dumps({"format_version": FORMAT_VERSION, "seed": seed, "corpus": given}))


def build_corpus(root: Path, corpus: CorpusScale, seed: int = 0, workers: int = 2) -> CorpusInfo:
    """Synthesise the corpus for `corpus` and `seed` into `root` (LibriSpeech/, VoxCeleb1/, speech_commands/).

    Returns at once if `root` already holds this corpus; raises CorpusError if it holds anything else.
    """
    root = Path(root)
    if workers < 1:
        raise CorpusError(f"workers={workers}: use at least 1 synthesis process (parameter 'workers')")
    settings = corpus_settings(corpus, seed)
    existing = _existing_corpus(root, settings)
    if existing is not None:
        return existing
    _remove_abandoned_builds(root)
    plan = plan_corpus(corpus, seed)
    with atomic_path(root) as build_dir:
        build_dir.mkdir()
        seconds = _synthesise(plan.jobs, build_dir, workers)
        silence = _write_indexes(build_dir, plan, corpus, seed)
        seconds[SPEECH_COMMANDS] += len(silence) * CLIP_SECONDS
        info = CorpusInfo(
            root=root,
            hours={name: round(total / 3600, 4) for name, total in sorted(seconds.items())},
            n_speakers=len(plan.speakers),
            n_files=len(plan.jobs) + len(silence) + len(BACKGROUND_NOISES),
            n_phones=len(PHONES),
        )
        summary = {key: value for key, value in asdict(info).items() if key != "root"}
        write_json_atomic(build_dir / MARKER_FILE, {"settings": settings, "info": summary})
    return info


def _existing_corpus(root: Path, settings: dict) -> CorpusInfo | None:
    if not root.exists():
        return None
    if not root.is_dir():
        raise CorpusError(f"{root} is a file, not a corpus folder; choose another root or delete it")
    marker = root / MARKER_FILE
    if not marker.is_file():
        if any(root.iterdir()):
            raise CorpusError(
                f"{root} is not empty and holds no completed synthetic corpus ({MARKER_FILE} missing); "
                "choose another root or delete it"
            )
        return None
    stored = json.loads(marker.read_text())
    if stored.get("settings") != settings:
        raise CorpusError(
            f"{root} holds a corpus built with other settings ({stored.get('settings')}, wanted {settings}); "
            "choose another root or delete it"
        )
    return CorpusInfo(root=root, **stored["info"])


def _remove_abandoned_builds(root: Path) -> None:
    """Delete temporary build folders of `root` (`.<name>.partial-<pid>-<hex>`, written by `atomic_path`) left by
    builds whose process no longer exists."""
    for candidate in root.parent.glob(f".{root.name}.partial-*-*"):
        pid = candidate.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but owned by another user
        pass
    return True


_JobMap = Callable[[Callable[[SpeechJob], RenderedSpeech], Sequence[SpeechJob]], Iterator[RenderedSpeech]]


@contextmanager
def _job_runner(workers: int) -> Iterator[_JobMap]:
    """Yield an ordered `map` over jobs: in this process, or in `workers` spawned processes.

    The processes are stopped when the block ends, before the caller cleans up their output folder.
    """
    if workers == 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield functools.partial(pool.imap, chunksize=_CHUNK_SIZE)


def _synthesise(jobs: tuple[SpeechJob, ...], build_dir: Path, workers: int) -> Counter[str]:
    """Render every job, writing LibriSpeech chapter indexes as chapters finish; return seconds per split."""
    seconds: Counter[str] = Counter()
    chapters = LibriSpeechIndexWriter(build_dir)
    render_job = functools.partial(render, root=build_dir)
    with (
        _job_runner(workers) as run,
        tqdm(run(render_job, jobs), total=len(jobs), desc="synthesising corpus", unit="file") as results,
    ):
        for job, result in zip(jobs, results, strict=True):
            seconds[_split_name(job)] += result.duration
            if _layout(job) == LIBRISPEECH:
                chapters.add(job, result)
    chapters.close()
    return seconds


def _write_indexes(build_dir: Path, plan: CorpusPlan, corpus: CorpusScale, seed: int) -> list[ListedClip]:
    """Write the remaining index files, the background noise and the silence clips (returned)."""
    write_iden_split(build_dir / VOXCELEB, [j for j in plan.jobs if _layout(j) == VOXCELEB])
    speech_commands = build_dir / SPEECH_COMMANDS
    rng = np.random.default_rng([seed, 4])
    noises = write_background_noise(speech_commands, rng)
    silence = write_silence_clips(speech_commands, noises, corpus.ks_per_keyword, rng, corpus.ks_test_per_keyword)
    listed = [listed_clip(j) for j in plan.jobs if _layout(j) == SPEECH_COMMANDS]
    write_split_lists(speech_commands, listed + silence)
    write_json_atomic(build_dir / SPEAKERS_FILE, _speaker_table(plan, seed))
    return silence


def _layout(job: SpeechJob) -> str:
    return PurePosixPath(job.rel_path).parts[0]


def _split_name(job: SpeechJob) -> str:
    parts = PurePosixPath(job.rel_path).parts
    return f"{parts[0]}/{parts[1]}" if parts[0] == LIBRISPEECH else parts[0]


def _speaker_table(plan: CorpusPlan, seed: int) -> dict:
    librispeech_split = {i: split for split, pool in plan.librispeech_speakers.items() for i in pool}
    commands_subset = {i: subset for subset, pool in plan.speech_commands_speakers.items() for i in pool}
    speakers = []
    for speaker in plan.speakers:
        speakers.append(
            {
                **asdict(speaker),
                "librispeech_id": speaker.librispeech_id,
                "librispeech_split": librispeech_split[speaker.index],
                "voxceleb_id": speaker.voxceleb_id,
                "speech_commands_hash": speaker.speech_commands_hash(seed),
                "speech_commands_subset": commands_subset[speaker.index],
            }
        )
    return {"speakers": speakers}
