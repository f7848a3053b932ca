"""End-of-run summary numbers computed from the per-epoch history (pure NumPy, no TensorFlow)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def val_loss_std(val_loss: np.ndarray) -> float:
    """Population std of val_loss over all epochs run: the study's stability measure."""
    return float(np.std(val_loss)) if len(val_loss) else math.nan


def val_loss_std_detrended(val_loss: np.ndarray) -> float:
    """Std of val_loss around its least-squares line over epochs.

    A run that descends smoothly has a large plain std but a small detrended one; only oscillation
    (epoch-to-epoch instability) remains.
    """
    n = len(val_loss)
    if n < 3:
        return 0.0 if n else math.nan
    x = np.arange(n, dtype=float)
    slope, intercept = np.polyfit(x, val_loss, 1)
    return float(np.std(val_loss - (slope * x + intercept)))


def summarize_history(history: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Best val Jaccard, convergence, stability and overfitting figures of one run."""
    if not history:
        return {"epochs_run": 0}
    def col(key: str) -> np.ndarray:
        return np.array([float(h.get(key, math.nan)) for h in history])

    vj, vl, tl = col("val_jacard_coef"), col("val_loss"), col("loss")
    secs = col("epoch_seconds")
    best = int(np.nanargmax(vj)) if np.isfinite(vj).any() else len(vj) - 1
    steady = secs[1:] if len(secs) > 1 else secs
    return {
        "best_val_jaccard": float(vj[best]),
        "best_val_iou": float(history[best].get("val_iou", math.nan)),
        "best_val_dice": float(history[best].get("val_dice", math.nan)),
        "best_epoch": int(history[best]["epoch"]),
        "epochs_run": len(history),
        "stopped_early": len(history) < epochs,
        "val_loss_std": val_loss_std(vl),
        "val_loss_std_detrended": val_loss_std_detrended(vl),
        "overfit_gap_best": float(vl[best] - tl[best]),
        "overfit_gap_end": float(vl[-1] - tl[-1]),
        "final_loss": float(tl[-1]),
        "final_val_loss": float(vl[-1]),
        "mean_epoch_seconds": float(np.mean(steady)),
        "total_train_seconds": float(np.sum(secs)),
    }


# A run "learned" when its validation score closes at least this share of the gap between the best
# trivial predictor and a perfect score on BOTH its soft Jaccard and its thresholded IoU; when only one of
# the two clears it the run is "marginal" (docs/analysis.md: "Did it learn?").
LEARNED_SKILL = 0.10
LEARNED, MARGINAL, NOT_LEARNED = "learned", "marginal", "not learned"


def _pooled(inter: float, union: float) -> float:
    return float((inter + 1.0) / (union + 1.0))


def trivial_scores(val_y: np.ndarray) -> dict[str, float]:
    """Best soft Jaccard and thresholded IoU of predictors that ignore the image, on these masks.

    The three predictors: all background (p = 0), all foreground (p = 1) and the constant mask fraction
    (p = f). Pooled with the same +1 smoothing as the Keras metrics, so a run's score compares like for like.
    """
    t = np.asarray(val_y, dtype=np.float64)
    n, s = float(t.size), float(t.sum())
    s_hard = float(np.count_nonzero(t > 0.5))
    frac = s / n if n else math.nan
    soft = [_pooled(c * s, s + c * n - c * s) for c in (0.0, 1.0, frac)]
    hard = [_pooled(s_hard, n) if c > 0.5 else _pooled(0.0, s_hard) for c in (0.0, 1.0, frac)]
    return {"val_mask_fraction": frac, "trivial_val_jaccard": max(soft), "trivial_val_iou": max(hard)}


def skill(score: float, trivial: float) -> float:
    """Share of the headroom above the trivial score that ``score`` closes (1 = perfect, <= 0 = no better)."""
    if not (math.isfinite(score) and math.isfinite(trivial)) or trivial >= 1.0:
        return math.nan
    return (score - trivial) / (1.0 - trivial)


def learning_state(skills: list[float]) -> str | None:
    """'learned' when every known skill reaches LEARNED_SKILL, 'not learned' when none does, else 'marginal'."""
    known = [x for x in skills if math.isfinite(x)]
    if not known:
        return None
    passed = sum(x >= LEARNED_SKILL for x in known)
    return LEARNED if passed == len(known) else NOT_LEARNED if passed == 0 else MARGINAL


def learning_evidence(best_jaccard: float, best_iou: float, trivial_jaccard: float,
                      trivial_iou: float) -> dict[str, Any]:
    """``learning`` (learned / marginal / not learned / None), ``learned`` (True only when learned on both
    metrics; None when unknown) and ``learned_skill`` (the weaker of the two skills; NaN when unknown)."""
    skills = [skill(best_jaccard, trivial_jaccard), skill(best_iou, trivial_iou)]
    state = learning_state(skills)
    known = [x for x in skills if math.isfinite(x)]
    return {"learned_skill": min(known) if known else math.nan, "learning": state,
            "learned": None if state is None else state == LEARNED}


def learning_of(row: Any) -> str | None:
    """A completed run's learning state from its recorded scores and trivial scores (a summary row or
    dict); shards written before the two-metric rule are judged by today's rule, and a row without
    trivial scores falls back to its recorded ``learned`` flag. The one place the rule is applied."""
    def num(key: str) -> float:
        try:
            return float(row.get(key, math.nan))
        except (TypeError, ValueError):
            return math.nan

    state = learning_evidence(num("best_val_jaccard"), num("best_val_iou"), num("trivial_val_jaccard"),
                              num("trivial_val_iou"))["learning"]
    if state is not None:
        return state
    flag = str(row.get("learned", "")).strip().lower()
    return LEARNED if flag == "true" else NOT_LEARNED if flag == "false" else None


def learned_columns(summary: dict[str, Any], val_y: np.ndarray) -> dict[str, Any]:
    """The did-it-learn columns of a completed run's summary, from its validation masks."""
    trivial = trivial_scores(val_y)
    evidence = learning_evidence(float(summary.get("best_val_jaccard", math.nan)),
                                 float(summary.get("best_val_iou", math.nan)),
                                 trivial["trivial_val_jaccard"], trivial["trivial_val_iou"])
    return {**trivial, **evidence}
