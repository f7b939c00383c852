"""The question notebooks' helpers: level choice, error rates, Pareto fronts, budgets, retained gain, the band."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from melhubert_lib.compression.levels import RESULTS_FILE
from melhubert_lib.study.questions import (
    best_within_budget,
    budget_winners,
    checkpoints_to_judge,
    finetune_band,
    front_steps_resolved,
    head_score_answer,
    head_score_verdicts,
    keeps_keywords_loses_speakers_and_phonemes,
    pareto_front,
    rank_correlation,
    resolved_extreme,
    retained_intervals,
    smallest_within,
    spread_levels,
    survives_down_to,
    surviving_heads,
    tied_with,
    with_error,
)
from melhubert_lib.training import baseline


@pytest.mark.parametrize("n_levels,per_run", [(7, 2), (6, 3), (3, 1), (5, 5), (2, 4), (13, 4)])
def test_spread_levels_are_distinct_in_range_and_keep_the_most_severe(n_levels, per_run):
    levels = spread_levels(n_levels, per_run)
    assert len(levels) == min(n_levels, per_run) == len(set(levels))
    assert n_levels in levels and min(levels) >= 1 and levels == sorted(levels)


def test_checkpoints_to_judge_leaves_out_skipped_runs_and_spreads_each_runs_levels(tmp_path):
    rows = [{"method": m, "run": r, "level": lv, "setting": float(lv), "model_dir": f"runs/{r}/level-{lv:02d}"}
            for m, r in (("head pruning", "heads-l1"), ("low-rank", "svd-energy")) for lv in range(4)]
    (tmp_path / "results").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "results" / RESULTS_FILE, index=False)
    ws = SimpleNamespace(results=tmp_path / "results", root=tmp_path)
    judged = checkpoints_to_judge(ws, per_run=2, skip_runs=["svd-energy"])
    assert [(c.run, c.level) for c in judged] == [("heads-l1", 2), ("heads-l1", 3)]
    assert judged[0].model_dir == tmp_path / "runs" / "heads-l1" / "level-02"
    assert len(checkpoints_to_judge(ws, per_run=2)) == 4
    assert [c.level for c in checkpoints_to_judge(ws, per_run=3) if c.run == "svd-energy"] == [1, 2, 3]


def test_spread_levels_refuses_zero():
    with pytest.raises(ValueError, match="per_run"):
        spread_levels(5, 0)


def test_pareto_front_is_exactly_the_undominated_points():
    rng = np.random.default_rng(0)
    points = pd.DataFrame({"cost": rng.uniform(size=60), "error": rng.uniform(size=60)})
    front = pareto_front(points, "cost")
    for idx, p in points.iterrows():
        dominated = ((points.cost <= p.cost) & (points.error <= p.error)
                     & ((points.cost < p.cost) | (points.error < p.error))).any()
        assert (idx in front.index) == (not dominated)
    assert front.cost.is_monotonic_increasing and front.error.is_monotonic_decreasing


def test_best_within_budget_picks_the_lowest_error_it_can_afford():
    points = pd.DataFrame({"method": ["a", "b", "c", "d"], "cost": [1.0, 2.0, 3.0, 4.0],
                           "error": [0.5, 0.6, 0.3, 0.4]})
    best = best_within_budget(points, "cost", [0.5, 1.5, 2.5, 3.5, 10.0])
    assert best.budget.tolist() == [1.5, 2.5, 3.5, 10.0]  # nothing costs 0.5 or less
    assert best.method.tolist() == ["a", "a", "c", "c"]


def test_error_is_one_minus_accuracy_and_the_rate_itself_otherwise():
    scores = pd.DataFrame({"task": ["SID", "PR", "ASR", "ASR"], "metric": ["accuracy", "PER", "WER", "CER"],
                           "headline": [True, True, True, False], "value": [0.7, 0.4, 0.9, 0.5]})
    rows = with_error(scores)
    assert rows.metric.tolist() == ["accuracy", "PER", "WER"]  # CER is not ASR's headline metric
    assert np.allclose(rows.error, [0.3, 0.4, 0.9])


def test_smallest_within_ignores_levels_above_the_limit():
    levels = pd.DataFrame({"run": ["a", "a", "a", "b", "b"], "nonzero_params": [10, 5, 2, 10, 4],
                           "loss_after": [1.0, 1.1, 1.5, 1.0, 1.3]})
    best = smallest_within(levels, 1.2)
    assert best.set_index("run").nonzero_params.to_dict() == {"a": 5, "b": 10}


def test_finetune_band_repeats_a_seed_exactly_and_resumes(smoke_ws):
    base = baseline.pretrain_baseline(smoke_ws, name="band-base")
    data = baseline.ssl_data(smoke_ws, base.targets[-1])
    finetune = smoke_ws.scale.compression.finetune
    band = finetune_band(smoke_ws, base.model_dir, data, finetune, [0, 1])
    again = finetune_band(smoke_ws, base.model_dir, data, finetune, [0])  # finished run: reloaded, not retrained
    assert again.losses[0] == band.losses[0]
    assert band.loss_range == (min(band.losses), max(band.losses)) and np.isfinite(band.losses).all()
    assert (smoke_ws.run_dir("baseline-finetune-seed1") / "model").is_dir()


def _utterance_results(tmp_path, errors: dict[str, np.ndarray], units: np.ndarray) -> SimpleNamespace:
    """A workspace stand-in whose per-utterance PR results hold `errors` per source, the same for probe seeds 0, 1."""
    from melhubert_lib.probes.judging import UTTERANCES_FILE

    rows = [{"source": src, "key": src, "task": "PR", "seed": seed, "metric": "PER", "utterance": i, "errors": e,
             "units": u}
            for src, errs in errors.items() for seed in (0, 1)
            for i, (e, u) in enumerate(zip(errs, units, strict=True))]
    (tmp_path / "results").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "results" / UTTERANCES_FILE, index=False)
    return SimpleNamespace(results=tmp_path / "results")


def test_retained_intervals_pin_the_floor_at_zero_the_baseline_at_one_and_a_halfway_model_at_a_half(tmp_path):
    units = np.random.default_rng(5).integers(10, 30, 40)
    ws = _utterance_results(tmp_path, {"log-Mel": 0.6 * units, "baseline": 0.2 * units, "half": 0.4 * units}, units)
    kept = retained_intervals(ws, ["log-Mel", "baseline", "half"], ["PR"]).set_index("source")
    for source, share in (("log-Mel", 0.0), ("baseline", 1.0), ("half", 0.5)):
        assert tuple(kept.loc[source, ["kept", "kept_lo", "kept_hi"]]) == pytest.approx((share, share, share), abs=1e-9)
    with pytest.raises(ValueError, match="06_downstream"):
        retained_intervals(ws, ["half"], ["PR"], floor="log-Mel +-4 frames")


def test_rank_correlation_resolves_a_monotone_relation_and_not_a_symmetric_one():
    x = np.arange(20.0)
    up = rank_correlation(x, x**3)
    assert (up.rho, up.n) == (pytest.approx(1.0), 20) and up.low > 0 and up.p_value < 0.01
    assert up.sentence("loss", "drop").startswith("a larger loss goes with more drop")
    v_shape = rank_correlation(x, (x - 9.5) ** 2)  # falls then rises: rho is exactly zero
    assert v_shape.rho == pytest.approx(0.0, abs=1e-12) and v_shape.low < 0 < v_shape.high and v_shape.p_value > 0.5
    assert v_shape.sentence("loss", "drop").startswith("no resolvable rank relation")
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlation([1.0, 2.0], [1.0, 2.0])


def test_depth_matters_only_with_every_gap_resolved_the_aim_reached_and_a_layer_weighted_most():
    from melhubert_lib.probes.baseline_checks import DepthCheck

    def check(gaps: list[tuple[str, str, float, float]], weights: list[float]) -> DepthCheck:
        table = pd.DataFrame(gaps, columns=["shallower", "deeper", "gap", "gap_lo"]).assign(gap_hi=lambda d: d.gap + 1)
        return DepthCheck(pd.DataFrame(), table, weights)

    steps = [("first-1", "first-2", 0.06, 0.03), ("first-2", "all", 0.05, 0.02), ("first-1", "all", 0.11, 0.08)]
    assert check(steps, [0.2, 0.3, 0.5]).holds(0.10)
    assert not check(steps, [0.2, 0.3, 0.5]).holds(0.12)  # the whole gap falls short of the aim
    assert not check(steps, [0.5, 0.3, 0.2]).holds(0.10)  # the encoder input carries the most weight
    unresolved = [*steps[:1], ("first-2", "all", 0.05, -0.01), steps[2]]
    assert not check(unresolved, [0.2, 0.3, 0.5]).holds(0.10)  # one step's interval spans zero
    assert not check([], [1.0]).holds(0.0)  # one layer: nothing to matter


def test_tied_with_keeps_only_sources_whose_difference_to_the_best_is_not_resolved(tmp_path):
    units = np.full(60, 20)
    best = np.full(60, 4.0)
    swings = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)  # as many utterances better as worse: no difference
    ws = _utterance_results(tmp_path, {"best": best, "same": best.copy(), "swinging": best + swings,
                                       "worse": best + 2.0}, units)
    assert tied_with(ws, "PR", "best", ["same", "swinging", "worse"]) == ["same", "swinging"]


def test_front_steps_resolved_marks_only_the_steps_whose_error_drop_is_resolved(tmp_path):
    units = np.full(60, 20)
    cheap = np.full(60, 8.0)
    swings = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    ws = _utterance_results(tmp_path, {"cheap": cheap, "middle": cheap - 3.0, "costly": cheap - 3.0 + swings * 1.5},
                            units)
    front = pd.DataFrame({"source": ["cheap", "middle", "costly"], "macs": [1.0, 2.0, 3.0]})
    assert front_steps_resolved(ws, "PR", front) == [True, False]


def test_budget_winners_name_the_cheapest_resolved_winner_and_the_runs_it_is_not_resolved_from(tmp_path):
    units = np.full(60, 20)
    swings = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    errors = {"baseline": np.full(60, 4.0), "a/1": np.full(60, 5.0), "b/1": np.full(60, 5.0) + swings * 1.5,
              "c/1": np.full(60, 9.0)}
    ws = _utterance_results(tmp_path, errors, units)
    points = pd.DataFrame({"source": list(errors), "run": ["baseline", "a", "b", "c"], "method": list("xabc"),
                           "task": "PR", "error": [e.sum() / units.sum() for e in errors.values()],
                           "macs": [100.0, 40.0, 45.0, 20.0]})
    won = budget_winners(ws, points, points.iloc[0], ["macs"], [0.25, 0.5, 1.0]).set_index("budget_fraction")
    # at a quarter only c is affordable; at a half a and b tie (b's swings make the difference unresolved) and
    # both are resolved from c; the whole budget buys the baseline, resolved from every other run
    assert won.run.tolist() == ["c", "a", "baseline"]
    assert won.tied_runs.tolist() == ["", "b", ""]


def _kept(rows: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, index=["kept", "kept_lo", "kept_hi"]).T


def test_resolved_extremes_need_an_interval_clear_of_every_other_tasks():
    clear = _kept({"PR": (0.9, 0.85, 0.95), "SID": (0.2, 0.1, 0.3), "KS": (0.6, 0.5, 0.7)})
    assert (resolved_extreme(clear, first=True), resolved_extreme(clear, first=False)) == ("SID", "PR")
    overlapping = _kept({"PR": (0.9, 0.6, 0.95), "SID": (0.2, 0.1, 0.65), "KS": (0.6, 0.5, 0.7)})
    assert resolved_extreme(overlapping, first=True) is None and resolved_extreme(overlapping, first=False) is None


def test_the_published_distillation_pattern_holds_only_when_ks_is_resolved_above_sid_and_pr():
    assert keeps_keywords_loses_speakers_and_phonemes(
        _kept({"PR": (0.3, 0.2, 0.4), "SID": (0.1, 0.0, 0.2), "KS": (0.8, 0.7, 0.9)}))
    assert not keeps_keywords_loses_speakers_and_phonemes(  # KS higher, but its interval reaches PR's
        _kept({"PR": (0.3, 0.2, 0.75), "SID": (0.1, 0.0, 0.2), "KS": (0.8, 0.7, 0.9)}))


def test_head_score_verdicts_win_lose_or_tie_from_the_paired_intervals(tmp_path):
    units = np.full(60, 20)
    swings = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    errors = {"aware-4": np.full(60, 4.0), "l1-4": np.full(60, 6.0), "aware-2": np.full(60, 8.0),
              "l1-2": np.full(60, 8.0) + swings * 1.5, "ssl-4": np.full(60, 3.0), "ssl-2": np.full(60, 8.0)}
    ws = _utterance_results(tmp_path, errors, units)
    source_of = {("PR loss", 4): "aware-4", ("PR loss", 2): "aware-2", ("L1", 4): "l1-4", ("L1", 2): "l1-2",
                 ("SSL", 4): "ssl-4", ("SSL", 2): "ssl-2"}
    verdicts = head_score_verdicts(ws, source_of, ["PR"], [4, 2], ["L1", "SSL"], ["PR"]).set_index(["heads", "rival"])
    assert verdicts.verdict.to_dict() == {(4, "L1"): "wins", (4, "SSL"): "loses", (2, "L1"): "ties",
                                          (2, "SSL"): "ties"}
    assert verdicts.loc[(4, "L1"), "value"] == pytest.approx(0.1)  # 6 - 4 errors of 20 units
    assert head_score_answer(verdicts.reset_index()).startswith(
        "on its own task, task-aware pruning wins 1, loses 1 and ties 2 of 4 comparisons")


def test_surviving_heads_follow_each_levels_checkpoint(tmp_path):
    import copy

    from melhubert_lib.model import MelHuBERT, preset

    full = MelHuBERT(preset("smoke"))  # 2 layers x 2 heads
    models = [full, copy.deepcopy(full).prune_heads({0: [1]})]
    models.append(copy.deepcopy(models[1]).prune_heads({1: [0]}))
    rows = []
    for level, model in enumerate(models):
        model.save_pretrained(tmp_path / "runs" / "h" / f"level-{level:02d}" / "model")
        rows.append({"run": "h", "level": level, "model_dir": f"runs/h/level-{level:02d}/model"})
    (tmp_path / "results").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "results" / RESULTS_FILE, index=False)
    ws = SimpleNamespace(results=tmp_path / "results", root=tmp_path)
    survivors = surviving_heads(ws, "h")
    assert survivors == {4: {(0, 0), (0, 1), (1, 0), (1, 1)}, 3: {(0, 0), (1, 0), (1, 1)}, 2: {(0, 0), (1, 1)}}
    assert survives_down_to(survivors, [(0, 0), (0, 1), (1, 0), (1, 1)]) == [2, 4, 3, 2]
    with pytest.raises(ValueError, match="no levels of run 'heads-l1'"):
        surviving_heads(ws, "heads-l1")


def test_compare_errors_says_better_worse_or_indistinguishable_from_the_paired_interval(tmp_path):
    from melhubert_lib.study.questions import compare_errors, comparison_sentence

    units = np.full(60, 20)
    swings = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    reference = np.full(60, 6.0)
    ws = _utterance_results(tmp_path, {"reference": reference, "lower": reference - 2.0, "higher": reference + 1.0,
                                       "swinging": reference + swings * 1.5}, units)
    verdicts = {name: compare_errors(ws, name, "reference", ["PR"]).iloc[0]
                for name in ("lower", "higher", "swinging")}
    assert {name: row.verdict for name, row in verdicts.items()} == {
        "lower": "better", "higher": "worse", "swinging": "indistinguishable"}
    assert verdicts["lower"].value == pytest.approx(-0.1)  # 4 - 6 errors of 20 units
    sentence = comparison_sentence("lower", "the reference", compare_errors(ws, "lower", "reference", ["PR"]))
    assert sentence.startswith("lower is better than the reference on PR (-10.0 points, -10.0 to -10.0)")
    assert comparison_sentence("swinging", "the reference", compare_errors(ws, "swinging", "reference", ["PR"])
                               ).startswith("swinging is indistinguishable from the reference on PR")


def test_resolution_compares_each_difference_interval_with_the_baselines_gain_over_the_floor(tmp_path):
    from melhubert_lib.study.questions import resolution

    units = np.full(60, 20)
    swings = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    baseline = np.full(60, 6.0)
    ws = _utterance_results(tmp_path, {"log-Mel": baseline + 8.0, "baseline": baseline, "steady": baseline + 1.0,
                                       "swinging": baseline + swings * 3.0}, units)
    table = resolution(ws, ["steady", "swinging"], ["PR"]).set_index("source")
    assert table.gain.tolist() == pytest.approx([0.4, 0.4])  # 8 errors of 20 units fewer than log-Mel
    assert table.loc["steady", "half_width"] == pytest.approx(0.0)  # the same shift on every utterance
    # +-3 of 20 units on alternate utterances: the interval's half-width near 1.96 x 0.15 / sqrt(60) = 0.038
    assert 0.02 < table.loc["swinging", "half_width"] < 0.06
    assert table.loc["swinging", "ratio"] == pytest.approx(table.loc["swinging", "half_width"] / 0.4)


def test_a_combination_is_judged_against_the_best_single_method_that_costs_no_more(tmp_path):
    from melhubert_lib.study.questions import against_best_single

    units = np.full(60, 20)
    errors = {"combo": np.full(60, 6.0), "cheap-good": np.full(60, 5.0), "cheap-bad": np.full(60, 9.0),
              "costly-best": np.full(60, 2.0), "base": np.full(60, 1.0)}
    ws = _utterance_results(tmp_path, errors, units)
    runs = {"combo": "combined", "cheap-good": "a", "cheap-bad": "b", "costly-best": "c", "base": "baseline"}
    macs = {"combo": 1.0, "cheap-good": 0.9, "cheap-bad": 0.5, "costly-best": 1.5, "base": 0.1}
    points = pd.DataFrame([{"source": k, "run": runs[k], "task": "PR", "macs": macs[k], "error": e.mean() / 20}
                           for k, e in errors.items()])
    row = against_best_single(ws, points, "combined").iloc[0]
    # the costlier run and the baseline are no rivals; of the affordable runs the lower error is the rival
    assert (row.rival, row.rival_run, row.verdict) == ("cheap-good", "a", "worse")
    assert row.value == pytest.approx(0.05)  # 6 - 5 errors of 20 units
    points.loc[points.source == "combo", "macs"] = 0.2  # cheaper than every single method: nothing to compare
    nothing = against_best_single(ws, points, "combined")
    assert nothing.empty and "verdict" in nothing.columns  # empty, but a table the notebook can count verdicts in


def test_the_results_summary_is_generated_from_the_results_files(tmp_path):
    from melhubert_lib.compression.levels import RESULTS_FILE
    from melhubert_lib.probes.judging import DOWNSTREAM_FILE
    from melhubert_lib.study.summary import markdown_table, results_summary

    units = np.full(40, 20)
    ws = _utterance_results(tmp_path, {"baseline": np.full(40, 5.0), "log-Mel": np.full(40, 9.0)}, units)
    ws.scale = SimpleNamespace(name="smoke")
    pd.DataFrame({"source": ["baseline", "log-Mel"], "task": ["PR", "PR"]}).to_csv(
        ws.results / DOWNSTREAM_FILE, index=False)
    pd.DataFrame({"run": ["heads-l1", "heads-l1"], "level": [1, 0], "stage": [np.nan, np.nan],
                  "setting": [3.0, 0.0], "params": [2.5e6, 3.0e6], "nonzero_params": [2.5e6, 3.0e6],
                  "macs_per_second": [1.5e8, 2e8], "rtf": [0.01, 0.012], "loss_after": [4.1, 4.0]}).to_csv(
        ws.results / RESULTS_FILE, index=False)
    text = results_summary(ws)
    assert "| baseline | 25.0 (25.0-25.0) |" in text and "| log-Mel | 45.0 (45.0-45.0) |" in text  # 5 and 9 of 20
    rows = [line for line in text.splitlines() if line.startswith("| heads-l1")]
    assert rows == ["| heads-l1 | 0 |  | 0 | 3.00 | 3.00 | 0.200 | 0.0120 | 4.000 |",
                    "| heads-l1 | 1 |  | 3 | 2.50 | 2.50 | 0.150 | 0.0100 | 4.100 |"]
    assert markdown_table(pd.DataFrame({"a": [1], "b": ["x"]})) == "| a | b |\n|---|---|\n| 1 | x |"


def test_the_depth_ladder_keeps_only_levels_of_the_starting_models_layer_shape(tmp_path):
    import torch

    from melhubert_lib.compression.distillation import student_from_teacher
    from melhubert_lib.compression.levels import RESULTS_FILE
    from melhubert_lib.model import MelHuBERT, preset
    from melhubert_lib.study.questions import depth_ladder, depth_of

    torch.manual_seed(0)
    teacher = MelHuBERT(preset("smoke"))
    models = {0: teacher, 1: student_from_teacher(teacher, 1), 2: student_from_teacher(teacher, 1, ffn_dim=32),
              3: MelHuBERT(preset("smoke")).prune_heads({0: [0]})}
    rows = []
    for level, model in models.items():
        model.save_pretrained(tmp_path / "runs" / "r" / f"level-{level:02d}" / "model")
        rows.append({"method": "distillation", "run": "r", "level": level, "setting": float(level),
                     "model_dir": f"runs/r/level-{level:02d}/model"})
    (tmp_path / "results").mkdir()
    pd.DataFrame(rows + [{**rows[1], "run": "other"}]).to_csv(tmp_path / "results" / RESULTS_FILE, index=False)
    ws = SimpleNamespace(root=tmp_path, results=tmp_path / "results")
    ladder = depth_ladder(ws, ["r"])
    assert [(c.run, c.level) for c in ladder] == [("r", 1)]  # the narrow student and the pruned heads are left out
    assert depth_of(ladder[0]) == 1 and ladder[0].name == "r/level-01"
    # what 07 judges and 09 reads: each run's most severe level (one per run here) and the ladder's, once, in order
    from melhubert_lib.study.questions import study_checkpoints

    judged = study_checkpoints(ws, per_run=1, depth_runs=["r"])
    assert [(c.run, c.level) for c in judged] == [("r", 1), ("r", 3), ("other", 1)]
    assert [(c.run, c.level) for c in study_checkpoints(ws, per_run=3, depth_runs=["r"])] == [
        ("r", 1), ("r", 2), ("r", 3), ("other", 1)]
