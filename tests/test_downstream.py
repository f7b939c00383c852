"""Downstream tasks, cached layer features, probes, efficiency and the s3prl upstream."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from s3prl.nn import Featurizer, S3PRLUpstream

from melhubert_lib.data.corpus import KEYWORDS, PHONES, SILENCE_LABEL, UNKNOWN_LABEL, CorpusError
from melhubert_lib.data.features import FeatureStats, model_input
from melhubert_lib.data.frames import FrameStore
from melhubert_lib.data.representations import hidden_states, stacked_hidden_states
from melhubert_lib.data.results import append_rows
from melhubert_lib.data.tasks import TaskData, TaskSpec, TaskSplit, get_task, load_task
from melhubert_lib.data.workspace import Workspace, model_inputs, split_utterances
from melhubert_lib.efficiency import count_macs, measure, sparse_macs
from melhubert_lib.model import MelHuBERT, preset
from melhubert_lib.probes import superb
from melhubert_lib.probes.judging import judging_key
from melhubert_lib.probes.layer_features import (
    feature_precision,
    layers_dir,
    logmel_source,
    mean_pool,
    model_source,
    split_inputs,
    task_features,
)
from melhubert_lib.probes.s3prl_upstream import HUB_NAME, RECIPES, MelHuBERTUpstream, melhubert_suite, register
from melhubert_lib.probes.stacked_probes import CLIP_NORM, StackedLinearProbes
from melhubert_lib.probes.superb import (
    IGNORE,
    LayerLayout,
    Probe,
    evaluate_source,
    greedy_ctc,
    logits_loss,
    seeds_loss,
    train_probes,
)
from melhubert_lib.scales import DownstreamScale
from melhubert_lib.training import baseline


def test_tasks_read_the_three_corpus_layouts(smoke_ws):
    pr, asr, sid, ks = (load_task(smoke_ws, name) for name in ("PR", "ASR", "SID", "KS"))
    assert pr.vocabulary[0] == "<blank>" and len(pr.vocabulary) == len(PHONES)  # blank replaces silence
    for task in (pr, asr):
        for split in task.splits.values():
            assert all(seq and 0 < min(seq) and max(seq) < len(task.vocabulary) for seq in split.labels)
    first = split_utterances(smoke_ws, "train-clean-100")[0]
    assert "".join(asr.vocabulary[t] for t in asr.splits["train"].labels[0]) == first.transcript.lower()
    assert set(ks.vocabulary) == set(KEYWORDS) | {UNKNOWN_LABEL, SILENCE_LABEL}
    speakers = {p.parts[-3] for p in sid.splits["train"].paths}
    assert len(sid.vocabulary) == len(speakers) == smoke_ws.scale.corpus.n_speakers
    for task in (sid, ks):
        assert {s: len(v.ids) for s, v in task.splits.items()}.keys() == {"train", "dev", "test"}
        assert all(0 <= y < len(task.vocabulary) for v in task.splits.values() for y in v.labels)


def test_unknown_task_names_the_parameter():
    with pytest.raises(ValueError, match="tasks"):
        get_task("emotion")


def test_task_without_its_corpus_is_a_clear_error(smoke_ws):
    with pytest.raises(CorpusError, match="voxceleb1"):
        load_task(dataclasses.replace(smoke_ws, voxceleb1=None), "SID")


def test_pooled_cache_commutes_with_the_featurizer_weighted_sum():
    rng = np.random.default_rng(0)
    store = FrameStore.from_arrays([rng.normal(size=(n, 3, 8)).astype(np.float16) for n in (5, 9)], ["a", "b"])
    feat = Featurizer(LayerLayout(3, [8] * 3, [1] * 3))
    with torch.no_grad():
        feat.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
        pooled = mean_pool(store)
        for i in range(len(store)):
            frames = torch.from_numpy(store[i].astype(np.float32))[None]
            summed, _ = feat(list(frames.unbind(2)), [torch.tensor([len(store[i])])] * 3)
            pooled_x = torch.from_numpy(pooled[i].astype(np.float32))[None]
            pooled_sum, _ = feat(list(pooled_x.unbind(2)), [torch.tensor([1])] * 3)
            torch.testing.assert_close(pooled_sum[0, 0], summed[0].mean(0), atol=2e-2, rtol=1e-2)


def test_the_probes_features_run_in_the_scales_precision_and_are_keyed_on_it(smoke_ws):
    """DownstreamScale.precision "bfloat16" runs the upstream under autocast into another cache folder; its features
    stay within a few bfloat16 roundings (2^-8 each) of float32's; "auto" must be resolved before the pass."""
    def workspace(precision: str) -> Workspace:
        scale = dataclasses.replace(smoke_ws.scale, downstream=dataclasses.replace(smoke_ws.scale.downstream,
                                                                                    precision=precision))
        return dataclasses.replace(smoke_ws, scale=scale)

    model = baseline.untrained_model(smoke_ws)
    source, task = model_source(model, "untrained"), load_task(smoke_ws, "KS")
    half, full = workspace("bfloat16"), workspace("float32")
    assert feature_precision(half) == "bfloat16" and feature_precision(full) == "float32"
    assert layers_dir(half, source) != layers_dir(full, source)
    assert layers_dir(half, logmel_source()) == layers_dir(full, logmel_source())  # no model, no precision
    got, expected = (task_features(ws, source, task, "dev").data.astype(np.float32) for ws in (half, full))
    assert not np.array_equal(got, expected)  # the bfloat16 pass did run
    assert np.abs(got - expected).mean() < 10 * 2.0**-8 * np.abs(expected).mean()
    with pytest.raises(ValueError, match="resolve 'auto'"):
        source.layers(model_inputs(smoke_ws, "dev-clean"), "auto")
    with pytest.raises(ValueError, match="resolve 'auto'"):
        stacked_hidden_states(model, model_inputs(smoke_ws, "dev-clean"), precision="auto")
    with pytest.raises(ValueError, match="DownstreamScale.precision"):
        DownstreamScale(precision="half")


def test_stacked_hidden_states_are_each_utterances_own_frames_of_the_chosen_layers():
    """Whole utterances of different lengths batched with padding, layers asked in any order: each utterance's rows
    are its own hidden states computed alone (float32: to float32 rounding; under bfloat16 autocast: within ten
    bfloat16 roundings of the mean magnitude)."""
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).eval()
    rng = np.random.default_rng(0)
    utts = [rng.standard_normal((n, model.config.input_dim)).astype(np.float32) for n in (37, 80, 5, 61)]
    store = FrameStore(np.concatenate(utts), np.cumsum([0] + [len(u) for u in utts]), ["a", "b", "c", "d"])
    full = stacked_hidden_states(model, store, layers=[2, 0])
    half = stacked_hidden_states(model, store, layers=[2, 0], precision="bfloat16")
    assert full.data.shape == half.data.shape == (sum(map(len, utts)), 2, model.config.d_model)
    for i, utt in enumerate(utts):
        with torch.no_grad():
            hidden = model(torch.from_numpy(utt)[None]).hidden_states
        own = torch.stack([hidden[2][0], hidden[0][0]], 1).numpy()
        np.testing.assert_allclose(full[i], own, rtol=1e-4, atol=1e-5)
        assert np.abs(half[i] - own).mean() < 10 * 2.0**-8 * np.abs(own).mean()


def test_model_source_gives_its_hidden_states_and_is_keyed_by_its_weights(smoke_ws):
    model = baseline.untrained_model(smoke_ws)
    inputs = model_inputs(smoke_ws, "dev-clean")
    layers = model_source(model, "untrained").layers(inputs, "float32")
    reference = hidden_states(model, inputs)
    assert layers.data.shape[1:] == (model.config.depth + 1, model.config.d_model)
    for layer, store in reference.items():
        np.testing.assert_allclose(layers.data[:, layer].astype(np.float32), store.data, atol=1e-2, rtol=1e-2)
    same = baseline.untrained_model(smoke_ws)
    assert model_source(same, "x").key == model_source(model, "y").key
    with torch.no_grad():
        same.layers[0].ffn.fc1.weight[0, 0] += 1.0
    assert model_source(same, "x").key != model_source(model, "y").key


def test_task_features_are_computed_once_and_reused(smoke_ws, monkeypatch):
    task = load_task(smoke_ws, "KS")
    source = logmel_source(2)
    first = task_features(smoke_ws, source, task, "dev")
    assert first.data.shape == (len(task.splits["dev"].ids), 1, 80 * 5)  # one pooled row per clip, +-2 stacked

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a cached split")

    monkeypatch.setattr(type(source), "layers", refuse)
    again = task_features(smoke_ws, source, task, "dev")
    np.testing.assert_array_equal(again.data, first.data)


def test_a_model_is_judged_on_inputs_normalised_and_stacked_as_it_was_trained(smoke_ws):
    """An imported checkpoint's own statistics and frame rate (here 10 ms on a 20 ms scale) shape its inputs."""
    from melhubert_lib.data.audio import load_audio

    task = load_task(smoke_ws, "KS")
    workspace_stats = baseline.feature_stats(smoke_ws)
    own = FeatureStats(mean=workspace_stats.mean + 1.0, std=workspace_stats.std * 2.0)
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke", frame_ms=10), feature_stats=own).eval()
    assert smoke_ws.scale.frame_ms == 20 and model.config.input_dim == 40
    got = task_features(smoke_ws, model_source(model, "ten"), task, "dev")
    bf16 = feature_precision(smoke_ws) == "bfloat16"  # the reference runs in the precision the features ran in

    def pooled(path, stats):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model(model_input(load_audio(path), stats, 10)[None]).hidden_states
        return torch.stack([h.float() for h in hidden], 2)[0].mean(0).numpy()  # (L, D): every layer's frame mean

    for i, path in enumerate(task.splits["dev"].paths[:3]):
        np.testing.assert_allclose(got[i][0].astype(np.float32), pooled(path, own), atol=2e-2, rtol=0)
        assert not np.allclose(got[i][0].astype(np.float32), pooled(path, workspace_stats), atol=2e-2, rtol=0)
    assert model_source(model, "ten").key != model_source(MelHuBERT(preset("smoke", frame_ms=10)), "x").key


def test_greedy_ctc_collapses_repeats_and_drops_blanks():
    path = torch.tensor([[0, 2, 2, 0, 2, 3, 3, 0, 1]])
    logits = torch.nn.functional.one_hot(path, 4).float()
    assert greedy_ctc(logits, torch.tensor([9])) == [[2, 2, 3, 1]]
    assert greedy_ctc(logits, torch.tensor([4])) == [[2]]


def _utterance_task(n: int, rng: np.random.Generator) -> tuple[TaskData, dict[str, FrameStore]]:
    """Three classes; layer 1 carries the class, layer 0 is noise."""
    spec = TaskSpec("SID", "utterance", "accuracy", False, "voxceleb1", "synthetic")
    protos = rng.normal(size=(3, 6))
    splits, feats = {}, {}
    for s in ("train", "dev", "test"):
        y = rng.integers(0, 3, n)
        x = np.stack([rng.normal(size=(n, 6)), protos[y] + 0.3 * rng.normal(size=(n, 6))], axis=1)[:, None]
        ids = [f"{s}{i}" for i in range(n)]
        splits[s] = TaskSplit(ids, [], y.tolist())
        feats[s] = FrameStore.from_arrays(list(x.astype(np.float16)), ids)
    return TaskData(spec, ["a", "b", "c"], splits), feats


def test_utterance_probe_learns_and_weights_the_informative_layer():
    task, feats = _utterance_task(120, np.random.default_rng(0))
    result = train_probes("synthetic", task, feats, DownstreamScale(epochs={"SID": 40}), (0,))[0]
    assert result.test["accuracy"] > 0.9 and result.dev["accuracy"] > 0.9
    assert result.layer_weights[1] > result.layer_weights[0]


def test_seeds_trained_in_one_pass_equal_each_seed_trained_alone_with_the_same_batch_order():
    task, feats = _utterance_task(90, np.random.default_rng(4))
    settings = DownstreamScale(epochs={"SID": 6})
    together = train_probes("synthetic", task, feats, settings, (0, 1, 2), order_seed=0)
    assert [r.seed for r in together] == [0, 1, 2]
    # the seeds are different probes: their initial output layers, hence their trained ones, differ; that difference
    # is the scale against which "equal up to summation order" is measured
    seed_gap = (together[0].probe.out.weight - together[1].probe.out.weight).abs().max().item()
    assert seed_gap > 0
    for result in together:
        alone = train_probes("synthetic", task, feats, settings, (result.seed,), order_seed=0)[0]
        assert (alone.dev, alone.test, alone.best_epoch) == (result.dev, result.test, result.best_epoch)
        np.testing.assert_array_equal(alone.test_errors["accuracy"], result.test_errors["accuracy"])
        for key, value in alone.probe.state_dict().items():
            torch.testing.assert_close(result.probe.state_dict()[key], value, rtol=0, atol=1e-4 * seed_gap, msg=key)
    assert train_probes("synthetic", task, feats, settings, (1,))[0].dev == train_probes(
        "synthetic", task, feats, settings, (1,), order_seed=1)[0].dev  # one seed alone shuffles with its own seed
    with pytest.raises(ValueError, match="distinct probe seeds"):
        train_probes("synthetic", task, feats, settings, (0, 0))


def _probes(n_layers: int, seeds: tuple[int, ...], width: int = 8, n_out: int = 5) -> list[Probe]:
    layout = LayerLayout(n_layers, [width] * n_layers, [1] * n_layers)
    probes = []
    for seed in seeds:
        torch.manual_seed(seed)
        probe = Probe(layout, n_out, torch.zeros(n_layers, width), torch.ones(n_layers, width))
        if n_layers > 1:
            torch.nn.init.normal_(probe.featurizer.weights)  # s3prl starts at zeros: make the seeds' weights differ
        probes.append(probe)
    return probes


@pytest.mark.parametrize("n_layers", [1, 4])
def test_stacked_probes_compute_each_seeds_featurizer_and_linear_layer(n_layers):
    probes = _probes(n_layers, (0, 1, 2))
    layers = torch.randn(n_layers, 3, 7, 8)  # layer-major, as the probes' batches are
    stacked = StackedLinearProbes(probes)(layers)
    for i, probe in enumerate(probes):
        alone = probe.head(layers, torch.tensor([7, 5, 2]))
        torch.testing.assert_close(stacked[i], alone, rtol=1e-5, atol=1e-5 * alone.abs().max().item())
    with pytest.raises(ValueError, match="linear probes only"):
        StackedLinearProbes(_probes(2, (0,)) + [Probe(LayerLayout(2, [8, 8], [1, 1]), 5, torch.zeros(2, 8),
                                                      torch.ones(2, 8), lstm_hidden=4)])


def test_stacked_probes_clip_each_seed_as_clip_grad_norm_clips_that_probe_alone():
    probes = _probes(3, (0, 1))
    stack = StackedLinearProbes(probes)
    layers, lengths, labels = torch.randn(3, 4, 1, 8), torch.ones(4, dtype=torch.long), torch.tensor([0, 1, 2, 3])
    # seed 1's logits scaled up: its gradient norm exceeds the limit, seed 0's stays below
    seeds_loss(stack(layers) * torch.tensor([0.01, 1e3])[:, None, None, None], lengths, labels).backward()
    stack.clip_each_seed()
    for i, (probe, scale) in enumerate(zip(probes, (0.01, 1e3), strict=True)):
        logits_loss(probe.head(layers, lengths) * scale, lengths, labels).backward()
        norm = torch.nn.utils.clip_grad_norm_(probe.parameters(), CLIP_NORM)
        assert (norm < CLIP_NORM) == (i == 0)  # the case each seed tests
        torch.testing.assert_close(stack.out_weight.grad[i], probe.out.weight.grad.T)
        torch.testing.assert_close(stack.layer_weights.grad[i], probe.featurizer.weights.grad)


def test_stacked_probes_write_every_seeds_parameters_back_into_its_probe():
    probes = _probes(3, (0, 1))
    stack = StackedLinearProbes(probes)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(torch.randn_like(p))
    saved = stack.seed_state(1)
    stack.write_back(probes)
    layers = torch.randn(3, 2, 5, 8)
    expected = stack(layers)
    for i, probe in enumerate(probes):
        torch.testing.assert_close(probe.head(layers, torch.tensor([5, 5])), expected[i])
    with torch.no_grad():
        stack.out_bias.zero_()
    stack.load_seed_state(1, saved)
    assert torch.equal(stack.out_bias[1], saved["out_bias"]) and not stack.out_bias[0].any()


def test_a_probe_batch_is_each_utterances_frames_standardised_layer_major_with_standardised_zero_padding(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 3, 4)).astype(np.float16) for n in (5, 2, 4)]  # float16, as the layer caches
    FrameStore.from_arrays(arrays, ["a", "b", "c"]).save(tmp_path / "s.frames")
    store = FrameStore.load(tmp_path / "s.frames")  # memory-mapped, as the probes read it
    probe = Probe(LayerLayout(3, [4] * 3, [1] * 3), 5, torch.randn(3, 4), torch.rand(3, 4) + 0.5)
    batch = superb._Split(store, [0, 1, 2], probe.standardize_).batch([2, 0, 1])
    padded = torch.zeros(3, 5, 3, 4)  # (B, T, L, D): zeros at the padding, before standardising
    for j, i in enumerate([2, 0, 1]):
        padded[j, : len(arrays[i])] = torch.from_numpy(arrays[i].astype(np.float32))
    expected = ((padded - probe.mean) / probe.std).permute(2, 0, 1, 3)  # the formula, out of place
    assert batch.feats.shape == (3, 3, 5, 4) and torch.equal(batch.feats, expected)
    assert batch.lengths.tolist() == [4, 5, 2] and batch.labels.tolist() == [2, 0, 1]
    assert torch.equal(probe(padded, batch.lengths), probe.head(expected, batch.lengths))  # raw (B, T, L, D) input
    assert torch.equal(padded[0, 0], torch.from_numpy(arrays[2][0].astype(np.float32)))  # forward left its input


def test_ctc_probe_reads_a_frame_code():
    rng = np.random.default_rng(1)
    protos = rng.normal(size=(5, 8)) * 2
    spec = TaskSpec("PR", "sequence", "PER", True, "librispeech", "synthetic")
    splits, feats = {}, {}
    for s in ("train", "dev", "test"):
        seqs, arrays = [], []
        for _ in range(60):
            seq = rng.integers(1, 5, rng.integers(3, 7)).tolist()
            frames = np.concatenate([np.repeat(protos[[t, 0]], [3, 1], axis=0) for t in seq])
            arrays.append((frames + 0.2 * rng.normal(size=frames.shape))[:, None].astype(np.float16))
            seqs.append(seq)
        ids = [f"{s}{i}" for i in range(60)]
        splits[s], feats[s] = TaskSplit(ids, [], seqs), FrameStore.from_arrays(arrays, ids)
    task = TaskData(spec, ["<blank>", "p", "q", "r", "s"], splits)
    result = train_probes("synthetic", task, feats, DownstreamScale(epochs={"PR": 60}), (0,))[0]
    assert result.test["PER"] < 0.1 and result.layer_weights == [1.0]


def test_sparse_macs_fall_by_the_pruned_share_of_a_layer():
    model = MelHuBERT(preset("smoke"))
    dense = count_macs(model, 2.0).total
    assert sparse_macs(model, 2.0) == dense
    fc1 = model.layers[0].ffn.fc1
    with torch.no_grad():
        fc1.weight[: fc1.out_features // 2] = 0.0
    frames = 2.0 * 1000 / model.config.frame_ms
    expected = dense - frames * fc1.in_features * (fc1.out_features // 2)
    assert sparse_macs(model, 2.0) == pytest.approx(expected, rel=1e-6)
    assert count_macs(model, 2.0).total == dense  # dense count ignores zeros


def test_efficiency_report_is_json_with_nonzero_parameters():
    model = MelHuBERT(preset("smoke"))
    before = model.num_parameters(nonzero=True)
    with torch.no_grad():
        model.layers[1].ffn.fc2.weight.zero_()
    report = json.loads(measure(model, seconds=1.0).to_json())
    assert report["params"] == model.num_parameters()
    assert before - report["nonzero_params"] == model.layers[1].ffn.fc2.weight.numel()
    assert report["sparse_macs_per_second"] < report["macs_per_second"]
    assert report["rtf"] > 0 and report["peak_memory_mb"] > 50  # a python + torch process is never smaller


def test_measure_reuses_a_stored_measurement_of_the_same_weights_only(tmp_path, monkeypatch):
    from melhubert_lib import efficiency

    model = MelHuBERT(preset("smoke"))
    first = measure(model, seconds=1.0, cache_dir=tmp_path)
    reloaded = MelHuBERT.from_pretrained(model.save_pretrained(tmp_path / "ckpt"))

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again although this checkpoint was measured")

    monkeypatch.setattr(efficiency, "process_speed", no_timing)
    assert measure(reloaded, seconds=1.0, cache_dir=tmp_path) == first  # same weights: the stored figures
    with pytest.raises(AssertionError, match="timed again"):
        measure(reloaded, seconds=2.0, cache_dir=tmp_path)  # another setting
    with torch.no_grad():
        reloaded.layers[0].ffn.fc1.weight.zero_()
    with pytest.raises(AssertionError, match="timed again"):
        measure(reloaded, seconds=1.0, cache_dir=tmp_path)  # other weights


def test_peak_memory_is_the_measuring_process_own():
    from melhubert_lib.efficiency import process_speed

    ballast = np.ones((1536, 1024, 1024), dtype=np.uint8)  # 1.5 GiB resident in this process only
    assert process_speed(MelHuBERT(preset("smoke")), seconds=1.0, min_run_time=0.1).peak_memory_mb < 1400
    del ballast


def test_s3prl_upstream_and_featurizer_on_a_suite_checkpoint(smoke_ws, tmp_path):
    model = baseline.untrained_model(smoke_ws)
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    register()
    upstream = S3PRLUpstream(HUB_NAME, path_or_url=str(ckpt)).eval()
    featurizer = Featurizer(upstream)
    wavs = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs, hs_len = upstream(wavs, torch.tensor([32000, 16000]))
        out, out_len = featurizer(hs, hs_len)
        ref = model(model_input(wavs[1, :16000], model.feature_stats)[None]).hidden_states
    assert len(hs) == model.config.depth + 1
    assert all(h.shape[0] == 2 and h.shape[2] == model.config.d_model for h in hs)
    assert out.shape == (2, hs[0].shape[1], model.config.d_model)
    assert abs(int(out_len[0]) - 100) <= 2 and abs(int(out_len[1]) - 50) <= 2  # 20 ms frames
    n, reported = ref[-1].shape[1], int(hs_len[-1][1])
    assert abs(n - reported) <= 2
    m = min(n, reported)
    torch.testing.assert_close(hs[-1][1, :m], ref[-1][0, :m], atol=1e-3, rtol=1e-3)


def test_the_s3prl_upstream_serves_a_chosen_exit(smoke_ws, tmp_path):
    model = baseline.untrained_model(smoke_ws).eval()
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    register()
    (tmp_path / "exit.yaml").write_text("n_layers: 1\n")
    wavs = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(model_input(wavs[0], model.feature_stats)[None], n_layers=1).hidden_states
        confs = {"kwarg": {"n_layers": 1}, "file": {"model_config": str(tmp_path / "exit.yaml")}}
        served = {how: S3PRLUpstream(HUB_NAME, path_or_url=str(ckpt), extra_conf=conf).eval()(
            wavs, torch.tensor([16000]))[0] for how, conf in confs.items()}
    assert model.config.depth > 1
    for hs in served.values():
        assert len(hs) == 2  # the input projection and the first layer, as the truncated model gives
        m = min(hs[-1].shape[1], ref[-1].shape[1])
        torch.testing.assert_close(hs[-1][0, :m], ref[-1][0, :m], atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match=f"n_layers=0: .* has {model.config.depth} layers"):
        MelHuBERTUpstream(str(ckpt), n_layers=0)
    with pytest.raises(ValueError, match="n_layers must be a whole number of layers, got True"):
        MelHuBERTUpstream(str(ckpt), n_layers=True)
    (tmp_path / "bad.yaml").write_text("n_layers: two\n")
    with pytest.raises(ValueError, match="bad.yaml: n_layers must be a whole number"):
        MelHuBERTUpstream(str(ckpt), model_config=str(tmp_path / "bad.yaml"))


def test_s3prl_entry_rejects_what_is_not_a_suite_checkpoint(smoke_ws, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory"):
        melhubert_suite(str(tmp_path / "missing"))
    bare = MelHuBERT(preset("smoke")).save_pretrained(tmp_path / "bare")  # no feature statistics
    with pytest.raises(ValueError, match="feature_stats"):
        melhubert_suite(str(bare))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_s3prl_upstream_refuses_non_finite_waveforms_naming_them(tmp_path, value):
    model = MelHuBERT(preset("smoke"))
    model.feature_stats = FeatureStats(mean=np.zeros(40, np.float32), std=np.ones(40, np.float32))
    upstream = MelHuBERTUpstream(model.save_pretrained(tmp_path / "ckpt"))
    wavs = [0.1 * torch.randn(8000), 0.1 * torch.randn(4000)]
    wavs[1][100] = value
    with pytest.raises(ValueError, match=r"wavs \[1\] of the batch hold NaN or infinite samples"):
        upstream(wavs)


def test_s3prl_run_downstream_trains_the_voxceleb1_recipe_on_the_corpus(smoke_ws, tmp_path):
    ckpt = baseline.untrained_model(smoke_ws).save_pretrained(tmp_path / "ckpt")
    vox = smoke_ws.corpus_root / "VoxCeleb1"
    datarc = "config.downstream_expert.datarc"
    overrides = (f"{datarc}.file_path={smoke_ws.corpus_root},,{datarc}.meta_data={vox / 'iden_split.txt'},,"
                 "config.runner.total_steps=4,,config.runner.log_step=2,,config.runner.eval_step=4,,"
                 "config.runner.save_step=4")
    command = [sys.executable, "-m", "melhubert_lib", "s3prl-downstream", "-m", "train", "-u", HUB_NAME,
               "-k", str(ckpt), "-d", "voxceleb1", "-c", str(RECIPES / "voxceleb1_sid.yaml"),
               "-p", str(tmp_path / "exp"), "--device", "cpu", "-o", overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "exp" / "log.log").read_text()
    assert "dev at step 4" in log and "test at step 4" in log
    assert (tmp_path / "exp" / "states-4.ckpt").is_file()
    split = [line.split() for line in (vox / "iden_split.txt").read_text().splitlines()]
    for code, name in (("2", "dev"), ("3", "test")):
        predicted = (tmp_path / "exp" / f"{name}_predict.txt").read_text().splitlines()
        assert len(predicted) == sum(c == code for c, _ in split)  # this corpus's lists, not a cached other one
        assert all(line.split()[1].startswith("id1") for line in predicted)


def test_append_rows_replaces_rows_with_the_same_key(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, pd.DataFrame({"source": ["a", "b"], "task": ["PR", "PR"], "value": [1.0, 2.0]}), ["source"])
    merged = append_rows(path, pd.DataFrame({"source": ["b", "c"], "task": ["PR", "PR"], "value": [5.0, 6.0]}),
                         ["source"])
    on_disk = pd.read_csv(path)
    assert on_disk.sort_values("source").value.tolist() == [1.0, 5.0, 6.0]
    assert len(merged) == 3
    with pytest.raises(ValueError, match="key"):
        append_rows(path, pd.DataFrame({"value": [1.0]}), ["source"])
    assert len(pd.read_csv(path)) == 3  # a refused merge leaves the file as it was


def test_append_rows_from_two_processes_at_once_loses_no_row(tmp_path):
    path, go = tmp_path / "r.csv", tmp_path / "go"
    writer = ("import sys, time, pathlib, pandas as pd; from melhubert_lib.data.results import append_rows\n"
              "while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.01)\n"  # both start appending at once
              "for i in range(60):\n"
              "    append_rows(sys.argv[1], pd.DataFrame({'source': [f'{sys.argv[2]}{i}'], 'value': [i]}), ['source'])")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(path), name, str(go)], stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    time.sleep(1.0)  # let both import
    go.touch()
    try:
        errors = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(pd.read_csv(path).source) == sorted(f"{n}{i}" for n in "ab" for i in range(60))


def test_cli_efficiency_prints_the_report_of_a_checkpoint(tmp_path, capsys):
    from melhubert_lib.cli import main

    model = MelHuBERT(preset("smoke"))
    main(["efficiency", str(model.save_pretrained(tmp_path / "ckpt")), "--seconds", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == model.num_parameters() and report["seconds"] == 1.0
    with pytest.raises(FileNotFoundError, match="not a MelHuBERT checkpoint"):
        main(["--debug", "efficiency", str(tmp_path)])


def test_evaluate_reuses_the_rows_of_an_unchanged_source_and_retrains_a_changed_one(smoke_ws, monkeypatch):
    import melhubert_lib.probes.judging as evaluation

    ws = smoke_ws
    task = load_task(ws, "SID")
    model = MelHuBERT(preset("smoke"))
    first = evaluation.evaluate(ws, [evaluation.Candidate(model_source(model, "reuse-me"), "test")], [task])
    calls = []
    real = evaluation.evaluate_source
    monkeypatch.setattr(evaluation, "evaluate_source", lambda *a, **k: calls.append(a[1].key) or real(*a, **k))
    again = evaluation.evaluate(ws, [evaluation.Candidate(model_source(model, "reuse-me"), "test")], [task])
    assert calls == []  # nothing trained: the stored rows came back
    utts = pd.read_csv(ws.results / evaluation.UTTERANCES_FILE).query(
        "source == 'reuse-me' and metric == 'accuracy' and seed == 0")
    test_acc = first.scores.query("split == 'test' and metric == 'accuracy' and seed == 0").value.iloc[0]
    assert 1 - utts.errors.sum() / utts.units.sum() == pytest.approx(test_acc)  # the per-utterance rows add up
    assert evaluation.error_difference(ws, "reuse-me", "reuse-me", "SID").value == 0.0
    cols = ["source", "task", "seed", "split", "metric", "value"]
    pd.testing.assert_frame_equal(first.scores[cols].reset_index(drop=True), again.scores[cols].reset_index(drop=True))
    with torch.no_grad():
        model.layers[0].ffn.fc1.weight.mul_(0.5)  # new weights, same name: a new key, so the probe trains again
    evaluation.evaluate(ws, [evaluation.Candidate(model_source(model, "reuse-me"), "test")], [task])
    assert calls == [model_source(model, "reuse-me").key]
    for name in (evaluation.UTTERANCES_FILE, evaluation.DOWNSTREAM_FILE):  # no row of the old weights is left
        rows = pd.read_csv(ws.results / name).query("source == 'reuse-me'")
        assert set(rows.key) == {judging_key(ws, model_source(model, "reuse-me"), "SID")}, name


def test_error_interval_averages_the_probe_seeds_and_brackets_their_mean(smoke_ws):
    import melhubert_lib.probes.judging as evaluation

    task = load_task(smoke_ws, "KS")
    source = model_source(MelHuBERT(preset("smoke")), "two-seeds")
    result = evaluation.evaluate(smoke_ws, [evaluation.Candidate(source, "test")], [task], seeds=(0, 1))
    accuracy = result.scores.query("split == 'test' and metric == 'accuracy'").set_index("seed").value
    assert sorted(accuracy.index) == [0, 1]
    interval = evaluation.error_interval(smoke_ws, "two-seeds", "KS")
    assert interval.value == pytest.approx(1 - accuracy.mean())
    assert interval.low <= interval.value <= interval.high
    assert evaluation.error_difference(smoke_ws, "two-seeds", "two-seeds", "KS", seeds=(0,)).value == 0.0
    row = evaluation.score_intervals(smoke_ws, ["two-seeds"], ["KS"]).iloc[0]  # in accuracy's direction
    assert (row.metric, row.probe_seeds) == ("accuracy", 2) and row.value == pytest.approx(accuracy.mean())
    assert (row.value_lo, row.value_hi) == pytest.approx((1 - interval.high, 1 - interval.low))
    with pytest.raises(ValueError, match="evaluate it first"):
        evaluation.error_interval(smoke_ws, "two-seeds", "KS", seeds=(0, 5))


def test_append_rows_with_replace_drops_every_stored_row_of_a_rejudged_group(tmp_path):
    path = tmp_path / "rows.csv"
    append_rows(path, pd.DataFrame({"source": ["a", "a", "b"], "seed": [0, 1, 0], "value": [1.0, 2.0, 3.0]}),
                ["source", "seed"])
    merged = append_rows(path, pd.DataFrame({"source": ["a"], "seed": [0], "value": [9.0]}), ["source", "seed"],
                         replace=["source"])
    assert sorted(zip(merged.source, merged.seed, merged.value, strict=True)) == [("a", 0, 9.0), ("b", 0, 3.0)]
    pd.DataFrame({"source": ["a"], "value": [1.0]}).to_csv(path, index=False)  # a file from before the seed column
    with pytest.raises(ValueError, match="another version"):
        append_rows(path, pd.DataFrame({"source": ["a"], "seed": [0], "value": [9.0]}), ["source", "seed"])


def test_edit_distances_equal_torchaudios_reference_on_token_sequences():
    from rapidfuzz.distance import Levenshtein
    from torchaudio.functional import edit_distance

    rng = np.random.default_rng(6)
    tokens = ["aa", "b", "ch", "d", " ", "e"]
    for _ in range(200):
        ref, hyp = ([tokens[i] for i in rng.integers(0, len(tokens), rng.integers(0, 12))] for _ in range(2))
        assert Levenshtein.distance(ref, hyp) == edit_distance(ref, hyp)


def _frame_task(rng: np.random.Generator, n: int = 50) -> tuple[TaskData, dict[str, FrameStore]]:
    """Four classes, one a frame, each frame its class's prototype plus noise (one hidden state)."""
    spec = TaskSpec("PC", "frame", "accuracy", False, "librispeech", "synthetic")
    protos = rng.normal(size=(4, 8)) * 2
    splits, feats = {}, {}
    for s in ("train", "dev", "test"):
        labels = [rng.integers(0, 4, rng.integers(5, 30)) for _ in range(n)]
        arrays = [(protos[y] + 0.3 * rng.normal(size=(len(y), 8)))[:, None].astype(np.float16) for y in labels]
        ids = [f"{s}{i}" for i in range(n)]
        splits[s], feats[s] = TaskSplit(ids, [], labels), FrameStore.from_arrays(arrays, ids)
    return TaskData(spec, ["a", "b", "c", "d"], splits), feats


def test_frame_probe_learns_a_frame_code_and_counts_each_utterances_frames():
    task, feats = _frame_task(np.random.default_rng(2))
    results = train_probes("synthetic", task, feats, DownstreamScale(epochs={"PC": 40}, learning_rates={"PC": 5e-2}),
                           (0, 1))
    frames = np.array([len(y) for y in task.splits["test"].labels])
    for result in results:
        assert result.test["accuracy"] > 0.95 and result.dev["accuracy"] > 0.95
        np.testing.assert_array_equal(result.test_units["accuracy"], frames)  # every frame is a unit, padding none
        errors = result.test_errors["accuracy"]
        assert (errors <= frames).all()
        assert result.test["accuracy"] == pytest.approx(1 - errors.sum() / frames.sum())


def test_frame_labels_of_another_frame_count_or_order_are_refused_naming_the_task():
    task, feats = _frame_task(np.random.default_rng(3), n=6)
    task.splits["dev"].labels[2] = task.splits["dev"].labels[2][:-1]
    with pytest.raises(ValueError, match="task PC, split dev: .* other frame counts"):
        train_probes("synthetic", task, feats, DownstreamScale(epochs={"PC": 1}), (0,))
    task, feats = _frame_task(np.random.default_rng(3), n=6)
    feats["test"] = FrameStore(feats["test"].data, feats["test"].offsets, feats["test"].utt_ids[::-1])
    with pytest.raises(ValueError, match="task PC, split test: .* another order than the labels"):
        train_probes("synthetic", task, feats, DownstreamScale(epochs={"PC": 1}), (0,))


def test_phone_frame_task_labels_every_model_frame_and_a_probe_reads_one_hidden_state(smoke_ws):
    task = load_task(smoke_ws, "PC")
    assert task.vocabulary == list(PHONES)
    for split, name in (("train", "train-clean-100"), ("test", "test-clean")):
        lengths = model_inputs(smoke_ws, name).lengths()
        assert [len(y) for y in task.splits[split].labels] == lengths.tolist()
        assert all(0 <= y.min() and y.max() < len(PHONES) for y in task.splits[split].labels)
    with pytest.raises(ValueError, match="layer=1: source 'log-Mel' has hidden states 0 to 0"):
        evaluate_source(smoke_ws, logmel_source(), [task], layer=1)
    source, settings = model_source(baseline.untrained_model(smoke_ws), "untrained"), DownstreamScale(epochs={"PC": 2})
    one = evaluate_source(smoke_ws, source, [task], settings, layer=1)[0]
    by_hand = {s: task_features(smoke_ws, source, task, s).map(lambda f: f[:, 1:2]) for s in ("train", "dev", "test")}
    alone = train_probes("untrained", task, by_hand, settings, (0,))[0]
    assert (one.dev, one.test, one.layer_weights) == (alone.dev, alone.test, [1.0])


def test_phone_probe_check_picks_each_feature_sets_layer_on_dev_and_measures_margins_for_the_pretrained(monkeypatch):
    from melhubert_lib.probes import baseline_checks
    from melhubert_lib.probes.superb import TaskResult

    pretrained, untrained = MelHuBERT(preset("smoke")), MelHuBERT(preset("smoke"))
    last = pretrained.config.depth
    # (dev accuracy, wrong test frames of 4 utterances of 10 frames) per feature set and layer; others: dev 0.1, 9 wrong
    plan = {("log-Mel", 0): (0.5, [5, 5, 5, 5]), ("log-Mel +-4 frames", 0): (0.6, [4, 4, 5, 3]),
            ("untrained", 0): (0.7, [3, 4, 3, 4]), ("pretrained", 0): (0.6, [0, 0, 0, 0]),
            ("pretrained", last): (0.8, [1, 2, 1, 2])}

    def judged(ws, source, tasks, settings=None, seeds=None, layer=None):
        dev, wrong = plan.get((source.name, layer), (0.1, [9, 9, 9, 9]))
        return [TaskResult(source.name, "PC", "accuracy", seed, {"accuracy": dev}, {}, 1, [1.0], 0.0,
                           test_errors={"accuracy": np.array(wrong, dtype=float)},
                           test_units={"accuracy": np.full(4, 10.0)}) for seed in (0, 1)]

    monkeypatch.setattr(baseline_checks, "evaluate_source", judged)
    monkeypatch.setattr(baseline_checks, "load_task", lambda ws, name: name)
    check = baseline_checks.phone_probe_check(None, pretrained, untrained)
    best = check.table[check.table.best].set_index("features")
    assert best.layer.to_dict() == {"log-Mel": 0, "log-Mel +-4 frames": 0, "untrained": 0, "pretrained": last}
    assert best.loc["pretrained", "test_accuracy"] == pytest.approx(1 - 6 / 40)  # chosen on dev, not on test
    assert (best.test_low <= best.test_accuracy).all() and (best.test_accuracy <= best.test_high).all()
    margins = check.margins.set_index("floor").margin
    assert margins.to_dict() == pytest.approx({"log-Mel": 0.35, "log-Mel +-4 frames": 0.25, "untrained": 0.2})
    assert check.passed(0.19) and not check.passed(0.21)


def test_seeds_loss_is_the_sum_of_each_seeds_torch_loss():
    logits, lengths = torch.randn(3, 4, 9, 6), torch.tensor([9, 8, 6, 3])
    sequences = [[1, 2, 2], [3], [5, 4, 1, 2], [2]]
    flat, targets = torch.cat([torch.tensor(t) for t in sequences]), torch.tensor([len(t) for t in sequences])
    ctc = sum(torch.nn.functional.ctc_loss(x.log_softmax(-1).transpose(0, 1), flat, lengths, targets,
                                           zero_infinity=True) for x in logits)
    torch.testing.assert_close(seeds_loss(logits, lengths, sequences), ctc)
    classes = torch.tensor([0, 5, 2, 2])
    ce = sum(torch.nn.functional.cross_entropy(x[:, 0], classes) for x in logits)
    torch.testing.assert_close(seeds_loss(logits, lengths, classes), ce)
    frames = torch.randint(0, 6, (4, 9), generator=torch.Generator().manual_seed(0))
    frames[torch.arange(9)[None, :] >= lengths[:, None]] = IGNORE
    valid = frames != IGNORE
    frame_ce = sum(torch.nn.functional.cross_entropy(x[valid], frames[valid]) for x in logits)
    torch.testing.assert_close(seeds_loss(logits, lengths, frames), frame_ce)


def test_judging_key_follows_the_tasks_probe_recipe_but_not_the_seeds_or_other_tasks(smoke_ws):
    source = logmel_source()
    key, other = judging_key(smoke_ws, source, "PR"), judging_key(smoke_ws, source, "SID")
    settings = smoke_ws.scale.downstream
    with_seeds = dataclasses.replace(smoke_ws.scale, downstream=dataclasses.replace(settings, seeds=(5,)))
    longer = dataclasses.replace(smoke_ws.scale, downstream=dataclasses.replace(
        settings, epochs={**settings.epochs, "PR": settings.epochs["PR"] + 1}))
    wider = dataclasses.replace(smoke_ws.scale, downstream=dataclasses.replace(settings, asr_hidden=7))
    assert judging_key(dataclasses.replace(smoke_ws, scale=with_seeds), source, "PR") == key
    assert judging_key(dataclasses.replace(smoke_ws, scale=longer), source, "PR") != key
    assert judging_key(dataclasses.replace(smoke_ws, scale=longer), source, "SID") == other != key
    wide_ws = dataclasses.replace(smoke_ws, scale=wider)
    assert judging_key(wide_ws, source, "ASR") != judging_key(smoke_ws, source, "ASR")
    assert judging_key(wide_ws, source, "PR") == key
    assert key.startswith(source.key + "-")
    cropped = _with_clip_seconds(smoke_ws, {"SID": 0.5})
    assert judging_key(cropped, source, "SID") != other
    assert judging_key(cropped, source, "PR") == key
    decaying = dataclasses.replace(smoke_ws.scale, downstream=dataclasses.replace(settings, lr_schedule="linear"))
    assert judging_key(dataclasses.replace(smoke_ws, scale=decaying), source, "PR") != key


def _with_clip_seconds(ws: Workspace, seconds: dict[str, float]) -> Workspace:
    downstream = dataclasses.replace(ws.scale.downstream, clip_seconds=seconds)
    return dataclasses.replace(ws, scale=dataclasses.replace(ws.scale, downstream=downstream))


def test_a_clipped_task_reads_the_first_seconds_of_each_clip_into_its_own_cache(smoke_ws):
    sid, source = load_task(smoke_ws, "SID"), logmel_source()
    cropped_ws = _with_clip_seconds(smoke_ws, {"SID": 0.5})
    keep = round(500 / smoke_ws.scale.frame_ms)
    whole, cropped = split_inputs(smoke_ws, sid, "dev"), split_inputs(cropped_ws, sid, "dev")
    assert cropped.utt_ids == whole.utt_ids and whole.lengths().max() > keep
    for i in range(len(whole)):
        np.testing.assert_array_equal(cropped[i], whole[i][:keep])
    pooled_whole = task_features(smoke_ws, source, sid, "dev")
    pooled_cropped = task_features(cropped_ws, source, sid, "dev")
    np.testing.assert_allclose(pooled_cropped.data[:, 0], [cropped[i].mean(0) for i in range(len(cropped))],
                               rtol=2e-3, atol=2e-3)  # float16 cache
    assert not np.array_equal(pooled_cropped.data, pooled_whole.data)  # not the whole clips' cache


def test_clip_seconds_are_refused_for_other_tasks_non_positive_lengths_and_probe_settings(smoke_ws):
    for wrong in ({"PR": 1.0}, {"sid": 1.0}):  # a sequence task; a misspelt task read by another task's split
        with pytest.raises(ValueError, match=r"clip_seconds names \[.* only utterance-level tasks"):
            split_inputs(_with_clip_seconds(smoke_ws, wrong), load_task(smoke_ws, "KS"), "dev")
    settings = dataclasses.replace(smoke_ws.scale.downstream, clip_seconds={"SID": 1.0})
    with pytest.raises(ValueError, match="read from the workspace's scale"):
        evaluate_source(smoke_ws, logmel_source(), [load_task(smoke_ws, "SID")], settings)
    with pytest.raises(ValueError, match="clip_seconds=.*positive"):
        DownstreamScale(clip_seconds={"SID": 0.0})


@pytest.mark.parametrize(("schedule", "expected"), [("constant", [0.03] * 3), ("linear", [0.03, 0.02, 0.01])])
def test_the_probes_learning_rate_follows_the_schedule_epoch_by_epoch(monkeypatch, schedule, expected):
    task, feats = _utterance_task(60, np.random.default_rng(5))
    settings = DownstreamScale(epochs={"SID": 3}, learning_rates={"SID": 0.03}, lr_schedule=schedule)
    assert [superb.epoch_lr(settings, "SID", e) for e in (1, 2, 3)] == pytest.approx(expected)
    used = []
    step = superb._StackedProbes.step

    def recording_step(self, batch):
        used.append(self.optimizers[0].param_groups[0]["lr"])
        step(self, batch)

    monkeypatch.setattr(superb._StackedProbes, "step", recording_step)
    train_probes("synthetic", task, feats, settings, (0, 1))
    per_epoch = len(used) // 3
    assert len(used) == 3 * per_epoch > 0
    assert used == pytest.approx([lr for lr in expected for _ in range(per_epoch)])


def test_an_unknown_probe_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule='cosine'"):
        DownstreamScale(lr_schedule="cosine")
