"""Import the MelHuBERT authors' released checkpoints (`.ckpt` files of their trainer) as suite checkpoints.

Their file is a `torch.save` dict: `model` (the state dict), `Upstream_Config` ({"melhubert": {...}}, the
model config as their YAML gives it), `Args` (an `argparse.Namespace` with `frame_period`), optimiser state
and runner settings. It is read with `weights_only=True`, allowing `argparse.Namespace` and nothing else.
Their architecture is the suite's (post-LN layers, weight-normed positional convolution with a LayerNorm
after it, GELU, a linear cluster head), so the import renames tensors and writes the config: no weight changes.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model import MelHuBERT, MelHuBERTConfig
from .features import N_MELS, FeatureStats, frames_per_stack

# what the suite's model implements; a checkpoint asking for anything else is refused, naming the key
REQUIRED_SETTINGS = {
    "pos_emb_type": "conv",
    "pos_conv_depth": 1,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "attention_type": "original",
}
SHAPE_KEYS = ("feat_emb_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
              "encoder_attention_heads", "num_cluster", "conv_pos", "conv_pos_groups")

# the authors' tensor names -> the suite's (`{i}`: layer index)
_TOP_LEVEL = {
    "pre_extract_proj": "input_proj",
    "encoder.layer_norm": "input_norm",
    "final_proj": "cluster_head",
}
_PER_LAYER = {
    "self_attn.q_proj": "attention.q_proj",
    "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj",
    "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "attn_norm",
    "fc1": "ffn.fc1",
    "fc2": "ffn.fc2",
    "final_layer_norm": "ffn_norm",
}
_POS_CONV = {  # torch's old weight_norm names -> its parametrization's names (g = original0, v = original1)
    "encoder.pos_conv.0.bias": "pos_conv.conv.bias",
    "encoder.pos_conv.0.weight_g": "pos_conv.conv.parametrizations.weight.original0",
    "encoder.pos_conv.0.weight_v": "pos_conv.conv.parametrizations.weight.original1",
}
_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")


@dataclass(frozen=True)
class AuthorsCheckpoint:
    """What an authors' checkpoint holds that the suite needs: its config, its weights and the trainer's step."""

    config: MelHuBERTConfig
    state: dict[str, torch.Tensor]  # under the authors' tensor names
    step: int | None


def read_authors_checkpoint(path: str | os.PathLike) -> AuthorsCheckpoint:
    """Read an authors' `.ckpt` (pickle, loaded with weights_only=True) into a suite config and the raw weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file; pass the .ckpt the authors released")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable torch checkpoint ({first_line}); the file is truncated, corrupt or "
                         "holds objects other than tensors and an argparse.Namespace — download it again") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not a checkpoint of the authors' trainer (found {keys}; expected the keys 'model' "
                         "and 'Upstream_Config' that their pretrain_expert.save_model writes)")
    upstream = ckpt.get("Upstream_Config")
    if not isinstance(upstream, dict) or not isinstance(upstream.get("melhubert"), dict):
        found = sorted(upstream) if isinstance(upstream, dict) else "no Upstream_Config"
        raise ValueError(f"{path}: the checkpoint has no Upstream_Config['melhubert'] model config (found {found}); "
                         "it is another model family's checkpoint, or was saved without its config")
    args = ckpt.get("Args")
    frame_ms = int(getattr(args, "frame_period", 20)) if args is not None else 20
    return AuthorsCheckpoint(config=suite_config(upstream["melhubert"], frame_ms, path), state=ckpt["model"],
                             step=ckpt.get("Step"))


def suite_config(upstream: dict, frame_ms: int, source: str | os.PathLike = "Upstream_Config") -> MelHuBERTConfig:
    """The suite's config for the authors' `Upstream_Config['melhubert']` at `frame_ms` (20 or 10 ms frames)."""
    missing = [k for k in SHAPE_KEYS if k not in upstream]
    if missing:
        raise ValueError(f"{source}: Upstream_Config['melhubert'] lacks {', '.join(missing)}; these set the model's "
                         "shape, so it cannot be rebuilt")
    unsupported = [f"{k}={upstream[k]!r} (the suite implements {v!r})" for k, v in REQUIRED_SETTINGS.items()
                   if k in upstream and upstream[k] != v]
    if unsupported:
        raise ValueError(f"{source}: the checkpoint's architecture differs from MelHuBERT's as the suite builds it: "
                         + "; ".join(unsupported))
    input_dim = N_MELS * frames_per_stack(frame_ms)
    if upstream["feat_emb_dim"] != input_dim:
        raise ValueError(f"{source}: feat_emb_dim={upstream['feat_emb_dim']} does not fit {frame_ms} ms frames "
                         f"({input_dim} = {N_MELS} Mel bins x {frames_per_stack(frame_ms)} stacked); check the "
                         "checkpoint's Args.frame_period")
    d_model, n_heads, depth = (upstream[k] for k in ("encoder_embed_dim", "encoder_attention_heads",
                                                     "encoder_layers"))
    if d_model % n_heads:
        raise ValueError(f"{source}: encoder_embed_dim={d_model} is not divisible by encoder_attention_heads={n_heads}")
    return MelHuBERTConfig(
        heads=[n_heads] * depth, ffn_dims=[upstream["encoder_ffn_embed_dim"]] * depth, d_model=d_model,
        head_dim=d_model // n_heads, input_dim=input_dim, n_clusters=upstream["num_cluster"],
        pos_conv_kernel=upstream["conv_pos"], pos_conv_groups=upstream["conv_pos_groups"],
        dropout=float(upstream.get("dropout", 0.1)), mask_prob=float(upstream.get("mask_prob", 0.7)),
        mask_span=int(upstream.get("mask_length", 10 if frame_ms == 10 else 5)), frame_ms=frame_ms,
    )


def suite_name(name: str) -> str:
    """The suite's name of one of the authors' tensors (a KeyError naming it if the suite has no such tensor)."""
    if name in _POS_CONV:
        return _POS_CONV[name]
    prefix, _, kind = name.rpartition(".")
    if prefix in _TOP_LEVEL:
        return f"{_TOP_LEVEL[prefix]}.{kind}"
    match = _LAYER_KEY.fullmatch(name)
    if match and match.group(2) in _PER_LAYER:
        return f"layers.{match.group(1)}.{_PER_LAYER[match.group(2)]}.{match.group(3)}"
    raise KeyError(name)


def to_suite_model(ckpt: AuthorsCheckpoint, feature_stats: FeatureStats | None = None) -> MelHuBERT:
    """The suite's MelHuBERT holding the authors' weights (every tensor used, every shape checked)."""
    model = MelHuBERT(ckpt.config, feature_stats=feature_stats)
    unknown = [k for k in ckpt.state if _suite_name_or_none(k) is None]
    if unknown:
        raise ValueError(f"the checkpoint holds tensors MelHuBERT has no place for: {', '.join(sorted(unknown)[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''}; it is not a MelHuBERT of the authors' layout")
    state = {suite_name(k): v for k, v in ckpt.state.items()}
    expected = model.state_dict()
    problems = [f"{k}: missing" for k in sorted(expected.keys() - state.keys())]
    problems += [f"{k}: file {tuple(state[k].shape)}, config {tuple(expected[k].shape)}"
                 for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    if problems:
        raise ValueError("the checkpoint's weights do not fit its own Upstream_Config: " + "; ".join(problems[:5]))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def _suite_name_or_none(name: str) -> str | None:
    try:
        return suite_name(name)
    except KeyError:
        return None


def import_checkpoint(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike,
                      feature_stats: str | os.PathLike) -> Path:
    """Convert an authors' `.ckpt` into a suite checkpoint folder (config, safetensors, feature statistics).

    `feature_stats` is the (2, 40) mean/std file the checkpoint was trained with (the authors release
    libri-360-mean-std.npy and libri-960-mean-std.npy beside their models).
    """
    stats_path = Path(feature_stats)
    if not stats_path.is_file():
        raise FileNotFoundError(f"{stats_path}: no such feature-statistics file; pass the authors' (2, 40) "
                                "mean/std .npy that matches the checkpoint's pretraining hours (--feature-stats)")
    stats = FeatureStats.load(stats_path)
    model = to_suite_model(read_authors_checkpoint(ckpt_path), stats)
    return model.save_pretrained(out_dir)
