"""Measured CPU speed of compressed checkpoints against the baseline, timed in pairs.

For each structured method (head pruning, FFN shrink, truncated SVD, distillation, first-N layers, layer
pruning, the anytime model's shallowest exit, the combined recipe)
it takes the strongest level of the default-scale runs, times it against the baseline with
`melhubert_lib.paired_speed` (batch 1, 10 s of audio, 1 thread, both models in one fresh process with a caching
allocator, alternating blocks of passes in several rounds: the speed-up is the median of the rounds' ratios, so a
drift of the machine between models cancels), and prints the speed-up next to the MAC reduction (goal: speed-up
>= 0.8 x MAC ratio). It also splits each pass (torch.profiler)
into the linear layers' matrix products, whose time should fall with their MACs, and everything else
(attention kernels, GELU, layer norms, the positional convolution, copies), which only head pruning
and shallower models reduce; the positional convolution, which every model keeps whole, and the attention kernel
are also shown alone, and the attention kernel (fused SDPA) is timed against the explicit softmax product at the
default model's shape, to say whether another kernel would shrink what compression leaves alone.
For weight pruning (the 90 % level and the strongest one) it reports the dense time (masks do not
speed anything up) and the time with the pruned layers run as sparse CSR products, each against the baseline's first
timing (one pair, not rounds).
Usage: python benchmarks/compression_speed.py [--scale default] [--work-dir work] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from checkpoints import level_with_setting, strongest
from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark

from melhubert_lib.compression.weight_pruning import sparsity
from melhubert_lib.data.workspace import open_workspace
from melhubert_lib.efficiency import CACHING_MALLOC, count_macs, process_speed
from melhubert_lib.model import MelHuBERT
from melhubert_lib.paired_speed import paired_speed
from melhubert_lib.training import baseline

STRUCTURED = {"head pruning": "heads-l1", "FFN shrink": "ffn-shrink", "SVD, uniform budget": "svd-uniform",
              "distillation": "distill-teacher", "first-N layers": "first-n", "layer pruning": "layers-ssl",
              "anytime exits": "anytime-teacher", "combined recipe": "combined"}


LINEAR_OPS = ("aten::addmm", "aten::mm")  # what nn.Linear runs on the CPU, with and without bias
CONV_OPS = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")  # the positional convolution's kernels
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu",)  # SDPA's fused CPU kernel (inference)


@dataclass
class PassProfile:
    """Profiled seconds of one forward pass (batch 1, 1 thread): in total, in the linear layers' matrix products, in
    the positional convolution and in the attention kernel."""

    total: float
    linear: float
    conv: float
    attention: float


@torch.no_grad()
def profile_pass(model: MelHuBERT, seconds: float = 10.0, passes: int = 5) -> PassProfile:
    """Profile `passes` forward passes of `seconds` of random input and split their time by operator."""
    frames = model.config.frames(seconds)
    x = torch.randn(1, frames, model.config.input_dim)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model(x)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            model(x)
    torch.set_num_threads(threads)
    events = prof.key_averages()

    def share(ops: tuple[str, ...] | None) -> float:
        return sum(e.self_cpu_time_total for e in events if ops is None or e.key in ops) / passes / 1e6

    return PassProfile(total=share(None), linear=share(LINEAR_OPS), conv=share(CONV_OPS),
                       attention=share(ATTENTION_OPS))


@dataclass
class AttentionKernels:
    """Median seconds of one layer's attention: the fused SDPA kernel and the explicit softmax product."""

    fused: float
    explicit: float


@torch.no_grad()
def attention_kernels(model: MelHuBERT, seconds: float = 10.0, min_run_time: float = 1.0) -> AttentionKernels:
    """Median seconds of the first layer's attention at `model`'s shape (batch 1, 1 thread): fused SDPA and the
    model's explicit softmax product (`SelfAttention.attention_weights` @ v) of the same queries, keys and values."""
    frames = model.config.frames(seconds)
    attention = model.layers[0].attention  # the model's own two paths: SDPA, and the product training runs
    q, k, v = (torch.randn(1, attention.n_heads, frames, attention.head_dim) for _ in range(3))
    kernels = {"fused": "F.scaled_dot_product_attention(q, k, v)",
               "explicit": "attention.attention_weights(q, k, None) @ v"}
    times = {name: benchmark.Timer(stmt, globals={"F": F, "attention": attention, "q": q, "k": k, "v": v},
                                   num_threads=1).blocked_autorange(min_run_time=min_run_time).median
             for name, stmt in kernels.items()}
    return AttentionKernels(**times)


def main() -> None:
    """Print one line per method: RTF, speed-up, MAC ratio and their quotient."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="default")
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds per method")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: time at least one pair")
    if any(os.environ.get(k) != v for k, v in CACHING_MALLOC.items()):  # profile under the timing allocator too
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **CACHING_MALLOC})
    ws = open_workspace(args.scale, args.work_dir)
    base = MelHuBERT.from_pretrained(baseline.pretrain_baseline(ws).model_dir).eval()
    base_rtf = process_speed(base, min_run_time=2.0).rtf
    base_count = count_macs(base)
    base_macs = base_count.total
    base_pass = profile_pass(base)
    print(f"baseline: RTF {base_rtf:.4f}; profiled pass {base_pass.total * 1e3:.1f} ms, of which linear layers "
          f"{base_pass.linear * 1e3:.1f} ms, attention kernel {base_pass.attention * 1e3:.1f} ms, positional "
          f"convolution {base_pass.conv * 1e3:.1f} ms")
    for seconds in (10.0, 30.0):
        kernels = attention_kernels(base, seconds)
        print(f"one layer's attention at {seconds:g} s: fused SDPA {kernels.fused * 1e3:.2f} ms, explicit softmax "
              f"product {kernels.explicit * 1e3:.2f} ms ({kernels.explicit / kernels.fused:.2f}x SDPA's time)")
    models = {name: strongest(ws.run_dir(run)) for name, run in STRUCTURED.items()}
    for name, path in models.items():
        if path is None:
            print(f"{name}: no run found (run its notebook first)")
            continue
        model = MelHuBERT.from_pretrained(path).eval()
        pair = paired_speed(model, base, rounds=args.rounds)
        speedups, rtf, speedup = pair.ratios, pair.model_rtf, pair.speedup
        count = count_macs(model)
        mac_ratio = base_macs / count.total
        verdict = "meets" if speedup >= 0.8 * mac_ratio else "below"
        prof = profile_pass(model)
        rest, base_rest = prof.total - prof.linear, base_pass.total - base_pass.linear
        print(f"{name:20s} RTF {rtf:.4f}  speed-up {speedup:.2f}x (rounds {min(speedups):.2f}-{max(speedups):.2f}, "
              f"{pair.verdict})  MAC ratio {mac_ratio:.2f}x  speed-up / MAC ratio {speedup / mac_ratio:.2f} "
              f"({verdict} 0.8)\n"
              f"{'':20s} linear layers: {base_pass.linear / prof.linear:.2f}x faster for "
              f"{base_count.linear_and_conv / count.linear_and_conv:.2f}x fewer linear+conv MACs; "
              f"the rest: {base_rest * 1e3:.1f} -> {rest * 1e3:.1f} ms per pass ({rest / prof.total:.0%} of the "
              f"compressed pass; the attention kernel {prof.attention * 1e3:.1f} ms, "
              f"{prof.attention / prof.total:.0%}; "
              f"the positional convolution {prof.conv * 1e3:.1f} ms, {prof.conv / prof.total:.0%})")
    run = ws.run_dir("weights-l1")
    for pruned in dict.fromkeys(p for p in (level_with_setting(run, 0.9), strongest(run)) if p is not None):
        model = MelHuBERT.from_pretrained(pruned).eval()
        dense = process_speed(model, min_run_time=2.0).rtf
        fast = process_speed(model, min_run_time=2.0, sparse_kernels=True).rtf
        print(f"weight pruning at {sparsity(model):.0%}: dense RTF {dense:.4f} ({base_rtf / dense:.2f}x), "
              f"CSR kernels RTF {fast:.4f} ({base_rtf / fast:.2f}x the baseline)")


if __name__ == "__main__":
    main()
