"""Pretraining throughput (seconds of audio per wall-clock second) and MACs per second of audio.

Runs a few real training steps of each preset on random inputs of the scale's crop length and batch
size, after warm-up steps, in this one process, and prints the ratio of the default preset to the paper
preset so machines can be compared. Then the default model's step against the same shape built from torch's
own `nn.TransformerEncoderLayer` (post-LN, GELU, the same input projection, positional convolution and
cluster head), interleaved rounds in this process, with the ratio. On a GPU (--device cuda) it measures the
presets' training steps only, under bfloat16 autocast with fused SDPA attention (optionally compiled). Usage:
python benchmarks/pretrain_throughput.py [--steps N] [--rounds R] [--precision auto] [--device cuda] [--compile]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from melhubert_lib.efficiency import count_macs
from melhubert_lib.model import MelHuBERT, MelHuBERTConfig, preset
from melhubert_lib.scales import PRECISIONS, get_scale
from melhubert_lib.training.pretrain import crop_frames, resolve_precision


class TorchEncoderStack(nn.Module):
    """The default model's shape from torch's own encoder layers: the reference of the throughput aim."""

    def __init__(self, cfg: MelHuBERTConfig) -> None:
        super().__init__()
        reference = MelHuBERT(cfg)
        self.input_proj, self.pos_conv, self.input_norm = reference.input_proj, reference.pos_conv, reference.input_norm
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads[0], cfg.ffn_dims[0], dropout=cfg.dropout,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.cluster_head = reference.cluster_head

    def forward(self, feats: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> SimpleNamespace:
        x = self.input_proj(feats.masked_fill(mask[..., None], 0.0))
        x = self.encoder(self.input_norm(x + self.pos_conv(x)))
        logits = self.cluster_head(x)
        return SimpleNamespace(loss=F.cross_entropy(logits[mask], targets[mask]))


def throughput(scale_name: str, steps: int, warmup: int = 2, torch_layers: bool = False,
               device: torch.device | None = None, compile_model: bool = False, precision: str = "float32") -> float:
    """Seconds of audio per wall second for `steps` Adam updates of the scale's model and batch (`torch_layers`:
    the same shape from torch's encoder layers). The forward pass runs under bfloat16 autocast where `precision`
    resolves to it (`PretrainScale.precision`'s rule); on a GPU always, as "auto" trains there, with the whole
    global batch (grad_accum micro-batches) per step."""
    device = device or torch.device("cpu")
    bf16 = device.type == "cuda" or resolve_precision(precision, device) == "bfloat16"
    scale = get_scale(scale_name)
    sched = scale.pretrain
    cfg = preset(scale.model_preset, scale.targets.n_clusters, scale.frame_ms)
    torch.manual_seed(0)
    model = (TorchEncoderStack(cfg) if torch_layers else MelHuBERT(cfg)).train().to(device)
    step_model = torch.compile(model) if compile_model else model
    frames = crop_frames(sched, cfg.frame_ms)  # the training loop's crop
    batch = max(1, int(sched.batch_seconds // sched.crop_seconds))
    cuda = device.type == "cuda"
    if not cuda and scale_name == "paper":
        batch = min(batch, 2)  # the paper batch is too slow for a CPU benchmark
    micro = max(1, batch // sched.grad_accum) if cuda else batch
    opt = torch.optim.Adam(model.parameters(), lr=sched.lr, fused=True)  # as pretraining steps
    x = torch.randn(micro, frames, cfg.input_dim, device=device)
    y = torch.randint(0, cfg.n_clusters, (micro, frames), device=device)
    mask = torch.rand(micro, frames, device=device) < 0.5
    n_micro = batch // micro
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        opt.zero_grad()
        for _ in range(n_micro):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = step_model(x, targets=y, mask=mask).loss
            loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize(device)
    return micro * n_micro * sched.crop_seconds * steps / (time.perf_counter() - start)


def main() -> None:
    """Print throughput and MACs/s for the default and paper presets, and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds against torch's layers")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:<i> for a GPU (bfloat16 autocast)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    parser.add_argument("--presets", default="default,paper", help="comma-separated scales to measure")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="CPU: the training forward pass's precision, as PretrainScale.precision (auto: bfloat16 "
                             "autocast where the CPU has AVX-512 BF16 or AMX)")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch threads: {torch.get_num_threads()}, device {device}, "
          f"precision {resolve_precision(args.precision, device) if device.type == 'cpu' else 'bfloat16'}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
        speed = {name: throughput(name, args.steps, device=device, compile_model=args.compile)
                 for name in args.presets.split(",")}
        how = "bfloat16 autocast" + (", compiled" if args.compile else "")
        for name, value in speed.items():
            print(f"{name:8s} training {value:9.1f} s audio / s ({how})")
        return
    results = {}
    for name in ("default", "paper"):
        scale = get_scale(name)
        model = MelHuBERT(preset(scale.model_preset, scale.targets.n_clusters, scale.frame_ms))
        macs = count_macs(model, seconds=10.0)
        speed = throughput(name, args.steps, precision=args.precision)
        results[name] = (speed, macs.per_second)
        print(f"{name:8s} params {model.num_parameters() / 1e6:7.2f} M  MACs/s of audio {macs.per_second / 1e9:6.3f} G "
              f"(attention {macs.attention / macs.seconds / 1e9:.3f} G)  training {speed:7.1f} s audio / s")
    d, p = results["default"], results["paper"]
    print(f"ratio default/paper: throughput x{d[0] / p[0]:.1f}, MACs/s x{d[1] / p[1]:.3f}")
    ours, theirs = [], []
    for _ in range(args.rounds):  # interleaved, so drifts of the machine hit both alike
        ours.append(throughput("default", args.steps, precision=args.precision))
        theirs.append(throughput("default", args.steps, torch_layers=True, precision=args.precision))
    print(f"default shape, best of {args.rounds} rounds: MelHuBERT {max(ours):.1f} s audio / s, torch "
          f"TransformerEncoderLayer stack {max(theirs):.1f} s audio / s, ratio x{max(ours) / max(theirs):.2f}")


if __name__ == "__main__":
    main()
