"""The method registry: each method's recipe, run through `compress` and the CLI stage."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from melhubert_lib.cli import main
from melhubert_lib.compression import weight_pruning
from melhubert_lib.compression.methods import METHODS, get_method
from melhubert_lib.model import MelHuBERT
from melhubert_lib.scales import StudentShape
from melhubert_lib.study.plotting import METHOD_COLOURS
from melhubert_lib.training import baseline


def test_every_registered_method_has_a_family_the_figures_draw():
    assert {method.family for method in METHODS.values()} <= METHOD_COLOURS.keys()
    assert {"heads-l1", "weights-l1", "svd-uniform", "svd-energy", "ffn-shrink", "distill-teacher", "first-n"} <= (
        METHODS.keys())
    with pytest.raises(ValueError, match="unknown compression method 'svd': choose one of heads-l1, "):
        get_method("svd")


def test_weight_pruning_keeps_its_zeros_through_every_levels_fine_tuning(smoke_ws):
    run = get_method("weights-l1").run(smoke_ws)
    sparsities = smoke_ws.scale.compression.sparsities
    table = run.table()
    assert (table.finetune_steps.iloc[1:] > 0).all()
    for level, target in enumerate(sparsities, 1):
        assert weight_pruning.sparsity(run.model(level)) == pytest.approx(target, abs=1e-3)


def test_first_n_levels_are_the_baselines_first_layers_untrained(smoke_ws):
    run = get_method("first-n").run(smoke_ws)
    table = run.table()
    depths = smoke_ws.scale.compression.student_depths
    assert table.setting.iloc[1:].tolist() == [float(d) for d in depths]
    assert (table.finetune_steps == 0).all() and (table.loss_before == table.loss_after).all()
    teacher = MelHuBERT.from_pretrained(baseline.pretrain_baseline(smoke_ws).model_dir).eval()
    x = torch.randn(1, 30, teacher.config.input_dim)
    for level, depth in enumerate(depths, 1):
        model = run.model(level).eval()
        assert model.config.depth == depth
        for a, b in zip(model(x).hidden_states, teacher(x, n_layers=depth).hidden_states, strict=True):
            torch.testing.assert_close(a, b)


def test_the_cli_refuses_an_unknown_method_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "heads-l2", "--scale", "smoke", "--work-dir", str(tmp_path / "work")])
    assert exit_info.value.code == 1
    assert "unknown compression method 'heads-l2': choose one of heads-l1" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_a_checkpoint_trained_elsewhere_is_compressed_on_its_own_cluster_heads_labels(smoke_ws, tmp_path):
    """An imported model has other clusters and input statistics than the workspace: its levels train on the labels
    its own head gives the unmasked frames, on inputs normalised its way; the study's table stays as it was."""
    import dataclasses

    import numpy as np

    from melhubert_lib.data.audio import load_audio
    from melhubert_lib.data.features import FeatureStats, model_input
    from melhubert_lib.data.workspace import split_utterances
    from melhubert_lib.model import preset
    from melhubert_lib.study.questions import read_results

    stats = baseline.feature_stats(smoke_ws)
    torch.manual_seed(3)
    foreign = MelHuBERT(dataclasses.replace(preset("smoke"), n_clusters=12),
                        feature_stats=FeatureStats(stats.mean + 0.5, stats.std * 1.5))
    start = foreign.save_pretrained(tmp_path / "imported")
    study_table = smoke_ws.results / "compression.csv"
    before = study_table.read_bytes() if study_table.is_file() else None
    run = get_method("heads-l1").run(smoke_ws, start_dir=start)
    table = run.table()
    assert table.run.unique().tolist() == ["heads-l1@imported"]
    assert (table.finetune_steps.iloc[1:] > 0).all()
    assert [run.model(level).config.n_clusters for level in (1, 2)] == [12, 12]
    assert sum(run.model(2).config.heads) == smoke_ws.scale.compression.heads_kept[-1]
    assert read_results(smoke_ws, "compression-checkpoints.csv").run.eq("heads-l1@imported").all()
    assert (study_table.read_bytes() if study_table.is_file() else None) == before  # the study's table is untouched
    targets = baseline.head_targets(smoke_ws, foreign)
    utt = split_utterances(smoke_ws, "pretrain-valid")[0]
    with torch.no_grad():
        logits = foreign.eval()(model_input(load_audio(utt.path), foreign.feature_stats)[None]).logits
    expected = logits[0].argmax(-1).numpy()
    np.testing.assert_array_equal(targets.labels["pretrain-valid"][0][:, 0], expected)


def test_layer_pruning_removes_the_layer_whose_absence_costs_the_least_loss(smoke_ws):
    from melhubert_lib.training.pretrain import evaluate_ssl

    base = baseline.pretrain_baseline(smoke_ws)
    teacher = MelHuBERT.from_pretrained(base.model_dir)
    data = baseline.ssl_data(smoke_ws, base.targets[-1])
    scoring = data["pretrain-train"].head(len(data["pretrain-valid"].feats))  # training data, not the held-out set
    assert scoring.feats.utt_ids == data["pretrain-train"].feats.utt_ids[: len(data["pretrain-valid"].feats)]
    without_last = evaluate_ssl(copy.deepcopy(teacher).truncate(teacher.config.depth - 1), scoring).loss
    without_first = evaluate_ssl(copy.deepcopy(teacher).drop_layers([0]), scoring).loss
    run = get_method("layers-ssl").run(smoke_ws, base=base)
    table = run.table()
    assert table.setting.iloc[1:].tolist() == [float(d) for d in range(teacher.config.depth - 1, 0, -1)]
    assert (table.finetune_steps.iloc[1:] > 0).all()
    kept = run.model(1).config.layer_ids
    assert kept == ([1] if without_first < without_last else [0])  # smoke: 2 layers, one level


def test_an_anytime_run_trains_once_and_cuts_that_model_at_every_exit(smoke_ws):
    run = get_method("anytime-teacher").run(smoke_ws)
    table = run.table()
    depth = MelHuBERT.from_pretrained(baseline.pretrain_baseline(smoke_ws).model_dir).config.depth
    assert table.setting.iloc[1:].tolist() == [float(d) for d in range(depth, 0, -1)]
    assert table.finetune_steps.iloc[1] > 0 and (table.finetune_steps.iloc[2:] == 0).all()
    whole = run.model(1).eval()
    assert whole.config.exits and len(whole.exit_heads) == depth - 1
    x = torch.randn(1, 30, whole.config.input_dim)
    for level in range(2, depth + 1):
        cut = run.model(level).eval()
        with torch.no_grad():
            torch.testing.assert_close(cut(x).logits, whole(x, n_layers=cut.config.depth).logits)


def test_the_combined_recipe_distils_then_prunes_heads_then_shrinks_the_ffn(smoke_ws):
    recipe = smoke_ws.scale.compression.combined
    run = get_method("combined").run(smoke_ws)
    table = run.table()
    n_heads, n_widths = len(recipe.heads_kept), len(recipe.ffn_widths)
    assert table.stage.tolist() == ["", "distillation"] + ["head pruning"] * n_heads + ["FFN shrink"] * n_widths
    assert (table.finetune_steps.iloc[1:] > 0).all()
    configs = [run.model(level).config for level in range(1, len(table))]
    assert all(c.depth == recipe.student.depth for c in configs)
    assert [sum(c.heads) for c in configs[1:]] == [*recipe.heads_kept, *[recipe.heads_kept[-1]] * n_widths]
    assert [c.ffn_dims[0] for c in configs[1 + n_heads:]] == list(recipe.ffn_widths)
    assert table.params.is_monotonic_decreasing


def test_the_combined_recipe_refuses_what_it_cannot_take_before_any_work(smoke_ws, tmp_path):
    import dataclasses

    from melhubert_lib.model import preset
    from melhubert_lib.scales import CombinedRecipe, StudentShape

    flash = MelHuBERT(preset("smoke-flash")).save_pretrained(tmp_path / "flash")
    with pytest.raises(ValueError, match="the combined recipe's head-pruning stage needs attention heads"):
        get_method("combined").run(smoke_ws, start_dir=flash)
    assert not smoke_ws.run_dir("combined@flash").exists()
    with pytest.raises(ValueError, match="head pruning needs attention heads; a flash model"):
        get_method("heads-l1").run(smoke_ws, start_dir=flash)
    comp = dataclasses.replace(smoke_ws.scale.compression,
                               combined=CombinedRecipe(StudentShape(1), heads_kept=(3,), ffn_widths=(32,)))
    ws = dataclasses.replace(smoke_ws, scale=dataclasses.replace(smoke_ws.scale, compression=comp))
    with pytest.raises(ValueError, match=r"heads_kept=\(3,\): the 1-layer student has 2 heads .* \[1\]"):
        get_method("combined").run(ws)


@pytest.mark.parametrize("scale_name", ["smoke", "default", "paper"])
def test_every_scales_combined_recipe_fits_the_student_it_makes_of_its_model(scale_name):
    from melhubert_lib.model import preset
    from melhubert_lib.scales import get_scale

    scale = get_scale(scale_name)
    with torch.device("meta"):  # shapes only: no memory for the paper model's weights
        teacher = MelHuBERT(preset(scale.model_preset))
    get_method("combined").check(teacher, scale.compression)  # raises where the settings do not fit


def test_width_schedules_that_do_not_fit_a_model_are_refused_with_the_reason():
    from melhubert_lib.model import preset
    from melhubert_lib.scales import get_scale

    # schedules written for the Transformer's FFN of 1024: one shrinks through widths above FLASH's 512, the other
    # distils a student whose FFN of 768 would widen FLASH's units
    comp = replace(get_scale("default").compression, ffn_widths=(768, 512, 256), students=(StudentShape(1, 768),))
    with torch.device("meta"):
        flash = MelHuBERT(preset("default-flash"))  # gate/value width 512
        transformer = MelHuBERT(preset("default"))  # FFN width 1024
    with pytest.raises(ValueError, match=r"this model.s width is 512; choose falling widths below it"):
        get_method("ffn-shrink").check(flash, comp)
    with pytest.raises(ValueError, match=r"an FFN narrower than this model's 512 where it narrows"):
        get_method("distill-teacher").check(flash, comp)
    get_method("ffn-shrink").check(transformer, comp)
    get_method("distill-teacher").check(transformer, comp)


def test_a_tag_and_a_start_folder_together_are_refused(smoke_ws, tmp_path):
    with pytest.raises(ValueError, match="give `tag` .* or `start_dir` .*, not both"):
        get_method("heads-l1").run(smoke_ws, start_dir=tmp_path / "imported", tag="flash")


def test_another_architecture_trains_on_exactly_the_baselines_targets(smoke_ws):
    base = baseline.pretrain_baseline(smoke_ws)
    flash = baseline.pretrain_baseline(smoke_ws, name="flash", model_preset="smoke-flash", targets=base.targets[-1])
    assert flash.targets == [base.targets[-1]] and len(flash.runs) == 1
    assert MelHuBERT.from_pretrained(flash.model_dir).config.block == "flash"
    with pytest.raises(ValueError, match="`tag` names a run of another pretrained model: give that model as `base`"):
        get_method("layers-ssl").run(smoke_ws, tag="flash")
