"""Time to judge one checkpoint on every default task: cold (upstream run + probes) and warm (cached layers).

The issue's budget: all default tasks for one checkpoint in under 3 minutes on 2 CPU cores. The
warm run re-trains the probes only, so cold / warm shows what the hidden-state cache saves.
Usage: python benchmarks/downstream_budget.py [--scale default] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import shutil
import time

import torch

from melhubert_lib import baseline
from melhubert_lib.downstream import evaluate_source
from melhubert_lib.layer_features import model_source
from melhubert_lib.model import MelHuBERT
from melhubert_lib.tasks import TASKS, load_task
from melhubert_lib.workspace import open_workspace


def main() -> None:
    """Print per-task scores and the cold and warm wall times."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="default")
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the scale's baseline)")
    args = parser.parse_args()
    ws = open_workspace(args.scale, args.work_dir)
    ckpt = args.checkpoint or baseline.pretrain_baseline(ws).model_dir
    source = model_source(MelHuBERT.from_pretrained(ckpt), "benchmark")
    tasks = [load_task(ws, name) for name in TASKS]
    shutil.rmtree(ws.cache / "layers" / source.key, ignore_errors=True)
    print(f"torch threads: {torch.get_num_threads()}")
    times = {}
    for run in ("cold", "warm"):
        start = time.perf_counter()
        results = evaluate_source(ws, source, tasks)
        times[run] = time.perf_counter() - start
        for r in results:
            print(f"{run}: {r.task:4s} {r.metric:8s} test {r.test[r.metric]:.3f} (probe {r.train_seconds:.0f} s)")
    print(f"cold {times['cold']:.0f} s, warm {times['warm']:.0f} s, cold/warm {times['cold'] / times['warm']:.2f}; "
          f"budget 180 s: {'met' if times['cold'] < 180 else 'NOT met'}")


if __name__ == "__main__":
    main()
