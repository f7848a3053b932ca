"""The statistics functions' whole outputs on small hand-made tables: every column, every row, in order,
against values computed here with scipy, statsmodels or written-out formulas (never the code under test).

Written from mutmut's survivors of ``analysis/stats.py``: a test that only checked one cell of a table let
a renamed column, a lost row order or a boundary moved by one pass.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hpc_unet.analysis import stats


def _anova(df_resid: float, mse: float) -> stats.Anova:
    return stats.Anova(response="y", table=pd.DataFrame({"p": [0.5]}, index=["x"]), df_resid=df_resid, mse=mse)


def _t(x: list[float]) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    lo, hi = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
    return float(x.mean()), float(lo), float(hi)


# ---------------------------------------------------------------------------------------- t-intervals
def test_t_interval_of_one_two_and_blank_values():
    assert stats.t_interval([0.6])[0] == 0.6
    assert all(math.isnan(v) for v in stats.t_interval([0.6])[1:])
    assert stats.t_interval([0.6, 0.7]) == pytest.approx(_t([0.6, 0.7]), rel=1e-12)  # two values are enough
    # an object column with a blank (as read from a CSV with an empty cell) is numbers and a gap
    assert stats.t_interval(pd.Series([0.6, None, 0.7], dtype=object)) == pytest.approx(_t([0.6, 0.7]), rel=1e-12)
    assert all(math.isnan(v) for v in stats.t_interval([]))


# ---------------------------------------------------------------------------------------- group means
FRAME = pd.DataFrame({  # rows deliberately out of order; one run with no value
    "architecture": ["UNet"] * 6,
    "learning_rate": [5e-3, 1e-3, 5e-3, 1e-3, 1e-3, 5e-3],
    "batch_size": [16, 8, 8, 8, 16, 8],
    "y": [0.40, 0.61, 0.30, 0.65, 0.52, np.nan],
})


def test_group_means_with_the_anova_error_term_and_without():
    anova = _anova(1.0, 0.02)  # one residual degree of freedom is enough
    got = stats.group_means(FRAME, "y", ["learning_rate", "batch_size"], anova)
    half1 = sps.t.ppf(0.975, 1) * math.sqrt(0.02 / 1)
    half2 = sps.t.ppf(0.975, 1) * math.sqrt(0.02 / 2)
    m = (0.61 + 0.65) / 2
    expected = pd.DataFrame({
        "learning_rate": [1e-3, 1e-3, 5e-3, 5e-3], "batch_size": [8, 16, 8, 16], "n": [2, 1, 1, 1],
        "mean": [m, 0.52, 0.30, 0.40],
        "ci_low": [m - half2, 0.52 - half1, 0.30 - half1, 0.40 - half1],
        "ci_high": [m + half2, 0.52 + half1, 0.30 + half1, 0.40 + half1],
        "ci_method": ["ANOVA MSE t (df=1)"] * 4})
    pd.testing.assert_frame_equal(got, expected, rtol=1e-12)

    mean2, lo2, hi2 = _t([0.61, 0.65])
    expected_t = pd.DataFrame({
        "learning_rate": [1e-3, 1e-3, 5e-3, 5e-3], "batch_size": [8, 16, 8, 16], "n": [2, 1, 1, 1],
        "mean": [mean2, 0.52, 0.30, 0.40], "ci_low": [lo2, np.nan, np.nan, np.nan],
        "ci_high": [hi2, np.nan, np.nan, np.nan],
        "ci_method": ["t over 2 runs", "none (one run)", "none (one run)", "none (one run)"]})
    for no_error_term in (None, _anova(0.0, 0.02)):  # no ANOVA, or one without residual degrees of freedom
        got = stats.group_means(FRAME, "y", ["learning_rate", "batch_size"], no_error_term)
        pd.testing.assert_frame_equal(got, expected_t, rtol=1e-12)


def test_marginal_means_are_one_long_table_in_factor_order():
    frame = FRAME.dropna().assign(architecture=["UNet", "Attention_UNet", "UNet", "Attention_UNet", "UNet"])
    got = stats.marginal_means(frame, "y", None)
    rows = []
    for factor in ("architecture", "learning_rate", "batch_size"):
        for level, grp in frame.groupby(factor, sort=True):
            mean, lo, hi = _t(grp["y"].tolist())
            rows.append({"metric": "y", "factor": factor, "level": str(level), "n": len(grp), "mean": mean,
                         "ci_low": lo, "ci_high": hi, "ci_method": f"t over {len(grp)} runs"})
    pd.testing.assert_frame_equal(got, pd.DataFrame(rows), rtol=1e-12)
    assert got["level"].tolist()[:2] == ["Attention_UNet", "UNet"] and got.loc[2, "level"] == "0.001"


# ---------------------------------------------------------------------------------------- contrasts
A, B = np.array([0.71, 0.74, 0.69, 0.73]), np.array([0.60, 0.66, 0.62])


def test_contrast_uses_the_error_term_only_when_it_has_degrees_of_freedom_and_variance():
    welch = sps.ttest_ind(A, B, equal_var=False).pvalue
    t = (A.mean() - B.mean()) / math.sqrt(0.001 * (1 / 4 + 1 / 3))
    assert stats.contrast(A, B, _anova(1.0, 0.001))[1] == pytest.approx(2 * sps.t.sf(t, 1), rel=1e-12)
    assert stats.contrast(A, B, _anova(0.0, 0.001))[1] == pytest.approx(welch, rel=1e-12)  # no df: Welch
    assert stats.contrast(A, B, _anova(6.0, 0.0))[1] == pytest.approx(welch, rel=1e-12)    # no MSE: Welch


@pytest.mark.parametrize(("a", "b", "welch"), [
    ([0.70, 0.75], [0.60, 0.60], True),   # two values a side, one side without spread
    ([0.60, 0.60], [0.70, 0.75], True),
    ([0.70, 0.75], [0.60, 0.66], True),
    ([0.70, 0.70], [0.60, 0.60], False),  # no spread on either side: no test
    ([0.7, 0.7, 0.7], [0.6, 0.6, 0.6], False),  # ... also when the float mean makes a std of 1e-16
    ([0.70], [0.60, 0.66, 0.61], False),  # one value: no test
    ([0.60, 0.66, 0.61], [0.70], False),
])
def test_contrast_without_an_error_term_needs_two_values_a_side_and_some_spread(a, b, welch):
    a, b = np.array(a), np.array(b)
    diff, p = stats.contrast(a, b, None)
    assert diff == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    if welch:
        assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    else:
        assert math.isnan(p)


def test_no_spread_is_equality_up_to_rounding_on_both_sides_of_it():
    assert stats.no_spread(np.array([0.7, 0.7, 0.7])) and np.array([0.7, 0.7, 0.7]).std() > 0
    assert stats.no_spread(np.array([0.5, 0.5 * (1 + 5e-13)]))
    assert not stats.no_spread(np.array([0.5, 0.5 * (1 + 5e-12)]))
    assert stats.no_spread(np.array([200.0, 200.0 + 1e-10])) and not stats.no_spread(np.array([200.0, 200.0 + 1e-9]))
    assert stats.no_spread(np.array([])) and stats.no_spread(np.array([3.0]))


def test_welch_interval_without_spread_is_the_difference_itself():
    got = stats.welch_interval(np.array([0.7, 0.7, 0.7]), np.array([0.5, 0.5]))
    assert got == stats.Difference(pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2),
                                   "t over seeds (3 vs 2), no spread")
    d = stats.welch_interval(A, B)
    ci = sps.ttest_ind(A, B, equal_var=False).confidence_interval(0.95)
    assert (d.diff, d.low, d.high) == pytest.approx((A.mean() - B.mean(), ci.low, ci.high), rel=1e-12)
    assert d.method == "Welch t over seeds (4 vs 3 runs)"
    assert stats.Difference(0.1).text() == "+0.100 (none)"
    assert stats.Difference(0.1, 0.05, 0.15, "x").text("{:.2f}") == "0.10 [0.05, 0.15] (x)"


# ---------------------------------------------------------------------------------------- correlations
def test_correlations_over_all_runs_then_each_architecture_in_order():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"architecture": ["UNet"] * 5 + ["Attention_UNet"] * 5 + ["UNet", "Attention_UNet"],
                          "x": rng.random(12), "y": rng.random(12)})
    got = stats.correlations(frame, "x", "y")
    rows = []
    for scope, sub in (("all runs", frame), ("Attention_UNet", frame[frame["architecture"] == "Attention_UNet"]),
                       ("UNet", frame[frame["architecture"] == "UNet"])):
        pr, sr = sps.pearsonr(sub["x"], sub["y"]), sps.spearmanr(sub["x"], sub["y"])
        rows.append({"scope": scope, "n": len(sub), "pearson_r": pr.statistic, "pearson_p": pr.pvalue,
                     "spearman_rho": sr.statistic, "spearman_p": sr.pvalue, "note": ""})
    pd.testing.assert_frame_equal(got, pd.DataFrame(rows), rtol=1e-12)


# ---------------------------------------------------------------------------------------- pairwise
def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: sort, multiply by (m - rank), running maximum, cap at 1."""
    order = np.argsort(p)
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        out[i] = min(1.0, running)
    return out


def test_pairwise_architectures_whole_table():
    # three architectures on the same (lr, batch, seed) cells; C is on fewer cells; rows out of order
    cells = [(1e-3, 8), (1e-3, 16), (5e-3, 8), (5e-3, 16), (1e-2, 8)]
    a = [0.70, 0.72, 0.65, 0.69, 0.60]
    b = [0.61, 0.70, 0.58, 0.60, 0.57]
    rows = [{"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": 0, "y": v}
            for arch, vals in (("B_net", b), ("A_net", a)) for (lr, bs), v in zip(cells, vals, strict=True)]
    rows.append({"architecture": "C_net", "learning_rate": 1e-3, "batch_size": 8, "seed": 0, "y": 0.5})
    # a duplicate of A's first cell: the pivot averages it (0.70 and 0.74 -> 0.72)
    rows.append({"architecture": "A_net", "learning_rate": 1e-3, "batch_size": 8, "seed": 0, "y": 0.74})
    a[0] = 0.72
    got = stats.pairwise_architectures(pd.DataFrame(rows[::-1]), "y")

    d = np.array(a) - np.array(b)
    # the pairs in pivot order: rows sorted by (lr, batch)
    order = np.lexsort((np.array([c[1] for c in cells]), np.array([c[0] for c in cells])))
    d_sorted = d[order]
    p_w, p_t = sps.wilcoxon(d_sorted).pvalue, sps.ttest_rel(np.array(a)[order], np.array(b)[order]).pvalue
    expected = pd.DataFrame([
        {"metric": "y", "arch_a": "A_net", "arch_b": "B_net", "n_pairs": 5, "mean_diff": d.mean(),
         "median_diff": float(np.median(d)), "wilcoxon_p": p_w, "paired_t_p": p_t, "holm_p": _holm([p_w])[0],
         "note": ""},
        {"metric": "y", "arch_a": "A_net", "arch_b": "C_net", "n_pairs": 1, "mean_diff": 0.72 - 0.5,
         "median_diff": 0.72 - 0.5, "wilcoxon_p": np.nan, "paired_t_p": np.nan, "holm_p": np.nan,
         "note": "1 shared cell(s); at least 2 needed"},
        {"metric": "y", "arch_a": "B_net", "arch_b": "C_net", "n_pairs": 1, "mean_diff": 0.61 - 0.5,
         "median_diff": 0.61 - 0.5, "wilcoxon_p": np.nan, "paired_t_p": np.nan, "holm_p": np.nan,
         "note": "1 shared cell(s); at least 2 needed"},
    ])
    pd.testing.assert_frame_equal(got, expected, rtol=1e-12)


def test_pairwise_architectures_holm_over_pairs_ties_and_constant_differences():
    rows = []
    base = [0.50, 0.55, 0.60, 0.52, 0.58, 0.62, 0.57, 0.51]
    shifts = {"A": 0.0, "B": 0.0, "C": [0.03, 0.05, 0.01, 0.04, 0.02, 0.06, 0.035, 0.045]}
    for arch, shift in shifts.items():
        for k, v in enumerate(base):
            rows.append({"architecture": arch, "learning_rate": 1e-3 * (k + 1), "batch_size": 8, "seed": 0,
                         "y": v + (shift[k] if isinstance(shift, list) else shift)})
    # D is A plus a constant: every difference equal up to rounding, no spread for the paired t-test
    rows += [{**r, "architecture": "D", "y": r["y"] + 0.07} for r in rows if r["architecture"] == "A"]
    diffs = np.array([r["y"] for r in rows if r["architecture"] == "D"]) - np.array(base)
    assert diffs.std() > 0  # rounding: (v + 0.07) - v is not 0.07 for every v
    got = stats.pairwise_architectures(pd.DataFrame(rows), "y").set_index(["arch_a", "arch_b"])
    assert list(got.index) == [("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D"), ("C", "D")]
    ab = got.loc[("A", "B")]
    assert ab["note"] == "all differences are zero" and ab["wilcoxon_p"] == 1.0 and ab["paired_t_p"] == 1.0
    ad = got.loc[("A", "D")]
    assert math.isnan(ad["paired_t_p"]) and ad["n_pairs"] == 8 and ad["median_diff"] == pytest.approx(-0.07)
    raw = got["wilcoxon_p"].tolist()
    assert got["holm_p"].tolist() == pytest.approx(_holm(raw), rel=1e-12)
    c = np.array(shifts["C"])
    assert got.loc[("A", "C"), "wilcoxon_p"] == pytest.approx(sps.wilcoxon(-c).pvalue, rel=1e-12)
    assert got.loc[("A", "C"), "paired_t_p"] == pytest.approx(sps.ttest_1samp(-c, 0).pvalue, rel=1e-12)


# ---------------------------------------------------------------------------------------- ICC(1)
def test_icc_oneway_with_unequal_replicates_by_hand():
    groups = {1e-3: [0.60, 0.64], 5e-3: [0.70, 0.73, 0.71], 1e-2: [0.50, 0.55, 0.52, 0.49]}
    frame = pd.DataFrame([{"architecture": "UNet", "learning_rate": lr, "batch_size": 8, "y": v}
                          for lr, vals in groups.items() for v in vals]
                         + [{"architecture": "UNet", "learning_rate": 2e-2, "batch_size": 8, "y": 0.9}])  # 1 run
    got = stats.icc_oneway(frame, "y")
    f = sps.f_oneway(*groups.values())
    sizes = [len(v) for v in groups.values()]
    n_total, k = sum(sizes), len(sizes)
    n0 = (n_total - sum(s * s for s in sizes) / n_total) / (k - 1)  # 52 / 18 for sizes 2, 3, 4
    assert n0 == pytest.approx(52 / 18)
    msw = sum((len(v) - 1) * np.var(v, ddof=1) for v in groups.values()) / (n_total - k)
    icc = (f.statistic - 1) / (f.statistic + n0 - 1)  # ICC(1) from the F ratio MSB / MSW
    assert got == {"cells": 3, "runs": 9, "icc": pytest.approx(icc, rel=1e-10),
                   "within_sd": pytest.approx(math.sqrt(msw), rel=1e-12), "note": ""}


def test_icc_oneway_degrades_with_its_reason():
    one = pd.DataFrame({"architecture": "UNet", "learning_rate": [1e-3, 1e-3, 5e-3], "batch_size": 8,
                        "y": [0.6, 0.62, 0.7]})
    assert stats.icc_oneway(one, "y") == {
        "cells": 1, "runs": 2, "icc": pytest.approx(math.nan, nan_ok=True),
        "within_sd": pytest.approx(math.nan, nan_ok=True),
        "note": "1 cell(s) with >= 2 completed seeds; repeated runs (replicates >= 2) are needed to judge "
                "consistency"}
    same = pd.DataFrame({"architecture": "UNet", "learning_rate": [1e-3, 1e-3, 5e-3, 5e-3], "batch_size": 8,
                         "y": 0.6})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 on the way to "undefined"
        got = stats.icc_oneway(same, "y")
    assert math.isnan(got["icc"]) and got["within_sd"] == 0.0


# ---------------------------------------------------------------------------------------- correlation
NAN = pytest.approx(math.nan, nan_ok=True)


@pytest.mark.parametrize(("x", "y", "note"), [
    ([0.1, 0.2], [0.5, 0.7], "only 2 runs; a correlation needs at least 3"),
    ([0.1, 0.1, 0.1, 0.1], [0.5, 0.7, 0.6, 0.8], "one of the variables is constant"),
    ([0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5], "one of the variables is constant"),
])
def test_correlation_degrades_with_its_reason(x, y, note):
    got = stats.correlation(pd.DataFrame({"x": x, "y": y}), "x", "y")
    assert got == {"n": len(x), "pearson_r": NAN, "pearson_p": NAN, "spearman_rho": NAN, "spearman_p": NAN,
                   "note": note}


@pytest.mark.parametrize(("x", "y"), [
    ([0.1, 0.3, 0.2], [0.5, 0.9, 0.6]),               # three runs are enough
    ([0.1, 0.2, 0.1, 0.2], [0.5, 0.6, 0.8, 0.7]),      # two distinct values a side are enough
    ([0.1, 0.2, 0.3, 0.25], [0.5, 0.6, 0.6, 0.5]),
])
def test_correlation_at_its_smallest_defined_case(x, y):
    got = stats.correlation(pd.DataFrame({"x": x, "y": y}), "x", "y")
    pr, sr = sps.pearsonr(x, y), sps.spearmanr(x, y)
    assert got == {"n": len(x), "pearson_r": pytest.approx(pr.statistic, rel=1e-12),
                   "pearson_p": pytest.approx(pr.pvalue, rel=1e-12),
                   "spearman_rho": pytest.approx(sr.statistic, rel=1e-12),
                   "spearman_p": pytest.approx(sr.pvalue, rel=1e-12), "note": ""}


def test_correlation_reads_numbers_stored_as_text():
    got = stats.correlation(pd.DataFrame({"x": ["0.1", "0.3", "0.2", ""], "y": ["0.5", "0.9", "0.6", "0.7"]})
                            .replace("", np.nan), "x", "y")
    assert got["n"] == 3 and got["pearson_r"] == pytest.approx(sps.pearsonr([0.1, 0.3, 0.2], [0.5, 0.9, 0.6])[0])


# ---------------------------------------------------------------------------------------- per-hour difference
def test_difference_of_single_runs_per_hour_bootstraps_the_patches_divided_by_hours():
    rng = np.random.default_rng(4)
    union_a, union_b = rng.uniform(200, 400, 30), rng.uniform(200, 400, 30)
    inter_a, inter_b = union_a * rng.uniform(0.6, 0.8, 30), union_b * rng.uniform(0.5, 0.7, 30)
    a = pd.DataFrame({"jaccard_per_gpu_hour": [0.9], "val_patch_intersection": [inter_a.tolist()],
                      "val_patch_union": [union_a.tolist()], "total_train_seconds": [1800.0]})
    b = pd.DataFrame({"jaccard_per_gpu_hour": [0.3], "val_patch_intersection": [inter_b.tolist()],
                      "val_patch_union": [union_b.tolist()], "total_train_seconds": [7200.0]})
    got = stats.difference(a, b, "jaccard_per_gpu_hour", n_boot=400)
    ja = (inter_a.sum() + 1) / (union_a.sum() + 1) / 0.5   # 1800 s = 0.5 h
    jb = (inter_b.sum() + 1) / (union_b.sum() + 1) / 2.0   # 7200 s = 2 h
    assert got.diff == pytest.approx(ja - jb, rel=1e-12)
    # the paired percentile bootstrap written out, with the seed the code documents (0)
    idx = np.random.default_rng(0).integers(0, 30, size=(400, 30))
    boots = ((inter_a[idx].sum(1) + 1) / (union_a[idx].sum(1) + 1) / 0.5
             - (inter_b[idx].sum(1) + 1) / (union_b[idx].sum(1) + 1) / 2.0)
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), rel=1e-12)
    assert got.method == "paired bootstrap over 30 val patches"
    # the Jaccard itself is not divided by hours
    plain = stats.difference(a.assign(best_val_jaccard=0.7), b.assign(best_val_jaccard=0.6), "best_val_jaccard",
                             n_boot=400)
    assert plain.diff == pytest.approx(ja * 0.5 - jb * 2.0, rel=1e-12)
    # without a training time there is no per-hour interval, only the difference of the values
    for missing in (a.drop(columns="total_train_seconds"), a.assign(total_train_seconds=0.0)):
        got = stats.difference(missing, b, "jaccard_per_gpu_hour", n_boot=400)
        assert got == stats.Difference(pytest.approx(0.6), method="no interval: 1 vs 1 run(s); replicate seeds for one")


# ---------------------------------------------------------------------------------------- bootstraps
def test_bootstrap_jaccard_is_the_percentile_bootstrap_written_out():
    rng = np.random.default_rng(9)
    union = rng.uniform(100, 300, 2)   # two patches are enough
    inter = union * np.array([0.5, 0.8])
    point, lo, hi = stats.bootstrap_jaccard(inter.tolist(), union.tolist())  # defaults: 2000 resamples, seed 0
    idx = np.random.default_rng(0).integers(0, 2, size=(2000, 2))
    boots = (inter[idx].sum(1) + 1) / (union[idx].sum(1) + 1)
    assert point == pytest.approx((inter.sum() + 1) / (union.sum() + 1), rel=1e-12)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), rel=1e-12)
    _, lo90, hi90 = stats.bootstrap_jaccard(inter, union, level=0.90)
    assert (lo90, hi90) == pytest.approx(tuple(np.quantile(boots, [0.05, 0.95])), rel=1e-12)
    # with 25 patches the percentiles move with every resample: the default is 2000 of them, seed 0
    union = rng.uniform(100, 300, 25)
    inter = union * rng.uniform(0.4, 0.9, 25)
    idx = np.random.default_rng(0).integers(0, 25, size=(2000, 25))
    boots = (inter[idx].sum(1) + 1) / (union[idx].sum(1) + 1)
    assert stats.bootstrap_jaccard(inter, union)[1:] == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])),
                                                                      rel=1e-12)


def test_paired_bootstrap_of_two_runs_a_side_averages_the_runs_on_shared_resamples():
    rng = np.random.default_rng(11)
    sets = [(u * f, u, h) for u, f, h in ((rng.uniform(100, 300, 20), 0.7, 1.0), (rng.uniform(100, 300, 20), 0.6, 2.0),
                                          (rng.uniform(100, 300, 20), 0.5, 1.0), (rng.uniform(100, 300, 20), 0.55, 0.5))]
    sets = [(i * rng.uniform(0.9, 1.1, 20), u, h) for i, u, h in sets]
    a, b = sets[:2], sets[2:]
    got = stats.patch_bootstrap_difference(a, b)  # defaults: 2000 resamples, seed 0

    def mean_score(runs, idx):  # the mean over runs of each run's pooled Jaccard over the resampled patches
        return np.mean([(i[idx].sum(-1) + 1) / (u[idx].sum(-1) + 1) / h for i, u, h in runs], axis=0)

    every = np.arange(20)
    assert got.diff == pytest.approx(float(mean_score(a, every) - mean_score(b, every)), rel=1e-12)
    idx = np.random.default_rng(0).integers(0, 20, size=(2000, 20))  # one set of indices for all four runs
    boots = mean_score(a, idx) - mean_score(b, idx)
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), rel=1e-12)
    assert got.method == "paired bootstrap over 20 val patches"


def test_cell_intervals_whole_table():
    rng = np.random.default_rng(12)
    union = rng.uniform(100, 300, 6)
    inter = union * rng.uniform(0.4, 0.8, 6)
    frame = pd.DataFrame([
        {"architecture": "UNet", "learning_rate": 5e-3, "batch_size": 8, "best_val_jaccard": 0.61,
         "val_loss_std": 0.02, "val_patch_intersection": inter.tolist(), "val_patch_union": union.tolist()},
        {"architecture": "UNet", "learning_rate": 1e-3, "batch_size": 8, "best_val_jaccard": 0.70,
         "val_loss_std": 0.03, "val_patch_intersection": None, "val_patch_union": None},
        {"architecture": "UNet", "learning_rate": 1e-3, "batch_size": 8, "best_val_jaccard": 0.74,
         "val_loss_std": np.nan, "val_patch_intersection": None, "val_patch_union": None},
        {"architecture": "UNet", "learning_rate": 1e-3, "batch_size": 16, "best_val_jaccard": 0.66,
         "val_loss_std": 0.01, "val_patch_intersection": None, "val_patch_union": None},
    ])
    got = stats.cell_intervals(frame, "best_val_jaccard", n_boot=300)
    m, lo, hi = _t([0.70, 0.74])
    idx = np.random.default_rng(0).integers(0, 6, size=(300, 6))
    blo, bhi = np.quantile((inter[idx].sum(1) + 1) / (union[idx].sum(1) + 1), [0.025, 0.975])
    expected = pd.DataFrame({
        "architecture": ["UNet"] * 3, "learning_rate": [1e-3, 1e-3, 5e-3], "batch_size": [8, 16, 8], "n": [2, 1, 1],
        "mean": [m, 0.66, 0.61], "std": [float(np.std([0.70, 0.74], ddof=1)), np.nan, np.nan],
        "ci_low": [lo, np.nan, blo], "ci_high": [hi, np.nan, bhi],
        "ci_method": ["t over 2 seeds", "none (one run)", "bootstrap over 6 val patches"]})
    pd.testing.assert_frame_equal(got, expected, rtol=1e-12)
    # another metric: no bootstrap from one run, and a cell whose only value is missing has none at all
    other = stats.cell_intervals(frame, "val_loss_std")
    assert other["n"].tolist() == [1, 1, 1] and other["ci_method"].tolist() == ["none (one run)"] * 3
    assert other["mean"].tolist() == [0.03, 0.01, 0.02] and other["std"].isna().all()
    empty = stats.cell_intervals(frame.assign(val_loss_std=np.nan), "val_loss_std")
    assert empty["n"].tolist() == [0, 0, 0] and empty["ci_method"].tolist() == ["none"] * 3
    assert empty["mean"].isna().all()


# ---------------------------------------------------------------------------------------- ANOVA
def test_anova_of_a_two_by_two_grid_with_one_run_per_cell_by_hand():
    """2 x 2, one run per cell: the interaction is the error term with 1 degree of freedom."""
    y = np.array([[0.50, 0.62], [0.58, 0.75]])  # rows: architecture, columns: learning rate
    frame = pd.DataFrame([{"architecture": a, "learning_rate": lr, "batch_size": 8, "y": y[i, j]}
                          for i, a in enumerate(("A", "B")) for j, lr in enumerate((1e-3, 5e-3))])
    got = stats.factorial_anova(frame, "y")
    m, rows, cols = y.mean(), y.mean(1), y.mean(0)
    ss_a, ss_lr = 2 * ((rows - m) ** 2).sum(), 2 * ((cols - m) ** 2).sum()
    ss_e = ((y - rows[:, None] - cols[None, :] + m) ** 2).sum()
    f_a, f_lr = ss_a / ss_e, ss_lr / ss_e
    expected = pd.DataFrame({
        "sum_sq": [ss_a, ss_lr, ss_e], "df": [1.0, 1.0, 1.0], "mean_sq": [ss_a, ss_lr, ss_e],
        "F": [f_a, f_lr, np.nan], "p": [sps.f.sf(f_a, 1, 1), sps.f.sf(f_lr, 1, 1), np.nan],
        "partial_eta_sq": [ss_a / (ss_a + ss_e), ss_lr / (ss_lr + ss_e), np.nan]},
        index=pd.Index(["architecture", "learning rate", "residual"], name="term"))
    pd.testing.assert_frame_equal(got.table, expected, rtol=1e-9)
    assert (got.response, got.n, got.df_resid, got.skipped) == ("y", 4, 1.0, "")
    assert got.mse == pytest.approx(ss_e, rel=1e-9)
    assert got.formula == "y ~ C(architecture) + C(learning_rate)"
    assert got.notes == ["batch size has fewer than 2 levels with data; left out",
                         "one run per cell: the highest-order interaction serves as the error term"]


def test_anova_of_one_factor_with_replicates_and_without():
    reps = pd.DataFrame({"architecture": "A", "learning_rate": [1e-3, 1e-3, 5e-3, 5e-3, 1e-2, 1e-2],
                         "batch_size": 8, "y": [0.5, 0.52, 0.6, 0.63, 0.4, 0.45]})
    got = stats.factorial_anova(reps, "y")
    groups = [reps.loc[reps["learning_rate"] == lr, "y"] for lr in (1e-3, 5e-3, 1e-2)]
    assert got.p("learning_rate") == pytest.approx(sps.f_oneway(*groups).pvalue, rel=1e-9)
    assert got.notes == ["architecture has fewer than 2 levels with data; left out",
                         "batch size has fewer than 2 levels with data; left out"]
    assert got.formula == "y ~ C(learning_rate)" and got.df_resid == 3.0
    single = reps.drop_duplicates("learning_rate")  # one run per level: no error term at all
    got = stats.factorial_anova(single, "y")
    assert got.table is None and got.n == 3
    assert got.skipped == ("residual degrees of freedom = 0 (3 runs, 3 model parameters): add replicates or "
                           "more grid cells")
    assert got.notes == ["architecture has fewer than 2 levels with data; left out",
                         "batch size has fewer than 2 levels with data; left out"]  # no 'error term' note


def test_anova_skips_confounded_factors_and_nothing_to_test():
    confounded = pd.DataFrame({"architecture": ["A", "A", "B", "B"], "learning_rate": [1e-3, 1e-3, 5e-3, 5e-3],
                               "batch_size": 8, "y": [0.5, 0.55, 0.6, 0.62]})
    got = stats.factorial_anova(confounded, "y")
    assert got.skipped == "the main-effects design is not estimable" and got.table is None
    flat = confounded.assign(architecture="A", learning_rate=1e-3)
    got = stats.factorial_anova(flat, "y")
    assert got.skipped == "no factor has 2 or more levels with completed runs" and got.n == 4
    # a factor outside the study's three is named as given
    got = stats.factorial_anova(confounded.assign(loss="focal"), "y", factors=("architecture", "loss"))
    assert got.notes[0] == "loss has fewer than 2 levels with data; left out"


def test_term_labels_follow_the_study_order_and_keep_unknown_factor_names():
    assert stats.term_label(("batch_size", "architecture")) == "architecture x batch size"
    assert stats.term_label(["loss", "learning_rate"]) == "learning rate x loss"
    assert stats.term_label(("loss", "dropout")) == "loss x dropout"  # unknown factors keep their order


def test_difference_needs_two_runs_on_both_sides_for_welch_and_patches_on_both_for_a_bootstrap():
    rng = np.random.default_rng(13)
    union = rng.uniform(100, 300, 10)
    with_patches = {"val_patch_intersection": [(union * 0.6).tolist()], "val_patch_union": [union.tolist()]}
    two = pd.DataFrame({"val_loss_std": [0.03, 0.05], "best_val_jaccard": [0.6, 0.62]})
    one = pd.DataFrame({"val_loss_std": [0.02], "best_val_jaccard": [0.58], **with_patches})
    assert stats.difference(two, one, "val_loss_std") == stats.Difference(
        pytest.approx(0.02), method="no interval: 2 vs 1 run(s); replicate seeds for one")
    # one side has patch lists, the other not: no bootstrap
    got = stats.difference(two.head(1), one, "best_val_jaccard")
    assert got == stats.Difference(pytest.approx(0.02), method="no interval: 1 vs 1 run(s); replicate seeds for one")
    got = stats.difference(one, two.head(1), "best_val_jaccard")
    assert got.method.startswith("no interval") and got.diff == pytest.approx(-0.02)
    # a column of numbers stored as text still compares
    text = pd.DataFrame({"val_loss_std": ["0.03", "0.05"]})
    assert stats.difference(text, two, "val_loss_std").diff == pytest.approx(0.0)


def test_no_spread_threshold_is_1e_12_of_the_larger_of_1_and_the_largest_value():
    assert stats.no_spread(np.array([0.0, 1e-12])) and not stats.no_spread(np.array([0.0, 1.5e-12]))
    assert stats.no_spread(np.array([4.0, 4.0 + 3e-12])) and not stats.no_spread(np.array([4.0, 4.0 + 6e-12]))


def test_a_difference_without_a_value_reads_n_a():
    assert stats.Difference(math.nan, method="no values").text() == "n/a (no values)"
    assert stats.Difference(0.25, 0.1, 0.4, "t").text() == "+0.250 [+0.100, +0.400] (t)"


def test_tables_keep_their_columns_when_nothing_can_be_computed():
    nothing = pd.DataFrame({"architecture": ["A", "A"], "learning_rate": [1e-3, 5e-3], "batch_size": 8,
                            "seed": 0, "y": [np.nan, np.nan]})
    assert list(stats.group_means(nothing, "y", ["learning_rate"], None).columns) == [
        "learning_rate", "n", "mean", "ci_low", "ci_high", "ci_method"]
    one_arch = stats.pairwise_architectures(nothing.assign(y=0.5), "y")
    assert one_arch.empty and list(one_arch.columns) == [
        "metric", "arch_a", "arch_b", "n_pairs", "mean_diff", "median_diff", "wilcoxon_p", "paired_t_p", "holm_p",
        "note"]


def test_pairwise_architectures_from_two_shared_cells_and_with_none():
    rows = [{"architecture": arch, "learning_rate": lr, "batch_size": 8, "seed": 0, "y": y}
            for arch, lr, y in (("A", 1e-3, 0.6), ("A", 5e-3, 0.7), ("B", 1e-3, 0.5), ("B", 5e-3, 0.65),
                                ("C", 1e-2, 0.4), ("C", 5e-2, 0.3))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of nothing on the way to "0 shared cell(s)"
        got = stats.pairwise_architectures(pd.DataFrame(rows), "y").set_index(["arch_a", "arch_b"])
    ab = got.loc[("A", "B")]
    d = np.array([0.6 - 0.5, 0.7 - 0.65])  # two shared cells are enough for both tests
    assert ab["n_pairs"] == 2 and ab["note"] == ""
    assert ab["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)
    assert ab["paired_t_p"] == pytest.approx(sps.ttest_1samp(d, 0).pvalue, rel=1e-12)
    ac = got.loc[("A", "C")]
    assert ac["n_pairs"] == 0 and ac["note"] == "0 shared cell(s); at least 2 needed"
    assert math.isnan(ac["mean_diff"]) and math.isnan(ac["median_diff"])


def _rss(y: np.ndarray, *blocks: np.ndarray) -> float:
    """Residual sum of squares of a least-squares fit on an intercept and the given dummy blocks."""
    x = np.column_stack([np.ones(len(y)), *blocks])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(((y - x @ beta) ** 2).sum())


def test_anova_of_an_unbalanced_grid_is_type_ii_by_model_comparison():
    """Unequal replicates: Type I (sequential) and Type II sums of squares differ; the code must give Type II,
    here computed as the drop in residual SS when a term is added last among terms of its order."""
    cells = {("A", 1e-3): [0.50, 0.54, 0.52], ("A", 5e-3): [0.61], ("A", 1e-2): [0.40, 0.44],
             ("B", 1e-3): [0.58], ("B", 5e-3): [0.70, 0.74, 0.69, 0.71], ("B", 1e-2): [0.47, 0.52]}
    frame = pd.DataFrame([{"architecture": a, "learning_rate": lr, "batch_size": 8, "y": v}
                          for (a, lr), vals in cells.items() for v in vals])
    got = stats.factorial_anova(frame, "y").table
    y = frame["y"].to_numpy()
    arch = (frame["architecture"] == "B").to_numpy(float)[:, None]
    lr = np.column_stack([np.isclose(frame["learning_rate"], v) for v in (5e-3, 1e-2)]).astype(float)
    inter = arch * lr
    full = _rss(y, arch, lr, inter)
    ss_arch = _rss(y, lr) - _rss(y, arch, lr)
    ss_lr = _rss(y, arch) - _rss(y, arch, lr)
    ss_int = _rss(y, arch, lr) - full
    df_e = len(y) - 6
    expected = {"architecture": (ss_arch, 1), "learning rate": (ss_lr, 2), "architecture x learning rate": (ss_int, 2)}
    for term, (ss, df) in expected.items():
        f = (ss / df) / (full / df_e)
        assert got.loc[term, "sum_sq"] == pytest.approx(ss, rel=1e-9)
        assert got.loc[term, "df"] == df and got.loc[term, "mean_sq"] == pytest.approx(ss / df, rel=1e-9)
        assert got.loc[term, "F"] == pytest.approx(f, rel=1e-9)
        assert got.loc[term, "p"] == pytest.approx(sps.f.sf(f, df, df_e), rel=1e-9)
        assert got.loc[term, "partial_eta_sq"] == pytest.approx(ss / (ss + full), rel=1e-9)
    assert got.loc["residual", "sum_sq"] == pytest.approx(full, rel=1e-9) and got.loc["residual", "df"] == df_e
    # sequential (Type I) sums of squares would differ here: the test can tell the two apart
    assert abs((_rss(y) - _rss(y, arch)) - ss_arch) > 1e-4


def test_anova_of_a_constant_response_is_skipped_with_its_reason():
    """All runs at the same value (every best epoch the last, say): no F, and no effect size from the
    rounding dust a least-squares fit leaves (it gave a partial eta squared of 0.09)."""
    frame = pd.DataFrame({"architecture": ["A", "A", "B", "B"], "learning_rate": [1e-3] * 4, "batch_size": 8,
                          "y": [0.5] * 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = stats.factorial_anova(frame, "y")
    assert got.table is None and got.skipped == "every run has the same y; there is no variance to explain"
    nearly = stats.factorial_anova(frame.assign(y=[0.5, 0.5, 0.5, 0.5 + 1e-6]), "y")  # a real difference
    assert nearly.skipped == "" and nearly.table.loc["architecture", "partial_eta_sq"] > 0


def test_cell_intervals_of_nothing_keep_their_shape():
    cols = ["architecture", "learning_rate", "batch_size", "n", "mean", "std", "ci_low", "ci_high", "ci_method"]
    empty = stats.cell_intervals(pd.DataFrame(columns=["architecture", "learning_rate", "batch_size", "y"]), "y")
    assert empty.empty and list(empty.columns) == cols
    blank = pd.DataFrame({"architecture": ["A"], "learning_rate": [1e-3], "batch_size": [8], "y": [np.nan]})
    expected = pd.DataFrame({"architecture": ["A"], "learning_rate": [1e-3], "batch_size": [8], "n": [0],
                             "mean": [np.nan], "std": [np.nan], "ci_low": [np.nan], "ci_high": [np.nan],
                             "ci_method": ["none"]})
    pd.testing.assert_frame_equal(stats.cell_intervals(blank, "y"), expected)
