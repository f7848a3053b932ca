"""The recommended cells (verdicts/recommend.py) compared whole on a small constructed grid: every row and
column of ``recommendations``, the ties within noise, the robust scores, the timing noise and ``kinds_of``.
Expected rows are worked out by hand in the comments; thresholds are pinned on both sides."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hpc_unet.analysis import stats
from hpc_unet.analysis.verdicts import recommend

COLUMNS = ["architecture", "kind", "learning_rate", "batch_size", "n", "mean", "ci_low", "ci_high", "ci_method",
           "val_iou", "val_dice", "test_jaccard", "test_iou", "test_dice", "robust_score", "neighbours",
           "val_loss_std", "val_loss_std_detrended", "best_epoch", "jaccard_per_gpu_hour", "tied_with",
           "efficiency_tied_with", "other_metric_best"]

# UNet's mean Jaccard per (lr, batch): best (1e-2, 8) 0.85 (the first of three in grid order), tied exactly
# with (1e-2, 16) and (1e-2, 32); the only inner cell (1e-3, 16) has the best worst case over its neighbours:
# min(0.80, 0.55, 0.85, 0.70, 0.72) = 0.55
UNET = {(1e-4, 8): 0.50, (1e-4, 16): 0.55, (1e-4, 32): 0.52,
        (1e-3, 8): 0.70, (1e-3, 16): 0.80, (1e-3, 32): 0.72,
        (1e-2, 8): 0.85, (1e-2, 16): 0.85, (1e-2, 32): 0.85}
# Jaccard per hour: (1e-4, 8) the most efficient at 3.0; at noise 0.25 the tie threshold is 3 x (1 - 0.5) = 1.5
PER_HOUR = {(1e-4, 8): 3.0, (1e-4, 16): 1.5, (1e-4, 32): 1.49}


def grid() -> pd.DataFrame:
    """Two seeds per cell with equal values (no spread), UNet's 3 x 3 grid, X's two cells (per-hour
    unknown, IoU unknown) and Attention_UNet's cell without a Jaccard (skipped; it comes before X in the
    order of architectures); the rows are written X first."""
    rows = []
    cells = [("X", (1e-4, 8), 0.3), ("X", (1e-4, 16), 0.4), ("Attention_UNet", (1e-3, 8), math.nan),
             *(("UNet", k, v) for k, v in UNET.items())]
    for arch, (lr, bs), j in cells:
        for seed in (0, 1):
            unet = arch == "UNet"
            rows.append({"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": seed,
                         "best_val_jaccard": j, "best_val_iou": (0.9 if (lr, bs) == (1e-3, 16) else j) if unet
                         else math.nan, "best_val_dice_05": 0.6, "test_jaccard": 0.4, "test_iou": 0.3,
                         "test_dice_05": 0.5, "val_loss_std": 0.02, "val_loss_std_detrended": 0.01,
                         "best_epoch": 5 + 2 * seed, "jaccard_per_gpu_hour": PER_HOUR.get((lr, bs), 1.0) if unet
                         else math.nan, "learned_skill": 0.5})
    return pd.DataFrame(rows)


def row(cells: pd.DataFrame, arch: str, lr: float, bs: int, **kw) -> dict:
    """An expected row: the cell's interval from the input table, the constant columns, and ``kw``."""
    c = cells[(cells["architecture"] == arch) & (cells["learning_rate"] == lr) & (cells["batch_size"] == bs)].iloc[0]
    out = {"architecture": arch, "kind": "", "learning_rate": lr, "batch_size": bs, "n": 2, "mean": math.nan,
           "ci_low": float(c["ci_low"]), "ci_high": float(c["ci_high"]), "ci_method": c["ci_method"],
           "val_iou": math.nan, "val_dice": 0.6, "test_jaccard": 0.4, "test_iou": 0.3, "test_dice": 0.5,
           "robust_score": math.nan, "neighbours": 0, "val_loss_std": 0.02, "val_loss_std_detrended": 0.01,
           "best_epoch": 6.0, "jaccard_per_gpu_hour": 1.0, "tied_with": "", "efficiency_tied_with": "",
           "other_metric_best": ""}
    out.update(kw)
    return out


def test_recommendations_whole_table():
    learned = grid()
    cells = stats.cell_intervals(learned, "best_val_jaccard", n_boot=0)
    got = recommend.recommendations(learned, cells, n_boot=50, noise=0.25)
    want = pd.DataFrame([
        # best: (1e-2, 8), a corner (2 neighbours), worst case min(0.85, 0.70, 0.85) = 0.70; by IoU the inner
        # cell (0.9) ranks first
        row(cells, "UNet", 1e-2, 8, kind="best", mean=0.85, val_iou=0.85, robust_score=0.70, neighbours=2,
            tied_with="UNet lr 1e-02 bs 16; UNet lr 1e-02 bs 32", other_metric_best="UNet lr 1e-03 bs 16"),
        row(cells, "UNet", 1e-3, 16, kind="most robust", mean=0.80, val_iou=0.9, robust_score=0.55, neighbours=4),
        # a corner: min(0.50, 0.70, 0.55) = 0.50; 1.5 >= 3 x (1 - 2 x 0.25) is tied, 1.49 is not
        row(cells, "UNet", 1e-4, 8, kind="most efficient", mean=0.50, val_iou=0.50, robust_score=0.50, neighbours=2,
            jaccard_per_gpu_hour=3.0, efficiency_tied_with="UNet lr 1e-04 bs 16"),
        # X: (1e-4, 16) has the grid neighbour (1e-3, 16) without a run: worst case 0, so no robust cell; no
        # per-hour values, so no efficient cell; no IoU, so no other pick
        row(cells, "X", 1e-4, 16, kind="best", mean=0.4, robust_score=0.0, neighbours=3,
            jaccard_per_gpu_hour=math.nan),
    ], columns=COLUMNS)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
    assert list(got.columns) == COLUMNS


def test_recommendations_by_iou_merge_the_kinds_and_skip_an_architecture_without_it():
    learned = grid()
    cells = stats.cell_intervals(learned, "best_val_jaccard", n_boot=0)
    got = recommend.recommendations(learned, cells, primary="best_val_iou", n_boot=50, ties=False)
    want = pd.DataFrame([
        # by IoU (1e-3, 16) 0.9 is best and, inner, the most robust: min(0.9, 0.55, 0.85, 0.70, 0.72) = 0.55;
        # by the Jaccard mean (1e-2, 8) is first of the 0.85s; no ties asked; no timing noise: no efficiency ties
        row(cells, "UNet", 1e-3, 16, kind="best, most robust", mean=0.80, val_iou=0.9, robust_score=0.55,
            neighbours=4, other_metric_best="UNet lr 1e-02 bs 8"),
        row(cells, "UNet", 1e-4, 8, kind="most efficient", mean=0.50, val_iou=0.50, robust_score=0.50, neighbours=2,
            jaccard_per_gpu_hour=3.0),
    ], columns=COLUMNS)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_recommendations_of_nothing_have_the_key_columns():
    learned = grid()
    cells = stats.cell_intervals(learned, "best_val_jaccard", n_boot=0)
    for a, b in ((learned.iloc[:0], cells), (learned, cells.iloc[:0])):
        got = recommend.recommendations(a, b)
        assert got.empty and list(got.columns) == ["architecture", "kind", "learning_rate", "batch_size"]


def test_efficiency_tie_threshold_on_both_sides():
    learned = grid()
    cells = stats.cell_intervals(learned, "best_val_jaccard", n_boot=0)

    def eff_ties(noise: float) -> str:
        recs = recommend.recommendations(learned, cells, n_boot=0, noise=noise, ties=False)
        return recommend.kinds_of(recs, "most efficient").iloc[0]["efficiency_tied_with"]

    assert eff_ties(0.2517) == "UNet lr 1e-04 bs 16; UNet lr 1e-04 bs 32"  # 3 x (1 - 0.5034) = 1.4898
    assert eff_ties(0.25) == "UNet lr 1e-04 bs 16"
    assert eff_ties(0.2499) == ""  # 3 x 0.5002 = 1.5006
    assert eff_ties(math.nan) == ""
    no_ties = recommend.recommendations(learned, cells, n_boot=0, ties=False)
    assert recommend.kinds_of(no_ties, "best")["tied_with"].tolist() == ["", ""]  # not asked: none named


def test_robust_scores_by_hand():
    lrs, bss = [1e-4, 1e-3, 1e-2], [8, 16, 32]
    value = {(0, 0): 0.5, (0, 1): 0.6, (1, 0): 0.7, (1, 1): 0.9, (1, 2): 0.8, (2, 1): 0.95, (2, 2): 0.4}
    grp = pd.DataFrame({"learning_rate": [1e-4, 1e-3, 1e-2, 1e-3, 1e-2], "batch_size": [8, 16, 32, 32, 16]})
    scores, counts = recommend._robust_scores(grp, value, lrs, bss)
    # (0,0): min(0.5, 0.7, 0.6); (1,1): min(0.9, 0.6, 0.95, 0.7, 0.8); (2,2): min(0.4, 0.8, 0.95);
    # (1,2): min(0.8, (0,2) missing -> 0, 0.4, 0.9); (2,1): min(0.95, 0.9, (2,0) missing -> 0, 0.4)
    assert scores == [0.5, 0.6, 0.4, 0.0, 0.0] and counts == [2, 4, 2, 3, 3]


def _tie_runs(means: list[float], spread: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cell i at batch 8 + i, two seeds mean -+ spread, sorted best first as recommendations sorts them."""
    learned = pd.DataFrame([{"architecture": "UNet", "learning_rate": 1e-3, "batch_size": 8 + i, "seed": s,
                             "best_val_iou": m + d} for i, m in enumerate(means) for s, d in ((0, -spread),
                                                                                             (1, spread))])
    cells = pd.DataFrame([{"architecture": "UNet", "learning_rate": 1e-3, "batch_size": 8 + i} for i in
                          range(len(means))])
    return learned, cells


def test_tied_with_checks_at_most_five_runners_up_with_an_interval_including_0():
    learned, cells = _tie_runs([0.8] * 8)  # every difference is exactly 0 [0, 0]
    assert recommend.tied_with(learned, cells, "best_val_iou", 0) == [f"UNet lr 1e-03 bs {b}" for b in range(9, 14)]
    assert recommend.tied_with(learned, cells.iloc[:1], "best_val_iou", 0) == []
    apart, cells = _tie_runs([0.8, 0.8 - 1e-6, 0.8])  # no spread: [1e-6, 1e-6] excludes 0
    assert recommend.tied_with(apart, cells, "best_val_iou", 0) == ["UNet lr 1e-03 bs 10"]
    one = learned.groupby("batch_size").head(1)  # one run a side: no interval, not called tied
    _, cells = _tie_runs([0.8] * 3)
    assert recommend.tied_with(one, cells, "best_val_iou", 0) == []


def test_tied_with_on_the_edges_of_the_interval():
    """Welch over {0.8 -+ 0.01} and {m -+ 0.01}: half-width t(0.975, 2) x 0.01 x sqrt(2) by hand; a runner-up
    just inside the half-width is tied, just outside is not."""
    from scipy import stats as sps

    half = float(sps.t.ppf(0.975, 2)) * 0.01 * math.sqrt(2)
    learned, cells = _tie_runs([0.8, 0.8 - half * 0.999, 0.8 - half * 1.001], spread=0.01)
    assert recommend.tied_with(learned, cells, "best_val_iou", 0) == ["UNet lr 1e-03 bs 9"]


def test_timing_noise_uses_steady_epochs_of_the_runs_asked_for():
    hist = pd.DataFrame({"exp_id": ["a"] * 4 + ["b"] * 3 + ["c"] * 3 + ["z"] * 3 + ["d"] * 3,
                         "epoch": [1, 2, 3, 4, 1, 2, 3, 1, 2, 3, 2, 3, 4, 2, 3, 4],
                         "epoch_seconds": [500, 10, 20, 30, 900, 10, 14, 1, 0, 0, 1, 50, 99, 0, 0, 0]})
    # a: [10, 20, 30] cv 10/20; b: [10, 14] cv sd(10, 14)/12; c: [0, 0]: 0/0 dropped; d: mean 0 dropped; z not asked
    want = float(np.median([10 / 20, np.std([10, 14], ddof=1) / 12]))
    assert recommend.timing_noise(hist, ["a", "b", "c", "d"]) == pytest.approx(want, rel=1e-12)
    assert recommend.timing_noise(hist, ["a"]) == pytest.approx(0.5, rel=1e-12)
    assert math.isnan(recommend.timing_noise(hist, ["c", "d"])) and math.isnan(recommend.timing_noise(hist, []))
    # a run with one steady epoch has no spread to measure (std NaN)
    assert math.isnan(recommend.timing_noise(hist.iloc[:2], ["a"]))


def test_kinds_of_matches_whole_kinds():
    recs = pd.DataFrame({"kind": ["best, most robust", "most robust", "most efficient", "best"], "x": [0, 1, 2, 3]})
    assert recommend.kinds_of(recs, "best")["x"].tolist() == [0, 3]
    assert recommend.kinds_of(recs, "most robust")["x"].tolist() == [0, 1]
    assert recommend.kinds_of(recs, "robust")["x"].tolist() == []
    assert recommend.kinds_of(recs.drop(columns="kind"), "best")["x"].tolist() == [0, 1, 2, 3]
    empty = pd.DataFrame(columns=["kind"])
    assert recommend.kinds_of(empty, "best") is empty


def test_cell_text_and_constants():
    assert recommend.cell_text("UNet", 5e-4, 16.0) == "UNet lr 5e-04 bs 16"
    assert recommend.TIE_CANDIDATES == 5


def test_most_robust_ties_go_to_the_better_mean():
    """4 x 3 grid, all 0.8 but (5e-4, 8) = (1e-3, 8) = 0.5, (1e-3, 16) = 0.9, (5e-3, 32) = 0.95: both inner
    cells have worst case 0.5; (1e-3, 16) has the better mean. The best is the corner (5e-3, 32)."""
    special = {(5e-4, 8): 0.5, (1e-3, 8): 0.5, (1e-3, 16): 0.9, (5e-3, 32): 0.95}
    learned = pd.DataFrame([{"architecture": "UNet", "learning_rate": lr, "batch_size": bs, "seed": 0,
                             "best_val_jaccard": special.get((lr, bs), 0.8)}
                            for lr in (1e-4, 5e-4, 1e-3, 5e-3) for bs in (8, 16, 32)])
    recs = recommend.recommendations(learned, stats.cell_intervals(learned, "best_val_jaccard", n_boot=0), ties=False)
    got = recs[["kind", "learning_rate", "batch_size", "robust_score", "neighbours"]].to_dict("records")
    assert got == [{"kind": "best", "learning_rate": 5e-3, "batch_size": 32, "robust_score": 0.8, "neighbours": 2},
                   {"kind": "most robust", "learning_rate": 1e-3, "batch_size": 16, "robust_score": 0.5,
                    "neighbours": 4}]


def _ties_grid(jaccard: list[float], iou: list[float]) -> pd.DataFrame:
    """A 3 x 3 grid, one run per cell, values in (lr, batch) order."""
    keys = [(lr, bs) for lr in (1e-4, 1e-3, 1e-2) for bs in (8, 16, 32)]
    return pd.DataFrame([{"architecture": "UNet", "learning_rate": lr, "batch_size": bs, "seed": 0,
                          "best_val_jaccard": j, "best_val_iou": i} for (lr, bs), j, i in zip(keys, jaccard, iou,
                                                                                                strict=True)])


def test_equal_means_go_to_the_first_cell_in_grid_order():
    """Ties for the best (and for the other metric's pick) go to the first cell in (lr, batch) order, the
    same cell on every run: a sort that is not stable picks another of the 0.8s here."""
    ties = [0.7, 0.7, 0.7, 0.8, 0.8, 0.7, 0.8, 0.8, 0.7]
    learned = _ties_grid(ties, [0.5] * 9)
    recs = recommend.recommendations(learned, stats.cell_intervals(learned, "best_val_jaccard", n_boot=0), ties=False)
    best = recommend.kinds_of(recs, "best").iloc[0]
    assert (best["learning_rate"], best["batch_size"], best["other_metric_best"]) == (1e-3, 8, "")
    learned = _ties_grid([0.9 - 0.01 * k for k in range(9)], [t - 0.2 for t in ties])
    recs = recommend.recommendations(learned, stats.cell_intervals(learned, "best_val_jaccard", n_boot=0), ties=False)
    best = recommend.kinds_of(recs, "best").iloc[0]
    assert (best["learning_rate"], best["batch_size"], best["other_metric_best"]) == (1e-4, 8, "UNet lr 1e-03 bs 8")


def test_timing_noise_drops_runs_whose_mean_epoch_time_is_0():
    """std / mean is infinite for times [-1, 1] (a clock stepped back) and undefined for [0, 0]: neither is a
    relative spread."""
    hist = pd.DataFrame({"exp_id": ["a"] * 3 + ["e"] * 2 + ["c"] * 2, "epoch": [2, 3, 4, 2, 3, 2, 3],
                         "epoch_seconds": [10, 20, 30, -1, 1, 0, 0]})
    assert recommend.timing_noise(hist, ["a", "e", "c"]) == pytest.approx(0.5, rel=1e-12)
    assert math.isnan(recommend.timing_noise(hist, ["e"]))


def test_tied_with_bootstraps_single_runs_n_boot_times():
    """One run a cell: the tie is judged on a paired bootstrap over patches, n_boot resamples. With these
    patches 10 resamples give an interval above 0 (not tied), 2000 one that includes 0 (tied)."""
    a, b = [92.0, 53, 60, 92, 41, 56], [53.0, 82, 40, 45, 46, 64]
    learned = pd.DataFrame([{"architecture": "UNet", "learning_rate": 1e-3, "batch_size": bs, "seed": 0,
                             "best_val_jaccard": j, "val_patch_intersection": i, "val_patch_union": [100.0] * 6}
                            for bs, j, i in ((8, 0.7, a), (16, 0.6, b))])
    cells = learned[["architecture", "learning_rate", "batch_size"]]
    one = [learned.iloc[[0]], learned.iloc[[1]]]
    assert stats.difference(*one, "best_val_jaccard", n_boot=10).low > 0.05
    assert stats.difference(*one, "best_val_jaccard", n_boot=2000).low < -0.05
    assert recommend.tied_with(learned, cells, "best_val_jaccard", 10) == []
    assert recommend.tied_with(learned, cells, "best_val_jaccard", 2000) == ["UNet lr 1e-03 bs 16"]
