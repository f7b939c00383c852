"""MelHuBERT shapes, masking, loss and checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from melhubert_lib.data.features import FeatureStats
from melhubert_lib.model import LowRankLinear, MelHuBERT, compute_span_mask, padded_frames, preset


def test_paper_preset_has_the_authors_parameter_count():
    model = MelHuBERT(preset("paper"))
    assert abs(model.num_parameters() - 90.2e6) < 0.2e6


def test_unknown_preset_names_the_parameter():
    with pytest.raises(ValueError, match="preset"):
        preset("huge")


def _odd_config():
    cfg = preset("smoke")
    return dataclasses.replace(cfg, heads=[2, 1, 3], ffn_dims=[64, 17, 40], ranks={"layers.1.ffn.fc1": 5})


def test_checkpoint_roundtrip_keeps_shapes_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = MelHuBERT(_odd_config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = MelHuBERT.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert isinstance(loaded.layers[1].ffn.fc1, LowRankLinear)
    assert loaded.layers[2].attention.q_proj.out_features == 3 * model.config.head_dim
    x = torch.randn(2, 30, 80)
    assert torch.equal(model(x).logits, loaded(x).logits)
    assert loaded.feature_stats is None


def test_checkpoint_carries_its_input_normalisation(tmp_path):
    model = MelHuBERT(preset("smoke"))
    model.feature_stats = FeatureStats(mean=np.linspace(-1, 1, 40, dtype=np.float32), std=np.full(40, 2.0, np.float32))
    loaded = MelHuBERT.from_pretrained(model.save_pretrained(tmp_path / "ckpt"))
    np.testing.assert_array_equal(loaded.feature_stats.mean, model.feature_stats.mean)
    np.testing.assert_array_equal(loaded.feature_stats.std, model.feature_stats.std)


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path):
    MelHuBERT(_odd_config()).save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["ffn_dims"] = [64, 64, 40]
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model.safetensors") as err:
        MelHuBERT.from_pretrained(tmp_path / "ckpt")
    assert "layers.1.ffn.fc2.weight: config builds (32, 64), file holds (32, 17)" in str(err.value)


def test_a_config_splitting_the_attention_into_other_heads_of_the_same_width_is_refused(tmp_path):
    MelHuBERT(preset("smoke")).save_pretrained(tmp_path / "ckpt")  # heads [2, 2] x 16 dims
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg.update(heads=[4, 4], head_dim=8)  # the same 32 rows in every projection
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model.safetensors") as err:
        MelHuBERT.from_pretrained(tmp_path / "ckpt")
    for i in (0, 1):
        assert f"layers.{i}.attention.{{q,k,v,out}}_proj: config splits them into 4 heads x 8, file was saved " \
               "as 2 heads x 16" in str(err.value)


def test_a_truncated_weights_file_names_its_path(tmp_path):
    ckpt = MelHuBERT(preset("smoke")).save_pretrained(tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        MelHuBERT.from_pretrained(ckpt)
    assert str(weights) in str(err.value)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MelHuBERT.from_pretrained(tmp_path / "nowhere")


def test_padding_does_not_change_an_utterances_outputs():
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).eval()
    short = torch.randn(1, 20, 80)
    batch = torch.cat([torch.cat([short, torch.randn(1, 15, 80)], 1), torch.randn(1, 35, 80)])
    alone = model(short).hidden_states[-1]
    padded = model(batch, lengths=torch.tensor([20, 35])).hidden_states[-1][:1, :20]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_padded_frames_are_those_past_each_length_and_seconds_round_to_frames():
    assert padded_frames(torch.tensor([3, 5, 0]), 5).tolist() == [[False] * 3 + [True] * 2, [False] * 5, [True] * 5]
    assert preset("smoke", frame_ms=20).frames(10.0) == 500
    assert preset("smoke", frame_ms=10).frames(2.504) == 250  # rounded to the nearest frame
    assert preset("smoke", frame_ms=10).frames(2.506) == 251


def test_span_mask_covers_a_plausible_fraction_and_respects_lengths():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([400, 200])
    mask = compute_span_mask((2, 400), 0.7, 5, lengths, gen)
    assert not mask[1, 200:].any()
    frac = mask[0].float().mean().item()
    assert 0.35 < frac < 0.75  # overlapping spans: HuBERT's 0.7 masks about half the frames


def test_loss_counts_only_masked_unpadded_frames():
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke"))
    x, lengths = torch.randn(2, 40, 80), torch.tensor([40, 25])
    targets = torch.randint(0, 16, (2, 40))
    mask = compute_span_mask((2, 40), 0.7, 5, lengths, torch.Generator().manual_seed(1))
    mask[1, 30:] = True  # masked padding must still be ignored
    out = model(x, lengths, targets, mask)
    assert out.n_masked == int((mask & (torch.arange(40)[None] < lengths[:, None])).sum())
    manual = torch.nn.functional.cross_entropy(out.logits[mask & (torch.arange(40)[None] < lengths[:, None])],
                                               targets[mask & (torch.arange(40)[None] < lengths[:, None])])
    torch.testing.assert_close(out.loss, manual)


def test_masked_input_frames_do_not_reach_the_model():
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).eval()
    x = torch.randn(1, 30, 80)
    mask = torch.zeros(1, 30, dtype=torch.bool)
    mask[0, 10:15] = True
    changed = x.clone()
    changed[0, 10:15] += 5.0
    torch.testing.assert_close(model(x, mask=mask).logits, model(changed, mask=mask).logits)


def test_wrong_feature_width_is_a_clear_error():
    with pytest.raises(ValueError, match="80"):
        MelHuBERT(preset("smoke"))(torch.randn(1, 10, 40))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_features_are_refused_instead_of_giving_non_finite_hidden_states(value):
    x = torch.randn(2, 10, 80)
    x[1, 3, 7] = value
    with pytest.raises(ValueError, match="feats hold NaN or infinite values"):
        MelHuBERT(preset("smoke"))(x)


def test_low_rank_rejects_a_rank_above_the_layer_size():
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(8, 4, 5)


@pytest.mark.parametrize("frame_ms", [10, 20])
def test_a_preset_at_any_frame_rate_stacks_its_input_and_masks_100_ms_spans(frame_ms):
    cfg = preset("default", frame_ms=frame_ms)
    assert cfg.frame_ms == frame_ms
    assert cfg.input_dim == 40 * frame_ms // 10  # 40 Mel bins per 10 ms frame, stacked to the model's rate
    assert cfg.mask_span * frame_ms == 100


def test_truncation_keeps_the_first_layers_and_their_shapes_in_the_config(tmp_path):
    torch.manual_seed(0)
    model = MelHuBERT(dataclasses.replace(_odd_config(), ranks={"layers.1.ffn.fc1": 5, "layers.2.ffn.fc2": 4})).eval()
    x = torch.randn(2, 30, 80)
    expected = model(x, n_layers=2).hidden_states
    cut = MelHuBERT.from_pretrained(model.truncate(2).save_pretrained(tmp_path / "cut")).eval()
    assert (cut.config.heads, cut.config.ffn_dims, cut.config.ranks) == ([2, 1], [64, 17], {"layers.1.ffn.fc1": 5})
    for a, b in zip(cut(x).hidden_states, expected, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"depth 3 outside \[1, 2\]"):
        cut.truncate(3)


def test_replacing_a_linear_map_records_its_rank_and_refuses_other_shapes():
    model = MelHuBERT(preset("smoke"))
    fc1 = model.linear_maps()["layers.0.ffn.fc1"]
    model.replace_linear("layers.0.ffn.fc1", LowRankLinear(fc1.in_features, fc1.out_features, 3))
    assert model.config.ranks == {"layers.0.ffn.fc1": 3}
    model.replace_linear("layers.0.ffn.fc1", torch.nn.Linear(fc1.in_features, fc1.out_features))
    assert model.config.ranks == {}
    with pytest.raises(ValueError, match="the replacement maps 32->7, the layer 32->64"):
        model.replace_linear("layers.0.ffn.fc1", torch.nn.Linear(fc1.in_features, 7))
    with pytest.raises(ValueError, match="'layers.9.ffn.fc1' is not a linear map of this model"):
        model.replace_linear("layers.9.ffn.fc1", fc1)


def test_keeping_ffn_units_equals_zeroing_the_others_and_a_factorised_layer_cannot_be_sliced():
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).eval()
    keep = [torch.arange(0, 64, 2), torch.arange(10, 30)]
    masked = MelHuBERT(model.config)
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer, units in zip(masked.layers, keep, strict=True):
            dropped = torch.ones(layer.ffn.fc2.in_features, dtype=torch.bool)
            dropped[units] = False
            layer.ffn.fc2.weight[:, dropped] = 0.0
    x = torch.randn(1, 20, 80)
    kept = model.keep_ffn_units(keep)
    assert kept.config.ffn_dims == [32, 20]
    torch.testing.assert_close(kept(x).logits, masked.eval()(x).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="FFN units of layer 1 must be 1 or more indices in 0..19"):
        kept.keep_ffn_units([torch.arange(4), torch.tensor([20])])
    kept.replace_linear("layers.0.attention.q_proj", LowRankLinear(32, 32, 2))
    with pytest.raises(ValueError, match="a LowRankLinear is not a full-rank linear map"):
        kept.prune_heads({0: [0]})


def test_a_layer_pruned_model_equals_the_original_with_those_layers_skipped(tmp_path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(_odd_config(), ranks={"layers.1.ffn.fc1": 5, "layers.2.ffn.fc2": 4})
    model = MelHuBERT(cfg).eval()
    x, lengths = torch.randn(2, 30, 80), torch.tensor([30, 21])
    with torch.no_grad():  # the reference: the original model's own layers, the removed one passed over by hand
        full = model(x, lengths)
        h = full.hidden_states[0]
        attn_mask = (torch.arange(30)[None, :] < lengths[:, None])[:, None, None, :]
        reference = [h]
        for i, layer in enumerate(model.layers):
            if i != 1:
                h = layer(h, attn_mask)
                reference.append(h)
        logits = model.cluster_head(h)
    pruned = MelHuBERT.from_pretrained(copy.deepcopy(model).drop_layers([1]).save_pretrained(tmp_path / "p")).eval()
    assert pruned.config.layer_ids == [0, 2] and pruned.config.ranks == {"layers.1.ffn.fc2": 4}
    assert (pruned.config.heads, pruned.config.ffn_dims) == ([cfg.heads[0], cfg.heads[2]],
                                                             [cfg.ffn_dims[0], cfg.ffn_dims[2]])
    with torch.no_grad():
        out = pruned(x, lengths)
    real = torch.arange(30)[None, :] < lengths[:, None]
    for a, b in zip(out.hidden_states, reference, strict=True):
        torch.testing.assert_close(a[real], b[real])
    torch.testing.assert_close(out.logits[real], logits[real])
    assert pruned.drop_layers([0]).config.layer_ids == [2]  # a second removal keeps the original numbering
    with pytest.raises(ValueError, match="would remove all 1: keep at least one"):
        pruned.drop_layers([0])
    with pytest.raises(ValueError, match=r"layers \[3\] do not exist: the model has 3"):
        model.drop_layers([3])


def test_every_exit_of_an_anytime_model_equals_the_model_truncated_there(tmp_path):
    torch.manual_seed(0)
    base = MelHuBERT(_odd_config()).eval()
    anytime = base.with_exits().eval()
    x, lengths = torch.randn(2, 30, 80), torch.tensor([30, 21])
    with torch.no_grad():
        torch.testing.assert_close(anytime(x, lengths).logits, base(x, lengths).logits)  # the whole model unchanged
        for head in anytime.exit_heads:  # every exit head starts as the cluster head
            assert torch.equal(head.weight, base.cluster_head.weight) and torch.equal(head.bias, base.cluster_head.bias)
            head.weight.add_(torch.randn_like(head.weight))  # then each its own, so a wrong head would show
    saved = anytime.save_pretrained(tmp_path / "anytime")
    for depth in range(1, anytime.config.depth + 1):
        cut = MelHuBERT.from_pretrained(saved).truncate(depth).eval()
        with torch.no_grad():
            early, alone = anytime(x, lengths, n_layers=depth), cut(x, lengths)
        torch.testing.assert_close(early.logits, alone.logits)
        for a, b in zip(early.hidden_states, alone.hidden_states, strict=True):
            torch.testing.assert_close(a, b)
        assert MelHuBERT.from_pretrained(cut.save_pretrained(tmp_path / f"exit-{depth}")).config.depth == depth
    assert anytime(x, lengths, n_layers=0).logits is None  # the input embedding has no exit
    with pytest.raises(ValueError, match="truncate it at an exit"):
        anytime.drop_layers([0])
    with pytest.raises(ValueError, match="exit heads already"):
        anytime.with_exits()


def test_an_anytime_model_trains_on_the_mean_of_its_exits_losses_and_reports_the_last():
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).with_exits()
    x, y = torch.randn(2, 40, 80), torch.randint(0, 16, (2, 40))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[:, 5:25] = True
    out = model(x, targets=y, mask=mask)
    per_exit = []
    for depth in (1, 2):
        logits = model(x, mask=mask, n_layers=depth).logits
        per_exit.append(torch.nn.functional.cross_entropy(logits[mask], y[mask]))
    torch.testing.assert_close(out.loss, per_exit[-1])
    torch.testing.assert_close(out.training_loss, sum(per_exit) / 2)
    plain = MelHuBERT(preset("smoke"))(x, targets=y, mask=mask)
    assert plain.training_loss is plain.loss


@pytest.mark.parametrize("n_layers", [-1, 3])
def test_an_exit_outside_the_model_is_refused_by_name(n_layers):
    model = MelHuBERT(preset("smoke")).with_exits()
    with pytest.raises(ValueError, match=rf"n_layers={n_layers}: the model has 2 layers, choose an exit in 0..2"):
        model(torch.randn(1, 10, 80), n_layers=n_layers)


def test_the_positional_convolution_ignores_bfloat16_autocast():
    """oneDNN's bfloat16 grouped convolution gave wrong values for 8 channels per group (the smoke model's) on an AMX
    CPU: under autocast the convolution runs in float32, exactly as outside it."""
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).eval()
    assert model.config.d_model // model.config.pos_conv_groups == 8
    x = torch.randn(2, 40, model.config.d_model).bfloat16()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model.pos_conv(x)
        expected = model.pos_conv(x.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", [8, 7])
def test_the_positional_convolution_computes_its_conv1d(kernel):
    """The channels-last 2-D convolution gives the Conv1d of the same weights on the (B, D, T) frames (same padding,
    the extra frame of an even kernel trimmed), and the same gradients; in float64, so that the two kernels' orders of
    summation (which differ between CPUs) cannot reach the tolerance."""
    torch.manual_seed(0)
    pos = MelHuBERT(dataclasses.replace(preset("smoke"), pos_conv_kernel=kernel)).pos_conv.double()
    x = torch.randn(3, 21, pos.conv.in_channels, dtype=torch.float64, requires_grad=True)
    y = pos(x)
    plain = pos.conv(x.transpose(1, 2))
    expected = F.gelu(plain[..., : plain.shape[-1] - pos.trim]).transpose(1, 2)
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected)
    weight = pos.conv.parametrizations.weight.original1
    for got, want in zip(torch.autograd.grad(y.square().sum(), [x, weight]),
                         torch.autograd.grad(expected.square().sum(), [x, weight]), strict=True):
        torch.testing.assert_close(got, want)


def test_training_under_bfloat16_autocast_computes_the_inference_passs_attention(monkeypatch):
    """On a CPU under autocast with gradients recorded, attention is the explicit softmax product instead of fused
    SDPA (which the no-gradient passes still call): it gives the same hidden states as the no-gradient pass (within
    ten bfloat16 roundings of the mean magnitude, both against float32), padding included, and its gradients reach
    the projections."""
    fused_calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *args, **kwargs: fused_calls.append(1) or sdpa(*args, **kwargs))
    torch.manual_seed(0)
    model = MelHuBERT(preset("smoke")).train()
    x, lengths = torch.randn(3, 40, 80), torch.tensor([40, 23, 31])
    with torch.no_grad():
        full = model(x, lengths).hidden_states[-1]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        inferred = model(x, lengths).hidden_states[-1]
    assert len(fused_calls) == 2 * model.config.depth
    with torch.autocast("cpu", dtype=torch.bfloat16):  # its own region: autocast caches the no-gradient weight casts
        trained = model(x, lengths).hidden_states[-1]
    assert len(fused_calls) == 2 * model.config.depth  # the training pass called no fused kernel
    real = torch.arange(40)[None] < lengths[:, None]
    for half in (inferred, trained):
        assert (half.float() - full)[real].abs().mean() < 10 * 2.0**-8 * full[real].abs().mean()
    (trained.float() * torch.randn(trained.shape))[real].sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for layer in model.layers
               for p in (layer.attention.q_proj.weight, layer.attention.k_proj.weight))
