"""One interface for every compression method: a checkpoint and a list of levels in, a checkpoint per level out.

Each level applies the method's step (to the previous level's fine-tuned model, or to the teacher for
one-shot methods), measures the held-out SSL loss, fine-tunes on masked prediction with the same
targets, measures again, and records size and speed. Levels live in `runs/<run>/level-NN/`; a level
counts as done once its `level.json` exists, so an interrupted run continues from its last completed
level (and inside a level, training resumes from its checkpoint). A level's record carries its provenance
(method, setting, the level it started from, the fine-tuning schedule, the data and the code of the method);
a stored level asked for with other provenance is refused, naming what differs. Rows go to
`results/compression.csv`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..data.atomic import write_json_atomic
from ..data.provenance import code_version, differing_parts, fingerprint, plain
from ..data.results import append_rows
from ..data.workspace import Workspace
from ..efficiency import EFFICIENCY_CACHE, measure
from ..model import MelHuBERT
from ..scales import PretrainScale
from ..training.pretrain import Objective, Plateau, SSLData, SSLMetrics, evaluate_ssl, train

RESULTS_FILE = "compression.csv"
Step = Callable[[MelHuBERT, float], MelHuBERT]


@dataclass(frozen=True)
class LevelPlan:
    """A run's levels: the setting of each (in order) and the step that compresses a model to a setting."""

    settings: list[float]
    step: Step


@dataclass(frozen=True)
class Stage:
    """Consecutive levels of a run made one way: their plan and how each level trains and where it starts.

    A single method is one stage; a combined recipe chains several, each starting from the last level of the one
    before. `iterative`: each level starts from the previous level (else from the stage's starting model);
    `trained_levels`: only the stage's first that many levels train, the later ones are kept as their step made them.
    """

    name: str
    plan: LevelPlan
    finetune: PretrainScale | None
    iterative: bool = True
    prepare: Callable[[MelHuBERT], None] | None = None
    objective: Objective | None = None
    plateau: Plateau | None = None
    trained_levels: int | None = None


@dataclass
class LevelRecord:
    """One compression level: its setting, checkpoint, SSL metrics before/after fine-tuning, and cost."""

    method: str
    run: str
    level: int  # 0 is the uncompressed starting point
    setting: float  # the method's knob (heads kept, sparsity, kept fraction, FFN width, depth)
    model_dir: str  # relative to the workspace root (work/<scale>), so notebooks and the CLI agree
    loss_before: float
    accuracy_before: float
    loss_after: float
    accuracy_after: float
    params: int
    nonzero_params: int
    macs_per_second: float
    sparse_macs_per_second: float
    rtf: float
    finetune_steps: int
    stage: str = ""  # the recipe stage that made the level (a combined recipe; "" for a single method)


@dataclass
class CompressionRun:
    """All levels of one run, level 0 first."""

    records: list[LevelRecord]
    root: Path  # the workspace root the records' model_dir are relative to

    def table(self) -> pd.DataFrame:
        """One row per level."""
        return pd.DataFrame([asdict(r) for r in self.records])

    def model(self, level: int) -> MelHuBERT:
        """The checkpoint of `level`."""
        return MelHuBERT.from_pretrained(self.root / self.records[level].model_dir)


def compress_levels(ws: Workspace, method: str, run: str, start_dir: str | Path, settings: list[float], step: Step,
                    data: dict[str, SSLData], finetune: PretrainScale | None, iterative: bool = True,
                    prepare: Callable[[MelHuBERT], None] | None = None, threads: int = 1,
                    objective: Objective | None = None, results_file: str = RESULTS_FILE,
                    plateau: Plateau | None = None, trained_levels: int | None = None,
                    provenance: dict | None = None) -> CompressionRun:
    """Compress the checkpoint in `start_dir` to every setting in turn, fine-tuning after each step (one stage).

    `finetune` None keeps each level as the step made it (the first-N-layers truncation: no training).
    `iterative`: each level starts from the previous level's fine-tuned model (pruning schedules);
    otherwise from the starting model (one-shot methods such as a given SVD rank). `prepare` runs on
    each model before fine-tuning (e.g. gradient masks that keep pruned weights at zero); `objective`
    replaces masked prediction during fine-tuning (distillation); `plateau` ends each level's fine-tuning once the
    held-out loss stopped falling (the authors' plateau gate; `finetune.steps` is then the most a level may take).
    `trained_levels`: only the first that many levels train; the later ones are kept as their step made them (an
    anytime model's exits: trained once, then cut at each exit).
    Rows go to `results/<results_file>`
    (side experiments keep their own file, out of the study's compression table). `provenance`: what else made the
    levels (e.g. a fingerprint of precomputed scores the step uses), recorded and checked with each level.
    """
    stage = Stage("", LevelPlan(settings, step), finetune, iterative, prepare, objective, plateau, trained_levels)
    return compress_stages(ws, method, run, start_dir, [stage], data, threads, results_file, provenance)


def compress_stages(ws: Workspace, method: str, run: str, start_dir: str | Path, stages: Sequence[Stage],
                    data: dict[str, SSLData], threads: int = 1, results_file: str = RESULTS_FILE,
                    provenance: dict | None = None) -> CompressionRun:
    """Run the stages one after the other as one run: levels numbered on from stage to stage, each stage starting
    from the last level of the one before (the first from `start_dir`). See `compress_levels` for one stage."""
    valid = data["pretrain-valid"]
    teacher = MelHuBERT.from_pretrained(start_dir)
    hooks = {_module_of(f) for stage in stages for f in (stage.plan.step, stage.prepare, stage.objective)
             if f is not None}
    common = {"method": method, "start": teacher.content_hash(), "code": code_version(__name__, *sorted(hooks)),
              "data": {part: d.content_hash() for part, d in sorted(data.items())}, **(provenance or {})}
    if len(stages) == 1:
        common["iterative"] = stages[0].iterative
    else:
        common["stages"] = [stage.name for stage in stages]

    def measure_start() -> LevelRecord:  # level 0: the starting model, before = after
        metrics = evaluate_ssl(teacher, valid)
        return _measure(ws, method, run, 0, 0.0, Path(start_dir), teacher, metrics, metrics, 0, threads)

    provenance = {**common, "level": 0}
    records = [_record(ws.level_dir(run, 0), measure_start, provenance)]
    model, level = teacher, 0
    for stage in stages:
        stage_start, start_origin = model, "start" if level == 0 else fingerprint(provenance)
        for k, setting in enumerate(tqdm(stage.plan.settings, desc=f"{run} {stage.name or 'levels'}", leave=False), 1):
            level += 1
            origin = model if stage.iterative else stage_start
            schedule = stage.finetune if stage.trained_levels is None or k <= stage.trained_levels else None
            # an iterative level starts from the previous one, so it inherits that level's provenance
            provenance = {**common, "level": level, "setting": float(setting), "finetune": schedule,
                          "plateau": stage.plateau, **({"stage": stage.name} if stage.name else {}),
                          "origin": fingerprint(provenance) if stage.iterative else start_origin}
            records.append(_record(ws.level_dir(run, level), lambda o=origin, lv=level, st=setting, pv=provenance,
                                   sc=schedule, sg=stage: dataclasses.replace(
                                       _run_level(ws, method, run, lv, st, sg.plan.step(o, st), data, sc, sg.prepare,
                                                  threads, sg.objective, sg.plateau, pv), stage=sg.name), provenance))
            model = MelHuBERT.from_pretrained(ws.root / records[-1].model_dir)
    out = CompressionRun(records, ws.root)
    append_rows(ws.results / results_file, out.table(), ["run", "level"])
    return out


def _run_level(ws: Workspace, method: str, run: str, level: int, setting: float, compressed: MelHuBERT,
               data: dict[str, SSLData], finetune: PretrainScale | None, prepare: Callable[[MelHuBERT], None] | None,
               threads: int, objective: Objective | None, plateau: Plateau | None, provenance: dict) -> LevelRecord:
    if finetune is None:  # kept as made: stored and measured without training
        model_dir = compressed.save_pretrained(ws.level_dir(run, level) / "model")
        metrics = evaluate_ssl(compressed, data["pretrain-valid"])
        return _measure(ws, method, run, level, setting, model_dir, compressed, metrics, metrics, 0, threads)
    result = train(compressed, data["pretrain-train"], data["pretrain-valid"], finetune,
                   ws.level_dir(run, level), seed=ws.seed, prepare=prepare, objective=objective,
                   plateau=plateau, provenance={"level": fingerprint(provenance)})
    tuned = MelHuBERT.from_pretrained(result.model_dir)
    return _measure(ws, method, run, level, setting, result.model_dir, tuned, result.initial, result.final,
                    result.steps, threads)


def _record(level_dir: Path, build: Callable[[], LevelRecord], provenance: dict) -> LevelRecord:
    """The level's stored record, or build and store it (written last: it marks the level done)."""
    path = level_dir / "level.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        recorded = stored.pop("provenance", None)
        changed = differing_parts(recorded or {}, provenance)
        if changed:
            raise ValueError(f"{path}: the level was made from other {', '.join(changed)} than asked for now "
                             f"({'none recorded' if recorded is None else 'recorded beside it'}); use a new run name "
                             "for a new recipe, or delete the run folder (or `make clean-work`) to make it again")
        return LevelRecord(**stored)
    record = build()
    write_json_atomic(path, {**asdict(record), "provenance": plain(provenance)})
    return record


def _module_of(hook: object) -> str:
    """The module that defines a step, hook or objective (partials unwrapped; objects by their class)."""
    hook = getattr(hook, "func", hook)
    return hook.__module__ if isinstance(hook, types.FunctionType | types.MethodType) else type(hook).__module__


def _measure(ws: Workspace, method: str, run: str, level: int, setting: float, model_dir: Path, model: MelHuBERT,
             before: SSLMetrics, after: SSLMetrics, steps: int, threads: int) -> LevelRecord:
    cost = measure(model, threads=threads, cache_dir=ws.cache / EFFICIENCY_CACHE)
    rel = os.path.relpath(Path(model_dir).resolve(), ws.root.resolve())
    return LevelRecord(method, run, level, float(setting), rel, before.loss, before.accuracy, after.loss,
                       after.accuracy, cost.params, cost.nonzero_params, cost.macs_per_second,
                       cost.sparse_macs_per_second, cost.rtf, steps)
