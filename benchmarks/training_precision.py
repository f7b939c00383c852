"""Pretraining in float32 against bfloat16 autocast: wall time and held-out loss from the same start.

Trains the scale's baseline architecture from the same untrained weights on the workspace's pretraining
data for `--steps` updates of the scale's schedule, once per precision, in this one process (temporary
run folders; the workspace's runs are left alone), and prints the time ratio and the held-out loss at
every `--eval-every` updates. Needs the corpus and targets of `01_baseline`.
Usage: python benchmarks/training_precision.py [--scale default] [--work-dir work] [--steps 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from melhubert_lib.data.workspace import open_workspace
from melhubert_lib.training import baseline
from melhubert_lib.training.pretrain import train


def main() -> None:
    """Print seconds and held-out losses per precision, and the float32 / bfloat16 time ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="default")
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    ws = open_workspace(args.scale, args.work_dir)
    data = baseline.ssl_data(ws, baseline.acoustic_targets(ws))
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "bfloat16"):
            sched = dataclasses.replace(ws.scale.pretrain, precision=precision, eval_every=args.eval_every,
                                        checkpoint_every=args.steps)
            start = time.perf_counter()
            result = train(baseline.untrained_model(ws), data["pretrain-train"], data["pretrain-valid"], sched,
                           Path(tmp) / precision, seed=ws.seed, stop_after=args.steps)
            seconds[precision] = time.perf_counter() - start
            m = result.metrics
            losses = m[(m.split == "valid") & (m.metric == "loss")].set_index("step").value
            print(f"{precision:9s} {args.steps} updates in {seconds[precision]:.0f} s; held-out loss "
                  + ", ".join(f"{loss:.3f} at {step}" for step, loss in losses.items()))
    print(f"float32 / bfloat16 wall time: {seconds['float32'] / seconds['bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
