"""The upstream's pass that computes the probes' features, in float32 against bfloat16 autocast.

Times `stacked_hidden_states` over every split of the tasks in both precisions, interleaved in this one process, and
prints the ratio and how far the bfloat16 features lie from the float32 ones (mean absolute difference over the
mean magnitude, per layer). With --probes it also judges the checkpoint on both feature sets with the scale's probe
seeds and prints each task's test score both ways. `DownstreamScale.precision="auto"` takes bfloat16 where the CPU
multiplies it natively; on a CPU without it, bfloat16 is emulated and much slower.
Usage: python benchmarks/feature_precision.py [--scale default] [--checkpoint DIR] [--tasks PR,SID,KS] [--probes]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from checkpoints import add_checkpoint_options, chosen_checkpoint

from melhubert_lib.data.representations import stacked_hidden_states
from melhubert_lib.data.tasks import load_task
from melhubert_lib.data.workspace import open_workspace
from melhubert_lib.probes.layer_features import FeatureSource, mean_pool, model_source, split_inputs
from melhubert_lib.probes.superb import SPLITS, train_probes

COMPARED = ("float32", "bfloat16")


def main() -> None:
    """Print per-split pass times in both precisions, their ratio, the features' relative difference and, with
    --probes, the test scores of probes trained on each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_options(parser)
    parser.add_argument("--probes", action="store_true", help="also train the probes on both feature sets")
    args = parser.parse_args()
    ws = open_workspace(args.scale, args.work_dir)
    model = chosen_checkpoint(ws, args).eval()
    source: FeatureSource = model_source(model, "benchmark")
    print(f"torch threads: {torch.get_num_threads()}")
    totals = dict.fromkeys(COMPARED, 0.0)
    for name in args.tasks.split(","):
        task = load_task(ws, name)
        feats: dict[str, dict] = {p: {} for p in COMPARED}
        for split in SPLITS:
            inputs = split_inputs(ws, task, split, source.input_stats, source.frame_ms)
            seconds, stores = {}, {}
            for precision in COMPARED:
                start = time.perf_counter()
                stores[precision] = stacked_hidden_states(model, inputs, dtype=np.float16, precision=precision)
                seconds[precision] = time.perf_counter() - start
                totals[precision] += seconds[precision]
                store = stores[precision]
                feats[precision][split] = mean_pool(store) if task.spec.kind == "utterance" else store
            full, half = (stores[p].data.astype(np.float32) for p in COMPARED)
            relative = np.abs(half - full).mean(axis=(0, 2)) / np.abs(full).mean(axis=(0, 2))
            hours = inputs.offsets[-1] * model.config.frame_ms / 3.6e6
            print(f"{name} {split}: {hours:.2f} h, float32 {seconds['float32']:.1f} s, bfloat16 "
                  f"{seconds['bfloat16']:.1f} s; bfloat16 off by {', '.join(f'{r:.4f}' for r in relative)} "
                  "of the mean magnitude (layers 0 up)")
        if args.probes:
            for precision in COMPARED:
                for r in train_probes(source.name, task, feats[precision], ws.scale.downstream,
                                      ws.scale.downstream.seeds):
                    print(f"{precision}: {name} seed {r.seed} {r.metric} test {r.test[r.metric]:.4f}")
    print(f"all splits: float32 {totals['float32']:.1f} s, bfloat16 {totals['bfloat16']:.1f} s, "
          f"ratio {totals['float32'] / totals['bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
