"""FLASH layers: the chunked attention equals its plain formula, padding and length behave, the model trains, and
the compression methods that apply to it work on it (and head pruning is refused)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from melhubert_lib.compression.ffn_shrink import shrink_ffn
from melhubert_lib.compression.head_pruning import head_l1_scores
from melhubert_lib.compression.low_rank import factorisable, factorise
from melhubert_lib.compression.weight_pruning import prune_to_sparsity, sparsity
from melhubert_lib.efficiency import count_macs
from melhubert_lib.model import LowRankLinear, MelHuBERT, MelHuBERTConfig, mixed_chunk_attention, preset
from melhubert_lib.scales import PretrainScale
from melhubert_lib.training.pretrain import evaluate_ssl, train

SCHED = PretrainScale(steps=60, lr=3e-3, batch_seconds=1.6, crop_seconds=0.6, warmup_steps=2, decay="cosine",
                      log_every=10, eval_every=60, checkpoint_every=60)  # crops of 30 frames


def plain_mixed_attention(quad_q: torch.Tensor, quad_k: torch.Tensor, lin_q: torch.Tensor, lin_k: torch.Tensor,
                          v: torch.Tensor, chunk: int, lengths: list[int]) -> torch.Tensor:
    """The same formula one utterance at a time with whole T x T matrices: no chunk reshapes, no key-value sums."""
    out = torch.zeros_like(v)
    for b, n in enumerate(lengths):
        frame = torch.arange(n)
        same_chunk = frame[:, None] // chunk == frame[None, :] // chunk
        local = torch.where(same_chunk, F.relu(quad_q[b, :n] @ quad_k[b, :n].T / chunk) ** 2, 0.0)
        glob = lin_q[b, :n] @ lin_k[b, :n].T / n
        out[b, :n] = (local + glob) @ v[b, :n]
    return out


def flash_model(seed: int = 0, **changes) -> MelHuBERT:
    torch.manual_seed(seed)
    model = MelHuBERT(dataclasses.replace(preset("smoke-flash"), **changes))
    with torch.no_grad():  # scales of order 1 (not the 0.02 they start at), so both attentions matter in the checks
        for layer in model.layers:
            layer.qk_scale.normal_()
            layer.qk_offset.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("t", [40, 47])
def test_chunked_attention_equals_the_plain_formula_also_with_padding(t):
    gen = torch.Generator().manual_seed(0)
    b, s, e, chunk = 3, 6, 5, 10
    quad_q, quad_k, lin_q, lin_k = (torch.randn(b, t, s, generator=gen, dtype=torch.float64) for _ in range(4))
    v = torch.randn(b, t, e, generator=gen, dtype=torch.float64)
    lengths = [t, 23, 10]
    valid = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    chunked = mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v, chunk, valid)
    plain = plain_mixed_attention(quad_q, quad_k, lin_q, lin_k, v, chunk, lengths)
    torch.testing.assert_close(chunked[valid], plain[valid])
    unpadded = mixed_chunk_attention(quad_q[:1], quad_k[:1], lin_q[:1], lin_k[:1], v[:1], chunk)
    torch.testing.assert_close(unpadded, plain[:1])


def test_padding_does_not_change_a_flash_models_outputs():
    model = flash_model().eval()
    short = torch.randn(1, 27, 80)
    batch = torch.cat([torch.cat([short, torch.randn(1, 16, 80)], 1), torch.randn(1, 43, 80)])
    with torch.no_grad():
        alone = model(short)
        padded = model(batch, lengths=torch.tensor([27, 43]))
    torch.testing.assert_close(padded.hidden_states[-1][:1, :27], alone.hidden_states[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.logits[:1, :27], alone.logits, atol=1e-5, rtol=1e-5)


def test_a_flash_models_cost_per_second_does_not_grow_with_length_and_a_transformers_does():
    flash, transformer = MelHuBERT(preset("default-flash")).eval(), MelHuBERT(preset("default")).eval()
    flash_growth = count_macs(flash, 60.0).per_second / count_macs(flash, 2.0).per_second
    transformer_growth = count_macs(transformer, 60.0).per_second / count_macs(transformer, 2.0).per_second
    assert abs(flash_growth - 1) < 0.01 < transformer_growth - 1.5


def test_the_default_flash_preset_matches_the_default_models_macs_on_training_crops():
    flash, transformer = MelHuBERT(preset("default-flash")).eval(), MelHuBERT(preset("default")).eval()
    ratio = count_macs(flash, 4.0).per_second / count_macs(transformer, 4.0).per_second
    assert 0.9 < ratio < 1.1


def test_a_flash_model_learns_masked_prediction(tiny_data, tmp_path):
    before = evaluate_ssl(flash_model(), tiny_data["valid"])
    final = train(flash_model(), tiny_data["train"], tiny_data["valid"], SCHED, tmp_path / "run").final
    assert final.loss < 0.7 * before.loss
    assert final.accuracy > before.accuracy + 0.2


def test_a_chunk_that_does_not_divide_the_training_crop_is_refused_before_any_work(tiny_data, tmp_path):
    model = flash_model(chunk=20)  # SCHED crops 0.6 s: 30 frames
    with pytest.raises(ValueError, match="chunk=20 frames does not divide the training crop of 30 frames"):
        train(model, tiny_data["train"], tiny_data["valid"], SCHED, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("changes", "message"), [
    ({"heads": [2, 2]}, r"a FLASH layer is one gated attention unit, give 1 head per layer"),
    ({"chunk": 0}, r"chunk=0: FLASH's chunks need at least 1 frame"),
    ({"block": "lstm"}, r"block='lstm': choose one of transformer, flash"),
])
def test_bad_flash_settings_are_refused_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(preset("smoke-flash"), **changes)


def test_a_flash_checkpoint_reloads_with_one_call(tmp_path):
    model = flash_model().eval()
    loaded = MelHuBERT.from_pretrained(model.save_pretrained(tmp_path / "flash")).eval()
    assert loaded.config == model.config and loaded.config.block == "flash"
    x = torch.randn(2, 33, 80)
    torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_shrinking_flash_units_equals_zeroing_their_output_columns():
    model = flash_model().eval()
    shrunk = shrink_ffn(model, 24)
    assert shrunk.config.ffn_dims == [72, 72]
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for old, new in zip(masked.layers, shrunk.layers, strict=True):
            kept = {tuple(row.tolist()) for row in new.u_proj.weight}
            dropped = torch.tensor([tuple(row.tolist()) not in kept for row in old.u_proj.weight])
            assert int(dropped.sum()) == 24
            old.out_proj.weight[:, dropped] = 0.0
    x = torch.randn(2, 30, 80)
    torch.testing.assert_close(shrunk(x).logits, masked(x).logits, atol=1e-5, rtol=1e-5)


def test_full_rank_svd_and_weight_pruning_work_on_every_flash_linear_map():
    model = flash_model().eval()
    maps = factorisable(model)
    assert sorted(maps) == sorted(f"layers.{i}.{n}" for i in range(2) for n in ("u_proj", "v_proj", "z_proj",
                                                                              "out_proj"))
    factored = factorise(model, {n: min(m.in_features, m.out_features) for n, m in maps.items()}).eval()
    assert all(isinstance(factored.get_submodule(n), LowRankLinear) for n in maps)
    x = torch.randn(2, 25, 80)
    torch.testing.assert_close(factored(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
    assert abs(sparsity(prune_to_sparsity(model, 0.5)) - 0.5) < 0.01


def test_head_pruning_of_a_flash_model_is_refused_naming_what_applies():
    model = flash_model()
    with pytest.raises(ValueError, match="head pruning needs attention heads; a flash model has one gated attention"):
        head_l1_scores(model)
    with pytest.raises(ValueError, match="prune its units \\(ffn-shrink\\), weights, rank or layers instead"):
        model.prune_heads({0: [0]})


def test_a_flash_config_round_trips_through_json():
    cfg = preset("default-flash")
    assert MelHuBERTConfig.from_json(cfg.to_json()) == cfg


def test_a_flash_models_sparse_macs_count_its_attention_and_fall_by_the_zeroed_share():
    from melhubert_lib.efficiency import sparse_macs

    model = flash_model().eval()
    dense = count_macs(model, 2.0).total
    assert sparse_macs(model, 2.0) == dense  # no zero weights: every MAC counts, the attention's included
    u_proj = model.layers[0].u_proj
    with torch.no_grad():
        u_proj.weight[: u_proj.out_features // 2] = 0.0
    frames = 2.0 * 1000 / model.config.frame_ms
    assert sparse_macs(model, 2.0) == pytest.approx(dense - frames * u_proj.in_features * (u_proj.out_features // 2),
                                                    rel=1e-6)


def test_a_run_folder_that_trained_another_architecture_is_refused_not_resumed(tiny_data, tmp_path):
    sched = dataclasses.replace(SCHED, steps=2, eval_every=2, checkpoint_every=2)
    torch.manual_seed(0)
    train(MelHuBERT(preset("smoke")), tiny_data["train"], tiny_data["valid"], sched, tmp_path / "run")
    with pytest.raises(ValueError, match="other model_config"):
        train(flash_model(), tiny_data["train"], tiny_data["valid"], sched, tmp_path / "run")
