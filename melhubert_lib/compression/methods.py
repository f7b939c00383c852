"""The compression methods as a registry: each method is one `Method` that owns its recipe and its run name.

A method's recipe says how its levels are made (the settings, and the step that compresses a model to a setting),
whether each level starts from the previous one (a pruning schedule) or from the teacher (one-shot), the hook that
keeps pruned weights at zero during fine-tuning, the schedule and objective that train each level, and the
plateau gate. `get_method(name).run(ws)` runs a method on the workspace's baseline, for the notebooks and for
`melhubert compress <name>` alike. Adding a method is one `Method` and one `register(...)` line here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.workspace import Workspace
from ..model import MelHuBERT
from ..scales import CombinedRecipe, CompressionScale, PretrainScale
from ..training import baseline
from ..training.pretrain import Objective, Plateau, SSLData
from . import anytime, ffn_shrink, head_pruning, layer_pruning, low_rank, weight_pruning
from .distillation import distillation_ladder, make_objective, truncation_step
from .levels import RESULTS_FILE, CompressionRun, LevelPlan, Stage, compress_stages


@dataclass(frozen=True)
class MethodInputs:
    """What a recipe draws on: the teacher (the baseline), where it is stored, its SSL data and the scale's levels."""

    teacher: MelHuBERT
    teacher_dir: Path
    data: dict[str, SSLData]
    scale: CompressionScale


@dataclass(frozen=True)
class Method:
    """One compression method: its run name, the family it is drawn with, and its whole recipe."""

    name: str  # the run name (runs/<name>/), the registry key and the CLI argument
    family: str  # the method family: its label in results tables and its colour in figures
    label: str  # this run in a legend
    plan: Callable[[MethodInputs], LevelPlan] | None = None  # the levels of a one-stage method
    iterative: bool = True  # each level starts from the previous level's fine-tuned model (else from the teacher)
    prepare: Callable[[MelHuBERT], None] | None = None  # run on each level's model before it trains
    # what trains each level (None: no training, the level is kept as the step made it)
    schedule: Callable[[CompressionScale], PretrainScale | None] = lambda scale: scale.finetune
    objective: Callable[[MethodInputs], Objective] | None = None  # None: masked prediction on the baseline's targets
    plateau: Plateau | None = None  # end a level's training once the held-out loss stopped falling
    objective_label: str = "masked-prediction loss (nats)"  # the training loss, as an axis label
    trained_levels: int | None = None  # only the first that many levels train (None: all)
    linestyle: str = "-"  # runs of one family differ in line style
    # a recipe of several stages (a combined recipe), instead of one stage made from `plan` and the fields above
    stages: Callable[[MethodInputs], list[Stage]] | None = None
    # refuses, before any data or training work, a starting model the recipe cannot take (e.g. head pruning of FLASH)
    check: Callable[[MelHuBERT, CompressionScale], None] | None = None

    def __post_init__(self) -> None:
        if (self.plan is None) == (self.stages is None):
            raise ValueError(f"method {self.name!r}: give either a plan (one stage) or stages, not both or neither")

    def run(self, ws: Workspace, threads: int = 1, base: baseline.BaselineResult | None = None,
            start_dir: str | Path | None = None, tag: str | None = None) -> CompressionRun:
        """Compress the workspace's baseline (`base`, else loaded or resumed) with this recipe (stored levels are
        reused; a run resumes).

        `start_dir`: compress that checkpoint instead (an imported one). Its levels train on its own cluster head's
        labels (`baseline.head_targets`) and inputs normalised as it was trained; the run is
        `runs/<method>@<folder name>/` and its rows go to `results/compression-checkpoints.csv`, out of the study.
        `tag`: compress `base` (another architecture pretrained on the workspace's targets, e.g. FLASH) as run
        `runs/<method>@<tag>/`, its rows in `results/compression-checkpoints.csv` too.
        """
        if ws.scale.compression is None:
            raise ValueError(f"scale {ws.scale.name!r} has no compression settings: choose a scale that has")
        if tag is not None and start_dir is not None:
            raise ValueError("give `tag` (another architecture pretrained here) or `start_dir` (an imported "
                             "checkpoint), not both: each names the run its own way")
        if tag is not None and base is None:
            raise ValueError("`tag` names a run of another pretrained model: give that model as `base` too")
        if start_dir is None:
            base = base or baseline.pretrain_baseline(ws)  # finished in 01_baseline: loads, or resumes
            model_dir, run, results_file = base.model_dir, self.name, RESULTS_FILE
            if tag is not None:
                run, results_file = f"{self.name}@{tag}", CHECKPOINT_RESULTS_FILE
        else:
            model_dir = Path(start_dir)
            run, results_file = f"{self.name}@{model_dir.name}", CHECKPOINT_RESULTS_FILE
        teacher = MelHuBERT.from_pretrained(model_dir)
        if self.check is not None:
            self.check(teacher, ws.scale.compression)
        if start_dir is None:
            data = baseline.ssl_data(ws, base.targets[-1])
        else:
            data = baseline.ssl_data(ws, baseline.head_targets(ws, teacher), teacher.feature_stats,
                                     teacher.config.frame_ms)
        inputs = MethodInputs(teacher, model_dir, data, ws.scale.compression)
        return compress_stages(ws, self.family, run, model_dir, self.recipe(inputs), data, threads, results_file)

    def recipe(self, inputs: MethodInputs) -> list[Stage]:
        """The method's stages for these inputs (checked before any work: a stage that cannot take the model
        raises here)."""
        if self.stages is not None:
            return self.stages(inputs)
        return [Stage("", self.plan(inputs), self.schedule(inputs.scale), self.iterative, self.prepare,
                      self.objective(inputs) if self.objective else None, self.plateau, self.trained_levels)]


CHECKPOINT_RESULTS_FILE = "compression-checkpoints.csv"  # runs that start from a given checkpoint, not the baseline
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to the registry under its run name (names are unique)."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is registered already")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method `name`, or a ValueError listing the registered names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown compression method {name!r}: choose one of {', '.join(METHODS)}") from None


def linestyle(run: str) -> str:
    """The line style of a run in figures (solid for a run that is no registered method)."""
    return METHODS[run].linestyle if run in METHODS else "-"


def _per_layer_heads(inputs: MethodInputs) -> list[float]:
    """Heads left after each per-layer level (one head fewer in every layer each time, down to one per layer)."""
    heads = inputs.teacher.config.heads
    return [float(sum(max(1, h - k) for h in heads)) for k in range(1, max(heads))]


def _head_method(score: str, per_layer: bool) -> Method:
    def plan(inputs: MethodInputs) -> LevelPlan:
        settings = _per_layer_heads(inputs) if per_layer else list(inputs.scale.heads_kept)
        return LevelPlan(settings, head_pruning.pruning_step(score, per_layer, inputs.data["pretrain-train"]))

    schedule = "per layer" if per_layer else "global"
    return Method(f"heads-{score}{'-per-layer' if per_layer else ''}", "head pruning",
                  f"head pruning ({score}, {schedule})", plan, linestyle="-" if score == "l1" else "--",
                  check=_check_heads)


def _gated(scale: CompressionScale) -> PretrainScale:
    """The plateau-gated schedule: up to 4x the fine-tuning updates per level, ended by the gate."""
    return dataclasses.replace(scale.finetune, steps=4 * scale.finetune.steps)


def _distillation_method(loss: str, init: str) -> Method:
    def plan(inputs: MethodInputs) -> LevelPlan:
        return distillation_ladder(inputs.teacher, inputs.scale.students, init)

    def objective(inputs: MethodInputs) -> Objective:
        return make_objective(loss, MelHuBERT.from_pretrained(inputs.teacher_dir))  # a frozen copy of the teacher

    prefix = "distill" if loss == "kl" else f"distill-{loss}"
    return Method(f"{prefix}-{init}", "distillation", f"student, init {init}", plan, iterative=False,
                  check=_check_students,
                  schedule=lambda scale: scale.distill, objective=objective,
                  objective_label="KL(teacher || student) per frame (nats)" if loss == "kl"
                  else "L1 - log sigmoid(cos) per frame, summed over heads",
                  linestyle="-" if init == "teacher" else "--")


def _falling_below(width: int, widths: tuple[int, ...]) -> bool:
    """Whether `widths` fall step by step from below `width` and stay positive (an FFN shrink's schedule)."""
    schedule = [width, *widths]
    return all(b < a for a, b in zip(schedule, schedule[1:], strict=False)) and min(schedule) >= 1


def _check_ffn_widths(teacher: MelHuBERT, scale: CompressionScale) -> None:
    """The FFN shrink only removes units: one width in every layer, and falling scheduled widths below it."""
    widths = set(teacher.config.ffn_dims)
    if len(widths) != 1:
        raise ValueError(f"the FFN shrink expects one width in every layer, got {teacher.config.ffn_dims}")
    width = widths.pop()
    if not _falling_below(width, scale.ffn_widths):
        raise ValueError(f"ffn_widths={scale.ffn_widths}: the FFN shrink only removes units, and this model's width "
                         f"is {width}; choose falling widths below it (CompressionScale.ffn_widths)")


def _check_students(teacher: MelHuBERT, scale: CompressionScale) -> None:
    """Every student no deeper than the teacher, narrower where it narrows, and no two of the same shape."""
    width = max(teacher.config.ffn_dims)
    shapes = [(s.depth, s.ffn_dim or width) for s in scale.students]
    bad = [s for s in scale.students if not 1 <= s.depth <= teacher.config.depth
           or (s.ffn_dim is not None and not 1 <= s.ffn_dim < width)]
    if bad or len(set(shapes)) < len(shapes):
        raise ValueError(f"students {list(scale.students)}: each needs 1..{teacher.config.depth} layers, an FFN "
                         f"narrower than this model's {width} where it narrows, and a shape of its own "
                         "(CompressionScale.students)")


def _check_heads(teacher: MelHuBERT, scale: CompressionScale) -> None:
    """Head pruning needs attention heads (a FLASH model has none)."""
    teacher.require_heads("head pruning")


def _check_combined(teacher: MelHuBERT, scale: CompressionScale) -> CombinedRecipe:
    """The scale's combined recipe, checked against the student it makes of `teacher`."""
    recipe = scale.combined
    if recipe is None:
        raise ValueError("this scale has no combined recipe (CompressionScale.combined): choose a scale that has")
    teacher.require_heads("the combined recipe's head-pruning stage")
    depth = recipe.student.depth
    if not 1 <= depth <= teacher.config.depth:
        raise ValueError(f"combined student depth {depth} outside [1, {teacher.config.depth}] (the teacher's depth)")
    heads = sum(teacher.config.heads[:depth])
    per_layer = [heads - k * depth for k in range(1, max(teacher.config.heads[:depth]))]
    if not recipe.heads_kept or list(recipe.heads_kept) != per_layer[: len(recipe.heads_kept)]:
        raise ValueError(f"combined heads_kept={recipe.heads_kept}: the {depth}-layer student has {heads} heads and "
                         f"loses one per layer per level, so choose the first levels of {per_layer}")
    width = recipe.student.ffn_dim or teacher.config.ffn_dims[0]
    if not recipe.ffn_widths or not _falling_below(width, recipe.ffn_widths):
        raise ValueError(f"combined ffn_widths={recipe.ffn_widths}: choose falling widths below the student's {width}")
    return recipe


def _combined_stages(inputs: MethodInputs) -> list[Stage]:
    """Distillation, then per-layer head pruning (L1), then the FFN shrink (the paper's best curve), each stage from
    the last level of the one before."""
    recipe = _check_combined(inputs.teacher, inputs.scale)
    student = recipe.student
    kl = make_objective("kl", MelHuBERT.from_pretrained(inputs.teacher_dir))  # a frozen copy of the teacher
    return [
        Stage("distillation", distillation_ladder(inputs.teacher, [student], "teacher"), inputs.scale.distill,
              iterative=False, objective=kl),
        Stage("head pruning", LevelPlan([float(h) for h in recipe.heads_kept], head_pruning.pruning_step(
            "l1", True, inputs.data["pretrain-train"])), inputs.scale.finetune),
        Stage("FFN shrink", LevelPlan([float(w) for w in recipe.ffn_widths], ffn_shrink.ffn_step),
              inputs.scale.finetune),
    ]


for _score in ("l1", "importance"):
    for _per_layer in (False, True):
        register(_head_method(_score, _per_layer))
register(Method("weights-l1", "weight pruning", "weight pruning (global L1)",
                lambda inputs: LevelPlan(list(inputs.scale.sparsities), weight_pruning.pruning_step),
                prepare=weight_pruning.keep_zeros))
register(Method("weights-l1-gated", "weight pruning", "weight pruning (global L1, plateau-gated)",
                lambda inputs: LevelPlan(list(inputs.scale.sparsities), weight_pruning.pruning_step),
                prepare=weight_pruning.keep_zeros, schedule=_gated, plateau=Plateau(), linestyle="--"))
register(Method("svd-uniform", "low-rank", "SVD, uniform budget",
                lambda inputs: LevelPlan(list(inputs.scale.svd_keep), low_rank.svd_step), iterative=False))
register(Method("svd-energy", "low-rank", "SVD, energy threshold",
                lambda inputs: LevelPlan(list(inputs.scale.svd_energy), low_rank.energy_step), iterative=False,
                linestyle="--"))
register(Method("ffn-shrink", "low-rank", "FFN-width shrink",
                lambda inputs: LevelPlan(list(inputs.scale.ffn_widths), ffn_shrink.ffn_step), linestyle=":",
                check=_check_ffn_widths))
register(Method("layers-ssl", "layer pruning", "layer pruning (SSL loss)",
                lambda inputs: LevelPlan([float(d) for d in range(inputs.teacher.config.depth - 1, 0, -1)],
                                         layer_pruning.pruning_step(inputs.data["pretrain-train"].head(
                                             len(inputs.data["pretrain-valid"].feats))))))
for _init in ("teacher", "random"):
    register(Method(f"anytime-{_init}", "anytime", f"anytime exits, init {_init}",
                    lambda inputs, init=_init: LevelPlan(
                        [float(d) for d in range(inputs.teacher.config.depth, 0, -1)], anytime.exits_step(init)),
                    schedule=lambda scale: scale.distill, trained_levels=1,
                    objective_label="masked-prediction loss, mean over the exits (nats)",
                    linestyle="-" if _init == "teacher" else "--"))
register(Method("combined", "combined", "distillation, then heads, then FFN shrink",
                stages=_combined_stages, check=_check_combined))
register(Method("first-n", "first-N layers", "first N layers, untrained further",
                lambda inputs: LevelPlan([float(d) for d in inputs.scale.student_depths], truncation_step),
                iterative=False, schedule=lambda scale: None))
for _loss in ("kl", "layers"):
    for _init in ("teacher", "random"):
        register(_distillation_method(_loss, _init))
