"""Judge checkpoints: downstream probes on every task plus efficiency, recorded as tidy rows.

`results/downstream.csv` holds one row per source x task x seed x split x metric (value, params,
MACs, RTF, method, level; `headline` marks the task's own metric, e.g. WER beside ASR's CER);
`results/layer_weights.csv` holds the Featurizer's learned weight per layer.
The floors (log-Mel, log-Mel +-4 frames, the untrained network) are rows like any other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
from tqdm.auto import tqdm

from .downstream import TaskResult, evaluate_source
from .efficiency import Efficiency, measure
from .layer_features import FeatureSource
from .results import append_rows
from .tasks import TaskData
from .workspace import Workspace

DOWNSTREAM_FILE = "downstream.csv"
LAYER_WEIGHTS_FILE = "layer_weights.csv"
KEY = ["source", "task", "seed", "split", "metric"]


@dataclass(frozen=True)
class Candidate:
    """A feature source with its place in the study: method ('baseline', 'floor', 'head pruning', ...) and level."""

    source: FeatureSource
    method: str
    level: float = 0.0


@dataclass
class Evaluation:
    """Tidy rows of one call: scores and layer weights."""

    scores: pd.DataFrame
    layer_weights: pd.DataFrame


def evaluate(ws: Workspace, candidates: list[Candidate], tasks: list[TaskData],
             seeds: tuple[int, ...] | None = None, threads: int = 1) -> Evaluation:
    """Probe every candidate on every task, measure its cost, and merge the rows into the results files."""
    scores, weights = [], []
    for cand in tqdm(candidates, desc="upstreams", leave=False):
        cost = measure(cand.source.model, threads=threads) if cand.source.model is not None else None
        for result in evaluate_source(ws, cand.source, tasks, seeds=seeds):
            scores += _score_rows(cand, result, cost)
            weights += [{"source": cand.source.name, "task": result.task, "seed": result.seed, "layer": i,
                         "weight": w} for i, w in enumerate(result.layer_weights)]
    score_table, weight_table = pd.DataFrame(scores), pd.DataFrame(weights)
    append_rows(ws.results / DOWNSTREAM_FILE, score_table, KEY)
    append_rows(ws.results / LAYER_WEIGHTS_FILE, weight_table, ["source", "task", "seed", "layer"])
    return Evaluation(score_table, weight_table)


def _score_rows(cand: Candidate, result: TaskResult, cost: Efficiency | None) -> list[dict]:
    costs = asdict(cost) if cost is not None else {}
    base = {
        "source": cand.source.name, "method": cand.method, "level": cand.level, "task": result.task,
        "seed": result.seed, "best_epoch": result.best_epoch,
        "params": costs.get("params", 0), "nonzero_params": costs.get("nonzero_params", 0),
        "macs_per_second": costs.get("macs_per_second", math.nan),
        "sparse_macs_per_second": costs.get("sparse_macs_per_second", math.nan),
        "rtf": costs.get("rtf", math.nan), "peak_memory_mb": costs.get("peak_memory_mb", math.nan),
    }
    return [{**base, "metric": metric, "headline": metric == result.metric, "split": split, "value": value}
            for split, values in (("dev", result.dev), ("test", result.test)) for metric, value in values.items()]
