"""The common compression driver: levels, fine-tuning, records, resumption; each method's step at smoke scale."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from melhubert_lib.compression import distillation, head_pruning, low_rank, weight_pruning
from melhubert_lib.compression.levels import RESULTS_FILE, compress_levels
from melhubert_lib.model import MelHuBERT
from melhubert_lib.training import baseline
from melhubert_lib.training.pretrain import evaluate_ssl


@pytest.fixture(scope="module")
def setup(smoke_ws):
    result = baseline.pretrain_baseline(smoke_ws, name="cmp-base")
    return smoke_ws, result.model_dir, baseline.ssl_data(smoke_ws, result.targets[-1])


def test_head_pruning_levels_fine_tune_and_shrink(setup):
    ws, start, data = setup
    comp = ws.scale.compression
    run = compress_levels(ws, "head pruning", "heads-l1", start, list(comp.heads_kept), head_pruning.pruning_step(),
                          data, comp.finetune)
    table = run.table()
    assert table.level.tolist() == [0, 1, 2]
    assert [sum(run.model(i).config.heads) for i in range(3)] == [4, 3, 2]
    assert table.params.is_monotonic_decreasing and table.macs_per_second.is_monotonic_decreasing
    assert (table.loss_after.iloc[1:] != table.loss_before.iloc[1:]).all()  # fine-tuning changed the model
    valid = data["pretrain-valid"]
    pruned = head_pruning.pruning_step()(run.model(1), comp.heads_kept[1])  # level 2 before its fine-tuning
    assert table.loss_before.iloc[2] == pytest.approx(evaluate_ssl(pruned, valid).loss, rel=1e-6)
    assert table.loss_after.iloc[2] == pytest.approx(evaluate_ssl(run.model(2), valid).loss, rel=1e-6)
    on_disk = pd.read_csv(ws.results / RESULTS_FILE)
    assert set(on_disk[on_disk.run == "heads-l1"].level) == {0, 1, 2}


def test_an_interrupted_run_continues_from_its_last_completed_level(setup):
    ws, start, data = setup
    comp = ws.scale.compression
    first = compress_levels(ws, "weight pruning", "wp", start, [0.3], weight_pruning.pruning_step, data,
                            comp.finetune, prepare=weight_pruning.keep_zeros)
    level_json = ws.run_dir("wp") / "level-01" / "level.json"
    stamp = level_json.stat().st_mtime_ns
    second = compress_levels(ws, "weight pruning", "wp", start, [0.3, 0.6], weight_pruning.pruning_step, data,
                             comp.finetune, prepare=weight_pruning.keep_zeros)
    assert level_json.stat().st_mtime_ns == stamp  # level 1 was not redone
    assert second.records[1] == first.records[1]
    assert weight_pruning.sparsity(second.model(2)) == pytest.approx(0.6, abs=1e-3)  # zeros survived fine-tuning
    assert second.table().nonzero_params.iloc[2] < second.table().params.iloc[2]
    with pytest.raises(ValueError, match="setting"):
        compress_levels(ws, "weight pruning", "wp", start, [0.5], weight_pruning.pruning_step, data, comp.finetune)
    with pytest.raises(ValueError, match="other finetune than"):  # a recipe change is never served a stale level
        compress_levels(ws, "weight pruning", "wp", start, [0.3], weight_pruning.pruning_step, data,
                        dataclasses.replace(comp.finetune, lr=comp.finetune.lr * 2), prepare=weight_pruning.keep_zeros)


def test_one_shot_low_rank_levels_start_from_the_teacher(setup):
    ws, start, data = setup
    comp = ws.scale.compression
    run = compress_levels(ws, "low-rank", "svd", start, list(comp.svd_keep), low_rank.svd_step, data, comp.finetune,
                          iterative=False)
    teacher = MelHuBERT.from_pretrained(start)
    expected = [low_rank.uniform_ranks(teacher, keep) for keep in comp.svd_keep]
    assert [run.model(i + 1).config.ranks for i in range(len(expected))] == expected


def test_head_pruning_step_refuses_impossible_levels(setup):
    ws, start, _ = setup
    model = MelHuBERT.from_pretrained(start)
    with pytest.raises(ValueError, match="at least one head per layer"):
        head_pruning.pruning_step()(model, 1)
    with pytest.raises(ValueError, match="needs `data`"):
        head_pruning.pruning_step("importance")


def test_distillation_levels_train_students_on_the_teachers_distribution(setup):
    ws, start, data = setup
    comp = ws.scale.compression
    teacher = MelHuBERT.from_pretrained(start)
    ladder = distillation.distillation_ladder(teacher, comp.students)
    run = compress_levels(ws, "distillation", "distill", start, ladder.settings, ladder.step, data, comp.distill,
                          iterative=False, objective=distillation.ClusterKL(MelHuBERT.from_pretrained(start)))
    shapes = [(run.model(i + 1).config.depth, run.model(i + 1).config.ffn_dims[0]) for i in range(len(comp.students))]
    assert shapes == [(s.depth, s.ffn_dim or teacher.config.ffn_dims[0]) for s in comp.students]
    params = run.table().params.tolist()
    assert params == sorted(params, reverse=True) and len(set(params)) == len(params)  # strictly smaller students
    metrics = pd.read_csv(ws.run_dir("distill") / "level-01" / "metrics.csv")
    assert (metrics[(metrics.split == "train") & (metrics.metric == "loss")].value >= 0).all()  # a KL, not a CE


def test_a_stage_starts_from_the_last_level_of_the_stage_before_and_a_one_shot_stage_from_there(setup):
    from melhubert_lib.compression import ffn_shrink
    from melhubert_lib.compression.levels import LevelPlan, Stage, compress_stages

    ws, start, data = setup
    comp = ws.scale.compression
    stages = [Stage("shrink", LevelPlan([48.0], ffn_shrink.ffn_step), comp.finetune),
              Stage("one-shot", LevelPlan([40.0, 32.0], ffn_shrink.ffn_step), None, iterative=False)]
    run = compress_stages(ws, "low-rank", "two-stages", start, stages, data)
    table = run.table()
    assert table.stage.tolist() == ["", "shrink", "one-shot", "one-shot"]
    assert table.finetune_steps.tolist()[1:] == [comp.finetune.steps, 0, 0]
    trained = run.model(1)
    for level, width in ((2, 40.0), (3, 32.0)):  # both made from level 1 (fine-tuned), neither from level 2
        expected = ffn_shrink.ffn_step(trained, width).state_dict()
        for key, value in run.model(level).state_dict().items():
            assert (value == expected[key]).all(), (level, key)
