"""What the question notebooks (07-10) share: which compressed checkpoints to judge, error rates, Pareto fronts,
scores relative to the baseline, and the baseline's fine-tuning band for the SSL loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..compression.levels import RESULTS_FILE
from ..data.tasks import TASKS
from ..data.workspace import Workspace
from ..model import CONFIG_NAME, MelHuBERT, MelHuBERTConfig
from ..probes.bootstrap import Interval, paired_statistic
from ..probes.judging import DOWNSTREAM_FILE, error_difference, utterance_errors, utterance_table
from ..scales import PretrainScale
from ..training.pretrain import SSLData, evaluate_ssl, train


def checkpoint_name(run: str, level: int) -> str:
    """The source name of a compressed level in the downstream results: `<run>/level-NN`."""
    return f"{run}/level-{level:02d}"


@dataclass(frozen=True)
class JudgedCheckpoint:
    """A compressed checkpoint chosen for downstream evaluation; `name` is its source name in the results."""

    method: str
    run: str
    level: int
    setting: float
    model_dir: Path

    @property
    def name(self) -> str:
        """Its source name, unique across the study."""
        return checkpoint_name(self.run, self.level)


def read_results(ws: Workspace, name: str) -> pd.DataFrame:
    """A results table of the workspace, or a clear error naming the notebook that writes it."""
    path = ws.results / name
    if not path.is_file():
        writer = {RESULTS_FILE: "02-05 (compression)", DOWNSTREAM_FILE: "06_downstream and 07_tradeoffs"}
        raise FileNotFoundError(f"{path} is missing: run notebook {writer.get(name, 'that writes it')} first "
                                f"(or `make figures`) at this scale")
    return pd.read_csv(path)


def spread_levels(n_levels: int, per_run: int) -> list[int]:
    """`per_run` level numbers out of 1..n_levels, evenly spaced and always including the most severe."""
    if per_run < 1:
        raise ValueError(f"per_run must be at least 1, got {per_run}")
    if n_levels <= per_run:
        return list(range(1, n_levels + 1))
    return sorted({int(round(x)) for x in np.linspace(n_levels, n_levels / per_run, per_run)})


def checkpoints_to_judge(ws: Workspace, per_run: int, skip_runs: Sequence[str] = ()) -> list[JudgedCheckpoint]:
    """Evenly spread compressed levels of every run in `results/compression.csv` (but `skip_runs`)."""
    table = read_results(ws, RESULTS_FILE)
    chosen = []
    for run, levels in table[(table.level > 0) & ~table.run.isin(list(skip_runs))].groupby("run", sort=False):
        levels = levels.set_index("level").sort_index()
        for level in spread_levels(int(levels.index.max()), per_run):
            row = levels.loc[level]
            chosen.append(JudgedCheckpoint(row.method, run, level, float(row.setting), ws.root / row.model_dir))
    return chosen


def depth_ladder(ws: Workspace, runs: Sequence[str]) -> list[JudgedCheckpoint]:
    """Every level of `runs` (those in `results/compression.csv`) whose model keeps the starting model's layer shape
    (every head, the full FFN width), so that the runs' models differ only in how they reached their depth: the
    anytime exits, the first-N truncations and the full-width students, one per depth per run."""
    table = read_results(ws, RESULTS_FILE)
    chosen = []
    for run, levels in table[table.run.isin(list(runs))].groupby("run", sort=False):
        configs = {int(r.level): MelHuBERTConfig.from_json((ws.root / r.model_dir / CONFIG_NAME).read_text())
                   for r in levels.itertuples()}
        start = configs[0]
        for r in levels[levels.level > 0].sort_values("level").itertuples():
            cfg = configs[int(r.level)]
            if set(cfg.ffn_dims) == set(start.ffn_dims) and set(cfg.heads) == set(start.heads):
                chosen.append(JudgedCheckpoint(r.method, run, int(r.level), float(r.setting), ws.root / r.model_dir))
    return chosen


def study_checkpoints(ws: Workspace, per_run: int, skip_runs: Sequence[str] = (),
                      depth_runs: Sequence[str] = ()) -> list[JudgedCheckpoint]:
    """Every checkpoint 07_tradeoffs judges: each run's evenly spread levels (`checkpoints_to_judge`), then the depth
    ladder of `depth_runs` (`depth_ladder`) where it adds levels, each checkpoint once, a run's levels in order."""
    chosen = checkpoints_to_judge(ws, per_run, skip_runs)
    names = {c.name for c in chosen}
    chosen += [c for c in depth_ladder(ws, depth_runs) if c.name not in names]
    runs = list(dict.fromkeys(c.run for c in chosen))
    return sorted(chosen, key=lambda c: (runs.index(c.run), c.level))


def depth_of(checkpoint: JudgedCheckpoint) -> int:
    """The number of layers of a judged checkpoint (from its config)."""
    return MelHuBERTConfig.from_json((checkpoint.model_dir / CONFIG_NAME).read_text()).depth


def with_error(scores: pd.DataFrame) -> pd.DataFrame:
    """Headline rows with an `error` column: 1 - accuracy for accuracy tasks, the error rate otherwise."""
    rows = scores[scores.headline.astype(bool)].copy()
    lower = rows.task.map(lambda t: TASKS[t].lower_is_better)
    rows["error"] = np.where(lower, rows.value, 1.0 - rows.value)
    return rows


def pareto_front(points: pd.DataFrame, cost: str, error: str = "error") -> pd.DataFrame:
    """The points no other point beats on both cost and error (lower is better for both), by increasing cost."""
    ordered = points.sort_values([cost, error])
    keep, best = [], np.inf
    for idx, value in ordered[error].items():
        if value < best:
            keep.append(idx)
            best = value
    return ordered.loc[keep]


def best_within_budget(points: pd.DataFrame, cost: str, budgets: list[float], error: str = "error") -> pd.DataFrame:
    """For each budget (in units of `cost`), the lowest-error point that costs at most that much."""
    rows = []
    for budget in budgets:
        affordable = points[points[cost] <= budget]
        if affordable.empty:
            continue
        rows.append(affordable.loc[affordable[error].idxmin()].to_frame().T.assign(budget=budget))
    return pd.concat(rows, ignore_index=True) if rows else points.iloc[:0].assign(budget=[])


def budget_winners(ws: Workspace, points: pd.DataFrame, baseline: pd.Series, costs: Sequence[str],
                   fractions: Sequence[float], table: pd.DataFrame | None = None) -> pd.DataFrame:
    """For one task's judged `points` (columns source, run, error and each cost) and each cost and budget (a
    fraction of the `baseline` point's cost): the lowest-error affordable point, with `budget_fraction` and
    `tied_runs`, the other affordable runs whose error is not resolved from it (comma-separated; empty: the winner
    is resolved from every other affordable run)."""
    table = utterance_table(ws) if table is None else table
    task = points.task.iloc[0]
    run_of = points.set_index("source").run
    rows = []
    for cost in costs:
        best = best_within_budget(points, cost, [f * baseline[cost] for f in fractions])
        tied = [", ".join(run_of[tied_with(ws, task, b.source,
                                           points[(points[cost] <= b.budget) & (points.run != b.run)].source,
                                           table)].unique())
                for b in best.itertuples()]
        fraction = (best.budget / baseline[cost]).astype(float).round(2)
        rows.append(best.assign(cost=cost, budget_fraction=fraction, tied_runs=tied))
    return pd.concat(rows, ignore_index=True)


def against_best_single(ws: Workspace, points: pd.DataFrame, run: str, cost: str = "macs",
                        table: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each judged level of `run` (a combination of methods) and each task in `points` (judged points with
    columns source, run, task, error and `cost`): the lowest-error point of any other compressed run that costs at
    most as much (`rival`, `rival_run`), and the level's error minus the rival's with its paired 95 % interval
    (`value`, `low`, `high`) and `verdict` ("better", "worse" or "indistinguishable"). A level that no other run
    matches in cost is left out."""
    table = utterance_table(ws) if table is None else table
    rows = []
    singles = points[(points.run != run) & (points.run != "baseline")]
    for p in points[points.run == run].itertuples():
        rival = best_within_budget(singles[singles.task == p.task], cost, [getattr(p, cost)])
        if rival.empty:
            continue
        r = rival.iloc[0]
        diff = error_difference(ws, p.source, r.source, p.task, table=table)
        rows.append({"task": p.task, "source": p.source, cost: getattr(p, cost), "error": p.error,
                     "rival": r.source, "rival_run": r.run, f"rival_{cost}": r[cost], "rival_error": r.error,
                     "value": diff.value, "low": diff.low, "high": diff.high, "verdict": COMPARED[diff.sign]})
    columns = ["task", "source", cost, "error", "rival", "rival_run", f"rival_{cost}", "rival_error", "value", "low",
               "high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def tied_with(ws: Workspace, task: str, best: str, others: Sequence[str],
              table: pd.DataFrame | None = None) -> list[str]:
    """The sources among `others` whose test error on `task` is not resolved from `best`'s: the paired 95 % interval
    of the difference (test utterances and probe seeds) contains zero."""
    table = utterance_table(ws) if table is None else table
    return [other for other in others if error_difference(ws, other, best, task, table=table).sign == 0]


def front_steps_resolved(ws: Workspace, task: str, front: pd.DataFrame, table: pd.DataFrame | None = None
                         ) -> list[bool]:
    """For each step along a Pareto front (`pareto_front`'s rows, by increasing cost), whether the costlier point's
    lower error is resolved from the cheaper point's: the paired 95 % interval of the difference excludes zero."""
    table = utterance_table(ws) if table is None else table
    sources = list(front.source)
    return [error_difference(ws, costly, cheap, task, table=table).sign < 0
            for cheap, costly in zip(sources, sources[1:], strict=False)]


def retained_intervals(ws: Workspace, sources: Sequence[str], tasks: Sequence[str], floor: str = "log-Mel",
                       baseline: str = "baseline") -> pd.DataFrame:
    """Per source and task, the share of the baseline's gain over the floor that the source keeps, with a paired
    95 % bootstrap interval (the same test utterances for the three, each one's probe seeds drawn independently).

    Columns: source, task, kept, kept_lo, kept_hi (1 = as good as the baseline, 0 = no better than the floor).
    """
    table = utterance_table(ws)
    rows = []
    for task in tasks:
        try:
            anchors = [utterance_errors(ws, name, task, table=table) for name in (floor, baseline)]
        except ValueError as err:
            raise ValueError(f"{err} (run 06_downstream first at this scale)") from None
        for source in sources:
            if source in (floor, baseline):  # by definition; not a third, independently drawn system
                share = Interval(*[1.0 if source == baseline else 0.0] * 3)
            else:
                share = paired_statistic([*anchors, utterance_errors(ws, source, task, table=table)],
                                         lambda f, b, x: (f - x) / (f - b))
            rows.append({"source": source, "task": task, "kept": share.value, "kept_lo": share.low,
                         "kept_hi": share.high})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho over paired points, its 95 % bootstrap interval over the points, and a permutation p-value."""

    rho: float
    low: float
    high: float
    p_value: float
    n: int

    def sentence(self, x: str, y: str, alpha: float = 0.05) -> str:
        """What the correlation says, decided by its interval and p-value, not by rho alone."""
        numbers = (f"Spearman rho = {self.rho:+.2f} (95 % CI {self.low:+.2f} to {self.high:+.2f}, "
                   f"p = {self.p_value:.3f}, n = {self.n})")
        if self.p_value < alpha and (self.low > 0 or self.high < 0):
            way = "more" if self.rho > 0 else "less"
            return f"a larger {x} goes with {way} {y}: {numbers}"
        return f"no resolvable rank relation between {x} and {y}: {numbers}"


def rank_correlation(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0) -> RankCorrelation:
    """Spearman's rho of paired points with a percentile bootstrap interval (resampling the points) and a two-sided
    permutation p-value (scipy)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"x and y: need at least 3 paired points, one x per y; got {len(x)} x and {len(y)} y")
    rho = float(stats.spearmanr(x, y).statistic)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    boot = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    perm = stats.permutation_test((x, y), lambda a, b: stats.spearmanr(a, b).statistic, permutation_type="pairings",
                                  n_resamples=n_boot, rng=np.random.default_rng(seed))
    return RankCorrelation(rho, float(low), float(high), float(perm.pvalue), len(x))


@dataclass
class SeedBand:
    """The uncompressed baseline fine-tuned like every compressed level, once per seed: its held-out SSL metrics."""

    seeds: list[int]
    losses: list[float]
    accuracies: list[float]

    @property
    def loss_range(self) -> tuple[float, float]:
        """The band's edges: the best and the worst held-out loss over seeds."""
        return min(self.losses), max(self.losses)

    @property
    def accuracy_range(self) -> tuple[float, float]:
        """The lowest and the highest masked accuracy over seeds."""
        return min(self.accuracies), max(self.accuracies)


def finetune_band(ws: Workspace, base_dir: str | Path, data: dict[str, SSLData], finetune: PretrainScale,
                  seeds: list[int]) -> SeedBand:
    """Fine-tune the uncompressed baseline with each seed (the data order and masks change) and measure it.

    A cheaper stand-in for several pretraining seeds: it measures how much the held-out loss moves under
    exactly the fine-tuning every compressed level receives. Runs resume like any training run.
    """
    losses, accuracies = [], []
    for seed in seeds:
        result = train(MelHuBERT.from_pretrained(base_dir), data["pretrain-train"], data["pretrain-valid"], finetune,
                       ws.run_dir(f"baseline-finetune-seed{seed}"), seed=seed)
        metrics = evaluate_ssl(MelHuBERT.from_pretrained(result.model_dir), data["pretrain-valid"])
        losses.append(metrics.loss)
        accuracies.append(metrics.accuracy)
    return SeedBand(list(seeds), losses, accuracies)


def smallest_within(levels: pd.DataFrame, limit: float, size: str = "nonzero_params",
                    loss: str = "loss_after") -> pd.DataFrame:
    """Per run, the smallest level (by `size`) whose `loss` is at most `limit`; runs with none are left out."""
    ok = levels[levels[loss] <= limit]
    return ok.loc[ok.groupby("run")[size].idxmin()].sort_values(size)


def trained_levels(levels: pd.DataFrame) -> pd.DataFrame:
    """The rows of a compression table whose SSL loss compares with the baseline's: level 0 and every level that
    trained (first-N truncations are kept as made: their cluster head never learned to read their last layer)."""
    return levels[(levels.level == 0) | (levels.finetune_steps > 0)]


def resolved_extreme(kept: pd.DataFrame, first: bool) -> str | None:
    """For one source's shares of the gain kept (`retained_intervals` rows indexed by task): the task whose 95 %
    interval lies wholly below every other task's (`first`: erodes first) or wholly above (erodes last); None
    when no task's interval is clear of the others'."""
    for task in kept.index:
        others = kept.drop(task)
        if (first and kept.loc[task, "kept_hi"] < others.kept_lo.min()) or (
                not first and kept.loc[task, "kept_lo"] > others.kept_hi.max()):
            return task
    return None


def keeps_keywords_loses_speakers_and_phonemes(kept: pd.DataFrame) -> bool:
    """The published pattern for a distilled model, resolved by intervals: the interval of the share of the gain kept
    on KS lies above those on SID and PR (`kept`: one source's `retained_intervals` rows indexed by task)."""
    return bool(kept.loc["KS", "kept_lo"] > max(kept.loc["SID", "kept_hi"], kept.loc["PR", "kept_hi"]))


VERDICTS = {1: "wins", -1: "loses", 0: "ties"}  # by the sign of the interval of a difference (Interval.sign)
COMPARED = {1: "worse", -1: "better", 0: "indistinguishable"}  # a source's error minus a reference's, by its sign


def compare_errors(ws: Workspace, source: str, reference: str, tasks: Sequence[str]) -> pd.DataFrame:
    """Per task (its headline metric): `source`'s test error minus `reference`'s (`value`, `low`, `high`: paired 95 %
    interval over test utterances and probe seeds) and whether `source` is "better", "worse" or "indistinguishable"
    (the interval spans zero)."""
    table = utterance_table(ws)
    rows = []
    for task in tasks:
        diff = error_difference(ws, source, reference, task, table=table)
        rows.append({"task": task, "metric": TASKS[task].metric, "value": diff.value, "low": diff.low,
                     "high": diff.high, "verdict": COMPARED[diff.sign]})
    return pd.DataFrame(rows)


def resolution(ws: Workspace, sources: Sequence[str], tasks: Sequence[str], floor: str = "log-Mel",
               reference: str = "baseline") -> pd.DataFrame:
    """Per task and source: the half-width of the paired 95 % interval of `source`'s error minus `reference`'s
    (`half_width`), the reference's gain over `floor` (`gain`: the floor's error minus the reference's) and their
    ratio; a comparison resolves to a quarter of the gain where `ratio` <= 0.25 (the default study's aim)."""
    table = utterance_table(ws)
    rows = []
    for task in tasks:
        gain = error_difference(ws, floor, reference, task, table=table).value
        for source in sources:
            diff = error_difference(ws, source, reference, task, table=table)
            rows.append({"task": task, "source": source, "half_width": diff.half_width, "gain": gain,
                         "ratio": diff.half_width / gain if gain > 0 else float("nan")})
    return pd.DataFrame(rows)


def comparison_sentence(name: str, reference: str, compared: pd.DataFrame) -> str:
    """One sentence from `compare_errors`: on which tasks `name` is better, worse or indistinguishable."""
    parts = []
    for verdict in ("better", "worse", "indistinguishable"):
        rows = compared[compared.verdict == verdict]
        if len(rows):
            tasks = ", ".join(f"{r.task} ({100 * r.value:+.1f} points, {100 * r.low:+.1f} to {100 * r.high:+.1f})"
                              for r in rows.itertuples())
            parts.append(f"{verdict} {'from' if verdict == 'indistinguishable' else 'than'} {reference} on {tasks}")
    return f"{name} is " + "; ".join(parts) + " (test error difference, paired 95 % interval)"


def head_score_verdicts(ws: Workspace, source_of: dict[tuple[str, int], str], targets: Sequence[str],
                        budgets: Sequence[int], rivals: Sequence[str], tasks: Sequence[str]) -> pd.DataFrame:
    """Q3: task-aware head scores against task-agnostic ones at equal head budgets. `source_of[(criterion, heads)]`
    names each pruned model's downstream source; the criterion "<task> loss" scores heads by that task's probe.
    One row per target task, budget, rival criterion and judged task: the rival's test error minus the task-aware
    model's (`value`, `low`, `high`: > 0 means the task-aware score leaves less error; paired 95 % interval over test
    utterances and probe seeds) and the verdict "wins", "loses" or "ties" (the interval contains zero)."""
    table = utterance_table(ws)
    rows = []
    for target in targets:
        for heads in budgets:
            for rival in rivals:
                for task in tasks:
                    gain = error_difference(ws, source_of[rival, heads], source_of[f"{target} loss", heads], task,
                                            table=table)
                    rows.append({"target": target, "heads": heads, "rival": rival, "task": task,
                                 "value": gain.value, "low": gain.low, "high": gain.high,
                                 "verdict": VERDICTS[gain.sign]})
    return pd.DataFrame(rows)


def head_score_answer(verdicts: pd.DataFrame) -> str:
    """Q3's answer sentence from `head_score_verdicts`: how often, on its own task, the task-aware score wins, loses
    and ties against a task-agnostic score at the same budget."""
    own = verdicts[verdicts.task == verdicts.target].verdict
    counts = {v: int((own == v).sum()) for v in VERDICTS.values()}
    return (f"on its own task, task-aware pruning wins {counts['wins']}, loses {counts['loses']} and ties "
            f"{counts['ties']} of {len(own)} comparisons with a task-agnostic score at the same budget (95 % "
            "intervals over test utterances and probe seeds; ties: the interval spans zero)")


def surviving_heads(ws: Workspace, run: str) -> dict[int, set[tuple[int, int]]]:
    """For every level of head-pruning run `run` (from the compression table): the number of heads it keeps -> the
    (layer, original head index) of each head it keeps, read from the level's checkpoint."""
    levels = read_results(ws, RESULTS_FILE)
    levels = levels[levels.run == run].sort_values("level")
    if levels.empty:
        raise ValueError(f"no levels of run {run!r} in {ws.results / RESULTS_FILE}: run its compression notebook "
                         "(02_head_pruning) first at this scale, or name a head-pruning run that exists")
    survivors = {}
    for model_dir in levels.model_dir:
        ids = MelHuBERT.from_pretrained(ws.root / model_dir).config.original_heads()
        survivors[sum(len(layer) for layer in ids)] = {(i, h) for i, layer in enumerate(ids) for h in layer}
    return survivors


def survives_down_to(survivors: dict[int, set[tuple[int, int]]], heads: Sequence[tuple[int, int]]) -> list[int]:
    """For each (layer, original head index): the fewest heads kept at a level that still keeps it."""
    return [min(n for n, kept in survivors.items() if head in kept) for head in heads]
