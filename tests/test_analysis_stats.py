"""Statistics on tables with known answers: a textbook ANOVA, constructed effects, CI coverage."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpc_unet.analysis import stats
from hpc_unet.analysis.load import FACTORS, derive
from hpc_unet.analysis.synthetic import default_jaccard, make_results, spec_text
from hpc_unet.manifest import build_rows
from hpc_unet.spec import validate_spec


def grid(replicates: int = 1, **kw) -> pd.DataFrame:
    spec = validate_spec(tomllib.loads(spec_text(replicates=replicates, **kw)), Path("."))
    return build_rows(spec)


def completed(replicates: int = 1, seed: int = 1, **kw) -> pd.DataFrame:
    frame, _ = make_results(grid(replicates), seed=seed, **kw)
    frame = derive(frame)
    return frame[frame["status"] == "completed"]


def test_two_way_anova_matches_montgomery_battery_example():
    """Montgomery, Design and Analysis of Experiments, Example 5.1 (battery life, 3 plate materials x
    3 temperatures, 4 replicates), ANOVA table 5.5: Material SS 10,683.72 (df 2, F 7.91), Temperature
    SS 39,118.72 (df 2, F 28.97), Interaction SS 9,613.78 (df 4, F 3.56), Error SS 18,230.75 (df 27,
    MS 675.21). Material and temperature play the roles of architecture and learning rate here.
    """
    life = {
        1: {15: [130, 155, 74, 180], 70: [34, 40, 80, 75], 125: [20, 70, 82, 58]},
        2: {15: [150, 188, 159, 126], 70: [136, 122, 106, 115], 125: [25, 70, 58, 45]},
        3: {15: [138, 110, 168, 160], 70: [174, 120, 150, 139], 125: [96, 104, 82, 60]},
    }
    rows = [(f"M{m}", float(t), 8, y) for m, by_t in life.items() for t, ys in by_t.items() for y in ys]
    frame = pd.DataFrame(rows, columns=[*FACTORS, "life"])
    result = stats.factorial_anova(frame, "life")
    t = result.table
    assert result.skipped == ""
    assert "batch size has fewer than 2 levels with data; left out" in result.notes
    assert t.loc["architecture", "sum_sq"] == pytest.approx(10683.72, abs=0.01)
    assert t.loc["learning rate", "sum_sq"] == pytest.approx(39118.72, abs=0.01)
    assert t.loc["architecture x learning rate", "sum_sq"] == pytest.approx(9613.78, abs=0.01)
    assert t.loc["residual", "sum_sq"] == pytest.approx(18230.75, abs=0.01)
    assert list(t["df"]) == [2, 2, 4, 27]
    assert t.loc["architecture", "F"] == pytest.approx(7.91, abs=0.005)
    assert t.loc["learning rate", "F"] == pytest.approx(28.97, abs=0.005)
    assert t.loc["architecture x learning rate", "F"] == pytest.approx(3.56, abs=0.005)
    assert result.mse == pytest.approx(675.21, abs=0.005)
    eta = t.loc["architecture", "partial_eta_sq"]
    assert eta == pytest.approx(10683.72 / (10683.72 + 18230.75), rel=1e-4)


def test_anova_detects_constructed_effects_and_not_the_null_factor():
    runs = completed(seed=1)
    jac = stats.factorial_anova(runs, "best_val_jaccard")
    assert jac.p("learning_rate") < 1e-6 and jac.p("architecture") < 1e-3
    assert jac.p("batch_size") > 0.05  # no batch effect was built into the Jaccard
    assert "three" not in jac.formula and jac.df_resid == 2 * 3 * 2  # 3-way term is the error
    std = stats.factorial_anova(runs, "val_loss_std")
    assert std.p("batch_size") < 1e-6
    assert std.table.loc["batch size", "partial_eta_sq"] > 0.9


def test_anova_with_replicates_fits_the_full_model():
    runs = completed(replicates=2, seed=2, seed_sd=0.01)
    result = stats.factorial_anova(runs, "best_val_jaccard")
    assert "architecture x learning rate x batch size" in result.table.index
    assert result.df_resid == 36  # 72 runs - 36 cells


def test_anova_degrades_with_reasons():
    runs = completed(seed=3)
    one_per_lr = runs[(runs["architecture"] == "UNet") & (runs["batch_size"] == 8)]
    result = stats.factorial_anova(one_per_lr, "best_val_jaccard")  # only lr varies, one run per lr
    assert result.table is None and result.skipped.startswith("residual degrees of freedom = 0")
    single = runs[(runs["architecture"] == "UNet") & (runs["batch_size"] == 8) & (runs["learning_rate"] == 1e-3)]
    assert "no factor has 2 or more levels" in stats.factorial_anova(single, "best_val_jaccard").skipped
    # a whole (architecture, lr) block missing makes that interaction inestimable: dropped, main effects kept
    holey = runs[~((runs["architecture"] == "UNet") & (runs["learning_rate"] == 5e-3))]
    result = stats.factorial_anova(holey, "best_val_jaccard")
    assert any("architecture x learning rate dropped" in n for n in result.notes)
    assert result.p("learning_rate") < 1e-6


def test_two_factors_one_run_per_cell_use_the_interaction_as_error():
    frame = pd.DataFrame({"architecture": ["UNet"] * 4 + ["Attention_UNet"] * 4,
                          "learning_rate": [1e-4, 5e-4, 1e-3, 5e-3] * 2, "batch_size": [8] * 8,
                          "y": [0.1, 0.2, 0.3, 0.4, 0.2, 0.3, 0.45, 0.5]})
    result = stats.factorial_anova(frame, "y")
    assert list(result.table.index) == ["architecture", "learning rate", "residual"]
    assert result.df_resid == 3


def test_t_intervals_cover_the_true_cell_means():
    runs = completed(replicates=3, seed=4, seed_sd=0.02)
    cells = stats.cell_intervals(runs, "best_val_jaccard")
    assert (cells["ci_method"] == "t over 3 seeds").all()
    truth = np.array([default_jaccard(a, lr, bs) for a, lr, bs in cells[list(FACTORS)].itertuples(index=False)])
    covered = (cells["ci_low"] <= truth) & (truth <= cells["ci_high"])
    assert covered.mean() >= 0.85  # nominal 95% over 36 cells


def test_patch_bootstrap_covers_the_true_value_of_single_runs():
    runs = completed(seed=5)
    cells = stats.cell_intervals(runs, "best_val_jaccard", n_boot=500)
    assert cells["ci_method"].str.startswith("bootstrap over 60 val patches").all()
    truth = np.array([default_jaccard(a, lr, bs) for a, lr, bs in cells[list(FACTORS)].itertuples(index=False)])
    covered = (cells["ci_low"] <= truth) & (truth <= cells["ci_high"])
    assert covered.mean() >= 0.85
    assert (cells["ci_low"] <= cells["mean"]).all() and (cells["mean"] <= cells["ci_high"]).all()


def test_bootstrap_jaccard_definition():
    inter, union = np.array([10.0, 20.0, 30.0]), np.array([20.0, 40.0, 50.0])
    point, lo, hi = stats.bootstrap_jaccard(inter, union, n_boot=200)
    assert point == pytest.approx(61 / 111)
    assert lo <= point <= hi
    assert np.isnan(stats.bootstrap_jaccard(inter[:1], union[:1])[1])


def test_correlation_sign_of_constructed_tradeoff():
    # stability worse (higher std) where the Jaccard is lower: a negative correlation by construction
    def jac(arch, lr, bs):
        return 0.8 - 0.4 * (32 - bs) / 24 * 0.25

    def std(arch, lr, bs):
        return 0.02 + 0.002 * (32 - bs)

    runs = completed(seed=6, jaccard=jac, stability=std)
    c = stats.correlation(runs, "val_loss_std", "best_val_jaccard")
    assert c["pearson_r"] < -0.5 and c["pearson_p"] < 0.01
    assert c["spearman_rho"] < -0.5 and c["spearman_p"] < 0.01
    assert "at least 3" in stats.correlation(runs.head(2), "val_loss_std", "best_val_jaccard")["note"]


def test_pairwise_architectures_paired_and_holm_corrected():
    runs = completed(seed=7)
    out = stats.pairwise_architectures(runs, "best_val_jaccard")
    assert len(out) == 3 and (out["n_pairs"] == 12).all()
    assert (out["holm_p"] >= out["wilcoxon_p"]).all()
    resunet_vs_unet = out[(out["arch_a"] == "Attention_ResUNet") & (out["arch_b"] == "UNet")].iloc[0]
    assert resunet_vs_unet["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert resunet_vs_unet["holm_p"] < 0.01


def test_icc_needs_replicates_and_is_high_when_settings_dominate():
    assert "replicates >= 2" in stats.icc_oneway(completed(seed=8), "best_val_jaccard")["note"]
    icc = stats.icc_oneway(completed(replicates=3, seed=8, seed_sd=0.005), "best_val_jaccard")
    assert icc["icc"] > 0.9 and icc["cells"] == 36


def test_marginal_means_use_the_anova_error_term():
    runs = completed(seed=9)
    anova = stats.factorial_anova(runs, "best_val_jaccard")
    mm = stats.marginal_means(runs, "best_val_jaccard", anova)
    lr = mm[(mm["factor"] == "learning_rate")]
    assert len(lr) == 4 and lr["ci_method"].str.startswith("ANOVA MSE t").all()
    fallback = stats.marginal_means(runs, "best_val_jaccard", None)
    assert fallback["ci_method"].str.startswith("t over").all()


# --------------------------------------------- exact values from scipy or by hand (issue 21's survivors)
def test_t_interval_uses_n_minus_1_degrees_of_freedom():
    from scipy import stats as sps

    x = np.array([0.61, 0.66, 0.64, 0.70])
    mean, lo, hi = stats.t_interval(x)
    ref = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert mean == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref, rel=1e-12)
    assert all(math.isnan(v) for v in stats.t_interval(x[:1])[1:])


def test_marginal_mean_interval_is_95_percent_with_the_anova_error_term():
    from scipy import stats as sps

    frame = pd.DataFrame({"architecture": ["UNet"] * 4, "learning_rate": [1e-3, 1e-3, 5e-3, 5e-3],
                          "batch_size": [8] * 4, "y": [0.5, 0.7, 0.2, 0.4]})
    anova = stats.Anova(response="y", table=pd.DataFrame({"p": [0.5]}, index=["x"]), df_resid=10.0, mse=0.04)
    got = stats.group_means(frame, "y", ["learning_rate"], anova).set_index("learning_rate")
    half = sps.t.ppf(0.975, 10) * math.sqrt(0.04 / 2)  # mean +- t(0.975, df_E) sqrt(MSE / n), by hand
    assert got.loc[1e-3, "mean"] == pytest.approx(0.6)
    assert (got.loc[1e-3, "ci_low"], got.loc[1e-3, "ci_high"]) == pytest.approx((0.6 - half, 0.6 + half), rel=1e-12)


def test_welch_interval_and_contrast_match_scipy():
    from scipy import stats as sps

    a, b = np.array([0.71, 0.74, 0.69, 0.73, 0.75]), np.array([0.60, 0.66, 0.62])
    d = stats.welch_interval(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    diff, p = stats.contrast(a, b, None)
    assert diff == pytest.approx(a.mean() - b.mean()) and p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    # with an ANOVA error term: t = diff / sqrt(MSE (1/n1 + 1/n2)) on df_E, by hand
    anova = stats.Anova(response="y", table=pd.DataFrame({"p": [0.5]}, index=["x"]), df_resid=12.0, mse=0.001)
    t = (a.mean() - b.mean()) / math.sqrt(0.001 * (1 / 5 + 1 / 3))
    assert stats.contrast(a, b, anova)[1] == pytest.approx(2 * sps.t.sf(abs(t), 12), rel=1e-12)


def test_detrended_std_removes_a_straight_line_only():
    from scipy import stats as sps

    from hpc_unet.train.summary import summarize_history, val_loss_std, val_loss_std_detrended

    x = np.arange(8, dtype=float)
    loss = 1.0 - 0.1 * x + 0.02 * x**2 + np.array([0.01, -0.02, 0.0, 0.03, -0.01, 0.0, 0.02, -0.03])
    fit = sps.linregress(x, loss)
    assert val_loss_std_detrended(loss) == pytest.approx(np.std(loss - (fit.intercept + fit.slope * x)), rel=1e-9)
    assert val_loss_std(loss) == pytest.approx(np.sqrt(np.mean((loss - loss.mean()) ** 2)))
    # overfitting gap = val_loss - train loss (positive when validation is worse), at the best and last epochs
    hist = [{"epoch": e, "loss": 0.5 - 0.1 * e, "val_loss": 0.6 - 0.05 * e, "val_jacard_coef": j, "epoch_seconds": 1.0}
            for e, j in ((1, 0.2), (2, 0.5), (3, 0.4))]
    s = summarize_history(hist, 3)
    assert s["overfit_gap_end"] == pytest.approx((0.6 - 0.15) - (0.5 - 0.3))
    assert s["overfit_gap_best"] == pytest.approx((0.6 - 0.10) - (0.5 - 0.2)) and s["best_epoch"] == 2


def test_bootstrap_needs_one_resample_and_two_patches():
    inter, union = np.array([10.0, 20.0, 30.0]), np.array([20.0, 40.0, 50.0])
    point, lo, hi = stats.bootstrap_jaccard(inter, union, n_boot=1, seed=0)
    idx = np.random.default_rng(0).integers(0, 3, size=(1, 3))  # the one resample, by hand
    one = (inter[idx].sum() + 1) / (union[idx].sum() + 1)
    assert (lo, hi) == pytest.approx((one, one))
    assert math.isnan(stats.bootstrap_jaccard(inter, union, n_boot=0)[1])


def test_contrast_of_single_runs_and_of_nothing():
    from scipy import stats as sps

    anova = stats.Anova(response="y", table=pd.DataFrame({"p": [0.5]}, index=["x"]), df_resid=6.0, mse=0.01)
    diff, p = stats.contrast(np.array([0.8]), np.array([0.5, 0.6]), anova)
    t = (0.8 - 0.55) / math.sqrt(0.01 * (1 + 1 / 2))
    assert diff == pytest.approx(0.25) and p == pytest.approx(2 * sps.t.sf(t, 6), rel=1e-12)
    assert all(math.isnan(v) for v in stats.contrast(np.array([]), np.array([0.5]), anova))
    assert all(math.isnan(v) for v in stats.contrast(np.array([0.5]), np.array([]), anova))


def test_patch_bootstrap_is_paired_only_on_the_same_number_of_patches():
    rng = np.random.default_rng(4)
    u40, u30 = rng.uniform(300, 700, 40), rng.uniform(300, 700, 30)
    paired = stats.patch_bootstrap_difference([(u40 * 0.7, u40, 1.0)], [(u40 * 0.6, u40, 1.0)], n_boot=200)
    unpaired = stats.patch_bootstrap_difference([(u40 * 0.7, u40, 1.0)], [(u30 * 0.6, u30, 1.0)], n_boot=200)
    assert paired.method == "paired bootstrap over 40 val patches"
    assert unpaired.method == "unpaired bootstrap over 40 val patches"
    # a constant ratio on every patch: the paired difference has no spread at all, the unpaired one neither
    assert (paired.low, paired.high) == pytest.approx((0.1, 0.1), abs=1e-3)


def test_difference_with_an_empty_side_has_no_values():
    one = pd.DataFrame({"best_val_jaccard": [0.7, 0.72]})
    none = pd.DataFrame({"best_val_jaccard": [math.nan]})
    for a, b in ((one, none), (none, one)):
        d = stats.difference(a, b, "best_val_jaccard")
        assert d.method == "no values" and math.isnan(d.diff)


def test_unpaired_patch_bootstrap_per_hour_matches_a_hand_computation():
    rng = np.random.default_rng(5)
    ua, ub = rng.uniform(300, 700, 12), rng.uniform(300, 700, 9)
    a, b = (ua * 0.7, ua, 2.0), (ub * 0.5, ub, 4.0)  # the third item divides: Jaccard per hour
    d = stats.patch_bootstrap_difference([a], [b], n_boot=300, seed=7)
    pooled = lambda i, u: (i.sum(axis=-1) + 1) / (u.sum(axis=-1) + 1)  # noqa: E731
    assert d.diff == pytest.approx(pooled(a[0], a[1]) / 2.0 - pooled(b[0], b[1]) / 4.0, rel=1e-12)
    r = np.random.default_rng(7)  # the same draws by hand: a's resamples, then b's
    ia, ib = r.integers(0, 12, size=(300, 12)), r.integers(0, 9, size=(300, 9))
    boots = pooled(a[0][ia], a[1][ia]) / 2.0 - pooled(b[0][ib], b[1][ib]) / 4.0
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), rel=1e-12)


def test_difference_without_an_interval_is_a_minus_b():
    a = pd.DataFrame({"val_loss_std": [0.03]})
    b = pd.DataFrame({"val_loss_std": [0.05]})
    d = stats.difference(a, b, "val_loss_std")
    assert d.diff == pytest.approx(-0.02) and not d.has_interval and "replicate seeds" in d.method


def test_pairwise_with_all_differences_zero():
    frame = pd.DataFrame({"architecture": ["A"] * 3 + ["B"] * 3, "learning_rate": [1e-3, 5e-4, 1e-4] * 2,
                          "batch_size": [8] * 6, "seed": [0] * 6, "y": [0.5, 0.6, 0.7] * 2})
    row = stats.pairwise_architectures(frame, "y").iloc[0]
    assert row["note"] == "all differences are zero" and row["wilcoxon_p"] == 1.0


def test_cell_intervals_of_replicates():
    from scipy import stats as sps

    vals = [0.61, 0.66, 0.70]
    frame = pd.DataFrame({"architecture": ["UNet"] * 3, "learning_rate": [1e-3] * 3, "batch_size": [8] * 3,
                          "y": vals})
    row = stats.cell_intervals(frame, "y").iloc[0]
    sd = math.sqrt(sum((v - np.mean(vals)) ** 2 for v in vals) / 2)  # sample std, by hand
    assert row["std"] == pytest.approx(sd) and row["ci_method"] == "t over 3 seeds"
    ref = sps.t.interval(0.95, 2, loc=np.mean(vals), scale=sd / math.sqrt(3))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ref, rel=1e-12)
