"""A judging budget lever, measured: an utterance-level task (SID by default) reading only each clip's first seconds.

For whole clips and for each `--seconds` value, in this one process: the upstream's pass over the task's three splits
(with reading the clips' inputs, timed on its own, uncached: the probes then compute it once more into the cache)
and the task's probes
(the scale's probe seeds) on the baseline, the log-Mel floor and the strongest level of a few compression runs; then
the baseline's margin over log-Mel and each checkpoint's difference to the baseline, as paired 95 % intervals over
test clips and probe seeds, with their half-widths (the study's aim: at most a quarter of the baseline's margin).
Usage: python benchmarks/clip_seconds.py [--task SID] [--seconds 2,3] [--runs distill-teacher,svd-uniform,heads-l1]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from checkpoints import strongest

from melhubert_lib.data.tasks import SPLITS, get_task, load_task
from melhubert_lib.data.workspace import Workspace, open_workspace
from melhubert_lib.model import MelHuBERT
from melhubert_lib.probes.bootstrap import paired_rate_difference, rate_interval
from melhubert_lib.probes.layer_features import (
    FeatureSource,
    feature_precision,
    logmel_source,
    model_source,
    split_inputs,
)
from melhubert_lib.probes.superb import evaluate_source, seed_errors
from melhubert_lib.training import baseline


def with_clip(ws: Workspace, task: str, seconds: float | None) -> Workspace:
    """The workspace with `task` reading the first `seconds` of each clip (None: whole clips)."""
    clips = {k: v for k, v in ws.scale.downstream.clip_seconds.items() if k != task}
    if seconds is not None:
        clips[task] = seconds
    downstream = dataclasses.replace(ws.scale.downstream, clip_seconds=clips)
    return dataclasses.replace(ws, scale=dataclasses.replace(ws.scale, downstream=downstream))


def main() -> None:
    """Print each setting's accuracies, upstream seconds, margin and differences with their half-widths."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="default")
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--task", default="SID")
    parser.add_argument("--seconds", default="2,3", help="comma-separated clip lengths to compare with whole clips")
    parser.add_argument("--runs", default="distill-teacher,svd-uniform,heads-l1",
                        help="compression runs whose strongest level is judged too")
    args = parser.parse_args()
    lengths = [float(s) for s in args.seconds.split(",")]
    if any(not s > 0 for s in lengths):
        parser.error(f"--seconds {args.seconds}: give positive clip lengths")
    if get_task(args.task).kind != "utterance":
        parser.error(f"--task {args.task}: only utterance-level tasks read part of each clip")
    ws = open_workspace(args.scale, args.work_dir)
    sources: dict[str, FeatureSource] = {
        "baseline": model_source(MelHuBERT.from_pretrained(baseline.pretrain_baseline(ws).model_dir), "baseline"),
        "log-Mel": logmel_source()}
    for run in [r for r in args.runs.split(",") if r]:
        path = strongest(ws.run_dir(run))
        if path is None:
            parser.error(f"--runs: run {run!r} has no compressed level in {ws.run_dir(run)} (run its notebook first)")
        sources[run] = model_source(MelHuBERT.from_pretrained(path), run)
    metric = load_task(ws, args.task).spec.metric
    for seconds in [None, *lengths]:
        clipped = with_clip(ws, args.task, seconds)
        task = load_task(clipped, args.task)
        errors, upstream = {}, 0.0
        for name, source in sources.items():
            start = time.perf_counter()  # the clips' inputs and the upstream's pass, uncached
            for split in SPLITS:
                source.layers(split_inputs(clipped, task, split, source.input_stats, source.frame_ms),
                              feature_precision(clipped))
            seconds_up = time.perf_counter() - start
            upstream += seconds_up
            errors[name] = seed_errors(evaluate_source(clipped, source, [task]), metric)
            print(f"{'whole clips' if seconds is None else f'first {seconds:g} s'}: {name:16s} {metric} "
                  f"{100 * (1 - rate_interval(errors[name]).value):.1f} %  upstream {seconds_up:.1f} s", flush=True)
        print(f"  upstream passes over the {args.task} splits, all sources: {upstream:.0f} s")
        for name in [n for n in sources if n != "baseline"]:
            d = paired_rate_difference(errors[name], errors["baseline"])
            print(f"  {name} minus baseline, error points: {100 * d.value:+.1f} [{100 * d.low:+.1f}, "
                  f"{100 * d.high:+.1f}], half-width {100 * d.half_width:.1f}")


if __name__ == "__main__":
    main()
