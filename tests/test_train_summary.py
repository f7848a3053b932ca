"""The end-of-run summary of a history: best epoch, stability (plain and detrended), overfitting gaps and
timing, against hand-worked values and scipy's regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hpc_unet.train.summary import summarize_history, val_loss_std, val_loss_std_detrended

HISTORY = [  # epoch 3 is best; epoch 1 traces the graph (slow)
    {"epoch": 1, "val_jacard_coef": 0.2, "val_iou": 0.3, "val_dice": 0.33, "val_loss": 0.9, "loss": 1.0,
     "epoch_seconds": 30.0},
    {"epoch": 2, "val_jacard_coef": 0.5, "val_iou": 0.6, "val_dice": 0.66, "val_loss": 0.7, "loss": 0.6,
     "epoch_seconds": 4.0},
    {"epoch": 3, "val_jacard_coef": 0.7, "val_iou": 0.8, "val_dice": 0.82, "val_loss": 0.4, "loss": 0.3,
     "epoch_seconds": 5.0},
    {"epoch": 4, "val_jacard_coef": 0.6, "val_iou": 0.7, "val_dice": 0.75, "val_loss": 0.5, "loss": 0.2,
     "epoch_seconds": 6.0},
]


def test_summary_of_a_hand_worked_history():
    s = summarize_history(HISTORY, epochs=6)
    assert (s["best_val_jaccard"], s["best_val_iou"], s["best_val_dice"], s["best_epoch"]) == (0.7, 0.8, 0.82, 3)
    assert s["epochs_run"] == 4 and s["stopped_early"] is True
    assert s["overfit_gap_best"] == pytest.approx(0.4 - 0.3) and s["overfit_gap_end"] == pytest.approx(0.5 - 0.2)
    assert (s["final_loss"], s["final_val_loss"]) == (0.2, 0.5)
    assert s["mean_epoch_seconds"] == pytest.approx(5.0)  # the first (tracing) epoch left out
    assert s["total_train_seconds"] == pytest.approx(45.0)
    vl = np.array([0.9, 0.7, 0.4, 0.5])
    assert s["val_loss_std"] == pytest.approx(math.sqrt(np.mean((vl - vl.mean()) ** 2)), abs=1e-12)
    fit = stats.linregress(np.arange(4), vl)
    residuals = vl - (fit.intercept + fit.slope * np.arange(4))
    assert s["val_loss_std_detrended"] == pytest.approx(math.sqrt(np.mean(residuals ** 2)), abs=1e-12)
    assert summarize_history(HISTORY, epochs=4)["stopped_early"] is False
    assert summarize_history(HISTORY, epochs=3)["stopped_early"] is False


def test_one_epoch_and_none():
    one = summarize_history(HISTORY[:1], epochs=1)
    assert one["mean_epoch_seconds"] == 30.0 and one["best_epoch"] == 1 and one["val_loss_std"] == 0.0
    assert summarize_history([], epochs=5) == {"epochs_run": 0}


def test_nan_scores_pick_the_last_epoch_and_nan_is_skipped():
    nan = [{**h, "val_jacard_coef": math.nan} for h in HISTORY]
    assert summarize_history(nan, epochs=4)["best_epoch"] == 4
    some = [dict(h) for h in HISTORY]
    some[2]["val_jacard_coef"] = math.nan
    assert summarize_history(some, epochs=4)["best_epoch"] == 4  # 0.6 beats 0.5 and 0.2
    missing = [{k: v for k, v in h.items() if k not in ("val_iou", "val_dice")} for h in HISTORY]
    s = summarize_history(missing, epochs=4)
    assert math.isnan(s["best_val_iou"]) and math.isnan(s["best_val_dice"])


def test_detrended_std_removes_a_straight_descent_and_keeps_oscillation():
    line = 1.0 - 0.1 * np.arange(10)
    assert val_loss_std(line) > 0.25 and val_loss_std_detrended(line) == pytest.approx(0.0, abs=1e-12)
    wiggle = line + 0.05 * (-1.0) ** np.arange(10)
    fit = stats.linregress(np.arange(10), wiggle)
    residuals = wiggle - (fit.intercept + fit.slope * np.arange(10))
    assert val_loss_std_detrended(wiggle) == pytest.approx(math.sqrt(np.mean(residuals ** 2)), abs=1e-12)
    # a parabola keeps its curvature (a degree-2 fit would remove it)
    bowl = (np.arange(7) - 3.0) ** 2
    assert val_loss_std_detrended(bowl) > 2.0
    assert val_loss_std_detrended(np.array([0.3, 0.1])) == 0.0 and math.isnan(val_loss_std_detrended(np.array([])))
    assert math.isnan(val_loss_std(np.array([])))
