"""Did the baseline learn? Frame-level phoneme probes of every layer against the three floors.

Floors: the log-Mel input alone, log-Mel with +-4 neighbouring frames stacked, and the same
architecture untrained. Each feature set's layer is chosen on dev-clean and reported on test-clean
(speakers the probe never saw); margins come with paired bootstrap intervals over utterances.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .atomic import atomic_path
from .corpus import LABELED_SPLITS
from .frames import FrameStore
from .model import MelHuBERT
from .phone_probe import ProbeRun, frame_phone_labels, paired_difference, stack_context, train_linear_probe
from .representations import hidden_states
from .workspace import Workspace, model_inputs, split_utterances

CONTEXT = 4
FLOORS = ("log-Mel", f"log-Mel +-{CONTEXT} frames", "untrained")


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


SPLITS = tuple(LABELED_SPLITS.values())


def _split_data(ws: Workspace) -> tuple[dict[str, FrameStore], dict[str, FrameStore]]:
    inputs, labels = {}, {}
    for split in SPLITS:
        inputs[split] = model_inputs(ws, split)
        labels[split] = frame_phone_labels(split_utterances(ws, split), inputs[split].lengths(), ws.scale.frame_ms)
    return inputs, labels


def phone_probe_check(ws: Workspace, pretrained: MelHuBERT, untrained: MelHuBERT, epochs: int = 20,
                      seed: int = 0) -> LearningCheck:
    """Train a linear phone probe on every layer of both models and on the two log-Mel floors."""
    inputs, labels = _split_data(ws)
    train, dev, test = SPLITS

    def probe(feats: dict[str, FrameStore]) -> ProbeRun:
        return train_linear_probe((feats[train], labels[train]), (feats[dev], labels[dev]),
                                  (feats[test], labels[test]), epochs=epochs, seed=seed)

    runs: dict[tuple[str, int], ProbeRun] = {(FLOORS[0], 0): probe(inputs)}
    runs[(FLOORS[1], 0)] = probe({s: stack_context(inputs[s], CONTEXT) for s in SPLITS})
    for name, model in tqdm((("untrained", untrained), ("pretrained", pretrained)), desc="phone probes", leave=False):
        # one model's layers at a time, in half precision: every layer of both models in float32 needs several GiB
        per_split = {s: hidden_states(model, inputs[s], dtype=np.float16) for s in SPLITS}
        for layer in range(model.config.depth + 1):
            runs[(name, layer)] = probe({s: per_split[s][layer] for s in SPLITS})
        del per_split
    rows = []
    for (name, layer), run in runs.items():
        low, high = run.test.interval()
        rows.append({"features": name, "layer": layer, "dev_accuracy": run.dev.accuracy,
                     "test_accuracy": run.test.accuracy, "test_low": low, "test_high": high})
    table = pd.DataFrame(rows)
    best_idx = table.groupby("features")["dev_accuracy"].idxmax()
    table["best"] = table.index.isin(best_idx)
    best = {r.features: runs[(r.features, r.layer)] for r in table[table.best].itertuples()}
    margins = []
    for floor in FLOORS:
        diff = paired_difference(best["pretrained"].test, best[floor].test)
        margins.append({"floor": floor, "margin": diff.value, "low": diff.low, "high": diff.high})
    return LearningCheck(table=table, margins=pd.DataFrame(margins))
