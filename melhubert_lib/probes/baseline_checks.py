"""Did the baseline learn? Frame-level phoneme probes of every layer against the three floors, and PR over depth.

Floors: the log-Mel input alone, log-Mel with +-4 neighbouring frames stacked, and the same
architecture untrained. The frame-level probe is the probe system's PC task (a linear layer on one hidden state,
every probe seed of the scale); each feature set's layer is chosen on dev-clean and reported on test-clean
(speakers the probe never saw); margins come with paired bootstrap intervals over utterances and probe seeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..compression.distillation import first_layers
from ..data.atomic import atomic_path
from ..data.tasks import load_task
from ..data.workspace import Workspace
from ..model import MelHuBERT
from ..scales import DownstreamScale
from .bootstrap import RateCounts, paired_rate_difference, rate_interval
from .layer_features import FLOORS, floor_sources, model_source
from .superb import evaluate_source, seed_errors


@dataclass
class LearningCheck:
    """Probe accuracy of every feature set and layer, and the pretrained model's margins over the floors."""

    table: pd.DataFrame  # features, layer, dev_accuracy, test_accuracy, test_low, test_high, best
    margins: pd.DataFrame  # floor, margin, low, high (test accuracy, pretrained best minus floor best)

    def passed(self, margin: float) -> bool:
        """True when the pretrained model beats every floor by at least `margin` (accuracy, 0-1)."""
        return bool((self.margins["margin"] >= margin).all())

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as tidy CSV (atomically)."""
        with atomic_path(path) as tmp:
            self.table.to_csv(tmp, index=False)


def phone_probe_check(ws: Workspace, pretrained: MelHuBERT, untrained: MelHuBERT,
                      settings: DownstreamScale | None = None) -> LearningCheck:
    """PC probes (every seed of `settings`, default the scale's) on every hidden state of both models and on the two
    log-Mel floors; the pretrained model's best layer against each floor's best, paired over test utterances and
    probe seeds. Trains probes only (nothing is written to the results files); hidden states are cached."""
    task = load_task(ws, "PC")
    sources = [*floor_sources(untrained), model_source(pretrained, "pretrained")]
    rows, errors = [], {}
    for source in tqdm(sources, desc="phone probes", leave=False):
        for layer in range(source.model.config.depth + 1 if source.model is not None else 1):
            results = evaluate_source(ws, source, [task], settings, layer=layer)
            errors[(source.name, layer)] = seed_errors(results, "accuracy")
            right = rate_interval(errors[(source.name, layer)]).complement()  # errors count misclassified frames
            rows.append({"features": source.name, "layer": layer,
                         "dev_accuracy": float(np.mean([r.dev["accuracy"] for r in results])),
                         "test_accuracy": right.value, "test_low": right.low, "test_high": right.high})
    table = pd.DataFrame(rows)
    table["best"] = table.index.isin(table.groupby("features")["dev_accuracy"].idxmax())
    best = {r.features: errors[(r.features, r.layer)] for r in table[table.best].itertuples()}
    margins = []
    for floor in FLOORS:
        diff = paired_rate_difference(best[floor], best["pretrained"])  # floor's errors minus the pretrained's
        margins.append({"floor": floor, "margin": diff.value, "low": diff.low, "high": diff.high})
    return LearningCheck(table=table, margins=pd.DataFrame(margins))


@dataclass
class DepthCheck:
    """Does the baseline's depth matter for phonemes? SUPERB's PR probe over the first n layers, n = 1..all."""

    per: pd.DataFrame  # source, layers, per, per_lo, per_hi (mean over probe seeds, 95 % interval)
    gaps: pd.DataFrame  # shallower, deeper, gap, gap_lo, gap_hi (PER points of the shallower minus the deeper, 0-1)
    layer_weights: list[float]  # the whole model's PR Featurizer weights (0 = encoder input), mean over seeds
    # per source: test errors and units of every probe seed, for further paired comparisons
    errors: dict[str, RateCounts] = field(default_factory=dict, repr=False)

    def holds(self, aim: float) -> bool:
        """True when every depth is resolvably worse than the next (intervals clear of zero), first-1 is at least
        `aim` (0-1) worse than the whole model, and the Featurizer weighs a Transformer layer most."""
        if self.gaps.empty:  # a one-layer model has no depth to matter
            return False
        whole = self.gaps[(self.gaps.shallower == "first-1") & (self.gaps.deeper == "all")].gap.iloc[0]
        return bool((self.gaps.gap_lo > 0).all() and whole >= aim and int(np.argmax(self.layer_weights)) > 0)


def pr_depth_check(ws: Workspace, model: MelHuBERT, settings: DownstreamScale | None = None) -> DepthCheck:
    """PR probes (every seed of `settings`, default the scale's) on the first 1, 2, ... layers of `model` and on all
    of it; paired intervals over test utterances and probe seeds for each depth against the next and for first-1
    against the whole. Trains probes only (nothing is written to the results files); hidden states are cached."""
    settings = settings or ws.scale.downstream
    task = load_task(ws, "PR")
    depth = model.config.depth
    names = [f"first-{n}" for n in range(1, depth)] + ["all"]
    errors, weights = {}, []
    for n, name in enumerate(names, 1):
        source = model_source(first_layers(model, n) if n < depth else model, name)
        results = evaluate_source(ws, source, [task], settings)
        errors[name] = seed_errors(results, "PER")
        if name == "all":
            weights = np.mean([r.layer_weights for r in results], axis=0).tolist()
    per = []
    for n, name in enumerate(names, 1):
        iv = rate_interval(errors[name])
        per.append({"source": name, "layers": n, "per": iv.value, "per_lo": iv.low, "per_hi": iv.high})
    pairs = list(zip(names[:-1], names[1:], strict=True))
    if depth > 2:
        pairs.append(("first-1", "all"))  # with depth 2 the one consecutive pair is this one
    gaps = []
    for shallower, deeper in pairs:
        d = paired_rate_difference(errors[shallower], errors[deeper])
        gaps.append({"shallower": shallower, "deeper": deeper, "gap": d.value, "gap_lo": d.low, "gap_hi": d.high})
    return DepthCheck(pd.DataFrame(per), pd.DataFrame(gaps), weights, errors)
