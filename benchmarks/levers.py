"""One lever of the default study, measured: does the pretrained baseline's depth matter, and by how much does it
clear its floors?

Pretrains (or reuses) the baseline of the scale with the lever applied, then trains the PR probe (Featurizer over
the kept layers) with several seeds on the first 1, 2, ... layers and on the whole model, and PR, SID and KS probes
on the floors (log-Mel, log-Mel +-4 frames, the untrained network); with --phone-probe also the frame-level phone
probe of 01_baseline (best layer of each feature set against the floors). Prints PER per depth, the paired 95 %
intervals (test utterances and probe seeds) of the depth gaps and of the margins over the floors, the PR
Featurizer's weights, and the minutes each part took; appends one JSON row to `<work>/levers.jsonl`.
A lever that changes the corpus or the pretraining gets its own workspace (`<work>/<scale>-<label>/`); probe
levers reuse the scale's baseline and cached hidden states.
Usage: python benchmarks/levers.py --label base
       python benchmarks/levers.py --label 8h --pretrain-hours 8
       python benchmarks/levers.py --label pr-2400-utts --pr-train-utts 2400
       python benchmarks/levers.py --label pr-60-epochs --pr-epochs 60
       python benchmarks/levers.py --label fbank-targets --target-feature fbank
       python benchmarks/levers.py --label pc-5e-3 --phone-probe --pc-lr 5e-3 --tasks ''
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from melhubert_lib.data.tasks import TASKS, load_task
from melhubert_lib.data.workspace import FEATURIZERS, open_workspace
from melhubert_lib.model import MelHuBERT
from melhubert_lib.probes.baseline_checks import phone_probe_check, pr_depth_check
from melhubert_lib.probes.bootstrap import paired_rate_difference
from melhubert_lib.probes.layer_features import floor_sources, model_source
from melhubert_lib.probes.superb import evaluate_source, seed_errors
from melhubert_lib.scales import LR_SCHEDULES, Scale, get_scale
from melhubert_lib.training import baseline


def lever_scale(args: argparse.Namespace) -> Scale:
    """The scale with the lever's settings; a new name (own workspace) where the corpus or pretraining changes."""
    scale = get_scale(args.scale)
    corpus, pretrain, targets = scale.corpus, scale.pretrain, scale.targets
    if args.pretrain_hours is not None:
        corpus = dataclasses.replace(corpus, pretrain_hours=args.pretrain_hours)
    if args.pr_train_utts is not None:
        corpus = dataclasses.replace(corpus, labeled_utts={**corpus.labeled_utts, "train": args.pr_train_utts})
    if args.steps is not None:
        pretrain = dataclasses.replace(pretrain, steps=args.steps)
    if args.iterations is not None:
        pretrain = dataclasses.replace(pretrain, iterations=args.iterations)
    if args.n_clusters is not None:
        targets = dataclasses.replace(targets, n_clusters=args.n_clusters)
    if args.target_feature is not None:
        targets = dataclasses.replace(targets, feature=args.target_feature)
    preset = args.preset or scale.model_preset
    changed = (corpus, pretrain, targets, preset) != (scale.corpus, scale.pretrain, scale.targets, scale.model_preset)
    epochs, rates = dict(scale.downstream.epochs), dict(scale.downstream.learning_rates)
    if args.pr_epochs is not None:
        epochs["PR"] = args.pr_epochs
    if args.pr_lr is not None:
        rates["PR"] = args.pr_lr
    if args.pc_lr is not None:
        rates["PC"] = args.pc_lr
    downstream = dataclasses.replace(scale.downstream, epochs=epochs, learning_rates=rates,
                                     lr_schedule=args.probe_schedule or scale.downstream.lr_schedule,
                                     seeds=tuple(int(s) for s in args.seeds.split(",")))
    name = f"{scale.name}-{args.label}" if changed else scale.name
    return dataclasses.replace(scale, name=name, corpus=corpus, pretrain=pretrain, targets=targets,
                               model_preset=preset, downstream=downstream)


def build_parser() -> argparse.ArgumentParser:
    """The command line of a lever (its defaults are the scale's own settings)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="the lever's name in the output")
    parser.add_argument("--scale", default="default")
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--pretrain-hours", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None, help="pretraining updates")
    parser.add_argument("--iterations", type=int, default=None, help="target iterations (2: k-means on a hidden layer)")
    parser.add_argument("--n-clusters", type=int, default=None)
    parser.add_argument("--target-feature", default=None, choices=sorted(FEATURIZERS),
                        help="stage-1 k-means features")
    parser.add_argument("--preset", default=None, help="model preset (melhubert_lib.model.preset)")
    parser.add_argument("--pr-train-utts", type=int, default=None,
                        help="labeled training utterances of the PR (and ASR) probes (a corpus lever)")
    parser.add_argument("--pr-epochs", type=int, default=None)
    parser.add_argument("--pr-lr", type=float, default=None)
    parser.add_argument("--pc-lr", type=float, default=None, help="frame-level phone probe's rate (with --phone-probe)")
    parser.add_argument("--phone-probe", action="store_true",
                        help="also run the frame-level phone probe (PC) against the floors, as 01_baseline does")
    parser.add_argument("--probe-schedule", default=None, choices=LR_SCHEDULES, help="probes' learning-rate schedule")
    parser.add_argument("--seeds", default="0,1,2", help="probe seeds (default 0,1,2)")
    parser.add_argument("--tasks", default="PR,SID,KS", help="tasks of the margins over the floors ('' for none)")
    return parser


def main() -> None:
    """Measure one lever and print its row."""
    parser = build_parser()
    args = parser.parse_args()
    if args.pr_train_utts is not None and args.pr_train_utts < 1:
        parser.error(f"--pr-train-utts {args.pr_train_utts}: give at least one training utterance")
    if args.pc_lr is not None and not args.phone_probe:
        parser.error("--pc-lr sets the frame-level phone probe's rate: add --phone-probe to run that probe")
    scale = lever_scale(args)
    ws = open_workspace(scale, args.work_dir)
    minutes = {}
    start = time.perf_counter()
    model = MelHuBERT.from_pretrained(baseline.pretrain_baseline(ws).model_dir)
    minutes["pretraining (0 if reused)"] = (time.perf_counter() - start) / 60
    start = time.perf_counter()
    depth = pr_depth_check(ws, model)
    minutes["PR depth probes"] = (time.perf_counter() - start) / 60
    start = time.perf_counter()
    sources = {"baseline": model_source(model, "all"),
               **{floor.name: floor for floor in floor_sources(baseline.untrained_model(ws))}}
    margins = {}
    for task_name in [t for t in args.tasks.split(",") if t]:
        task = load_task(ws, task_name)
        errors = {}
        for name, source in sources.items():
            if task_name != "PR" and name not in ("baseline", "log-Mel"):
                continue
            if task_name == "PR" and name == "baseline":
                errors[name] = depth.errors["all"]  # the depth check's probes of the whole model
                continue
            results = evaluate_source(ws, source, [task])
            errors[name] = seed_errors(results, TASKS[task_name].metric)
        for floor in [n for n in errors if n != "baseline"]:
            d = paired_rate_difference(errors[floor], errors["baseline"])
            margins[f"{task_name}: {floor} - baseline"] = {"value": 100 * d.value, "low": 100 * d.low,
                                                           "high": 100 * d.high}
    minutes["floor probes"] = (time.perf_counter() - start) / 60
    if args.phone_probe:
        start = time.perf_counter()
        check = phone_probe_check(ws, model, baseline.untrained_model(ws))
        for m in check.margins.itertuples():
            margins[f"PC: {m.floor} - baseline"] = {"value": 100 * m.margin, "low": 100 * m.low, "high": 100 * m.high}
        minutes["phone probes"] = (time.perf_counter() - start) / 60
    per = {r.source: 100 * r.per for r in depth.per.itertuples()}
    gaps = {f"{g.shallower} - {g.deeper}": {"value": 100 * g.gap, "low": 100 * g.gap_lo, "high": 100 * g.gap_hi}
            for g in depth.gaps.itertuples()}
    row = {"label": args.label, "settings": vars(args), "scale": scale.name, "seeds": list(scale.downstream.seeds),
           "PER": per,
           "depth_gaps": gaps, "depth_holds_5": depth.holds(0.05), "depth_holds_10": depth.holds(0.10),
           "margins": margins, "pr_layer_weights": depth.layer_weights, "minutes": minutes}
    print(f"lever {args.label} ({scale.name}), PR PER % by depth (mean of {len(scale.downstream.seeds)} probe seeds):",
          ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    for title, table in (("depth gaps (PER points, paired 95 % interval)", gaps),
                         ("margins over the floors (error points, floor - baseline)", margins)):
        print(f"  {title}:")
        for k, d in table.items():
            print(f"    {k:32s} {d['value']:+6.1f}  [{d['low']:+.1f}, {d['high']:+.1f}]")
    print("  PR Featurizer weights (0 = encoder input):", " ".join(f"{w:.2f}" for w in depth.layer_weights))
    print(f"  depth matters (5 / 10 points): {depth.holds(0.05)} / {depth.holds(0.10)}")
    print("  minutes:", ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    with open(Path(args.work_dir) / "levers.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
