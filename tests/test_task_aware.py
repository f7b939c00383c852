"""Task-aware head importance: the probe's loss through the live upstream, and pruning by any head score."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from melhubert_lib.compression.head_pruning import pruning_step
from melhubert_lib.data.batching import Crop, collate
from melhubert_lib.data.tasks import SPLITS, load_task
from melhubert_lib.model import MelHuBERT
from melhubert_lib.probes.layer_features import feature_precision, model_source, split_inputs, task_features
from melhubert_lib.probes.superb import probe_loss, train_probes
from melhubert_lib.probes.task_aware import _batch_loss, task_head_importance
from melhubert_lib.training import baseline


@pytest.fixture(scope="module")
def probed(smoke_ws):
    """The smoke baseline with a trained probe per task (SID: pooled, PR: frame sequences)."""
    model = MelHuBERT.from_pretrained(baseline.pretrain_baseline(smoke_ws, name="task-aware-base").model_dir)
    source = model_source(model, "base")
    probes = {}
    for name in ("SID", "PR"):
        task = load_task(smoke_ws, name)
        feats = {s: task_features(smoke_ws, source, task, s) for s in SPLITS}
        probes[name] = (task, feats, train_probes("base", task, feats, smoke_ws.scale.downstream, (0,))[0].probe)
    return model, probes


@pytest.mark.parametrize("name", ["SID", "PR"])
def test_live_task_loss_equals_the_probe_loss_on_the_cached_features(smoke_ws, probed, name):
    model, probes = probed
    task, feats, probe = probes[name]
    rows = [0, 1, 2]
    inputs = split_inputs(smoke_ws, task, "train")
    batch = collate([Crop(i, 0, len(inputs[i])) for i in rows], inputs)
    live = _batch_loss(batch, [task.splits["train"].labels[i] for i in rows], probe, task.spec.kind == "utterance")
    lengths = torch.tensor([len(feats["train"][i]) for i in rows])
    cached = torch.zeros(len(rows), int(lengths.max()), *feats["train"].data.shape[1:])
    for j, i in enumerate(rows):
        cached[j, : lengths[j]] = torch.from_numpy(feats["train"][i]).float()
    labels = [task.splits["train"].labels[i] for i in rows]
    with torch.no_grad():
        expected = probe_loss(probe, cached, lengths, labels if name == "PR" else torch.tensor(labels))
    # the cache holds float16 of a pass in the scale's feature precision: the live pass runs in the same one here
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                         enabled=feature_precision(smoke_ws) == "bfloat16"):
        got = float(live(model.eval()))
    assert got == pytest.approx(float(expected), rel=2e-2)


def test_task_importance_is_normalised_and_zero_for_a_silenced_head(smoke_ws, probed):
    model, probes = probed
    task, _, probe = probes["SID"]
    scores = task_head_importance(smoke_ws, model, task, probe, fraction=0.5)
    assert [len(s) for s in scores] == list(model.config.heads)
    assert all(torch.isclose(s.norm(), torch.tensor(1.0)) for s in scores)
    silenced = MelHuBERT.from_pretrained(baseline.pretrain_baseline(smoke_ws, name="task-aware-base").model_dir)
    dim = silenced.config.head_dim
    with torch.no_grad():  # head 1 of layer 0 no longer reaches the output: it cannot matter to any task
        silenced.layers[0].attention.out_proj.weight[:, dim : 2 * dim] = 0.0
    assert float(task_head_importance(smoke_ws, silenced, task, probe, fraction=0.5)[0][1]) == 0.0


def test_task_importance_refuses_a_probe_of_another_depth(smoke_ws, probed):
    model, probes = probed
    task, _, probe = probes["SID"]
    shallow = MelHuBERT(dataclasses.replace(model.config, heads=model.config.heads[:1],
                                            ffn_dims=model.config.ffn_dims[:1]))
    with pytest.raises(ValueError, match="hidden states"):
        task_head_importance(smoke_ws, shallow, task, probe)


def test_task_importance_refuses_the_frame_level_learning_check(smoke_ws, probed):
    model, probes = probed
    with pytest.raises(ValueError, match="task PC is the baseline's frame-level learning check"):
        task_head_importance(smoke_ws, model, load_task(smoke_ws, "PC"), probes["PR"][2])


def test_pruning_step_takes_any_scoring_function(probed):
    model, _ = probed
    heads = model.config.heads

    def scorer(m: MelHuBERT) -> list[torch.Tensor]:  # a known ranking: head h of layer i scores 10 * i + h
        return [torch.arange(n, dtype=torch.float) + 10 * i for i, n in enumerate(m.config.heads)]

    pruned = pruning_step(scorer)(model, sum(heads) - 1)
    assert pruned.config.head_ids[0] == list(range(1, heads[0]))  # layer 0's head 0 was the lowest
    assert pruned.config.heads[1:] == heads[1:]


def test_task_layer_importance_is_zero_for_a_layer_that_passes_its_input_through(smoke_ws, probed):
    import copy

    from melhubert_lib.probes.task_aware import task_layer_importance

    model, probes = probed
    task, _, probe = probes["SID"]
    through = copy.deepcopy(model)
    with torch.no_grad():  # layer 1 adds nothing to an input that layer 0 already normalised: it passes it through
        layer = through.layers[1]
        for linear in (layer.attention.out_proj, layer.ffn.fc2):
            linear.weight.zero_()
            linear.bias.zero_()
        for norm in (layer.attn_norm, layer.ffn_norm, through.layers[0].ffn_norm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    rises = task_layer_importance(smoke_ws, through, task, probe)
    assert abs(rises[1]) < 1e-3 * abs(rises[0])
    assert task_layer_importance(smoke_ws, through, task, probe) == rises  # the model it was given is untouched
    with pytest.raises(ValueError, match="the SID probe reads 3 hidden states, the model has 2"):
        task_layer_importance(smoke_ws, copy.deepcopy(model).truncate(1), task, probe)


def test_a_ranked_layer_step_removes_the_lowest_scored_original_layers_one_by_one():
    from melhubert_lib.compression.layer_pruning import ranked_step
    from melhubert_lib.model import preset

    torch.manual_seed(0)
    cfg = preset("smoke")
    model = MelHuBERT(dataclasses.replace(cfg, heads=[cfg.heads[0]] * 4, ffn_dims=[cfg.ffn_dims[0]] * 4))
    step = ranked_step([0.3, -0.1, 0.5, 0.2])  # original layer 1 matters least, then 3, then 0
    three = step(model, 3)
    assert three.config.layer_ids == [0, 2, 3]
    two = step(three, 2)  # from the previous level: its layers keep their original numbers
    assert two.config.layer_ids == [0, 2]
    assert step(model, 1).config.layer_ids == [2]  # in one shot to one layer: the highest score stays
    by_hand = copy.deepcopy(model).drop_layers([1, 3]).state_dict()
    assert two.state_dict().keys() == by_hand.keys()
    assert all(torch.equal(two.state_dict()[k], v) for k, v in by_hand.items())
    assert model.config.depth == 4  # the caller's model is untouched
    with pytest.raises(ValueError, match="keep at least one, and remove at least one"):
        step(model, 4)
    with pytest.raises(ValueError, match="2 layer scores for a model whose layers came from 4"):
        ranked_step([0.1, 0.2])(model, 2)


def test_layer_pruning_by_a_ranking_refuses_scores_that_do_not_fit_the_baseline(smoke_ws):
    from melhubert_lib.probes.task_aware import prune_layers_by_rises

    base = baseline.pretrain_baseline(smoke_ws)  # smoke: 2 layers
    with pytest.raises(ValueError, match="3 layer scores for a baseline of 2 layers"):
        prune_layers_by_rises(smoke_ws, base, [0.1, 0.2, 0.3], "x")
    assert not smoke_ws.run_dir("q3-layers-x").exists()  # refused before any work
