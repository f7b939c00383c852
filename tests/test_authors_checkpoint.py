"""Importing the authors' released checkpoints: their own model's outputs reproduced, wrong files refused."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from s3prl.nn import S3PRLUpstream
from safetensors.torch import load_file

from melhubert_lib.cli import main
from melhubert_lib.data.authors_checkpoint import import_checkpoint, read_authors_checkpoint, to_suite_model
from melhubert_lib.data.features import FeatureStats
from melhubert_lib.model import MelHuBERT
from melhubert_lib.probes.s3prl_upstream import HUB_NAME, register

FIXTURE = Path(os.environ.get("MELHUBERT_AUTHORS_CHECKPOINT_DIR",
                              Path(__file__).resolve().parents[2] / "shared" / "data" / "authors_checkpoint"))
CKPT = FIXTURE / "authors-format.ckpt"
needs_fixture = pytest.mark.skipif(not CKPT.is_file(), reason=f"the authors-format checkpoint fixture is not at "
                                                               f"{FIXTURE} (set MELHUBERT_AUTHORS_CHECKPOINT_DIR)")


def _load_raw(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _stats_file(tmp_path: Path) -> Path:
    path = tmp_path / "mean-std.npy"
    FeatureStats(mean=np.linspace(-1, 1, 40, dtype=np.float32), std=np.linspace(1, 2, 40, dtype=np.float32)).save(path)
    return path


def _outputs(model: MelHuBERT, feats: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(feats, lengths)
        result = {"input_projection": model.input_proj(feats), "logits": out.logits}
    result.update({f"hidden.{i}": h for i, h in enumerate(out.hidden_states) if i > 0})
    return result


@needs_fixture
def test_imported_checkpoint_reproduces_the_authors_outputs_on_real_frames():
    expected = load_file(FIXTURE / "expected.safetensors")
    model = to_suite_model(read_authors_checkpoint(CKPT))
    real = expected["pad_mask"].bool()
    got = _outputs(model, expected["features"], real.sum(1))
    assert set(got) == {"input_projection", "hidden.1", "hidden.2", "logits"}
    for name, value in got.items():
        torch.testing.assert_close(value[real], expected[name][real], atol=1e-5, rtol=0, msg=name)
    assert model.config.frame_ms == 20 and model.config.input_dim == 80 and model.config.heads == [4, 4]


@needs_fixture
def test_a_10ms_checkpoint_imports_as_a_40_dimensional_model(tmp_path):
    """A 10 ms checkpoint (40-dim input) computes what the verified 20 ms import computes on zero-padded input."""
    raw = _load_raw(CKPT)
    raw["Args"] = argparse.Namespace(**{**vars(raw["Args"]), "frame_period": 10})
    raw["Upstream_Config"]["melhubert"] = {**raw["Upstream_Config"]["melhubert"], "feat_emb_dim": 40,
                                           "mask_length": 10}
    raw["model"] = {**raw["model"], "pre_extract_proj.weight": raw["model"]["pre_extract_proj.weight"][:, :40]}
    torch.save(raw, tmp_path / "10ms.ckpt")
    ten = to_suite_model(read_authors_checkpoint(tmp_path / "10ms.ckpt"))
    twenty = to_suite_model(read_authors_checkpoint(CKPT))
    assert (ten.config.frame_ms, ten.config.input_dim, ten.config.mask_span) == (10, 40, 10)
    feats = torch.randn(2, 50, 40, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([50, 37])
    with torch.no_grad():
        twenty.input_proj.weight[:, 40:] = 0.0  # the 20 ms model then sees only the first 40 inputs
    got = _outputs(ten, feats, lengths)
    ref = _outputs(twenty, torch.cat([feats, torch.randn(2, 50, 40)], -1), lengths)
    real = torch.arange(50)[None, :] < lengths[:, None]
    for name in got:
        torch.testing.assert_close(got[name][real], ref[name][real], atol=1e-5, rtol=0, msg=name)


@needs_fixture
def test_import_checkpoint_cli_writes_a_suite_checkpoint_that_loads_prunes_and_serves(tmp_path, capsys):
    stats = _stats_file(tmp_path)
    main(["import-checkpoint", str(CKPT), str(tmp_path / "imported"), "--feature-stats", str(stats)])
    assert str(tmp_path / "imported") in capsys.readouterr().out
    model = MelHuBERT.from_pretrained(tmp_path / "imported")
    assert model.feature_stats is not None
    np.testing.assert_array_equal(model.feature_stats.mean, FeatureStats.load(stats).mean)
    reference = to_suite_model(read_authors_checkpoint(CKPT), FeatureStats.load(stats))
    assert model.content_hash() == reference.content_hash()
    register()
    upstream = S3PRLUpstream(HUB_NAME, path_or_url=str(tmp_path / "imported")).eval()
    with torch.no_grad():
        hidden, _ = upstream(0.1 * torch.randn(1, 16000), torch.tensor([16000]))
    assert len(hidden) == 3 and hidden[-1].shape[-1] == 32
    pruned = model.prune_heads({0: [1, 3]}).save_pretrained(tmp_path / "pruned")
    assert MelHuBERT.from_pretrained(pruned).config.heads == [2, 4]


def _suite_state_as_authors(model: MelHuBERT) -> dict[str, torch.Tensor]:
    """A suite model's weights under the authors' names (for files whose config the tests break on purpose)."""
    from melhubert_lib.data.authors_checkpoint import suite_name

    names = [f"encoder.layers.{i}.{part}.{kind}" for i in range(model.config.depth)
             for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                          "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm") for kind in ("weight", "bias")]
    names += [f"{p}.{k}" for p in ("pre_extract_proj", "encoder.layer_norm", "final_proj") for k in ("weight", "bias")]
    names += ["encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v"]
    state = model.state_dict()
    return {name: state[suite_name(name)] for name in names}


def _authors_file(tmp_path: Path, **changes: object) -> Path:
    from melhubert_lib.model import preset

    model = MelHuBERT(preset("smoke"))
    upstream = {"feat_emb_dim": 80, "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                "encoder_attention_heads": 2, "num_cluster": 16, "conv_pos": 8, "conv_pos_groups": 4,
                "layer_norm_first": False, "pos_emb_type": "conv", "activation_fn": "gelu"}
    ckpt = {"model": _suite_state_as_authors(model), "Upstream_Config": {"melhubert": upstream},
            "Args": argparse.Namespace(frame_period=20), "Step": 1}
    for key, value in changes.items():
        if value is None:
            ckpt.pop(key)
        else:
            ckpt[key] = value
    path = tmp_path / f"file-{len(list(tmp_path.glob('*.ckpt')))}.ckpt"  # a new file for every call
    torch.save(ckpt, path)
    return path


def test_wrong_files_are_refused_naming_what_is_wrong(tmp_path):
    stats = _stats_file(tmp_path)
    good = _authors_file(tmp_path)
    model = to_suite_model(read_authors_checkpoint(good))
    assert model.config.heads == [2, 2] and model.config.head_dim == 16
    with pytest.raises(ValueError, match="no Upstream_Config"):
        read_authors_checkpoint(_authors_file(tmp_path, Upstream_Config=None))
    with pytest.raises(ValueError, match=r"found \['hubert'\].*another model family"):
        read_authors_checkpoint(_authors_file(tmp_path, Upstream_Config={"hubert": {"encoder_layers": 2}}))
    with pytest.raises(ValueError, match="layer_norm_first=True"):
        read_authors_checkpoint(_authors_file(tmp_path, Upstream_Config={"melhubert": {
            **_load_raw(good)["Upstream_Config"]["melhubert"], "layer_norm_first": True}}))
    with pytest.raises(ValueError, match="feat_emb_dim=80 does not fit 10 ms"):
        read_authors_checkpoint(_authors_file(tmp_path, Args=argparse.Namespace(frame_period=10)))
    with pytest.raises(ValueError, match="expected the keys 'model'"):
        read_authors_checkpoint(_authors_file(tmp_path, model=None))
    whole = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="truncated.ckpt: not a readable torch checkpoint"):
        read_authors_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="feature-stats"):
        import_checkpoint(good, tmp_path / "out", tmp_path / "missing.npy")
    extra = _load_raw(good)
    extra["model"]["label_embs_concat"] = torch.zeros(3)
    torch.save(extra, tmp_path / "extra.ckpt")
    with pytest.raises(ValueError, match="label_embs_concat"):
        import_checkpoint(tmp_path / "extra.ckpt", tmp_path / "out", stats)
    assert not (tmp_path / "out").exists()


def test_a_pickle_with_other_globals_is_not_executed(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "Upstream_Config": {"melhubert": {}}, "Args": Path("x")}, path)
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        read_authors_checkpoint(path)
