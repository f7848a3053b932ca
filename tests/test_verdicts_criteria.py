"""The success criteria S1-S6 (verdicts/criteria.py) and what the rules share (verdicts/common.py), each
compared whole (verdict, evidence string, p) on small constructed tables. Expected values are written out
or computed here with scipy/numpy; thresholds are pinned just below and just above."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hpc_unet.analysis import stats
from hpc_unet.analysis.verdicts import common, criteria

SUP, NOT, INC = "supported", "not supported", "inconclusive"
H = {"id": "S", "claim": "a claim"}


# ----------------------------------------------------------------------------------------------- helpers
def ctx_of(completed: pd.DataFrame, baseline: pd.DataFrame | None = None, recs: pd.DataFrame | None = None,
           archs: tuple[str, ...] = ("UNet",), history: pd.DataFrame | None = None, **kw) -> common.Context:
    """A Context with only what the criteria read: completed runs, recommendations, a baseline, history."""
    if recs is None:
        recs = pd.DataFrame([{"architecture": a, "kind": "best", "learning_rate": 1e-3, "batch_size": 8}
                             for a in archs])
    return common.Context(completed=completed, architectures=list(archs), anova_j=stats.Anova("y"),
                          anova_s=stats.Anova("y"), cells_j=pd.DataFrame(), recommendations=recs,
                          baseline=baseline, history=history, **kw)


def runs(values: list[float], metric: str, arch: str = "UNet", lr: float = 1e-3, bs: int = 8,
         prefix: str = "g", **cols) -> pd.DataFrame:
    """One run per value at one cell, seeds 0.., exp ids '<prefix>0'.. ; cols: extra columns (lists)."""
    frame = pd.DataFrame({"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": range(len(values)),
                          "status": "completed", "exp_id": [f"{prefix}{i}" for i in range(len(values))],
                          metric: values})
    for k, v in cols.items():
        frame[k] = v
    return frame


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(diff, low, high): scipy's Welch t-test interval of mean(a) - mean(b)."""
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return float(np.mean(a) - np.mean(b)), float(ci.low), float(ci.high)


def welch_text(a: list[float], b: list[float], fmt: str = "{:+.3f}") -> str:
    d, lo, hi = welch(a, b)
    return f"{fmt.format(d)} [{fmt.format(lo)}, {fmt.format(hi)}] (Welch t over seeds ({len(a)} vs {len(b)} runs))"


# ======================================================================================== common.py
def test_p_text_every_branch():
    assert [common.p_text(p) for p in (None, math.nan, math.inf, -math.inf)] == ["p=n/a"] * 4
    assert [common.p_text(p) for p in (0.0, 0.000999, 0.001, 0.0125, 0.5, 1.0)] == [
        "p<0.001", "p<0.001", "p=0.001", "p=0.013", "p=0.500", "p=1.000"]


def test_same_is_equality_up_to_a_relative_1e9():
    assert common.same(1e-3, 0.001) and common.same(5, 5.0) and common.same(1.0, 1.0 + 5e-10)
    assert not common.same(1.0, 1.0 + 2e-9) and not common.same(1.0, 2.0) and not common.same(5e-4, 1e-3)


def test_lr_text_and_listed():
    assert [common.lr_text(x) for x in (1e-3, 5e-4, 0.01)] == ["1e-03", "5e-04", "1e-02"]
    assert common.listed([1, 2]) == [1, 2] and common.listed(3) == [3] and common.listed((1, 2)) == [(1, 2)]
    assert common.listed("ab") == ["ab"]


def test_groups_are_the_finite_values_per_sorted_level():
    frame = pd.DataFrame({"bs": [32, 8, 16, 8, 32, 16], "y": [1.0, 2.0, math.nan, 4.0, 5.0, math.inf]})
    got = common.groups(frame, "bs", "y")
    assert list(got) == [8, 32]  # 16 has no finite value: no group
    assert got[8].tolist() == [2.0, 4.0] and got[32].tolist() == [1.0, 5.0]


@pytest.mark.parametrize(("diff", "p", "expected"), [
    (0.1, 0.0499, "+"), (-0.1, 0.0499, "-"), (0.1, 0.05, "="), (-0.1, 0.05, "="), (0.1, 0.0501, "="),
    (0.0, 0.01, "-"), (math.nan, 0.01, "="), (0.1, math.nan, "="), (-math.inf, 0.01, "="), (0.1, 0.0, "+")])
def test_direction_at_alpha(diff, p, expected):
    assert common.direction(diff, p) == expected


def test_combine_all_true_any_false_else_inconclusive():
    assert common.combine([]) == INC
    assert common.combine([True]) == SUP and common.combine([True, True]) == SUP
    assert common.combine([True, None]) == INC and common.combine([None]) == INC
    assert common.combine([True, False]) == NOT and common.combine([None, False]) == NOT
    assert common.combine([False]) == NOT


@pytest.mark.parametrize(("low", "high", "above", "below"), [
    (0.011, 0.03, True, False), (0.01, 0.03, None, False), (0.009, 0.03, None, False),
    (-0.03, 0.009, False, None), (-0.03, 0.01, None, None), (-0.03, 0.011, None, None),
    (-0.03, -0.011, False, True), (0.0, 0.02, None, False)])
def test_interval_verdict_threshold_pinned_on_both_sides(low, high, above, below):
    """good_above 0.01: True only when low > 0.01, False only when high < 0.01; good_below -0.01 mirrored
    (an interval touching the threshold is undecided)."""
    d = stats.Difference((low + high) / 2, low, high)
    assert common.interval_verdict(d, good_above=0.01) is above
    assert common.interval_verdict(d, good_below=-0.01) is (None if below is None else below)


def test_interval_verdict_mirrored_and_without_an_interval():
    assert common.interval_verdict(stats.Difference(-0.05, -0.06, -0.011), good_below=-0.01) is True
    assert common.interval_verdict(stats.Difference(-0.05, -0.06, -0.01), good_below=-0.01) is None
    assert common.interval_verdict(stats.Difference(0.05, -0.009, 0.06), good_below=-0.01) is False
    assert common.interval_verdict(stats.Difference(0.05, -0.01, 0.06), good_below=-0.01) is None
    for d in (stats.Difference(0.5), stats.Difference(0.5, 0.4), stats.Difference(0.5, math.nan, 0.6)):
        assert common.interval_verdict(d, good_above=0.0) is None
        assert common.interval_verdict(d, good_below=1.0) is None
    with pytest.raises(AssertionError):
        common.interval_verdict(stats.Difference(0.5, 0.4, 0.6))


def test_with_note_says_inconclusive_in_words_only_when_undecided():
    assert common.with_note(None, "t") == (None, "t (no interval excluding 0: inconclusive)")
    assert common.with_note(True, "t") == (True, "t") and common.with_note(False, "t") == (False, "t")


def _grid() -> pd.DataFrame:
    rows = [{"architecture": a, "learning_rate": lr, "batch_size": bs, "seed": s, "y": 1.0}
            for a in ("UNet", "X") for lr in (1e-3, 5e-4) for bs in (8, 32) for s in (0, 1)]
    return pd.DataFrame(rows)


def test_matched_keeps_the_settings_present_at_every_level():
    frame = _grid()
    drop = (frame["architecture"] == "UNet") & (frame["learning_rate"] == 5e-4) & (frame["batch_size"] == 32)
    frame.loc[drop & (frame["seed"] == 0), "y"] = math.nan  # UNet lr 5e-4 seed 0 lacks batch 32
    got, n = common.matched(frame, "batch_size", "y")
    assert n == 7  # 2 archs x 2 lrs x 2 seeds = 8 settings, one incomplete
    assert len(got) == 14
    lost = (got["architecture"] == "UNet") & (got["learning_rate"] == 5e-4) & (got["seed"] == 0)
    assert not lost.any()
    assert list(got.index) == [i for i in frame.index if not (frame.loc[i, "architecture"] == "UNet"
                                                              and frame.loc[i, "learning_rate"] == 5e-4
                                                              and frame.loc[i, "seed"] == 0)]


def test_matched_on_chosen_levels_and_by_every_other_factor():
    frame = _grid()
    frame = frame[~((frame["architecture"] == "X") & (frame["batch_size"] == 32) & (frame["seed"] == 1))]
    got, n = common.matched(frame, "learning_rate", "y", levels=[1e-3])
    assert (n, len(got)) == (7, 7) and set(got["learning_rate"]) == {1e-3}
    got, n = common.matched(frame, "architecture", "y")  # matched by lr, batch and seed
    assert n == 6 and len(got) == 12 and set(got["architecture"]) == {"UNet", "X"}
    got, n = common.matched(frame, "seed", "y")  # seed is the factor: the other three are the key
    assert n == 6 and len(got) == 12  # X's two batch-32 cells have one seed left: out
    assert got[(got["architecture"] == "X") & (got["batch_size"] == 32)].empty


def test_groups_and_matched_read_a_metric_column_of_objects_as_numbers():
    """A metric column holding None (object dtype, as after concatenating shards that lack it) is read as
    floats: None is missing, not an error."""
    frame = pd.DataFrame({"architecture": "UNet", "learning_rate": 1e-3, "batch_size": [8, 32, 8, 32],
                          "seed": [0, 0, 1, 1], "y": pd.Series([1.0, None, 2.0, 3.0], dtype=object)})
    got = common.groups(frame, "batch_size", "y")
    assert list(got) == [8, 32] and got[8].tolist() == [1.0, 2.0] and got[32].tolist() == [3.0]
    kept, n = common.matched(frame, "batch_size", "y")
    assert n == 1 and kept.index.tolist() == [2, 3]


def test_matched_on_chosen_levels_still_drops_missing_values():
    frame = _grid()
    frame.loc[(frame["architecture"] == "X") & (frame["learning_rate"] == 1e-3) & (frame["batch_size"] == 8)
              & (frame["seed"] == 0), "y"] = math.nan
    got, n = common.matched(frame, "learning_rate", "y", levels=[1e-3])
    assert (n, len(got)) == (7, 7) and got["y"].notna().all()


def test_matched_without_data_or_keys():
    frame = _grid()
    frame["y"] = math.nan
    got, n = common.matched(frame, "batch_size", "y")
    assert (len(got), n) == (0, 0)
    only = pd.DataFrame({"batch_size": [8, 32], "y": [1.0, 2.0]})
    got, n = common.matched(only, "batch_size", "y")
    assert n == 0 and got["y"].tolist() == [1.0, 2.0]


def test_cell_runs_matches_lr_as_a_float_and_batch_as_an_int():
    frame = pd.DataFrame({"architecture": ["UNet", "UNet", "UNet", "X"], "learning_rate": ["0.001", 1e-3, 5e-4, 1e-3],
                          "batch_size": ["8", 8, 8, 8]})
    assert common.cell_runs(frame, "UNet", 0.0010000000001, 8).index.tolist() == [0, 1]
    assert common.cell_runs(frame, "UNet", 1e-3, 16).empty and common.cell_runs(frame, "Y", 1e-3, 8).empty


def test_best_cells_reads_the_kinds_list():
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best, most robust", "learning_rate": 1e-3, "batch_size": 8},
                         {"architecture": "X", "kind": "most robust", "learning_rate": 1e-3, "batch_size": 8},
                         {"architecture": "Y", "kind": "most efficient, best", "learning_rate": 5e-4, "batch_size": 16},
                         {"architecture": "Z", "kind": "bestish", "learning_rate": 5e-4, "batch_size": 16}])
    got = common.best_cells(ctx_of(pd.DataFrame(), recs=recs))
    assert list(got) == ["UNet", "Y"]
    assert got["Y"] == {"architecture": "Y", "kind": "most efficient, best", "learning_rate": 5e-4, "batch_size": 16}
    assert common.best_cells(ctx_of(pd.DataFrame(), recs=pd.DataFrame())) == {}


def test_context_levels_and_learned_runs():
    frame = pd.DataFrame({"learning_rate": [5e-3, 1e-3, 1e-3], "learned": [True, False, None]})
    ctx = ctx_of(frame, levels={"batch_size": [32, 8]})
    assert ctx.grid_levels("batch_size") == [32, 8] and ctx.grid_levels("learning_rate") == [1e-3, 5e-3]
    assert ctx.grid_levels("seed") == [] and ctx.learned.index.tolist() == [0, 2]
    assert (ctx.hour_unit, ctx.n_boot, ctx.primary, ctx.budget_note, ctx.steps_note) == (
        "GPU-hour", 2000, "best_val_jaccard", "", "")
    assert ctx.history is None and ctx.anova_o is None and common.Verdict("i", "c", "v", "e").p != 0.0
    assert (common.ICC_GOOD, common.ICC_POOR, common.NONINFERIORITY, common.NOT_APPLICABLE) == (
        0.75, 0.5, 0.01, "not applicable")


# ======================================================================================== criteria.py
def whole(v: common.Verdict) -> tuple[str, str, str, str, bool]:
    """(id, claim, verdict, evidence, p is NaN): the criteria are decided by intervals and bands, never a p."""
    return v.id, v.claim, v.verdict, v.evidence, math.isnan(v.p)


def test_without_a_baseline_every_baseline_criterion_is_inconclusive():
    ctx = ctx_of(runs([0.5, 0.6], "best_val_jaccard"))
    for rule in (criteria.s1_stability, criteria.s2_performance, criteria.s4_convergence):
        assert whole(rule(ctx, {**H, "reduction": 0.5})) == (
            "S", "a claim", INC, "no baseline given (pass --baseline DIR)", True)
    assert whole(criteria.s5_efficiency(ctx, H)) == ("S", "a claim", INC, "no baseline given (pass --baseline DIR)",
                                                     True)


# ------------------------------------------------------------------------------------------------- S1
def _s1(grid: list[float], base: list[float], **kw) -> common.Verdict:
    ctx = ctx_of(runs(grid, "val_loss_std", **kw.pop("grid_cols", {})),
                 baseline=runs(base, "val_loss_std", prefix="b", **kw.pop("base_cols", {})), **kw)
    return criteria.s1_stability(ctx, {**H, "reduction": 0.5})


def test_s1_supported_with_the_whole_evidence():
    grid, base = [0.040, 0.042], [0.100, 0.102]
    text = (f"UNet: std 0.0410 vs baseline 0.1010 (59% lower); difference {welch_text(grid, base, '{:+.4f}')}; "
            "needs < -0.0505")
    assert welch(grid, base)[2] < -0.0505
    assert whole(_s1(grid, base)) == ("S", "a claim", SUP, text, True)


def test_s1_threshold_is_reduction_times_the_baseline_std_on_both_sides():
    base = [0.1, 0.1]  # no spread on the baseline: the interval is the grid's alone, t(1) x sd / sqrt(2)
    half = float(sps.t.ppf(0.975, 1)) * 0.001  # grid {c - 0.001, c + 0.001}: sd sqrt(2) 0.001, se 0.001
    for high, expected in ((-0.0501, SUP), (-0.0499, INC)):
        c = 0.1 + high - half
        v = _s1([c - 0.001, c + 0.001], base)
        assert v.verdict == expected, v.evidence
    for low, expected in ((-0.0499, NOT), (-0.0501, INC)):
        c = 0.1 + low + half
        v = _s1([c - 0.001, c + 0.001], base)
        assert v.verdict == expected, v.evidence
    assert v.evidence.endswith("needs < -0.0500 (the interval straddles the threshold or is missing: inconclusive)")


def test_s1_reports_the_oscillation_measure_when_both_sides_have_it():
    grid, base = [0.040, 0.042], [0.100, 0.102]
    v = _s1(grid, base, grid_cols={"val_loss_std_detrended": [0.01, 0.02]},
            base_cols={"val_loss_std_detrended": [0.05, 0.03]})
    assert v.evidence.endswith("needs < -0.0505; detrended std 0.0150 vs 0.0400 (62% lower)") and v.verdict == SUP
    # only one side has it, the baseline's is 0 or the grid's is missing: not reported
    for grid_cols, base_cols in (({"val_loss_std_detrended": [0.01, 0.02]}, {}),
                                 ({}, {"val_loss_std_detrended": [0.05, 0.03]}),
                                 ({"val_loss_std_detrended": [0.01, 0.02]}, {"val_loss_std_detrended": [0.0, 0.0]}),
                                 ({"val_loss_std_detrended": [math.nan] * 2}, {"val_loss_std_detrended": [0.05, 0.03]})):
        v = _s1(grid, base, grid_cols=grid_cols, base_cols=base_cols)
        assert v.evidence.endswith("needs < -0.0505"), v.evidence
    tiny = _s1(grid, base, grid_cols={"val_loss_std_detrended": [0.0, 0.0]},
               base_cols={"val_loss_std_detrended": [1e-9, 1e-9]})
    assert tiny.evidence.endswith("; detrended std 0.0000 vs 0.0000 (100% lower)")


def test_s1_one_run_a_side_has_no_interval_and_says_so():
    v = _s1([0.04], [0.1])
    assert whole(v) == ("S", "a claim", INC,
                        "UNet: std 0.0400 vs baseline 0.1000 (60% lower); difference -0.0600 (no interval: 1 vs 1 "
                        "run(s); replicate seeds for one); needs < -0.0500 (the interval straddles the threshold or is "
                        "missing: inconclusive)", True)


def test_s1_std_unavailable_without_a_positive_baseline_or_a_grid_value():
    for grid, base in (([0.04, 0.05], [0.0, 0.0]), ([math.nan, math.nan], [0.1, 0.1]), ([0.04, 0.05], [-1.0, 0.5])):
        assert whole(_s1(grid, base)) == ("S", "a claim", INC, "UNet: std unavailable", True)
    v = _s1([0.04, 0.0401], [1e-9, 1e-9])  # just above 0: judged
    assert v.verdict == NOT and "vs baseline 0.0000" in v.evidence


def test_the_baseline_criteria_say_why_an_architecture_is_not_judged():
    """UNet judged; X has no best cell; Y's baseline run did not learn (S1 and S4 need one that did, S2 not);
    Z has no baseline run."""
    archs = ("UNet", "X", "Y", "Z")
    grid = pd.concat([runs([0.04, 0.042], "val_loss_std", arch=a, best_val_jaccard=[0.7, 0.72], best_epoch=[3, 4])
                      for a in ("UNet", "Y", "Z")])
    base = pd.concat([runs([0.100, 0.102], "val_loss_std", arch=a, prefix="b", best_val_jaccard=[0.6, 0.62],
                           best_epoch=[9, 10], learned=[a != "Y"] * 2) for a in ("UNet", "X", "Y")])
    recs = pd.DataFrame([{"architecture": a, "kind": "best", "learning_rate": 1e-3, "batch_size": 8}
                         for a in ("UNet", "Y", "Z")])
    ctx = ctx_of(grid, baseline=base, recs=recs, archs=archs)
    s1 = criteria.s1_stability(ctx, {**H, "reduction": 0.5})
    tail = ("X: no completed grid run that learned; Y: its baseline run did not learn, so its stability/convergence "
            "is undefined; Z: no baseline run")
    assert s1.verdict == INC and s1.evidence.startswith("UNet: std 0.0410 vs baseline 0.1010 (59% lower); difference")
    assert s1.evidence.endswith("needs < -0.0505; " + tail)
    s4 = criteria.s4_convergence(ctx, H)
    assert s4.evidence.startswith("UNet: epochs to best (no history): 3.5 vs baseline's epochs to best 9.5;")
    assert s4.evidence.endswith("; " + tail) and s4.verdict == INC
    s2 = criteria.s2_performance(ctx, H)  # the Jaccard of a baseline that did not learn is still a Jaccard
    part = (f"best J 0.710 vs baseline 0.610: difference {welch_text([0.7, 0.72], [0.6, 0.62])}; maintained if the "
            "interval lies above -0.01")
    assert whole(s2) == ("S", "a claim", INC, f"UNet: {part}; X: no completed grid run that learned; Y: {part}; "
                         "Z: no baseline run", True)
    # the grid runs compared are the learned runs of the best cell only
    grid2 = pd.concat([grid, runs([0.9, 0.9], "val_loss_std", prefix="n", learned=[False, False]),
                       runs([0.9, 0.9], "val_loss_std", bs=16, prefix="o")])
    s1b = criteria.s1_stability(ctx_of(grid2, baseline=base, recs=recs, archs=archs), {**H, "reduction": 0.5})
    assert s1b.evidence == s1.evidence


# ------------------------------------------------------------------------------------------------- S2
def test_s2_whole_evidence_and_the_margin_on_both_sides():
    grid, base = [0.70, 0.74], [0.69, 0.71]
    text = (f"UNet: best J 0.720 vs baseline 0.700: difference {welch_text(grid, base)}; maintained if the interval "
            "lies above -0.01")
    assert welch(grid, base)[1] < -0.01 < welch(grid, base)[2]
    v = criteria.s2_performance(ctx_of(runs(grid, "best_val_jaccard"), baseline=runs(base, "best_val_jaccard")), H)
    assert whole(v) == ("S", "a claim", INC, text, True)
    half = float(sps.t.ppf(0.975, 1)) * 0.002
    for low, expected in ((-0.0099, SUP), (-0.0101, INC)):
        c = 0.7 + low + half
        g = runs([c - 0.002, c + 0.002], "best_val_jaccard")
        assert criteria.s2_performance(ctx_of(g, baseline=runs([0.7, 0.7], "best_val_jaccard")), H).verdict == expected
    for high, expected in ((-0.0101, NOT), (-0.0099, INC)):
        c = 0.7 + high - half
        g = runs([c - 0.002, c + 0.002], "best_val_jaccard")
        assert criteria.s2_performance(ctx_of(g, baseline=runs([0.7, 0.7], "best_val_jaccard")), H).verdict == expected


# ------------------------------------------------------------------------------------------------- S3
def _cells(values: list[float]) -> pd.DataFrame:
    """Values in cells of three seeds (batch 8, 16, ...)."""
    return pd.DataFrame({"architecture": "UNet", "learning_rate": 1e-3, "batch_size": [8 * 2 ** (i // 3) for i in
                                                                                     range(len(values))],
                         "seed": [i % 3 for i in range(len(values))], "best_val_jaccard": values})


def test_s3_bands_at_exactly_075_and_05():
    """By hand: [2, 0, 3] / [6, 4, 5]: MSB 50/3, MSW 5/3, n0 3, ICC (50/3 - 5/3) / (50/3 + 10/3) = 0.75;
    [2, 0, 4] / [4, 4, 6]: MSB 32/3, MSW 8/3, ICC 24/48 = 0.5."""
    v = criteria.s3_consistency(ctx_of(_cells([2, 0, 3, 6, 4, 5])), H)
    assert whole(v) == ("S", "a claim", SUP, "ICC(1) of the Jaccard = 0.75 over 2 cells with repeated seeds (6 runs); "
                        f"seed-to-seed SD {math.sqrt(5 / 3):.4f} (>= 0.75)", True)
    v = criteria.s3_consistency(ctx_of(_cells([2, 0, 4, 4, 4, 6])), H)
    assert whole(v) == ("S", "a claim", INC, "ICC(1) of the Jaccard = 0.50 over 2 cells with repeated seeds (6 runs); "
                        f"seed-to-seed SD {math.sqrt(8 / 3):.4f} (between 0.5 and 0.75: moderate)", True)


def test_s3_not_supported_below_05_and_undefined_cases():
    # [0, 1, 2] / [0, 1, 3]: MSB 3 x (1/6)^2 x 2 = 1/6, MSW (2 + 14/3) / 4 = 5/3: ICC (1/6 - 5/3) / (1/6 + 10/3) = -3/7
    v = criteria.s3_consistency(ctx_of(_cells([0, 1, 2, 0, 1, 3])), H)
    assert whole(v) == ("S", "a claim", NOT, "ICC(1) of the Jaccard = -0.43 over 2 cells with repeated seeds (6 runs); "
                        f"seed-to-seed SD {math.sqrt(5 / 3):.4f} (< 0.5: seeds move scores as much as settings)", True)
    flat = criteria.s3_consistency(ctx_of(_cells([0.5] * 6)), H)  # no variance at all: ICC undefined, no note
    assert whole(flat) == ("S", "a claim", INC, "ICC undefined", True)
    one = criteria.s3_consistency(ctx_of(_cells([0.5, 0.6, 0.7])), H)
    assert whole(one) == ("S", "a claim", INC, "1 cell(s) with >= 2 completed seeds; repeated runs (replicates >= 2) "
                          "are needed to judge consistency", True)


# ------------------------------------------------------------------------------------------------- S4
def _history(reach: dict[str, list[float]]) -> pd.DataFrame:
    """val_jacard_coef per epoch (1..) of each run, written newest epoch first."""
    rows = [{"exp_id": e, "epoch": i + 1, "val_jacard_coef": v} for e, vals in reach.items() for i, v in
            enumerate(vals)]
    return pd.DataFrame(rows[::-1])


def _s4(history: pd.DataFrame | None, best_epoch: tuple[float, ...] | list[float] = (3, 4)) -> common.Verdict:
    grid = runs([0.7, 0.72], "best_val_jaccard", best_epoch=list(best_epoch))
    base = runs([0.6, 0.6], "best_val_jaccard", prefix="b", best_epoch=[10, 12])
    return criteria.s4_convergence(ctx_of(grid, baseline=base, history=history), H)


def test_s4_epochs_to_reach_the_baseline_from_history():
    """g0 first reaches 0.6 at epoch 3 (exactly 0.6 counts), g1 at epoch 2 (and again at 4): 2.5 vs 11."""
    hist = _history({"g0": [0.1, 0.59, 0.6, 0.7], "g1": [0.2, 0.65, 0.5, 0.61], "b0": [0.9] * 4})
    text = f"UNet: epochs to reach the baseline's best J: 2.5 vs baseline's epochs to best 11.0; difference " \
           f"{welch_text([3, 2], [10, 12], '{:+.1f}')}"
    assert whole(_s4(hist)) == ("S", "a claim", SUP, text, True)


def test_s4_without_usable_history_uses_epochs_to_best():
    text = f"UNet: epochs to best (no history): 3.5 vs baseline's epochs to best 11.0; difference " \
           f"{welch_text([3, 4], [10, 12], '{:+.1f}')}"
    assert whole(_s4(None)) == ("S", "a claim", SUP, text, True)
    no_column = _history({"g0": [0.7], "g1": [0.7]}).rename(columns={"val_jacard_coef": "val_loss"})
    assert whole(_s4(no_column)) == ("S", "a claim", SUP, text, True)
    others = _history({"b0": [0.7], "x": [0.7]})  # only other runs' history: as if none
    assert whole(_s4(others)) == ("S", "a claim", SUP, text, True)


def test_s4_never_reaching_is_not_supported_and_one_reach_has_no_interval():
    never = _history({"g0": [0.1, 0.59], "g1": [0.2, 0.5]})
    assert whole(_s4(never)) == ("S", "a claim", NOT,
                                 "UNet: the best configuration never reached the baseline's best J 0.600", True)
    once = _history({"g0": [0.1, 0.6], "g1": [0.2, 0.5]})
    assert whole(_s4(once)) == ("S", "a claim", INC, "UNet: epochs to reach the baseline's best J: 2.0 (1 of 2 runs "
                                "never reached it) vs baseline's epochs to best 11.0; difference -9.0 (no interval: "
                                "1 vs 2 run(s); replicate seeds for one) (no interval excluding 0: inconclusive)", True)


def _s4_three(reach: dict[str, list[float]]) -> common.Verdict:
    grid = runs([0.7, 0.72, 0.71], "best_val_jaccard", best_epoch=[3, 4, 4])
    base = runs([0.6, 0.6], "best_val_jaccard", prefix="b", best_epoch=[10, 12])
    return criteria.s4_convergence(ctx_of(grid, baseline=base, history=_history(reach)), H)


def test_s4_faster_where_it_got_there_is_not_supported_while_a_run_never_did():
    """g0 and g1 reach 0.6 at epochs 2 and 3, far below the baseline's 10 and 12 (Welch's interval lies
    below 0); g2 never reaches it. The difference over the runs that got there would say faster: a seed
    that never converges keeps that from being supported. With g2 reaching at epoch 4 it is supported."""
    text = (f"UNet: epochs to reach the baseline's best J: 2.5 (1 of 3 runs never reached it) vs baseline's "
            f"epochs to best 11.0; difference {welch_text([2, 3], [10, 12], '{:+.1f}')}")
    got = _s4_three({"g0": [0.1, 0.6], "g1": [0.1, 0.3, 0.65], "g2": [0.1, 0.2, 0.3, 0.5]})
    assert whole(got) == ("S", "a claim", INC,
                          text + " (faster where it got there, but not every run did: inconclusive)", True)
    assert welch([2, 3], [10, 12])[2] < 0  # the interval alone would support it
    every = _s4_three({"g0": [0.1, 0.6], "g1": [0.1, 0.3, 0.65], "g2": [0.1, 0.2, 0.3, 0.6]})
    assert whole(every) == ("S", "a claim", SUP, f"UNet: epochs to reach the baseline's best J: 3.0 vs baseline's "
                            f"epochs to best 11.0; difference {welch_text([2, 3, 4], [10, 12], '{:+.1f}')}", True)
    slow = criteria.s4_convergence(ctx_of(runs([0.7, 0.72, 0.71], "best_val_jaccard", best_epoch=[3, 4, 4]),
                                          baseline=runs([0.6, 0.6], "best_val_jaccard", prefix="b", best_epoch=[1, 2]),
                                          history=_history({"g0": [0.1] * 4 + [0.6], "g1": [0.1] * 5 + [0.6],
                                                            "g2": [0.1]})), H)
    assert slow.verdict == NOT and "(1 of 3 runs never reached it)" in slow.evidence  # slower stays not supported


def test_s4_slower_than_the_baseline_is_not_supported_and_a_straddle_is_inconclusive():
    slow = _s4(None, best_epoch=[20, 21])
    assert slow.verdict == NOT and not slow.evidence.endswith("inconclusive)")
    mixed = _s4(None, best_epoch=[1, 21])
    assert mixed.verdict == INC and mixed.evidence.endswith(" (no interval excluding 0: inconclusive)")


# ------------------------------------------------------------------------------------------------- S5
def test_s5_whole_evidence_with_the_most_efficient_cells_named():
    grid, base = [1.2, 1.4], [0.5, 0.6]
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best, most efficient", "learning_rate": 1e-3,
                          "batch_size": 8, "jaccard_per_gpu_hour": 1.3},
                         {"architecture": "X", "kind": "most efficient", "learning_rate": 5e-4, "batch_size": 32,
                          "jaccard_per_gpu_hour": 0.01234},
                         {"architecture": "X", "kind": "best", "learning_rate": 1e-3, "batch_size": 8,
                          "jaccard_per_gpu_hour": 9.0}])
    ctx = ctx_of(runs(grid, "jaccard_per_gpu_hour"), baseline=runs(base, "jaccard_per_gpu_hour", prefix="b"),
                 recs=recs, hour_unit="CPU-hour")
    text = (f"UNet: best configuration 1.3 vs baseline 0.55 J per CPU-hour; difference "
            f"{welch_text(grid, base, '{:+.2g}')} (most efficient UNet: lr 1e-03 bs 8 (1.3 J per CPU-hour); "
            "most efficient X: lr 5e-04 bs 32 (0.012 J per CPU-hour))")
    assert whole(criteria.s5_efficiency(ctx, H)) == ("S", "a claim", SUP, text, True)


def test_s5_no_time_no_listing_and_the_sides_of_zero():
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best", "learning_rate": 1e-3, "batch_size": 8,
                          "jaccard_per_gpu_hour": 1.0}])

    def s5(grid: list[float], base: list[float]) -> common.Verdict:
        return criteria.s5_efficiency(ctx_of(runs(grid, "jaccard_per_gpu_hour"), recs=recs,
                                             baseline=runs(base, "jaccard_per_gpu_hour", prefix="b")), H)

    assert whole(s5([math.nan] * 2, [0.5, 0.6])) == ("S", "a claim", INC, "UNet: training time not recorded", True)
    worse = s5([0.20, 0.21], [0.50, 0.51])
    assert worse.verdict == NOT and worse.evidence == (f"UNet: best configuration 0.21 vs baseline 0.51 J per GPU-hour; "
                                                       f"difference {welch_text([0.20, 0.21], [0.50, 0.51], '{:+.2g}')}")
    assert s5([0.4, 0.8], [0.5, 0.6]).evidence.endswith(" (no interval excluding 0: inconclusive)")
    empty = criteria.s5_efficiency(ctx_of(runs([1.0], "jaccard_per_gpu_hour"), recs=pd.DataFrame(),
                                          baseline=runs([1.0], "jaccard_per_gpu_hour")), H)
    assert whole(empty) == ("S", "a claim", INC, "UNet: no completed grid run that learned", True)


# ------------------------------------------------------------------------------------------------- S6
def test_patch_halves_are_the_seed_0_permutation_split_at_n_over_2():
    for n in (4, 5, 9):
        perm = np.random.default_rng(0).permutation(n)
        first, second = criteria._patch_halves(n)
        assert first.tolist() == sorted(perm[: n // 2].tolist()) and second.tolist() == sorted(perm[n // 2:].tolist())


def patch_runs(cells: dict[tuple[float, int], list[list[float]]], union: float = 100.0, arch: str = "UNet",
               **cols) -> pd.DataFrame:
    """One run per list of per-patch intersections, at its (lr, batch) cell, unions all ``union``."""
    rows = [{"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": s, "status": "completed",
             "exp_id": f"{arch}-{lr}-{bs}-{s}", "best_val_jaccard": 0.5,
             "val_patch_intersection": list(map(float, i)), "val_patch_union": [union] * len(i), **cols}
            for (lr, bs), seeds in cells.items() for s, i in enumerate(seeds)]
    return pd.DataFrame(rows)


def s6_by_hand(cells: dict[tuple[float, int], list[list[float]]], union: float | dict, n_boot: int
               ) -> tuple[str, float, float]:
    """S6's documented estimate written out: (text head, low, high) for one architecture (``union``: one
    value for every patch, or per cell the unions of its runs)."""
    keys = list(cells)
    inter = np.array([np.mean(np.array(cells[k], dtype=float), axis=0) for k in keys])
    uni = (np.full(inter.shape, union) if not isinstance(union, dict) else
           np.array([np.mean(np.array(union[k], dtype=float), axis=0) for k in keys]))
    n = inter.shape[1]
    perm = np.random.default_rng(0).permutation(n)
    sel, est = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    top = int(np.argmax((inter[:, sel].sum(1) + 1) / (uni[:, sel].sum(1) + 1)))
    held = (inter[:, est].sum(1) + 1) / (uni[:, est].sum(1) + 1)
    idx = est[np.random.default_rng(1).integers(0, est.size, size=(n_boot, est.size))]
    boots = (inter[:, idx].sum(2) + 1) / (uni[:, idx].sum(2) + 1)
    lo, hi = np.quantile(boots[top] - np.median(boots, axis=0), [0.025, 0.975])
    lr, bs = keys[top]
    diff = held[top] - np.median(held)
    head = (f"lr {lr:.0e} bs {bs} chosen on {sel.size} patches; on the other {est.size} its J {held[top]:.3f} vs the "
            f"median of {len(keys)} learned cells {np.median(held):.3f}: {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired "
            f"bootstrap over {est.size} held-out val patches)")
    return head, float(lo), float(hi)


def _s6(frame: pd.DataFrame, archs: tuple[str, ...] = ("UNet",), n_boot: int = 200) -> common.Verdict:
    return criteria.s6_recommendations(ctx_of(frame, archs=archs, n_boot=n_boot), H)


def test_s6_supported_whole_evidence_with_replicates():
    cells = {(1e-3, 8): [[80, 90, 85, 95, 70, 88], [82, 91, 84, 96, 72, 86]],
             (5e-4, 8): [[50, 60, 55, 52, 58, 61], [51, 59, 57, 50, 60, 62]],
             (1e-3, 16): [[60, 65, 62, 70, 61, 66], [59, 64, 63, 71, 60, 65]]}
    head, lo, hi = s6_by_hand(cells, 100.0, 200)
    assert head.startswith("lr 1e-03 bs 8 chosen on 3 patches; on the other 3") and lo > 0
    assert whole(_s6(patch_runs(cells))) == ("S", "a claim", SUP, f"UNet: {head}", True)


def test_s6_one_run_per_cell_and_within_noise_say_so():
    cells = {(1e-3, 8): [[80, 40, 85, 30, 70, 88]], (5e-4, 8): [[50, 60, 55, 52, 58, 61]],
             (1e-3, 16): [[60, 65, 62, 70, 61, 66]], (5e-4, 16): [[10, 95, 20, 99, 15, 90]]}
    head, lo, hi = s6_by_hand(cells, 100.0, 300)
    assert lo < 0 < hi
    assert whole(_s6(patch_runs(cells), n_boot=300)) == (
        "S", "a claim", INC, f"UNet: {head}; one run per cell, so the spread between training runs is unknown - within "
        "noise of the median cell (inconclusive)", True)


def test_s6_worse_than_the_median_on_held_out_patches_is_not_supported():
    """The cell best on the selection half is the worst on the other half: the whole interval is below 0."""
    n = 8
    sel = np.sort(np.random.default_rng(0).permutation(n)[: n // 2])
    lucky = np.full(n, 10.0)
    lucky[sel] = 99.0
    cells = {(1e-3, 8): [list(lucky)], (5e-4, 8): [[50.0] * n], (1e-3, 16): [[60.0] * n]}
    head, lo, hi = s6_by_hand(cells, 100.0, 100)
    assert hi < 0
    v = _s6(patch_runs(cells), n_boot=100)
    assert whole(v) == ("S", "a claim", NOT, f"UNet: {head}; one run per cell, so the spread between training runs is "
                        "unknown", True)


def test_s6_needs_two_cells_and_four_equal_patch_lists():
    why = "needs 2+ learned cells with per-patch scores of equal length (none to split)"
    four = {(1e-3, 8): [[80, 90, 85, 95]], (5e-4, 8): [[50, 60, 55, 52]]}
    assert _s6(patch_runs(four)).evidence.startswith("UNet: lr 1e-03 bs 8 chosen on 2 patches; on the other 2")
    for cells in ({(1e-3, 8): [[80, 90, 85]], (5e-4, 8): [[50, 60, 55]]},  # 3 patches
                  {(1e-3, 8): [[80, 90, 85, 95], [80, 90, 85, 95]]},  # one cell
                  {(1e-3, 8): [[80, 90, 85, 95]], (5e-4, 8): [[50, 60, 55, 52, 40]]}):  # unequal lengths
        assert whole(_s6(patch_runs(cells))) == ("S", "a claim", INC, f"UNet: {why}", True)
    no_union = patch_runs(four).drop(columns="val_patch_union")
    assert _s6(no_union).evidence == f"UNet: {why}"
    no_inter = patch_runs(four).drop(columns="val_patch_intersection")
    assert _s6(no_inter).evidence == f"UNet: {why}"
    # a run that did not learn is not a cell: with it, still one learned cell
    mixed = pd.concat([patch_runs({(1e-3, 8): [[80, 90, 85, 95]]}),
                       patch_runs({(5e-4, 8): [[50, 60, 55, 52]]}, learned=False)], ignore_index=True)
    assert _s6(mixed).evidence == f"UNet: {why}"


def test_s6_architectures_without_learned_or_completed_runs():
    cells = {(1e-3, 8): [[80, 90, 85, 95], [81, 91, 86, 96]], (5e-4, 8): [[50, 60, 55, 52], [51, 61, 54, 53]]}
    frame = pd.concat([patch_runs(cells), patch_runs({(1e-3, 8): [[1, 1, 1, 1]]}, arch="X", learned=False)],
                      ignore_index=True)
    frame["learned"] = frame["learned"].astype(object).where(frame["architecture"] == "X", None)
    v = _s6(frame, archs=("UNet", "X", "Y"))
    head = s6_by_hand(cells, 100.0, 200)[0]
    assert whole(v) == ("S", "a claim", NOT, f"UNet: {head}; X: no run learned; Y: no completed runs", True)
    none = _s6(frame, archs=("Y",))
    assert whole(none) == ("S", "a claim", INC, "Y: no completed runs", True)
    assert whole(_s6(frame, archs=())) == ("S", "a claim", INC, "no completed runs", True)


def test_s6_selects_by_the_pooled_ratio_with_its_plus_one_smoothing():
    """Selection half (patches 0 and 2 of 4, seed 0) sums (I, U): (0, 2), (2, 5), (3, 7): (I + 1) / (U + 1) is
    1/3, 1/2, 1/2, so the first of the two at 1/2 is chosen; (I + 2) / (U + 1), (I - 1) / (U + 1), (I + 1) / (U + 2)
    or (I + 1) / (U - 1) would choose another. The held-out half tells the three apart."""
    inter = {(1e-3, 8): [[0, 5, 0, 5]], (5e-4, 8): [[1, 6, 1, 6]], (1e-3, 16): [[1, 7, 2, 7]]}
    union = {(1e-3, 8): [[1, 10, 1, 10]], (5e-4, 8): [[2, 10, 3, 10]], (1e-3, 16): [[3, 10, 4, 10]]}
    frame = patch_runs(inter)
    frame["val_patch_union"] = [list(map(float, union[(r["learning_rate"], r["batch_size"])][0]))
                                for r in frame.to_dict("records")]
    head, lo, hi = s6_by_hand(inter, union, 100)
    assert head.startswith("lr 5e-04 bs 8 chosen on 2 patches; on the other 2 its J 0.619 vs the median of 3 learned "
                           "cells 0.619: +0.000 [")  # (12 + 1) / (20 + 1), the median of 11/21, 13/21, 15/21
    v = _s6(frame, n_boot=100)
    assert whole(v) == ("S", "a claim", INC, f"UNet: {head}; one run per cell, so the spread between training runs is "
                        "unknown - within noise of the median cell (inconclusive)", True)


def test_s6_runs_per_cell_is_the_most_any_cell_has():
    cells = {(1e-3, 8): [[80, 90, 85, 95, 70, 88], [82, 91, 84, 96, 72, 86]], (5e-4, 8): [[50, 60, 55, 52, 58, 61]]}
    v = _s6(patch_runs(cells))
    assert v.evidence == f"UNet: {s6_by_hand(cells, 100.0, 200)[0]}" and v.verdict == SUP


def test_s4_and_s5_thresholds_are_0_on_intervals_without_spread():
    """Equal seeds on both sides: the interval is the difference itself, [d, d]."""
    grid = runs([0.7, 0.72], "best_val_jaccard", best_epoch=[10.5, 10.5])
    for base_epochs, expected in (([10, 10], NOT), ([11, 11], SUP)):
        base = runs([0.6, 0.6], "best_val_jaccard", prefix="b", best_epoch=base_epochs)
        v = criteria.s4_convergence(ctx_of(grid, baseline=base), H)
        assert v.verdict == expected, v.evidence
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best", "learning_rate": 1e-3, "batch_size": 8,
                          "jaccard_per_gpu_hour": 1.0}])
    for grid_eff, expected in ((0.5, SUP), (0.1, NOT)):
        v = criteria.s5_efficiency(ctx_of(runs([grid_eff] * 2, "jaccard_per_gpu_hour"), recs=recs,
                                          baseline=runs([0.2, 0.2], "jaccard_per_gpu_hour", prefix="b")), H)
        assert v.verdict == expected, v.evidence


def _paired_boot(a: tuple[list[float], list[float], float], b: tuple[list[float], list[float], float],
                 n_boot: int) -> tuple[float, float, float]:
    """The documented paired percentile bootstrap over patches of pooled (I + 1) / (U + 1) / divisor, one run
    a side, seed 0, written out: (diff, low, high)."""
    idx = np.random.default_rng(0).integers(0, len(a[0]), size=(n_boot, len(a[0])))

    def pooled(run: tuple[list[float], list[float], float], at: np.ndarray | slice) -> np.ndarray:
        i, u = np.asarray(run[0])[at], np.asarray(run[1])[at]
        return (i.sum(-1) + 1) / (u.sum(-1) + 1) / run[2]

    lo, hi = np.quantile(pooled(a, idx) - pooled(b, idx), [0.025, 0.975])
    return float(pooled(a, slice(None)) - pooled(b, slice(None))), float(lo), float(hi)


def test_s2_and_s5_one_run_a_side_bootstrap_the_patches_ctx_n_boot_times():
    """With one run a side the Jaccard and Jaccard per hour get a paired bootstrap over patches, run
    ctx.n_boot (here 300) times: the interval differs from the default 2000's."""
    gi, bi = [50.0, 70, 60, 90, 40, 80], [45.0, 72, 50, 70, 41, 60]
    union = [100.0] * 6
    grid = runs([0.7], "best_val_jaccard", val_patch_intersection=[gi], val_patch_union=[union],
                total_train_seconds=[1800.0], jaccard_per_gpu_hour=[1.4])
    base = runs([0.6], "best_val_jaccard", prefix="b", val_patch_intersection=[bi], val_patch_union=[union],
                total_train_seconds=[3600.0], jaccard_per_gpu_hour=[0.6])
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best", "learning_rate": 1e-3, "batch_size": 8,
                          "jaccard_per_gpu_hour": 1.4}])
    ctx = ctx_of(grid, baseline=base, recs=recs, n_boot=300)
    d, lo, hi = _paired_boot((gi, union, 1.0), (bi, union, 1.0), 300)
    assert _paired_boot((gi, union, 1.0), (bi, union, 1.0), 2000)[1:] != (lo, hi)
    assert whole(criteria.s2_performance(ctx, H)) == (
        "S", "a claim", SUP, f"UNet: best J 0.700 vs baseline 0.600: difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
        "(paired bootstrap over 6 val patches); maintained if the interval lies above -0.01", True)
    d, lo, hi = _paired_boot((gi, union, 0.5), (bi, union, 1.0), 300)
    assert whole(criteria.s5_efficiency(ctx, H)) == (
        "S", "a claim", SUP, f"UNet: best configuration 1.4 vs baseline 0.6 J per GPU-hour; difference {d:+.2g} "
        f"[{lo:+.2g}, {hi:+.2g}] (paired bootstrap over 6 val patches)", True)


def test_s6_goes_on_after_an_architecture_it_cannot_split():
    one_cell = patch_runs({(1e-3, 8): [[80, 90, 85, 95]]}, arch="X")
    cells = {(1e-3, 8): [[80, 90, 85, 95, 70, 88], [82, 91, 84, 96, 72, 86]],
             (5e-4, 8): [[50, 60, 55, 52, 58, 61], [51, 59, 57, 50, 60, 62]]}
    v = _s6(pd.concat([one_cell, patch_runs(cells)], ignore_index=True), archs=("X", "UNet"))
    assert whole(v) == ("S", "a claim", INC, "X: needs 2+ learned cells with per-patch scores of equal length (none to "
                        f"split); UNet: {s6_by_hand(cells, 100.0, 200)[0]}", True)


def test_s6_bootstrap_smooths_each_cell_by_its_own_union():
    """Unions that differ between cells: (I + 1) / (U + 1) per resample is not a shift common to all cells."""
    inter = {(1e-3, 8): [[80, 90, 85, 95, 70, 88]], (5e-4, 8): [[50, 60, 55, 52, 58, 61]],
             (1e-3, 16): [[30, 20, 25, 35, 28, 22]]}
    union = {(1e-3, 8): [[100, 120, 110, 130, 90, 100]], (5e-4, 8): [[60, 70, 80, 60, 90, 70]],
             (1e-3, 16): [[300, 200, 250, 350, 280, 220]]}
    frame = patch_runs(inter)
    frame["val_patch_union"] = [list(map(float, union[(r["learning_rate"], r["batch_size"])][0]))
                                for r in frame.to_dict("records")]
    head = s6_by_hand(inter, union, 200)[0]
    assert whole(_s6(frame)) == ("S", "a claim", INC, f"UNet: {head}; one run per cell, so the spread between training "
                                 "runs is unknown - within noise of the median cell (inconclusive)", True)


def test_s4_and_s5_number_formats_on_nan_and_small_values():
    grid = runs([0.7, 0.72], "best_val_jaccard", best_epoch=[3, 4])
    base = runs([0.6, 0.6], "best_val_jaccard", prefix="b", best_epoch=[math.nan, math.nan])
    assert whole(criteria.s4_convergence(ctx_of(grid, baseline=base), H)) == (
        "S", "a claim", INC, "UNet: the baseline has no best epoch recorded, so its convergence is unknown", True)
    g, b = [2e-5, 2.2e-5], [1e-5, 1.1e-5]
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best", "learning_rate": 1e-3, "batch_size": 8,
                          "jaccard_per_gpu_hour": 1.0}])
    v = criteria.s5_efficiency(ctx_of(runs(g, "jaccard_per_gpu_hour"), recs=recs,
                                      baseline=runs(b, "jaccard_per_gpu_hour", prefix="b")), H)
    assert whole(v) == ("S", "a claim", SUP, "UNet: best configuration 2.1e-05 vs baseline 1.1e-05 J per GPU-hour; "
                        f"difference {welch_text(g, b, '{:+.2g}')}", True)
    assert "e-05 [+3.6e-06, " in v.evidence
