"""Attention maps match the model's own attention; the head-kind rule on maps of known shape."""

from __future__ import annotations

import pytest
import torch

from melhubert_lib.data.frames import FrameStore
from melhubert_lib.model import MelHuBERT, preset
from melhubert_lib.study.attention_heads import (
    attention_maps,
    classify,
    diagonal_share,
    head_statistics,
    vertical_share,
)


def _model() -> MelHuBERT:
    torch.manual_seed(0)
    return MelHuBERT(preset("smoke")).eval()


def test_explicit_weights_reproduce_the_attention_context():
    att = _model().layers[0].attention
    x = torch.randn(2, 11, att.q_proj.in_features)
    mask = torch.ones(2, 1, 1, 11, dtype=torch.bool)
    mask[1, ..., 8:] = False  # second utterance padded after 8 frames
    probs = att.probabilities(x, mask)
    assert torch.allclose(probs.sum(-1), torch.ones(2, att.n_heads, 11))
    assert float(probs[1, ..., 8:].abs().max()) == 0.0
    v = att.split_heads(att.v_proj(x))
    with torch.no_grad():
        assert torch.allclose(probs @ v, att.context(x, mask), atol=1e-5)


def test_maps_cover_every_layer_and_head():
    model = _model()
    maps = attention_maps(model, torch.randn(9, model.config.input_dim))
    assert [tuple(m.shape) for m in maps] == [(h, 9, 9) for h in model.config.heads]


def test_rule_tells_the_three_kinds_apart():
    t = 40
    diagonal = torch.eye(t)[None]
    vertical = torch.zeros(1, t, t)
    vertical[..., 3] = 1.0  # every query looks at frame 3
    uniform = torch.full((1, t, t), 1.0 / t)
    kinds = [classify(float(diagonal_share(m)[0]), float(vertical_share(m)[0])) for m in (diagonal, vertical, uniform)]
    assert kinds == ["diagonal", "vertical", "global"]
    assert float(vertical_share(uniform)[0]) == pytest.approx(0.1)  # 4 of 40 frames, a tenth of the attention


def test_statistics_keep_original_head_ids_after_pruning():
    model = _model().prune_heads({0: [0]})
    frames = FrameStore.from_arrays([torch.randn(n, model.config.input_dim).numpy() for n in (7, 12)], ["a", "b"])
    stats = head_statistics(model, frames, n_utterances=2)
    assert len(stats.table) == sum(model.config.heads)
    assert stats.table[stats.table.layer == 0].head_id.tolist() == model.config.original_heads()[0]
    assert stats.example_maps[0].shape[-1] == 7
