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
