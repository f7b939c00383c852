"""The baseline pipeline at smoke scale: corpus -> features -> targets -> pretraining iterations."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from melhubert_lib.data.corpus import CorpusError
from melhubert_lib.data.representations import hidden_states
from melhubert_lib.data.workspace import model_inputs, open_workspace, split_utterances
from melhubert_lib.model import MelHuBERT
from melhubert_lib.training import baseline


@pytest.fixture(scope="module")
def ws(smoke_ws):
    return smoke_ws


def test_smoke_scale_runs_deterministically(ws):
    assert torch.are_deterministic_algorithms_enabled()


def test_validation_utterances_are_held_out_of_pretraining(ws):
    train = {u.utt_id for u in split_utterances(ws, "pretrain-train")}
    valid = {u.utt_id for u in split_utterances(ws, "pretrain-valid")}
    assert valid and train and not (train & valid)


def test_model_inputs_are_normalised_by_the_pretraining_statistics(ws):
    feats = model_inputs(ws, "pretrain-train")
    assert feats.data.shape[1] == 80
    # stacked pairs of globally normalised frames: each half has mean ~0 and std ~1 over the training part
    halves = np.concatenate([feats.data[:, :40], feats.data[:, 40:]])
    assert abs(float(halves.mean())) < 0.05
    assert abs(float(halves.std()) - 1.0) < 0.05


def test_two_target_iterations_recluster_a_hidden_layer(ws):
    sched = dataclasses.replace(ws.scale.pretrain, steps=3, iterations=2, eval_every=3, checkpoint_every=3)
    result = baseline.pretrain_baseline(ws, name="two-iter", sched=sched)
    assert [t.name for t in result.targets] == ["stage1-mfcc-k16", "two-iter-iter1-layer1"]
    assert len(result.runs) == 2 and result.runs[1].steps == 3
    k = ws.scale.targets.n_clusters
    labels = result.targets[1].labels["pretrain-train"].data
    assert labels.min() >= 0 and labels.max() < k
    assert result.targets[1].codebook.centroids.shape == (k, MelHuBERT.from_pretrained(result.model_dir).config.d_model)
    assert not np.array_equal(labels, result.targets[0].labels["pretrain-train"].data)
    stage1 = MelHuBERT.from_pretrained(result.runs[0].model_dir)  # the streamed layer equals one computed in memory
    in_memory = hidden_states(stage1, model_inputs(ws, "pretrain-train"), [1])[1]
    np.testing.assert_array_equal(result.targets[1].codebook.assign(in_memory.data), labels[:, 0])


def test_a_wrong_librispeech_path_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="nowhere"):
        open_workspace("smoke", tmp_path, librispeech=tmp_path / "nowhere")


def test_a_librispeech_root_without_the_pretraining_split_serves_the_splits_it_has(ws, tmp_path):
    root = tmp_path / "LibriSpeech"
    shutil.copytree(ws.librispeech / "dev-clean", root / "dev-clean")
    real = open_workspace("smoke", tmp_path / "work", librispeech=root)
    ids = [u.utt_id for u in split_utterances(real, "dev-clean")]
    assert ids == [u.utt_id for u in split_utterances(ws, "dev-clean")]
    with pytest.raises(CorpusError, match=r"split 'train-clean-360' not found; splits under .*: dev-clean"):
        split_utterances(real, "pretrain-train")


def test_the_pretraining_split_of_real_data_can_span_several_split_folders(ws, tmp_path):
    from melhubert_lib.data.corpus import PRETRAIN_SPLIT
    from melhubert_lib.scales import get_scale

    assert get_scale("smoke").corpus.pretrain_splits == (PRETRAIN_SPLIT,)
    assert get_scale("paper-960").corpus.pretrain_splits[-1] == "train-other-500"
    root = tmp_path / "LibriSpeech"
    shutil.copytree(ws.librispeech / PRETRAIN_SPLIT, root / PRETRAIN_SPLIT)
    shutil.copytree(ws.librispeech / "dev-clean", root / "train-other-500")
    smoke = get_scale("smoke")
    scale = dataclasses.replace(smoke, corpus=dataclasses.replace(
        smoke.corpus, pretrain_splits=(PRETRAIN_SPLIT, "train-other-500")))
    real = open_workspace(scale, tmp_path / "work", librispeech=root)
    both = {u.utt_id for part in ("pretrain-train", "pretrain-valid") for u in split_utterances(real, part)}
    expected = {u.utt_id for split in (PRETRAIN_SPLIT, "dev-clean") for u in split_utterances(ws, split)}
    assert both == expected
    alone = open_workspace("smoke", tmp_path / "work", librispeech=root)
    assert len(split_utterances(alone, "pretrain-train")) < len(split_utterances(real, "pretrain-train"))
    assert real.data_identity() != alone.data_identity()  # their frames are cached apart


def test_targets_made_from_another_recipe_are_fitted_again(ws, tmp_path, capsys):
    own = dataclasses.replace(ws, root=tmp_path / "ws")  # the shared workspace's targets stay as they are
    first = baseline.acoustic_targets(own)
    book = own.targets_dir(first.name) / "codebook.npz"
    written = book.stat().st_mtime_ns
    again = baseline.acoustic_targets(own)  # same recipe: loaded, not fitted
    assert book.stat().st_mtime_ns == written and "again" not in capsys.readouterr().err
    np.testing.assert_array_equal(again.codebook.centroids, first.codebook.centroids)
    fewer = dataclasses.replace(own.scale, targets=dataclasses.replace(own.scale.targets, max_frames=2_000))
    refit = baseline.acoustic_targets(dataclasses.replace(own, scale=fewer))
    assert refit.name == first.name  # same folder: found by name, made again because the recipe differs
    assert "made from other kmeans; fitting them again" in capsys.readouterr().err
    assert book.stat().st_mtime_ns != written
    assert not np.array_equal(refit.codebook.centroids, first.codebook.centroids)
