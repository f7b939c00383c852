"""Distillation students, the KL objective and the first-N-layers baseline."""

from __future__ import annotations

import pytest
import torch

from melhubert_lib.compression.distillation import ClusterKL, distillation_ladder, first_layers, student_from_teacher
from melhubert_lib.compression.ffn_shrink import ffn_unit_scores
from melhubert_lib.data.batching import Batch
from melhubert_lib.model import MelHuBERT, preset
from melhubert_lib.scales import StudentShape


def _teacher() -> MelHuBERT:
    torch.manual_seed(0)
    return MelHuBERT(preset("smoke")).eval()


def test_first_layers_reproduce_the_teachers_hidden_states():
    teacher = _teacher()
    student = first_layers(teacher, 1)
    x, lengths = torch.randn(2, 30, 80), torch.tensor([30, 22])
    expected = teacher(x, lengths).hidden_states[:2]
    for a, b in zip(student(x, lengths).hidden_states, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert student.config.depth == 1 and student.num_parameters() < teacher.num_parameters()


def test_kl_objective_is_zero_for_the_teacher_itself_and_positive_otherwise():
    teacher = _teacher()
    batch = Batch(torch.randn(2, 30, 80), torch.zeros(2, 30, dtype=torch.long), torch.tensor([30, 20]))
    objective = ClusterKL(teacher)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    assert objective.frames(batch, mask) == 50
    same = objective(teacher, batch, mask, torch.device("cpu"))
    assert float(same.summed) == pytest.approx(0.0, abs=1e-4) and same.correct == 50
    student = student_from_teacher(teacher, 1, "random")
    kl = objective(student, batch, mask, torch.device("cpu")).summed
    assert float(kl) > 0.1
    kl.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    assert student.input_proj.weight.grad is not None


def test_students_deeper_than_the_teacher_are_refused():
    with pytest.raises(ValueError, match="teacher depth"):
        student_from_teacher(_teacher(), 3)


@pytest.mark.parametrize("depth", [0, -1])
def test_a_student_without_layers_gets_its_own_message(depth):
    with pytest.raises(ValueError, match=rf"a student needs at least one layer, got depth {depth}"):
        student_from_teacher(_teacher(), depth)


def test_layer_prediction_trains_its_heads_and_checkpoints_them(tiny_data, tmp_path):
    import dataclasses

    from melhubert_lib.compression.distillation import LayerPrediction, make_objective
    from melhubert_lib.scales import get_scale
    from melhubert_lib.training.pretrain import STATE_NAME, train

    teacher = _teacher()
    objective = make_objective("layers", teacher)
    assert isinstance(objective, LayerPrediction) and objective.teacher_layers == [1, 2]
    before = [p.detach().clone() for p in objective.parameters()]
    sched = dataclasses.replace(get_scale("smoke").pretrain, steps=6, warmup_steps=0, decay="constant", lr=1e-2,
                                log_every=1, eval_every=6, checkpoint_every=3, batch_seconds=4.0, crop_seconds=1.0)
    result = train(student_from_teacher(teacher, 1, "random"), tiny_data["train"], tiny_data["valid"], sched,
                   tmp_path / "run", objective=objective)
    losses = result.metrics[(result.metrics.split == "train") & (result.metrics.metric == "loss")].value
    assert losses.iloc[-1] < losses.iloc[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, objective.parameters(), strict=True))
    state = torch.load(next((tmp_path / "run" / "checkpoints").glob("step-*")) / STATE_NAME, weights_only=True)
    assert set(state["objective"]) == set(objective.state_dict())
    with pytest.raises(ValueError, match="loss="):
        make_objective("mse", teacher)


def test_a_narrow_student_keeps_the_teachers_strongest_ffn_units():
    teacher = _teacher()
    width = teacher.config.ffn_dims[0]
    student = student_from_teacher(teacher, 1, "teacher", ffn_dim=width // 4)
    assert student.config.ffn_dims == [width // 4]
    kept = torch.sort(torch.argsort(ffn_unit_scores(teacher)[0], descending=True)[: width // 4]).values
    t_ffn, s_ffn = teacher.layers[0].ffn, student.layers[0].ffn
    torch.testing.assert_close(s_ffn.fc1.weight, t_ffn.fc1.weight[kept])
    torch.testing.assert_close(s_ffn.fc2.weight, t_ffn.fc2.weight[:, kept])
    torch.testing.assert_close(student.layers[0].attention.q_proj.weight, teacher.layers[0].attention.q_proj.weight)
    with pytest.raises(ValueError, match="ffn_dim"):
        student_from_teacher(teacher, 1, ffn_dim=width + 1)


def test_ladder_settings_are_each_students_share_of_the_teachers_layer_parameters():
    teacher = _teacher()
    width = teacher.config.ffn_dims[0]
    ladder = distillation_ladder(teacher, [StudentShape(2), StudentShape(1), StudentShape(1, width // 2)], "random")
    layer_params = sum(p.numel() for p in teacher.layers.parameters())
    for setting, (depth, ffn) in zip(ladder.settings, [(2, width), (1, width), (1, width // 2)], strict=True):
        student = ladder.step(teacher, setting)
        assert (student.config.depth, student.config.ffn_dims[0]) == (depth, ffn)
        assert setting == pytest.approx(sum(p.numel() for p in student.layers.parameters()) / layer_params, abs=1e-4)
    assert ladder.settings[0] == 1.0  # two layers of a two-layer teacher
    with pytest.raises(ValueError, match="same size"):
        distillation_ladder(teacher, [StudentShape(1), StudentShape(1, width)])
