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

from ..data import tasks as tasks_module
from ..data.provenance import code_version, fingerprint
from ..data.results import append_rows
from ..data.tasks import TASKS, TaskData
from ..data.workspace import Workspace
from ..efficiency import EFFICIENCY_CACHE, Efficiency, measure
from . import stacked_probes, superb
from .bootstrap import Difference, Interval, RateCounts, paired_rate_difference, rate_interval
from .layer_features import FeatureSource, layers_dir
from .superb import TaskResult, evaluate_source

DOWNSTREAM_FILE = "downstream.csv"
LAYER_WEIGHTS_FILE = "layer_weights.csv"
UTTERANCES_FILE = "test_utterances.csv"  # per test utterance and metric: errors and units
UTTERANCE_KEY = ["source", "task", "seed", "metric", "utterance"]
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

    With `reuse`, a candidate whose rows for a task and every seed are already on file under the same judging key
    (same weights and name, same probe settings, frames, feature precision and code: `judging_key`) is not trained
    again: its stored rows are returned.
    """
    seeds = tuple(seeds if seeds is not None else ws.scale.downstream.seeds)
    done_scores, done_weights = _stored(ws) if reuse else (pd.DataFrame(), pd.DataFrame())
    reused_scores, reused_weights, scores, weights, utterances = [], [], [], [], []
    for cand in tqdm(candidates, desc="upstreams", leave=False):
        todo, keys = [], {task.spec.name: judging_key(ws, cand.source, task.spec.name) for task in tasks}
        for task in tasks:
            rows = _rows_of(done_scores, cand, task.spec.name, keys[task.spec.name])
            layer_rows = _rows_of(done_weights, cand, task.spec.name)
            if rows is not None and layer_rows is not None and set(rows.seed) >= set(seeds):
                reused_scores += rows[rows.seed.isin(seeds)].to_dict("records")
                reused_weights += layer_rows[layer_rows.seed.isin(seeds)].to_dict("records")
            else:
                todo.append(task)
        if not todo:
            continue
        model = cand.source.model
        cost = measure(model, threads=threads, cache_dir=ws.cache / EFFICIENCY_CACHE) if model is not None else None
        for result in evaluate_source(ws, cand.source, todo, seeds=seeds):
            key = keys[result.task]
            scores += _score_rows(cand, key, result, cost)
            weights += [{"source": cand.source.name, "task": result.task, "seed": result.seed, "layer": i,
                         "weight": w} for i, w in enumerate(result.layer_weights)]
            utterances += [{"source": cand.source.name, "key": key, "task": result.task,
                            "seed": result.seed, "metric": metric, "utterance": i, "errors": e, "units": u}
                           for metric, errors in result.test_errors.items()
                           for i, (e, u) in enumerate(zip(errors, result.test_units[metric], strict=True))]
    if scores:  # a source judged again (new weights, or other seeds) replaces all its rows for that task
        append_rows(ws.results / DOWNSTREAM_FILE, pd.DataFrame(scores), KEY, replace=["source", "task"])
        append_rows(ws.results / LAYER_WEIGHTS_FILE, pd.DataFrame(weights), ["source", "task", "seed", "layer"],
                    replace=["source", "task"])
        append_rows(ws.results / UTTERANCES_FILE, pd.DataFrame(utterances), UTTERANCE_KEY, replace=["source", "task"])
    score_table = pd.DataFrame(reused_scores + scores)
    weight_table = pd.DataFrame(reused_weights + weights)
    return Evaluation(score_table, weight_table)


def error_difference(ws: Workspace, a: str, b: str, task: str, seeds: tuple[int, ...] | None = None,
                     metric: str | None = None, table: pd.DataFrame | None = None) -> Difference:
    """Test error rate of source `a` minus that of `b` on `task` (mean over probe `seeds`, default every seed on
    file), with a paired 95 % bootstrap interval over the test utterances and the probe seeds (from
    `results/test_utterances.csv`, or `table`, that file already read; accuracy tasks: 1 - accuracy). `metric`: the
    task's own unless given (ASR: CER)."""
    table = utterance_table(ws) if table is None else table  # read once for both sources
    return paired_rate_difference(utterance_errors(ws, a, task, seeds, metric, table),
                                  utterance_errors(ws, b, task, seeds, metric, table))


def error_interval(ws: Workspace, source: str, task: str, seeds: tuple[int, ...] | None = None,
                   metric: str | None = None) -> Interval:
    """Test error rate of `source` on `task` (mean over probe `seeds`, default every seed on file), with a 95 %
    bootstrap interval over the test utterances and the probe seeds. `metric`: the task's own unless given."""
    return rate_interval(utterance_errors(ws, source, task, seeds, metric))


def score_intervals(ws: Workspace, sources: list[str], tasks: list[str], headline: bool = False) -> pd.DataFrame:
    """Tidy test scores of `sources` on every metric of `tasks` (ASR: WER and CER; only WER with `headline`): the mean
    over the probe seeds on file with its 95 % interval over test utterances and seeds, as the metric itself
    (`value`, `value_lo`, `value_hi`: accuracy or an error rate) and as an error rate (`error`, `error_lo`,
    `error_hi`: 1 - accuracy for accuracy tasks)."""
    rows, table = [], utterance_table(ws)
    for task in tasks:
        for metric in TASKS[task].metrics[:1] if headline else TASKS[task].metrics:
            for source in sources:
                errors = utterance_errors(ws, source, task, metric=metric, table=table)
                iv = rate_interval(errors)
                shown = iv.complement() if metric == "accuracy" else iv
                rows.append({"source": source, "task": task, "metric": metric, "value": shown.value,
                             "value_lo": shown.low, "value_hi": shown.high, "error": iv.value, "error_lo": iv.low,
                             "error_hi": iv.high, "probe_seeds": errors.n_seeds})
    return pd.DataFrame(rows)


def utterance_table(ws: Workspace) -> pd.DataFrame:
    """Every stored per-utterance test result (`results/test_utterances.csv`; empty if none yet)."""
    path = ws.results / UTTERANCES_FILE
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=[*UTTERANCE_KEY, "errors", "units"])


def utterance_errors(ws: Workspace, source: str, task: str, seeds: tuple[int, ...] | None = None,
                     metric: str | None = None, table: pd.DataFrame | None = None) -> RateCounts:
    """Errors and units of every test utterance and probe seed, from `results/test_utterances.csv`
    (or from `table`, that file already read). `metric`: the task's own unless given."""
    metric = metric or TASKS[task].metric
    table = utterance_table(ws) if table is None else table
    rows = table[(table.source == source) & (table.task == task) & (table.metric == metric)]
    if seeds is not None:
        rows = rows[rows.seed.isin(seeds)]
    if rows.empty or (seeds is not None and set(rows.seed) != set(seeds)):
        raise ValueError(f"no per-utterance {task} {metric} results for {source!r} (seeds {seeds or 'any'}) in "
                         f"{ws.results / UTTERANCES_FILE}: evaluate it first")
    wide = rows.pivot_table(index="seed", columns="utterance", values=["errors", "units"])
    return RateCounts(wide["errors"].to_numpy(), wide["units"].to_numpy())


def _stored(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score and layer-weight rows already on file (empty frames where there are none)."""
    tables = []
    for name in (DOWNSTREAM_FILE, LAYER_WEIGHTS_FILE):
        path = ws.results / name
        tables.append(pd.read_csv(path) if path.is_file() else pd.DataFrame())
    return tables[0], tables[1]


def judging_key(ws: Workspace, source: FeatureSource, task: str) -> str:
    """What a source's stored scores on `task` were computed from: its content key and the cache of its layers (frames,
    the precision of the model's pass and the code that computes them), that task's probe settings (not the seeds:
    each row carries its own; not the other tasks': tuning one task's probe re-judges that task only) and the probing
    code."""
    code = code_version(__name__, superb, stacked_probes, tasks_module, "melhubert_lib.data.corpus.lexicon")
    settings = ws.scale.downstream
    recipe = {"task": task, "epochs": settings.epochs[task], "lr": settings.learning_rates[task],
              "lr_schedule": settings.lr_schedule, "clip_seconds": settings.clip_seconds.get(task)}
    if task == "ASR":  # the one task with a BiLSTM
        recipe |= {"asr_hidden": settings.asr_hidden, "asr_layers": settings.asr_layers}
    return f"{source.key}-{fingerprint(layers_dir(ws, source).name, recipe, code)}"


def _rows_of(table: pd.DataFrame, cand: Candidate, task: str, key: str | None = None) -> pd.DataFrame | None:
    """`cand`'s stored rows for `task` (with `key`: only under that judging key, method and level), or None."""
    if table.empty or (key is not None and "key" not in table.columns):
        return None
    rows = table[(table.source == cand.source.name) & (table.task == task)]
    if key is not None:
        rows = rows[(rows.key == key) & (rows.method == cand.method) & (rows.level == cand.level)]
    return rows if len(rows) else None


def _score_rows(cand: Candidate, key: str, result: TaskResult, cost: Efficiency | None) -> list[dict]:
    costs = asdict(cost) if cost is not None else {}
    base = {
        "source": cand.source.name, "key": key, "method": cand.method, "level": cand.level,
        "task": result.task, "seed": result.seed, "best_epoch": result.best_epoch,
        "params": costs.get("params", 0), "nonzero_params": costs.get("nonzero_params", 0),
        "macs_per_second": costs.get("macs_per_second", math.nan),
        "sparse_macs_per_second": costs.get("sparse_macs_per_second", math.nan),
        "rtf": costs.get("rtf", math.nan), "rtf_iqr": costs.get("rtf_iqr", math.nan),
        "peak_memory_mb": costs.get("peak_memory_mb", math.nan),
    }
    return [{**base, "metric": metric, "headline": metric == result.metric, "split": split, "value": value}
            for split, values in (("dev", result.dev), ("test", result.test)) for metric, value in values.items()]
