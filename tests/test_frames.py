"""Frame stores on disk: streamed writes equal in-memory stores, loads are memory-mapped, training reads its share."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from melhubert_lib.data.batching import Crop, collate
from melhubert_lib.data.frames import FrameStore, FrameWriter, cached, extract, is_store
from melhubert_lib.data.workspace import model_inputs, open_workspace, raw_frames
from melhubert_lib.training.pretrain import rank_rows


def _arrays(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 3, 2)).astype(np.float32) for n in (4, 1, 7, 3)]


def test_a_streamed_store_equals_the_in_memory_one_and_loads_memory_mapped(tmp_path):
    arrays, ids = _arrays(), ["a", "b", "c", "d"]
    with FrameWriter(tmp_path / "s.frames") as writer:
        for utt_id, frames in zip(ids, arrays, strict=True):
            writer.append(utt_id, frames)
    in_memory = FrameStore.from_arrays(arrays, ids)
    loaded = FrameStore.load(tmp_path / "s.frames")
    assert isinstance(loaded.data, np.memmap) and loaded.path == tmp_path / "s.frames"
    assert loaded.content_hash() == in_memory.content_hash() == writer.store.content_hash()
    np.testing.assert_array_equal(np.load(tmp_path / "s.frames" / "data.npy"), in_memory.data)  # a plain .npy
    loaded[0][0, 0, 0] = 99.0  # an utterance read from a mapped store is a copy: the file keeps its value
    assert FrameStore.load(tmp_path / "s.frames")[0][0, 0, 0] == arrays[0][0, 0, 0]
    saved = tmp_path / "saved.frames"
    in_memory.save(saved)
    assert FrameStore.load(saved).content_hash() == in_memory.content_hash()


def test_a_failed_or_inconsistent_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with FrameWriter(tmp_path / "s.frames") as writer:
            writer.append("a", np.ones((2, 3), np.float32))
            raise KeyboardInterrupt
    with pytest.raises(ValueError, match=r"utterance 'b' has frames of shape \(4,\)"):
        with FrameWriter(tmp_path / "s.frames") as writer:
            writer.append("a", np.ones((2, 3), np.float32))
            writer.append("b", np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="utterance b hold NaN"):
        with FrameWriter(tmp_path / "s.frames") as writer:
            writer.append("a", np.ones((2, 3), np.float32))
            writer.append("b", np.full((2, 3), np.nan, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_extraction_streamed_to_disk_equals_extraction_in_memory(tmp_path, smoke_ws):
    from melhubert_lib.data.features import fbank
    from melhubert_lib.data.workspace import split_utterances

    utts = split_utterances(smoke_ws, "dev-clean")[:5]
    paths, ids = [u.path for u in utts], [u.utt_id for u in utts]
    streamed = cached(tmp_path / "f.frames", lambda: extract(paths, ids, fbank, out=tmp_path / "f.frames"))
    assert is_store(tmp_path / "f.frames") and isinstance(streamed.data, np.memmap)
    assert streamed.content_hash() == extract(paths, ids, fbank).content_hash()


def test_model_inputs_are_a_memory_mapped_cache(smoke_ws):
    inputs = model_inputs(smoke_ws, "dev-clean")
    assert isinstance(inputs.data, np.memmap) and inputs.path is not None
    assert model_inputs(smoke_ws, "dev-clean").content_hash() == inputs.content_hash()


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_each_training_process_reads_only_its_own_rows(grad_accum):
    store = FrameStore.from_arrays(_arrays(), ["a", "b", "c", "d"]).map(lambda f: f.reshape(len(f), -1))
    crops = [Crop(2, 1, 5), Crop(0, 0, 4), Crop(3, 0, 3), Crop(1, 0, 1), Crop(2, 0, 2)]
    full = collate(crops, store)
    shares = [rank_rows(len(crops), grad_accum, rank, 2) for rank in range(2)]
    assert sorted(shares[0] + shares[1]) == list(range(len(crops)))  # every row read by exactly one process
    for rows in shares:
        part = collate(crops, store, rows=rows)
        others = [r for r in range(len(crops)) if r not in rows]
        torch.testing.assert_close(part.feats[rows], full.feats[rows])
        assert not part.feats[others].any()
        torch.testing.assert_close(part.lengths, full.lengths)


def _build_slowly(path: str, log: str) -> str:
    """One process of a two-process job asking for the same cached store (run through multiprocessing)."""
    import os
    import time

    os.environ["WORLD_SIZE"] = "2"

    def build() -> FrameStore:
        with open(log, "a") as fh:
            fh.write("built\n")
        time.sleep(1.0)
        return FrameStore.from_arrays([np.ones((3, 2), np.float32)], ["a"])

    return cached(path, build).content_hash()


def test_the_processes_of_one_job_build_a_cached_store_once(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        hashes = pool.starmap(_build_slowly, [(str(tmp_path / "s.frames"), str(tmp_path / "log"))] * 2)
    assert (tmp_path / "log").read_text() == "built\n" and hashes[0] == hashes[1]


def test_a_cache_derived_from_a_store_is_keyed_on_that_stores_own_cache_name(tmp_path):
    in_memory = FrameStore.from_arrays(_arrays(), ["a", "b", "c", "d"])
    assert in_memory.key == in_memory.content_hash()
    in_memory.save(tmp_path / "frames-1234.frames")
    assert FrameStore.load(tmp_path / "frames-1234.frames").key == "frames-1234.frames"


def test_one_workspace_opened_by_a_relative_or_an_absolute_path_finds_the_same_cached_frames(smoke_ws, monkeypatch):
    absolute = raw_frames(smoke_ws, "pretrain-valid", "fbank")
    monkeypatch.chdir(smoke_ws.root.parent.parent)  # as the notebooks open `../work` and the CLI `work`
    relative = open_workspace(smoke_ws.scale, smoke_ws.root.parent.name, seed=smoke_ws.seed, workers=1)
    assert not relative.root.is_absolute() and relative.root.resolve() == smoke_ws.root.resolve()
    assert raw_frames(relative, "pretrain-valid", "fbank").path.name == absolute.path.name  # no second extraction
    keys = relative.path_keys([relative.root / "corpus" / "a.flac", smoke_ws.root / "corpus" / "a.flac",
                               relative.root.parent / "elsewhere.flac"])
    assert keys[:2] == ["corpus/a.flac"] * 2 and keys[2] == os.path.abspath(relative.root.parent / "elsewhere.flac")
