"""Head pruning: scores, selection, and physical removal equal to zeroing the heads' contributions."""

from __future__ import annotations

import copy

import pytest
import torch

from melhubert_lib.compression.head_pruning import fraction_count, head_importance, head_l1_scores, select_heads
from melhubert_lib.efficiency import count_macs
from melhubert_lib.model import MelHuBERT, preset


def _model() -> MelHuBERT:
    torch.manual_seed(0)
    cfg = preset("smoke")
    return MelHuBERT(type(cfg)(**{**cfg.__dict__, "heads": [4, 3], "ffn_dims": [64, 48]})).eval()


def test_removed_heads_equal_the_original_with_their_contributions_zeroed():
    model = _model()
    remove = {0: [1, 3], 1: [0]}
    pruned = copy.deepcopy(model).prune_heads(remove).eval()
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for i, hs in remove.items():
            att = masked.layers[i].attention
            for h in hs:
                att.out_proj.weight[:, h * att.head_dim : (h + 1) * att.head_dim] = 0.0
    x = torch.randn(2, 40, 80)
    lengths = torch.tensor([40, 31])
    for a, b in zip(pruned(x, lengths).hidden_states, masked(x, lengths).hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert pruned.config.heads == [2, 2]
    assert pruned.config.original_heads() == [[0, 2], [1, 2]]
    assert copy.deepcopy(pruned).prune_heads({0: [0]}).config.original_heads() == [[2], [1, 2]]  # ids survive
    before = pruned.config
    pruned.prune_heads({0: [0]})
    assert before.original_heads() == [[0, 2], [1, 2]]  # in-place pruning leaves the old config as it was
    assert pruned.num_parameters() < model.num_parameters()
    assert count_macs(pruned).total < count_macs(model).total


def test_pruned_model_reloads_with_one_call(tmp_path):
    pruned = _model().prune_heads({0: [0]})
    loaded = MelHuBERT.from_pretrained(pruned.save_pretrained(tmp_path / "p")).eval()
    x = torch.randn(1, 20, 80)
    torch.testing.assert_close(loaded(x).logits, pruned.eval()(x).logits)


def test_l1_scores_follow_the_weights():
    model = _model()
    with torch.no_grad():
        for proj in ("q_proj", "k_proj", "v_proj"):
            lin = getattr(model.layers[1].attention, proj)
            lin.weight[16:32] *= 10  # head 1 of layer 1 (head_dim 16)
    scores = head_l1_scores(model)
    assert [len(s) for s in scores] == [4, 3]
    assert int(scores[1].argmax()) == 1
    assert select_heads([scores[0], scores[1]])[1] != [1]


def test_global_selection_keeps_each_layers_best_head():
    scores = [torch.tensor([0.1, 0.2, 0.05]), torch.tensor([0.3, 0.01]), torch.tensor([0.9])]
    assert select_heads(scores, 3) == {0: [0, 2], 1: [1]}
    assert select_heads(scores) == {0: [2], 1: [1]}  # per layer: the lowest head of each layer with several
    with pytest.raises(ValueError, match="cannot remove 4 heads"):
        select_heads(scores, 4)


def test_asking_to_remove_every_head_of_a_layer_is_refused():
    with pytest.raises(ValueError, match="at least one must stay"):
        _model().prune_heads({1: [0, 1, 2]})


@pytest.mark.parametrize("head", [3, 5, -1])
def test_removing_a_head_that_does_not_exist_names_the_layer_and_the_valid_range(head):
    with pytest.raises(ValueError, match=rf"head index \[{head}\] out of range for layer 1: it has 3 heads, "
                                         r"valid indices 0\.\.2"):
        _model().prune_heads({1: [head]})


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_an_importance_fraction_outside_zero_to_one_is_refused_before_any_work(fraction):
    with pytest.raises(ValueError, match=rf"fraction={fraction} must lie in \(0, 1\]"):
        head_importance(_model(), None, fraction=fraction)  # no data: the check must come first


def test_an_importance_fraction_reads_at_least_one_item():
    assert [fraction_count(n, f) for n, f in ((10, 0.25), (10, 1.0), (3, 0.01), (7, 0.5))] == [2, 10, 1, 4]


def test_importance_scores_are_normalised_and_follow_the_loss(tiny_data):
    model = _model().train()
    scores = head_importance(model, tiny_data["train"], fraction=0.5, batch_seconds=4.0)
    assert [len(s) for s in scores] == [4, 3]
    assert all(torch.isclose(s.norm(), torch.tensor(1.0)) for s in scores)
    with torch.no_grad():  # a head whose output is cut off cannot matter to the loss
        model.layers[0].attention.out_proj.weight[:, 16:32] = 0.0
    assert float(head_importance(model, tiny_data["train"], fraction=0.5, batch_seconds=4.0)[0][1]) == 0.0
    assert model.training
