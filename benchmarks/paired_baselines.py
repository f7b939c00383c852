"""Two pretrained checkpoints judged on the same test utterances: is one resolvably better than the other?

The lever rows in the README come from separate workspaces and are compared by point estimates; where two
checkpoints can be judged on one corpus's tasks (two levers that share a corpus, or two committed runs of the same
corpus), this script makes the comparison paired: it trains the scale's probes (every probe seed; PR through the
Featurizer over all layers) on each checkpoint's hidden states and prints each one's error with its 95 % interval
and the difference of their errors, B minus A (negative: B better), with a 95 % bootstrap interval that resamples
the test utterances jointly for both (paired) and each one's probe seeds independently.
The workspace whose tasks judge both is the scale's own, or that of a lever row of `<work>/levers.jsonl`.
Usage: python benchmarks/paired_baselines.py A_MODEL_DIR B_MODEL_DIR [--lever 8h-2400] [--tasks PR,SID,KS]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from levers import build_parser, lever_scale

from melhubert_lib.data.tasks import TASKS, load_task
from melhubert_lib.data.workspace import open_workspace
from melhubert_lib.model import MelHuBERT
from melhubert_lib.probes.bootstrap import paired_rate_difference, rate_interval
from melhubert_lib.probes.layer_features import model_source
from melhubert_lib.probes.superb import evaluate_source, seed_errors
from melhubert_lib.scales import get_scale


def lever_settings(work_dir: str, label: str) -> argparse.Namespace:
    """The settings a lever row of `<work_dir>/levers.jsonl` was measured with (the last row of that label), over
    `levers.py`'s defaults for any setting an older row does not record."""
    path = Path(work_dir) / "levers.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run benchmarks/levers.py --label {label} first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    found = [r for r in rows if r["label"] == label]
    if not found:
        raise SystemExit(f"no lever {label!r} in {path}; labels there: {', '.join(sorted({r['label'] for r in rows}))}")
    settings = build_parser().parse_args(["--label", label])
    vars(settings).update(found[-1]["settings"])
    return settings


def main() -> None:
    """Judge both checkpoints on the workspace's tasks and print the paired differences."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="model directory of checkpoint A (MelHuBERT.save_pretrained)")
    parser.add_argument("b", help="model directory of checkpoint B")
    parser.add_argument("--work-dir", default="work")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scale", default="default", help="judge on this scale's own workspace")
    where.add_argument("--lever", default=None, help="judge on the workspace of this lever row instead")
    parser.add_argument("--tasks", default="PR,SID,KS")
    args = parser.parse_args()
    scale = lever_scale(lever_settings(args.work_dir, args.lever)) if args.lever else get_scale(args.scale)
    ws = open_workspace(scale, args.work_dir)
    models = {"A": MelHuBERT.from_pretrained(args.a), "B": MelHuBERT.from_pretrained(args.b)}
    print(f"workspace {scale.name}; probe seeds {list(scale.downstream.seeds)}")
    for key, path in (("A", args.a), ("B", args.b)):
        print(f"  {key}: {path} ({models[key].content_hash()})")
    for task_name in [t for t in args.tasks.split(",") if t]:
        task = load_task(ws, task_name)
        metric = TASKS[task_name].metric  # its errors: PER for PR, the share of wrong utterances for SID and KS
        errors = {key: seed_errors(evaluate_source(ws, model_source(model, f"paired-{key}"), [task]), metric)
                  for key, model in models.items()}
        for key, counts in errors.items():
            iv = rate_interval(counts)
            print(f"  {task_name} error {key}: {100 * iv.value:5.1f} % [{100 * iv.low:.1f}, {100 * iv.high:.1f}]")
        d = paired_rate_difference(errors["B"], errors["A"])
        print(f"  {task_name} error B - A: {100 * d.value:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}] "
              f"({'resolved' if d.sign else 'not resolved'})")


if __name__ == "__main__":
    main()
