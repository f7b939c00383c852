"""MelHuBERT: a HuBERT that reads log-Mel frames, with every compressible shape in its config.

Input projection -> convolutional positional embedding -> LayerNorm -> post-LN Transformer layers
-> linear cluster head. Heads per layer, FFN width per layer, optional low-rank factors per linear
layer and depth all live in `MelHuBERTConfig`, so a compressed model is rebuilt from its config
alone (`MelHuBERT.from_pretrained`). `config.block = "flash"` builds the same model from FLASH's gated
attention units instead of Transformer layers (Hua et al., 2022).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .data.atomic import atomic_path
from .data.features import N_MELS, FeatureStats, frames_per_stack

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "feature_stats.npy"  # the input normalisation the model was trained with (optional)
MASK_SPAN_MS = 100  # span of one mask: 10 frames at 10 ms, as HuBERT and the authors mask
BLOCKS = ("transformer", "flash")  # the layer types a MelHuBERT is built from (`MelHuBERTConfig.block`)


@dataclass
class MelHuBERTConfig:
    """Every shape of a MelHuBERT, compressed or not."""

    heads: list[int]  # attention heads in each layer; len(heads) is the depth (a FLASH layer has one)
    ffn_dims: list[int]  # FFN width of each layer (a FLASH layer: the width of its gate u and value v)
    d_model: int = 768
    head_dim: int = 64  # (a FLASH layer: the width of its shared query/key base z)
    input_dim: int = 80  # 40 Mel bins x frames stacked (2 at 20 ms)
    n_clusters: int = 512
    ranks: dict[str, int] = field(default_factory=dict)  # "layers.3.ffn.fc1" -> rank of its factorisation
    head_ids: list[list[int]] = field(default_factory=list)  # original index of each kept head; [] = unpruned
    layer_ids: list[int] = field(default_factory=list)  # original index of each kept layer; [] = none removed
    exits: bool = False  # anytime inference: a cluster head after every layer (the last one is `cluster_head`)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1
    mask_prob: float = 0.7
    mask_span: int = 5  # frames at the model rate (5 x 20 ms; use 10 at 10 ms)
    frame_ms: int = 20
    block: str = "transformer"  # "transformer" (post-LN attention + FFN) or "flash" (FLASH's gated attention unit)
    chunk: int = 50  # FLASH: frames per chunk of its mixed chunk attention (1 s at 20 ms; unused by Transformers)

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"block={self.block!r}: choose one of {', '.join(BLOCKS)}")
        if self.block == "flash" and any(h != 1 for h in self.heads):
            raise ValueError(f"heads={self.heads}: a FLASH layer is one gated attention unit, give 1 head per layer")
        if self.chunk < 1:
            raise ValueError(f"chunk={self.chunk}: FLASH's chunks need at least 1 frame")
        if len(self.heads) != len(self.ffn_dims):
            raise ValueError(f"heads ({len(self.heads)} layers) and ffn_dims ({len(self.ffn_dims)}) differ in depth")
        if any(h < 1 for h in self.heads):
            raise ValueError(f"every layer needs at least one head, got heads={self.heads}")
        if any(w < 1 for w in self.ffn_dims):
            raise ValueError(f"every layer needs a positive FFN width, got ffn_dims={self.ffn_dims}")
        if self.head_ids and [len(ids) for ids in self.head_ids] != self.heads:
            raise ValueError(f"head_ids {self.head_ids} do not match heads={self.heads}")
        if self.layer_ids and len(self.layer_ids) != len(self.heads):
            raise ValueError(f"layer_ids {self.layer_ids} do not match the depth {len(self.heads)}")
        if self.d_model % self.pos_conv_groups:
            raise ValueError(f"d_model={self.d_model} must be divisible by pos_conv_groups={self.pos_conv_groups}")

    @property
    def depth(self) -> int:
        """Number of Transformer layers."""
        return len(self.heads)

    def frames(self, seconds: float) -> int:
        """The number of frames the model reads for `seconds` of audio (rounded to the nearest frame)."""
        return int(round(seconds * 1000 / self.frame_ms))

    def truncated(self, depth: int) -> MelHuBERTConfig:
        """The config of the first `depth` layers (heads, widths, ranks and head ids of the layers beyond dropped)."""
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth {depth} outside [1, {self.depth}]: keep at least one of the model's {self.depth} "
                             "layers")
        ranks = {name: r for name, r in self.ranks.items() if int(name.split(".")[1]) < depth}
        return replace(self, heads=self.heads[:depth], ffn_dims=self.ffn_dims[:depth], ranks=ranks,
                       head_ids=self.head_ids[:depth], layer_ids=self.layer_ids[:depth])

    def without_layers(self, remove: list[int]) -> MelHuBERTConfig:
        """The config with the given layers (current indices) removed: the others renumbered, their original
        indices kept in `layer_ids`, their low-rank factors and head ids kept with them."""
        bad = sorted({i for i in remove if not 0 <= i < self.depth})
        if bad:
            raise ValueError(f"layers {bad} do not exist: the model has {self.depth} (indices 0..{self.depth - 1})")
        kept = [i for i in range(self.depth) if i not in set(remove)]
        if not kept:
            raise ValueError(f"removing layers {sorted(set(remove))} would remove all {self.depth}: keep at least one")
        new_index = {old: new for new, old in enumerate(kept)}
        ranks = {}
        for name, rank in self.ranks.items():
            _, layer, rest = name.split(".", 2)
            if int(layer) in new_index:
                ranks[f"layers.{new_index[int(layer)]}.{rest}"] = rank
        return replace(self, heads=[self.heads[i] for i in kept], ffn_dims=[self.ffn_dims[i] for i in kept],
                       ranks=ranks, head_ids=[self.head_ids[i] for i in kept] if self.head_ids else [],
                       layer_ids=[self.original_layers()[i] for i in kept])

    def original_heads(self) -> list[list[int]]:
        """Index each kept head had in the unpruned model, per layer."""
        return self.head_ids or [list(range(h)) for h in self.heads]

    def original_layers(self) -> list[int]:
        """Index each kept layer had in the model before any layer was removed."""
        return self.layer_ids or list(range(self.depth))

    def to_json(self) -> str:
        """Serialise to JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MelHuBERTConfig:
        """Parse a config written by `to_json`."""
        return cls(**json.loads(text))


def preset(name: str, n_clusters: int | None = None, frame_ms: int = 20) -> MelHuBERTConfig:
    """The named model preset: 'paper' (the authors' base model, ~90.2 M), 'paper-flash', 'default',
    'default-deep', 'default-flash', 'smoke' or 'smoke-flash'.

    `frame_ms` sets the model's frame rate: its input stacks that many ms of 10 ms log-Mel frames and a mask span
    covers MASK_SPAN_MS at any rate; `n_clusters` overrides the preset's number of target clusters.
    """
    presets = {
        "paper": dict(heads=[12] * 12, ffn_dims=[3072] * 12, d_model=768, n_clusters=512),
        # dropout 0 at default: steps run 1.6x faster on 2 CPU cores, and span masking already regularises
        "default": dict(
            heads=[4] * 4, ffn_dims=[1024] * 4, d_model=256, n_clusters=500, pos_conv_kernel=32, dropout=0.0
        ),
        # the default's MACs per second of audio in 6 narrower layers (a lever of the depth study: benchmarks/levers.py)
        "default-deep": dict(
            heads=[4] * 6, ffn_dims=[832] * 6, d_model=208, head_dim=52, n_clusters=500, pos_conv_kernel=32,
            dropout=0.0,
        ),
        # FLASH (gated attention units with mixed chunk attention): the default's MACs per second of 4 s crops
        "default-flash": dict(
            heads=[1] * 6, ffn_dims=[512] * 6, d_model=256, head_dim=128,
            n_clusters=500, pos_conv_kernel=32, dropout=0.0, block="flash", chunk=50,
        ),
        # FLASH at the paper's width: two gated units per Transformer layer, as Hua et al. pair them (1.03x the
        # paper model's MACs per second on its 15 s crops; chunks of 2.5 s)
        "paper-flash": dict(
            heads=[1] * 24, ffn_dims=[1536] * 24, d_model=768, head_dim=128, n_clusters=512, block="flash", chunk=125,
        ),
        "smoke": dict(
            heads=[2] * 2, ffn_dims=[64] * 2, d_model=32, head_dim=16, n_clusters=16, pos_conv_kernel=8,
            pos_conv_groups=4, dropout=0.0,
        ),
        "smoke-flash": dict(  # the smoke model's MACs per second on its 2 s training crops
            heads=[1] * 2, ffn_dims=[96] * 2, d_model=32, head_dim=16, n_clusters=16, pos_conv_kernel=8,
            pos_conv_groups=4, dropout=0.0, block="flash", chunk=10,
        ),
    }
    if name not in presets:
        raise ValueError(f"unknown model preset {name!r}: choose one of {', '.join(presets)} (parameter 'preset')")
    cfg = MelHuBERTConfig(**presets[name], input_dim=N_MELS * frames_per_stack(frame_ms), frame_ms=frame_ms,
                          mask_span=MASK_SPAN_MS // frame_ms)
    return cfg if n_clusters is None else replace(cfg, n_clusters=n_clusters)


class LowRankLinear(nn.Module):
    """A linear layer factorised as W ~ up @ down with an inner rank: two smaller Linear layers."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank {rank} outside [1, {min(in_features, out_features)}] for a "
                             f"{in_features}->{out_features} layer")
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features)

    @property
    def in_features(self) -> int:
        """Input width, as on nn.Linear."""
        return self.down.in_features

    @property
    def out_features(self) -> int:
        """Output width, as on nn.Linear."""
        return self.up.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def make_linear(name: str, in_features: int, out_features: int, ranks: dict[str, int]) -> nn.Module:
    """nn.Linear, or LowRankLinear when the config gives `name` a rank."""
    if name in ranks:
        return LowRankLinear(in_features, out_features, ranks[name])
    return nn.Linear(in_features, out_features)


def require_full_rank(*linears: nn.Module) -> None:
    """Refuse structured surgery or scoring on factorised (or otherwise replaced) linear maps, before any work."""
    for linear in linears:
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"a {type(linear).__name__} is not a full-rank linear map: prune heads, FFN units or "
                             "weights before a low-rank factorisation, not after")


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new nn.Linear with only the outputs (`dim` 0: weight rows and bias) or inputs (`dim` 1) at `index`."""
    require_full_rank(linear)
    if dim not in (0, 1):
        raise ValueError(f"dim={dim}: 0 slices outputs, 1 slices inputs")
    index = torch.as_tensor(index, dtype=torch.long)
    weight = linear.weight.detach().index_select(dim, index)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach()[index] if dim == 0 else linear.bias.detach())
    return out.to(linear.weight.device).train(linear.training)


class SelfAttention(nn.Module):
    """Multi-head self-attention from separate q/k/v/out projections (prunable by slicing)."""

    def __init__(self, prefix: str, cfg: MelHuBERTConfig, n_heads: int) -> None:
        super().__init__()
        inner = n_heads * cfg.head_dim
        self.n_heads, self.head_dim = n_heads, cfg.head_dim
        self.q_proj = make_linear(f"{prefix}.q_proj", cfg.d_model, inner, cfg.ranks)
        self.k_proj = make_linear(f"{prefix}.k_proj", cfg.d_model, inner, cfg.ranks)
        self.v_proj = make_linear(f"{prefix}.v_proj", cfg.d_model, inner, cfg.ranks)
        self.out_proj = make_linear(f"{prefix}.out_proj", inner, cfg.d_model, cfg.ranks)
        self.dropout = cfg.dropout

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H*Dh) -> (B, H, T, Dh)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def context(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Per-head attention output before the out-projection: (B, H, T, Dh).

        Fused SDPA, except where a CPU trains under autocast: there SDPA's flash kernel's backward pass took 36 of
        the 167 ms of a default training step, and the explicit product makes the step about 1.2x faster; in float32
        SDPA is the faster one (benchmarks/pretrain_throughput.py).
        """
        q, k, v = (self.split_heads(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))
        drop = self.dropout if self.training else 0.0
        cpu_training_under_autocast = (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                                       and torch.is_grad_enabled() and x.requires_grad)
        if not cpu_training_under_autocast:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        weights = self.attention_weights(q, k, attn_mask)
        return (F.dropout(weights, drop) if drop else weights) @ v

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Softmax of the scaled query-key products of (B, H, T, Dh) heads, (B, H, T_query, T_key), in the products'
        precision (bfloat16 under autocast: a float32 softmax made the training step 6 % slower)."""
        logits = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        return logits.softmax(-1)

    def probabilities(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights of every head, (B, H, T_query, T_key), as the context computes them (no dropout)."""
        q, k = (self.split_heads(p(x)) for p in (self.q_proj, self.k_proj))
        return self.attention_weights(q, k, attn_mask)

    def keep_heads(self, heads: list[int]) -> None:
        """Keep only the given heads (indices into this layer's current heads): q/k/v rows, out-projection columns."""
        rows = (torch.tensor(heads)[:, None] * self.head_dim + torch.arange(self.head_dim)[None, :]).reshape(-1)
        self.q_proj, self.k_proj, self.v_proj = (slice_linear(p, rows, 0) for p in (self.q_proj, self.k_proj,
                                                                                  self.v_proj))
        self.out_proj = slice_linear(self.out_proj, rows, 1)
        self.n_heads = len(heads)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        ctx = self.context(x, attn_mask)
        b, _, t, _ = ctx.shape
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """fc1 -> GELU -> dropout -> fc2."""

    def __init__(self, prefix: str, cfg: MelHuBERTConfig, width: int) -> None:
        super().__init__()
        self.fc1 = make_linear(f"{prefix}.fc1", cfg.d_model, width, cfg.ranks)
        self.fc2 = make_linear(f"{prefix}.fc2", width, cfg.d_model, cfg.ranks)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class EncoderLayer(nn.Module):
    """Post-LN Transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, index: int, cfg: MelHuBERTConfig) -> None:
        super().__init__()
        prefix = f"layers.{index}"
        self.attention = SelfAttention(f"{prefix}.attention", cfg, cfg.heads[index])
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(f"{prefix}.ffn", cfg, cfg.ffn_dims[index])
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def linear_maps(self) -> dict[str, nn.Module]:
        """The layer's linear maps by their names under the layer (as `config.ranks` names them after `layers.<i>.`)."""
        att, ffn = self.attention, self.ffn
        return {"attention.q_proj": att.q_proj, "attention.k_proj": att.k_proj, "attention.v_proj": att.v_proj,
                "attention.out_proj": att.out_proj, "ffn.fc1": ffn.fc1, "ffn.fc2": ffn.fc2}

    @staticmethod
    def unit_maps() -> tuple[list[str], list[str]]:
        """The linear maps whose outputs are the FFN units and those whose inputs are (names as in `linear_maps`)."""
        return ["ffn.fc1"], ["ffn.fc2"]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


def mixed_chunk_attention(quad_q: torch.Tensor, quad_k: torch.Tensor, lin_q: torch.Tensor, lin_k: torch.Tensor,
                          v: torch.Tensor, chunk: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """FLASH's mixed chunk attention of (B, T, E) values: (B, T, E).

    Frame i gets sum_j relu(q_i . k_j / chunk)^2 v_j over the frames j of its own chunk (quadratic, local) plus
    sum_j (q'_i . k'_j) v_j / n over all n valid frames of its utterance (linear, global: one (S, E) sum per
    utterance), so the cost grows linearly with T. Chunks start at frame 0; `valid` (B, T) False at padded frames,
    which then are no keys.
    """
    b, t, e = v.shape
    if valid is None:
        n = torch.full((b,), t, dtype=torch.promote_types(v.dtype, torch.float32), device=v.device)
    else:
        v = v * valid[..., None].to(v.dtype)
        n = valid.sum(1).clamp(min=1).to(torch.promote_types(v.dtype, torch.float32))  # exact counts under bfloat16
    pad = (-t) % chunk

    def chunks(x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, G, chunk, D), zero frames appended
        return F.pad(x, (0, 0, 0, pad)).view(b, -1, chunk, x.shape[-1])

    qq, kq, ql, kl, vc = (chunks(x) for x in (quad_q, quad_k, lin_q, lin_k, v))
    local = (F.relu(qq @ kq.transpose(-1, -2) / chunk) ** 2) @ vc
    summary = torch.einsum("bgcs,bgce->bse", kl, vc) / n[:, None, None]
    glob = torch.einsum("bgcs,bse->bgce", ql, summary)
    return (local + glob).reshape(b, -1, e)[:, :t]


class GatedAttentionUnit(nn.Module):
    """FLASH's layer (Hua et al., 2022), post-LN like the Transformer layers: x = LN(x + W_o(u * attention(v))).

    u = silu(W_u x) and v = silu(W_v x) are `ffn_dims[i]` wide; z = silu(W_z x) (`head_dim` wide) gives the
    queries and keys of both attentions through four per-unit scales and offsets (one shared head). The attention
    is `mixed_chunk_attention`. The gate and value units are prunable like FFN units (`unit_maps`).
    """

    def __init__(self, index: int, cfg: MelHuBERTConfig) -> None:
        super().__init__()
        prefix, d, width, s = f"layers.{index}", cfg.d_model, cfg.ffn_dims[index], cfg.head_dim
        self.u_proj = make_linear(f"{prefix}.u_proj", d, width, cfg.ranks)
        self.v_proj = make_linear(f"{prefix}.v_proj", d, width, cfg.ranks)
        self.z_proj = make_linear(f"{prefix}.z_proj", d, s, cfg.ranks)
        self.out_proj = make_linear(f"{prefix}.out_proj", width, d, cfg.ranks)
        self.qk_scale = nn.Parameter(0.02 * torch.randn(4, s))  # quadratic q, quadratic k, linear q, linear k
        self.qk_offset = nn.Parameter(torch.zeros(4, s))
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.chunk = cfg.chunk

    def linear_maps(self) -> dict[str, nn.Module]:
        """The layer's linear maps by their names under the layer (as `config.ranks` names them after `layers.<i>.`)."""
        return {"u_proj": self.u_proj, "v_proj": self.v_proj, "z_proj": self.z_proj, "out_proj": self.out_proj}

    @staticmethod
    def unit_maps() -> tuple[list[str], list[str]]:
        """The linear maps whose outputs are the gate/value units and those whose inputs are."""
        return ["u_proj", "v_proj"], ["out_proj"]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        u, v, z = F.silu(self.u_proj(x)), F.silu(self.v_proj(x)), F.silu(self.z_proj(x))
        quad_q, quad_k, lin_q, lin_k = (z[..., None, :] * self.qk_scale + self.qk_offset).unbind(-2)
        valid = None if attn_mask is None else attn_mask[:, 0, 0, :]
        mixed = mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v, self.chunk, valid)
        return self.norm(x + self.dropout(self.out_proj(u * mixed)))


def make_layer(index: int, cfg: MelHuBERTConfig) -> nn.Module:
    """Layer `index` of the model, of the config's block type."""
    return GatedAttentionUnit(index, cfg) if cfg.block == "flash" else EncoderLayer(index, cfg)


class PositionalConv(nn.Module):
    """Convolutional relative positional embedding (weight-normed grouped Conv1d, same padding, GELU).

    It always runs in the model's own dtype (float32), also under bfloat16 autocast: oneDNN's bfloat16 grouped
    convolution returned wrong values (errors of 60-80 % of the output) for 8 or 12 channels per group on an AMX CPU
    (the smoke models have 8), and the convolution is a few percent of the model's MACs. Its float32 output makes the
    residual sum after it float32, so under autocast the residual stream and the layer norms stay float32 while the
    matrix products run in bfloat16.

    The Conv1d's weights run as a 2-D convolution over channels-last input: (B, T, D) frames already are that layout,
    and oneDNN's channels-last kernels made the convolution's training pass 1.8x and its inference pass 1.6x faster
    on a CPU than the Conv1d call on the transposed frames (benchmarks/pretrain_throughput.py).
    """

    def __init__(self, cfg: MelHuBERTConfig) -> None:
        super().__init__()
        conv = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.pos_conv_kernel, padding=cfg.pos_conv_kernel // 2,
                         groups=cfg.pos_conv_groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if cfg.pos_conv_kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        with torch.autocast(x.device.type, enabled=False):
            frames = x.to(conv.bias.dtype).transpose(1, 2).unsqueeze(2)  # (B, D, 1, T), strided as (B, T, D)
            frames = frames.contiguous(memory_format=torch.channels_last)  # a no-op for contiguous (B, T, D) input
            y = F.conv2d(frames, conv.weight.unsqueeze(2), conv.bias, padding=(0, conv.padding[0]),
                         groups=conv.groups).squeeze(2)
        if self.trim:
            y = y[..., : -self.trim]
        return F.gelu(y).transpose(1, 2)


@dataclass
class MelHuBERTOutput:
    """What a forward pass returns."""

    hidden_states: list[torch.Tensor]  # [encoder input] + one (B, T, D) tensor per layer
    logits: torch.Tensor | None  # (B, T, K) cluster logits of the last layer (None without the head)
    mask: torch.Tensor | None  # (B, T) True where the input was masked
    padding_mask: torch.Tensor | None  # (B, T) True at padded frames
    loss: torch.Tensor | None = None  # mean CE over masked, non-padded frames (when targets given)
    training_loss: torch.Tensor | None = None  # what training minimises: `loss`, or the mean over anytime exits
    n_masked: int = 0  # frames the loss averages over
    correct: int = 0  # masked frames whose argmax equals the target


def padded_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) mask, True at each row's frames past its length (padding), on the lengths' device."""
    return torch.arange(frames, device=lengths.device)[None, :] >= lengths[:, None]


def compute_span_mask(
    shape: tuple[int, int], prob: float, span: int, lengths: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """HuBERT-style span mask: about prob*T/span random span starts per utterance, each masking `span` frames."""
    batch, frames = shape
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    for i in range(batch):
        length = int(lengths[i])
        if length <= span:
            continue
        n_spans = int(prob * length / span + torch.rand((), generator=generator))
        if n_spans == 0:
            continue
        starts = torch.randperm(length - span, generator=generator)[:n_spans]
        idx = (starts[:, None] + torch.arange(span)[None, :]).reshape(-1)
        mask[i, idx] = True
    return mask


class MelHuBERT(nn.Module):
    """The MelHuBERT model; build from a config, save and load with the config beside the weights."""

    def __init__(self, cfg: MelHuBERTConfig, feature_stats: FeatureStats | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.input_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.pos_conv = PositionalConv(cfg)
        self.input_norm = nn.LayerNorm(cfg.d_model)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(make_layer(i, cfg) for i in range(cfg.depth))
        self.cluster_head = nn.Linear(cfg.d_model, cfg.n_clusters)
        # the heads after layers 1 .. depth-1 of an anytime model (none otherwise)
        self.exit_heads = nn.ModuleList(nn.Linear(cfg.d_model, cfg.n_clusters) for _ in range(cfg.depth - 1)
                                        if cfg.exits)
        self.feature_stats = feature_stats  # the input normalisation; saved and loaded with the weights

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        n_layers: int | None = None,
    ) -> MelHuBERTOutput:
        """Run the model on (B, T, input_dim) features.

        `mask` (B, T) zeroes those input frames (masked prediction); with `targets` (B, T; -100 to
        ignore) the loss is cross-entropy over masked, non-padded frames. `n_layers` stops early
        (the first-N-layers depth baseline) and skips the cluster head, or, in an anytime model (`config.exits`),
        uses that exit's head. `loss` is the last head's; an anytime model run whole trains on `training_loss`, the
        mean of every exit's loss (the same as `loss` for any other model).
        """
        if feats.dim() != 3 or feats.shape[-1] != self.config.input_dim:
            raise ValueError(f"features must be (batch, frames, {self.config.input_dim}), got {tuple(feats.shape)}")
        if not bool(torch.isfinite(feats).all()):
            raise ValueError("feats hold NaN or infinite values: the model's outputs would be too; check the audio "
                             "and the feature statistics they were computed with")
        if n_layers is not None and not 0 <= n_layers <= self.config.depth:
            raise ValueError(f"n_layers={n_layers}: the model has {self.config.depth} layers, choose an exit in "
                             f"0..{self.config.depth}")
        b, t, _ = feats.shape
        padding_mask = None
        attn_mask = None
        if lengths is not None:
            padding_mask = padded_frames(lengths.to(feats.device), t)
            if bool(padding_mask.any()):
                attn_mask = ~padding_mask[:, None, None, :]
            else:
                padding_mask = None
        if mask is not None:
            feats = feats.masked_fill(mask[..., None].to(feats.device), 0.0)
        x = self.input_proj(feats)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = self.input_dropout(self.input_norm(x + self.pos_conv(x)))
        hidden = [x]
        layers = self.layers if n_layers is None else self.layers[:n_layers]
        for layer in layers:
            x = layer(x, attn_mask)
            hidden.append(x)
        out = MelHuBERTOutput(hidden_states=hidden, logits=None, mask=mask, padding_mask=padding_mask)
        ran = len(layers)
        if ran == 0 or (ran < self.config.depth and not self.config.exits):
            return out
        out.logits = (self.cluster_head if ran == self.config.depth else self.exit_heads[ran - 1])(x)
        if targets is not None:
            self._add_loss(out, targets.to(feats.device))
            out.training_loss = out.loss
            if self.config.exits and ran == self.config.depth and ran > 1:  # anytime training: every exit counts
                exit_losses = [self._masked_loss(out, head(h), targets.to(feats.device))
                               for head, h in zip(self.exit_heads, hidden[1:-1], strict=True)]
                out.training_loss = (sum(exit_losses) + out.loss) / ran
        return out

    @staticmethod
    def _counted(out: MelHuBERTOutput, targets: torch.Tensor) -> torch.Tensor:
        """(B, T) True at the frames the loss counts: masked, not padded, with a target."""
        select = targets >= 0
        if out.mask is not None:
            select &= out.mask.to(targets.device)
        if out.padding_mask is not None:
            select &= ~out.padding_mask
        return select

    @staticmethod
    def _masked_loss(out: MelHuBERTOutput, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of `logits` over the frames `out`'s loss counts."""
        select = MelHuBERT._counted(out, targets)
        return F.cross_entropy(logits[select].float(), targets[select], reduction="sum") / max(int(select.sum()), 1)

    @staticmethod
    def _add_loss(out: MelHuBERTOutput, targets: torch.Tensor) -> None:
        select = MelHuBERT._counted(out, targets)
        logits = out.logits[select].float()  # float32 loss also under bfloat16 autocast
        tgt = targets[select]
        out.n_masked = int(tgt.numel())
        out.loss = F.cross_entropy(logits, tgt, reduction="sum") / max(out.n_masked, 1)
        out.correct = int((logits.argmax(-1) == tgt).sum())

    def linear_maps(self) -> dict[str, nn.Module]:
        """Every Transformer linear map by the name `config.ranks` uses ("layers.3.ffn.fc1"), layer by layer."""
        return {f"layers.{i}.{name}": module for i, layer in enumerate(self.layers)
                for name, module in layer.linear_maps().items()}

    def prune_heads(self, remove: dict[int, list[int]]) -> MelHuBERT:
        """Remove attention heads in place (layer -> indices of its current heads); return the model.

        Slices the heads' q/k/v rows and out-projection columns, and records the heads left and their original
        indices in the config, so the pruned model saves and loads like any other.
        """
        cfg = self.config
        self.require_heads("head pruning")
        for i, hs in remove.items():
            if not 0 <= i < cfg.depth:
                raise ValueError(f"layer {i} does not exist (depth {cfg.depth})")
            bad = [h for h in hs if not 0 <= h < cfg.heads[i]]
            if bad:
                raise ValueError(f"head index {bad} out of range for layer {i}: it has {cfg.heads[i]} heads, "
                                 f"valid indices 0..{cfg.heads[i] - 1}")
            if len(set(hs)) >= cfg.heads[i]:
                raise ValueError(f"layer {i} has {cfg.heads[i]} heads: cannot remove {hs} (at least one must stay)")
            att = self.layers[i].attention
            require_full_rank(att.q_proj, att.k_proj, att.v_proj, att.out_proj)
        ids = [list(layer) for layer in cfg.original_heads()]  # a copy: the old config stays as it was
        for i, hs in remove.items():
            kept = [h for h in range(cfg.heads[i]) if h not in set(hs)]
            self.layers[i].attention.keep_heads(kept)
            ids[i] = [ids[i][h] for h in kept]
        self.config = replace(cfg, heads=[len(h) for h in ids], head_ids=ids)
        return self

    def require_heads(self, what: str) -> None:
        """Refuse `what` (work on attention heads) on a FLASH model, before any work."""
        if self.config.block != "transformer":
            raise ValueError(f"{what} needs attention heads; a {self.config.block} model has one gated attention unit "
                             "per layer: prune its units (ffn-shrink), weights, rank or layers instead")

    def keep_ffn_units(self, units: list[torch.Tensor]) -> MelHuBERT:
        """Keep, in every layer, only the FFN units listed for it (indices into its current units; a FLASH layer's
        gate and value units); return the model."""
        if len(units) != self.config.depth:
            raise ValueError(f"got FFN units for {len(units)} layers; the model has {self.config.depth}")
        for i, (layer, keep) in enumerate(zip(self.layers, units, strict=True)):  # all checked before any is cut
            width = self.config.ffn_dims[i]
            if len(keep) == 0 or int(keep.min()) < 0 or int(keep.max()) >= width:
                raise ValueError(f"FFN units of layer {i} must be 1 or more indices in 0..{width - 1}")
            rows, cols = layer.unit_maps()
            require_full_rank(*(layer.linear_maps()[name] for name in rows + cols))
        for layer, keep in zip(self.layers, units, strict=True):
            rows, cols = layer.unit_maps()
            for dim, names in ((0, rows), (1, cols)):
                for name in names:
                    owner, _, attr = name.rpartition(".")
                    setattr(layer.get_submodule(owner), attr, slice_linear(layer.linear_maps()[name], keep, dim))
        self.config = replace(self.config, ffn_dims=[len(k) for k in units])
        return self

    def replace_linear(self, name: str, module: nn.Module) -> MelHuBERT:
        """Put `module` in place of the linear map `name` ("layers.0.ffn.fc1"); a LowRankLinear's rank goes into the
        config (`config.ranks`), any other module clears it; return the model."""
        maps = self.linear_maps()
        if name not in maps:
            raise ValueError(f"{name!r} is not a linear map of this model (e.g. {next(iter(maps))!r})")
        old = maps[name]
        if (module.in_features, module.out_features) != (old.in_features, old.out_features):
            raise ValueError(f"{name}: the replacement maps {module.in_features}->{module.out_features}, the layer "
                             f"{old.in_features}->{old.out_features}")
        owner, attr = name.rsplit(".", 1)
        setattr(self.get_submodule(owner), attr, module)
        ranks = {k: v for k, v in self.config.ranks.items() if k != name}
        if isinstance(module, LowRankLinear):
            ranks[name] = module.down.out_features
        self.config = replace(self.config, ranks=ranks)
        return self

    def drop_layers(self, remove: list[int]) -> MelHuBERT:
        """Remove whole Transformer layers in place (current indices); the next layer reads what the removed one
        would have; return the model. The config records the original index of every kept layer."""
        if self.config.exits:
            raise ValueError("an anytime model's exits belong to its layers: truncate it at an exit instead of "
                             "removing layers")
        self.config = self.config.without_layers(remove)
        self.layers = nn.ModuleList(layer for i, layer in enumerate(self.layers) if i not in set(remove))
        return self

    def truncate(self, depth: int) -> MelHuBERT:
        """Keep the first `depth` layers in place; return it. The cluster head stays, fed by the last kept layer, or,
        in an anytime model, that layer's exit head becomes the cluster head."""
        old_depth = self.config.depth
        self.config = self.config.truncated(depth)
        if self.config.exits and depth < old_depth:
            self.cluster_head = self.exit_heads[depth - 1]
        self.exit_heads = self.exit_heads[: depth - 1] if self.config.exits else self.exit_heads
        self.layers = self.layers[:depth]
        return self

    def with_exits(self) -> MelHuBERT:
        """A copy with a cluster head after every layer (anytime inference), each starting as the cluster head."""
        if self.config.exits:
            raise ValueError("the model has exit heads already")
        anytime = MelHuBERT(replace(self.config, exits=True), self.feature_stats)
        missing, unexpected = anytime.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("exit_heads.") for k in missing), (missing, unexpected)
        for head in anytime.exit_heads:
            head.load_state_dict(self.cluster_head.state_dict())
        return anytime.train(self.training)

    def content_hash(self) -> str:
        """A short hash of the configuration, every weight and the input statistics: equal for the same checkpoint,
        wherever it is loaded."""
        digest = hashlib.sha1(self.config.to_json().encode())
        if self.feature_stats is not None:
            digest.update(self.feature_stats.digest().encode())
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def num_parameters(self, nonzero: bool = False) -> int:
        """Total parameters, or only the non-zero ones (after weight pruning)."""
        if nonzero:
            return int(sum((p != 0).sum() for p in self.parameters()))
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors (+ feature_stats.npy) into `directory` atomically; return it."""
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            (tmp / CONFIG_NAME).write_text(self.config.to_json())
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata=_head_split_metadata(self.config))
            if self.feature_stats is not None:
                self.feature_stats.save(tmp / STATS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> MelHuBERT:
        """Load any checkpoint of the suite (baseline or compressed) from its directory; no pickle involved."""
        directory = Path(directory)
        cfg_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not cfg_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"{directory}: not a MelHuBERT checkpoint (expected {CONFIG_NAME} and {WEIGHTS_NAME} inside); "
                "pass a directory written by save_pretrained"
            )
        try:
            cfg = MelHuBERTConfig.from_json(cfg_path.read_text())
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"{cfg_path}: not a valid MelHuBERT config ({err})") from None
        model = cls(cfg)
        state, metadata = _read_weights(weights_path)
        mismatches = _shape_mismatches(model, state) + _head_split_mismatches(cfg, metadata)
        if mismatches:
            shown = "; ".join(mismatches[:5]) + (f"; and {len(mismatches) - 5} more" if len(mismatches) > 5 else "")
            raise ValueError(
                f"{weights_path}: weights do not match the shapes in {cfg_path} ({shown}); "
                "the two files come from different models — keep a checkpoint's files together"
            )
        model.load_state_dict(state)
        if (directory / STATS_NAME).is_file():
            model.feature_stats = FeatureStats.load(directory / STATS_NAME)
        return model


def _head_split_metadata(cfg: MelHuBERTConfig) -> dict[str, str]:
    """What the weight shapes alone do not show: how each layer's attention width splits into heads."""
    return {"heads": json.dumps(cfg.heads), "head_dim": str(cfg.head_dim)}


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a safetensors file and its metadata; a truncated or corrupt file is a ValueError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: unreadable weights ({err}); the file is truncated or corrupt — copy the "
                         "checkpoint again or re-create it") from None


def _shape_mismatches(model: MelHuBERT, state: dict[str, torch.Tensor]) -> list[str]:
    """One line per tensor whose stored shape differs from the one `model` has (or that only one side has)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    return [f"{k}: config builds {expected.get(k, 'no such tensor')}, file holds {found.get(k, 'no such tensor')}"
            for k in sorted(expected.keys() | found.keys()) if expected.get(k) != found.get(k)]


def _head_split_mismatches(cfg: MelHuBERTConfig, metadata: dict[str, str]) -> list[str]:
    """One line per layer whose attention the config splits into other heads than the weights were saved with.

    Files saved before the split was recorded carry no such metadata; only their tensor shapes are checked.
    """
    if not {"heads", "head_dim"} <= metadata.keys():
        return []
    stored_heads, stored_dim = json.loads(metadata["heads"]), int(metadata["head_dim"])
    return [f"layers.{i}.attention.{{q,k,v,out}}_proj: config splits them into {h} heads x "
            f"{cfg.head_dim}, file was saved as {stored} heads x {stored_dim}"
            for i, (h, stored) in enumerate(zip(cfg.heads, stored_heads, strict=False))
            if (h, cfg.head_dim) != (stored, stored_dim)]
