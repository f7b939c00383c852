"""How inference cost grows with utterance length: the default Transformer against its FLASH counterpart.

Both presets (`default`, `default-flash`: the same MACs per second on 4 s training crops) run one forward pass at
batch 1 on 2, 10, 30 and 60 s of audio, in this one process, the two models interleaved at every length. Prints
each model's real-time factor (median wall seconds per second of audio) and MACs per second of audio, and the
Transformer/FLASH ratio of both. On a GPU (--device cuda) the passes run under bfloat16 autocast. Usage:
python benchmarks/flash_length_scaling.py [--threads N] [--device cuda] [--seconds 2,10,30,60]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch.utils import benchmark

from melhubert_lib.efficiency import count_macs
from melhubert_lib.model import MelHuBERT, preset

PRESETS = ("default", "default-flash")


@torch.no_grad()
def rtf(model: MelHuBERT, seconds: float, device: torch.device, threads: int, min_run_time: float) -> float:
    """Median wall seconds of one forward pass per second of audio (batch 1, after warm-up)."""
    frames = model.config.frames(seconds)
    x = torch.randn(1, frames, model.config.input_dim, device=device)
    cuda = device.type == "cuda"

    def forward() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)

    timer = benchmark.Timer("forward()", globals={"forward": forward}, num_threads=threads)
    timer.timeit(2)  # warm-up
    return timer.blocked_autorange(min_run_time=min_run_time).median / seconds


def main() -> None:
    """Print RTF and MACs per second of audio of both presets at every length, and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", default="2,10,30,60", help="comma-separated audio lengths")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the suite's RTF)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU (bfloat16 autocast)")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timed passes per point")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {name: MelHuBERT(preset(name)).eval() for name in PRESETS}  # MACs are counted on these CPU copies
    timed = {name: copy.deepcopy(m).to(device) for name, m in models.items()}
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                f", {args.threads} thread(s)"))
    print(" | ".join(f"{name}: {m.num_parameters() / 1e6:.2f} M params" for name, m in models.items()))
    print(f"{'seconds':>8} | {'RTF transformer':>15} {'RTF flash':>10} {'ratio':>6} | "
          f"{'GMACs/s transformer':>19} {'GMACs/s flash':>13} {'ratio':>6}")
    for seconds in (float(s) for s in args.seconds.split(",")):
        macs = {name: count_macs(m, seconds).per_second / 1e9 for name, m in models.items()}
        speed = {name: rtf(m, seconds, device, args.threads, args.min_run_time) for name, m in timed.items()}
        t, f = PRESETS
        print(f"{seconds:8g} | {speed[t]:15.5f} {speed[f]:10.5f} {speed[t] / speed[f]:6.2f} | "
              f"{macs[t]:19.3f} {macs[f]:13.3f} {macs[t] / macs[f]:6.2f}")


if __name__ == "__main__":
    main()
