"""The end-of-run summary of a history: best epoch, stability (plain and detrended), overfitting gaps and
timing, against hand-worked values and scipy's regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hpc_unet.train.summary import (
    learned_columns,
    learning_evidence,
    learning_of,
    learning_state,
    skill,
    summarize_history,
    trivial_scores,
    val_loss_std,
    val_loss_std_detrended,
)

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


def test_two_epochs_leave_the_tracing_epoch_out_and_missing_timings_are_nan():
    two = summarize_history(HISTORY[:2], epochs=4)
    assert two["mean_epoch_seconds"] == 4.0 and two["total_train_seconds"] == 34.0
    untimed = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in HISTORY]
    s = summarize_history(untimed, epochs=4)
    assert math.isnan(s["mean_epoch_seconds"]) and math.isnan(s["total_train_seconds"]) and s["best_epoch"] == 3


def test_three_epochs_are_detrended():
    vl = np.array([0.9, 0.4, 0.5])  # the smallest history that is detrended: residuals of the fit, not 0
    fit = stats.linregress(np.arange(3), vl)
    residuals = vl - (fit.intercept + fit.slope * np.arange(3))
    assert val_loss_std_detrended(vl) == pytest.approx(math.sqrt(np.mean(residuals ** 2)), abs=1e-12)
    assert val_loss_std_detrended(vl) > 0.1


# ------------------------------------------------------------------ the learned rule's pure pieces
def _pooled(masks: np.ndarray, pred: np.ndarray, hard: bool) -> float:
    """The Keras metrics' pooled formula written out: (sum(t*p) + 1) / (sum(t) + sum(p) - sum(t*p) + 1)."""
    t = (masks > 0.5).astype(np.float64) if hard else masks.astype(np.float64)
    p = (pred > 0.5).astype(np.float64) if hard else pred.astype(np.float64)
    inter = float((t * p).sum())
    return (inter + 1) / (float(t.sum()) + float(p.sum()) - inter + 1)


def _trivial(masks: np.ndarray) -> tuple[float, float, float]:
    frac = float(masks.astype(np.float64).mean())
    preds = [np.zeros(masks.shape), np.ones(masks.shape), np.full(masks.shape, frac)]
    return (frac, max(_pooled(masks, p, False) for p in preds), max(_pooled(masks, p, True) for p in preds))


def _masks() -> dict[str, np.ndarray]:
    one = np.zeros((1, 10, 10, 1))
    one[0, 3, 4, 0] = 1.0  # one foreground pixel in 100: predicting background wins on both metrics
    grey = np.full((1, 10, 10, 1), 0.5)
    grey[0, 0, 0, 0] = 1.0  # fraction 0.505 > 0.5 but a single pixel > 0.5: background still wins the IoU
    half = np.zeros((1, 10, 10, 1))
    half[0, :5] = 1.0  # fraction exactly 0.5: the constant predictor at 0.5 is background when thresholded
    rng = np.random.default_rng(3)
    return {"one": one, "grey": grey, "half": half,
            "soft32": rng.random((4, 16, 16, 1)).astype(np.float32),  # float32 input summed in float64
            "full": np.ones((2, 4, 4, 1)), "empty": np.zeros((2, 4, 4, 1))}


@pytest.mark.parametrize("name", list(_masks()))
def test_trivial_scores_equal_the_best_of_the_three_predictors(name):
    masks = _masks()[name]
    frac, soft, hard = _trivial(masks)
    got = trivial_scores(masks)
    assert got["val_mask_fraction"] == pytest.approx(frac, rel=1e-12)
    assert got["trivial_val_jaccard"] == pytest.approx(soft, rel=1e-12)
    assert got["trivial_val_iou"] == pytest.approx(hard, rel=1e-12)


def test_hand_worked_trivial_scores_of_a_single_pixel():
    got = trivial_scores(_masks()["one"])
    assert got["trivial_val_jaccard"] == pytest.approx(0.5) and got["trivial_val_iou"] == pytest.approx(0.5)
    got = trivial_scores(_masks()["grey"])  # IoU: background 1 / (1 + 1); foreground 2 / 101
    assert got["trivial_val_iou"] == pytest.approx(0.5)


def test_no_validation_pixels_give_no_fraction_and_no_verdict():
    got = trivial_scores(np.zeros((0, 4, 4, 1)))
    assert math.isnan(got["val_mask_fraction"])
    assert learned_columns({"best_val_jaccard": 0.9, "best_val_iou": 0.9}, np.zeros((0, 4, 4, 1)))["learning"] is None


def test_skill_at_exactly_the_margin_is_learned():
    # trivial 0: the skill is the score itself, 0.10 exactly; "at least" the margin learns
    assert learning_evidence(0.1, 0.1, 0.0, 0.0)["learning"] == "learned"
    assert learning_state([0.1, 0.1]) == "learned" and learning_state([0.1, 0.0999]) == "marginal"
    assert learning_state([0.0999]) == "not learned" and learning_state([math.nan]) is None


def test_skill_of_non_finite_scores_is_unknown():
    assert skill(0.6, 0.2) == pytest.approx(0.5)  # (0.6 - 0.2) / (1 - 0.2)
    for score, trivial in ((math.inf, 0.2), (0.5, math.inf), (math.nan, 0.2), (0.5, math.nan), (0.5, 1.0)):
        assert math.isnan(skill(score, trivial))


def test_recorded_flags_of_old_shards():
    assert learning_of({"learned": True}) == "learned" and learning_of({"learned": "TRUE "}) == "learned"
    assert learning_of({"learned": False}) == "not learned" and learning_of({}) is None
    assert learning_of({"best_val_jaccard": "n/a", "learned": "true"}) == "learned"  # unreadable score


def test_learned_columns_of_a_run():
    masks = _masks()["one"]
    frac, soft, hard = _trivial(masks)  # 0.01, 0.5, 0.5
    # Jaccard skill (0.6 - 0.5) / 0.5 = 0.2, IoU skill (0.52 - 0.5) / 0.5 = 0.04: marginal, weaker 0.04
    cols = learned_columns({"best_val_jaccard": 0.6, "best_val_iou": 0.52}, masks)
    assert cols["val_mask_fraction"] == pytest.approx(frac)
    assert (cols["trivial_val_jaccard"], cols["trivial_val_iou"]) == (pytest.approx(soft), pytest.approx(hard))
    assert cols["learning"] == "marginal" and cols["learned"] is False
    assert cols["learned_skill"] == pytest.approx(0.04)
    both = learned_columns({"best_val_jaccard": 0.6, "best_val_iou": 0.6}, masks)
    assert both["learning"] == "learned" and both["learned"] is True and both["learned_skill"] == pytest.approx(0.2)
    only_iou = learned_columns({"best_val_iou": 0.6}, masks)  # no Jaccard recorded: the IoU decides alone
    assert only_iou["learning"] == "learned" and only_iou["learned_skill"] == pytest.approx(0.2)
    none = learned_columns({}, masks)
    assert none["learning"] is None and none["learned"] is None and math.isnan(none["learned_skill"])
