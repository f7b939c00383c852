"""Time to judge one checkpoint downstream: one probe seed against several seeds trained in one pass.

Each measurement is cold (the checkpoint's cached hidden states are deleted first, so the upstream runs again) and
all run in this one process, so the ratio compares like with like. The study's aim: judging a checkpoint on PR, SID
and KS with 3 probe seeds costs no more than judging it with one seed did before seeds were trained together
(about 100 s cold on 2 cores).
Usage: python benchmarks/downstream_budget.py [--scale default] [--tasks PR,SID,KS] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import shutil
import time

import torch
from checkpoints import add_checkpoint_options, chosen_checkpoint

from melhubert_lib.data.tasks import load_task
from melhubert_lib.data.workspace import open_workspace
from melhubert_lib.probes.layer_features import layers_dir, model_source
from melhubert_lib.probes.superb import evaluate_source


def main() -> None:
    """Print per-task scores and probe times for one seed and for several, cold, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_options(parser)
    parser.add_argument("--seeds", default="0,1,2", help="the probe seeds of the several-seed run")
    args = parser.parse_args()
    several = tuple(int(s) for s in args.seeds.split(","))
    if len(several) < 2:
        parser.error(f"--seeds {args.seeds}: give at least two seeds to compare with one")
    ws = open_workspace(args.scale, args.work_dir)
    source = model_source(chosen_checkpoint(ws, args), "benchmark")
    tasks = [load_task(ws, name) for name in args.tasks.split(",")]
    print(f"torch threads: {torch.get_num_threads()}")
    times = {}
    for seeds in ((several[0],), several):
        shutil.rmtree(layers_dir(ws, source), ignore_errors=True)
        start = time.perf_counter()
        results = evaluate_source(ws, source, tasks, seeds=seeds)
        times[seeds] = time.perf_counter() - start
        for r in results:
            print(f"seeds {seeds}: {r.task:4s} seed {r.seed} {r.metric:8s} test {r.test[r.metric]:.3f}, best epoch "
                  f"{r.best_epoch} (probe share {r.train_seconds:.0f} s)")
    (one, one_time), (several, several_time) = times.items()
    print(f"cold, {args.tasks}: {len(one)} seed {one_time:.0f} s, {len(several)} seeds {several_time:.0f} s, "
          f"ratio {several_time / one_time:.2f}")


if __name__ == "__main__":
    main()
