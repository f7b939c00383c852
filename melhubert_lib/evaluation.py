"""Judge checkpoints: downstream probes on every task plus efficiency, recorded as tidy rows.

`results/downstream.csv` holds one row per source x task x seed x split x metric (value, params,
MACs, RTF, method, level; `headline` marks the task's own metric, e.g. WER beside ASR's CER);
`results/layer_weights.csv` holds the Featurizer's learned weight per layer, and `results/test_utterances.csv`
the errors of every test utterance (for paired bootstrap intervals between sources).
The floors (log-Mel, log-Mel +-4 frames, the untrained network) are rows like any other. Each row
carries the source's cache key (a hash of its configuration and weights), so a later call can reuse
the rows of an unchanged checkpoint instead of training its probes again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
from tqdm.auto import tqdm

from .bootstrap import Difference, paired_rate_difference
from .downstream import TaskResult, evaluate_source
from .efficiency import EFFICIENCY_CACHE, Efficiency, measure
from .layer_features import FeatureSource
from .results import append_rows
from .tasks import TaskData
from .workspace import Workspace

DOWNSTREAM_FILE = "downstream.csv"
LAYER_WEIGHTS_FILE = "layer_weights.csv"
UTTERANCES_FILE = "test_utterances.csv"  # per test utterance: errors and units of the headline metric
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
             seeds: tuple[int, ...] | None = None, threads: int = 1, reuse: bool = True) -> Evaluation:
    """Probe every candidate on every task, measure its cost, and merge the rows into the results files.

    With `reuse`, a candidate whose rows for a task and every seed are already on file under the same source
    key (same weights, same name) is not trained again: its stored rows are returned.
    """
    seeds = tuple(seeds if seeds is not None else ws.scale.downstream.seeds)
    done_scores, done_weights = _stored(ws) if reuse else (pd.DataFrame(), pd.DataFrame())
    scores, weights, utterances = [], [], []
    for cand in tqdm(candidates, desc="upstreams", leave=False):
        todo = []
        for task in tasks:
            rows = _rows_of(done_scores, cand, task.spec.name)
            layer_rows = _rows_of(done_weights, cand, task.spec.name, keyed=False)
            if rows is not None and layer_rows is not None and set(rows.seed) >= set(seeds):
                scores += rows[rows.seed.isin(seeds)].to_dict("records")
                weights += layer_rows[layer_rows.seed.isin(seeds)].to_dict("records")
            else:
                todo.append(task)
        if not todo:
            continue
        model = cand.source.model
        cost = measure(model, threads=threads, cache_dir=ws.cache / EFFICIENCY_CACHE) if model is not None else None
        for result in evaluate_source(ws, cand.source, todo, seeds=seeds):
            scores += _score_rows(cand, result, cost)
            weights += [{"source": cand.source.name, "task": result.task, "seed": result.seed, "layer": i,
                         "weight": w} for i, w in enumerate(result.layer_weights)]
            utterances += [{"source": cand.source.name, "key": cand.source.key, "task": result.task,
                            "seed": result.seed, "utterance": i, "errors": e, "units": u}
                           for i, (e, u) in enumerate(zip(result.test_errors, result.test_units, strict=True))]
    score_table, weight_table = pd.DataFrame(scores), pd.DataFrame(weights)
    append_rows(ws.results / DOWNSTREAM_FILE, score_table, KEY)
    append_rows(ws.results / LAYER_WEIGHTS_FILE, weight_table, ["source", "task", "seed", "layer"])
    if utterances:
        append_rows(ws.results / UTTERANCES_FILE, pd.DataFrame(utterances), ["source", "task", "seed", "utterance"])
    return Evaluation(score_table, weight_table)


def error_difference(ws: Workspace, a: str, b: str, task: str, seed: int = 0) -> Difference:
    """Test error rate of source `a` minus that of `b` on `task` (probe `seed`), with a paired bootstrap interval
    over the test utterances (from `results/test_utterances.csv`; accuracy tasks: 1 - accuracy)."""
    path = ws.results / UTTERANCES_FILE
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["source", "task", "seed"])
    rows = {}
    for name in (a, b):
        rows[name] = table[(table.source == name) & (table.task == task) & (table.seed == seed)].sort_values(
            "utterance")
        if rows[name].empty:
            raise ValueError(f"no per-utterance {task} results for {name!r} (seed {seed}) in {path}: evaluate it first")
    return paired_rate_difference(rows[a].errors, rows[a].units, rows[b].errors, rows[b].units)


def _stored(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score and layer-weight rows already on file (empty frames where there are none)."""
    tables = []
    for name in (DOWNSTREAM_FILE, LAYER_WEIGHTS_FILE):
        path = ws.results / name
        tables.append(pd.read_csv(path) if path.is_file() else pd.DataFrame())
    return tables[0], tables[1]


def _rows_of(table: pd.DataFrame, cand: Candidate, task: str, keyed: bool = True) -> pd.DataFrame | None:
    """`cand`'s stored rows for `task` (scores: only under its current key, method and level), or None."""
    if table.empty or (keyed and "key" not in table.columns):
        return None
    rows = table[(table.source == cand.source.name) & (table.task == task)]
    if keyed:
        rows = rows[(rows.key == cand.source.key) & (rows.method == cand.method) & (rows.level == cand.level)]
    return rows if len(rows) else None


def _score_rows(cand: Candidate, result: TaskResult, cost: Efficiency | None) -> list[dict]:
    costs = asdict(cost) if cost is not None else {}
    base = {
        "source": cand.source.name, "key": cand.source.key, "method": cand.method, "level": cand.level,
        "task": result.task, "seed": result.seed, "best_epoch": result.best_epoch,
        "params": costs.get("params", 0), "nonzero_params": costs.get("nonzero_params", 0),
        "macs_per_second": costs.get("macs_per_second", math.nan),
        "sparse_macs_per_second": costs.get("sparse_macs_per_second", math.nan),
        "rtf": costs.get("rtf", math.nan), "peak_memory_mb": costs.get("peak_memory_mb", math.nan),
    }
    return [{**base, "metric": metric, "headline": metric == result.metric, "split": split, "value": value}
            for split, values in (("dev", result.dev), ("test", result.test)) for metric, value in values.items()]
