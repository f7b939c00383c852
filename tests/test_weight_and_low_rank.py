"""Weight pruning (global sparsity, zeros kept through fine-tuning) and low-rank factorisation."""

from __future__ import annotations

import copy

import pytest
import torch

from melhubert_lib.compression.ffn_shrink import ffn_step, ffn_unit_scores, shrink_ffn
from melhubert_lib.compression.low_rank import energy_ranks, factorisable, factorise, uniform_ranks
from melhubert_lib.compression.weight_pruning import keep_zeros, prunable, prune_to_sparsity, sparsity
from melhubert_lib.model import LowRankLinear, MelHuBERT, preset
from melhubert_lib.scales import get_scale


def _model() -> MelHuBERT:
    torch.manual_seed(0)
    return MelHuBERT(preset("smoke")).eval()


@pytest.mark.parametrize("target", [0.2, 0.5, 0.9])
def test_achieved_global_sparsity_equals_the_request(target):
    model = prune_to_sparsity(_model(), target)
    total = sum(getattr(m, n).numel() for m, n in prunable(model))
    assert sparsity(model) == pytest.approx(round(target * total) / total, abs=1e-9)
    assert model.input_proj.weight.count_nonzero() == model.input_proj.weight.numel()  # outside the pruned set
    assert set(model.state_dict()) == set(_model().state_dict())  # permanent: ordinary keys


def test_iterative_pruning_only_adds_zeros():
    model = prune_to_sparsity(_model(), 0.3)
    zeros = [(getattr(m, n) == 0).clone() for m, n in prunable(model)]
    prune_to_sparsity(model, 0.6)
    assert all(bool((getattr(m, n)[z] == 0).all()) for (m, n), z in zip(prunable(model), zeros, strict=True))
    assert sparsity(model) == pytest.approx(0.6, abs=1e-3)


def test_fine_tuning_keeps_pruned_weights_at_zero():
    model = prune_to_sparsity(_model().train(), 0.5)
    keep_zeros(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(2, 30, 80), torch.randint(0, model.config.n_clusters, (2, 30))
    for _ in range(3):
        loss = model(x, targets=y, mask=torch.ones(2, 30, dtype=torch.bool)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_bad_sparsity_is_refused():
    with pytest.raises(ValueError, match="sparsity"):
        prune_to_sparsity(_model(), 1.0)


def test_paper_schedule_has_the_authors_38_events():
    PAPER_SPARSITIES = get_scale("paper").compression.sparsities  # noqa: N806
    assert len(PAPER_SPARSITIES) == 38 and PAPER_SPARSITIES[0] == 0.2 and PAPER_SPARSITIES[-1] == 0.95
    assert all(a < b for a, b in zip(PAPER_SPARSITIES, PAPER_SPARSITIES[1:], strict=False))


def test_full_rank_svd_reproduces_every_layer():
    model = _model()
    full = {name: min(lin.in_features, lin.out_features) for name, lin in factorisable(model).items()}
    factored = factorise(model, full).eval()
    assert all(isinstance(factored.get_submodule(n), LowRankLinear) for n in full)
    x = torch.randn(2, 25, 80)
    torch.testing.assert_close(factored(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)


def test_factorised_model_saves_and_loads_with_its_ranks(tmp_path):
    model = _model()
    ranks = uniform_ranks(model, 0.5)
    factored = factorise(model, ranks)
    assert factored.num_parameters() < model.num_parameters()
    loaded = MelHuBERT.from_pretrained(factored.save_pretrained(tmp_path / "lr")).eval()
    assert loaded.config.ranks == ranks
    x = torch.randn(1, 20, 80)
    torch.testing.assert_close(loaded(x).logits, factored.eval()(x).logits)


def test_energy_ranks_grow_with_the_threshold_and_reject_bad_ranks():
    model = _model()
    low, high = energy_ranks(model, 0.5), energy_ranks(model, 0.8)
    assert all(high.get(name, 10**6) >= rank for name, rank in low.items())
    name = next(iter(factorisable(model)))
    with pytest.raises(ValueError, match="rank"):
        factorise(model, {name: 10**4})
    with pytest.raises(ValueError, match="keep"):
        uniform_ranks(model, 1.5)


def test_ffn_shrink_removes_the_lowest_units_and_matches_their_zeroing():
    model = _model()
    scores = ffn_unit_scores(model)
    shrunk = shrink_ffn(model, 16).eval()
    assert shrunk.config.ffn_dims == [w - 16 for w in model.config.ffn_dims]
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer, s in zip(masked.layers, scores, strict=True):
            drop = torch.argsort(s)[:16]
            layer.ffn.fc2.weight[:, drop] = 0.0  # a unit whose output column is zero contributes nothing
    x = torch.randn(2, 25, 80)
    torch.testing.assert_close(shrunk(x).logits, masked(x).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="FFN units"):
        shrink_ffn(model, 64)


@pytest.mark.parametrize("width", [64, 100])
def test_an_ffn_shrink_to_a_width_not_below_the_current_one_says_so(width):
    with pytest.raises(ValueError, match=rf"FFN width {width} is not below the current width 64.*\[1, 63\]"):
        ffn_step(_model(), width)
    with pytest.raises(ValueError, match="n_remove=-36: the FFN shrink removes at least one unit"):
        shrink_ffn(_model(), -36)


def test_svd_refuses_a_weight_pruned_model():
    from melhubert_lib.compression.weight_pruning import prune_to_sparsity as prune

    model = prune(_model(), 0.5)
    with pytest.raises(ValueError, match="weight-pruned"):
        factorise(model, uniform_ranks(model, 0.5))


def test_sparse_kernels_compute_the_same_outputs():
    from melhubert_lib.compression.weight_pruning import with_sparse_kernels

    model = prune_to_sparsity(_model(), 0.9)
    x = torch.randn(2, 25, 80)
    with torch.no_grad():
        torch.testing.assert_close(with_sparse_kernels(model)(x).logits, model(x).logits, atol=1e-5, rtol=1e-4)
