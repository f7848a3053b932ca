"""What the explore pages know about each run: its settings (varying or constant), its learning label and
its metrics, as one frame built from the collected results and the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTORS
from hpc_unet.manifest import COLUMNS, format_number

PRIMARY = "best_val_jaccard"
NOT_SETTINGS = {"index", "exp_id", "study_name", "replicate", "device"}  # device: the setting is device_setting
# (column, label) of every metric the run table shows; absent columns are skipped
METRIC_COLUMNS = (
    ("best_val_jaccard", "val soft Jaccard"), ("best_val_iou", "val IoU"), ("best_val_dice_05", "val Dice"),
    ("test_jaccard", "test soft Jaccard"), ("test_iou", "test IoU"), ("test_dice_05", "test Dice"),
    ("learned_skill", "skill"), ("trivial_val_jaccard", "trivial Jaccard"),
    ("val_loss_std", "val-loss std"), ("val_loss_std_detrended", "oscillation"), ("best_epoch", "best epoch"),
    ("epochs_run", "epochs run"), ("overfit_gap_end", "overfit gap"), ("jaccard_per_gpu_hour", "J per hour"),
    ("total_train_seconds", "train s"), ("mean_epoch_seconds", "s per epoch"), ("restarts", "restarts"),
    ("attempts", "attempts"), ("peak_gpu_bytes", "peak GPU MB"), ("max_rss_bytes", "peak RSS MB"),
    ("param_count", "parameters"), ("model_bytes", "model MB"), ("device", "device"),
)
MEGABYTES = {"peak_gpu_bytes", "max_rss_bytes", "model_bytes"}
LEARNING_COLUMNS = ("learning", "learned_status", "learning_status", "learned_label", "learned")  # learning: analysis.load


def learning_label(runs: pd.DataFrame) -> pd.Series:
    """'learned', 'marginal', 'not learned' (or whatever labels the results carry), '' for runs that did not
    complete. Reads the first of ``LEARNING_COLUMNS`` holding text labels, else the boolean ``learned``
    (with a boolean ``marginal`` column, when present, overriding it)."""
    done = runs["status"].eq("completed") if "status" in runs.columns else pd.Series(True, index=runs.index)
    for col in LEARNING_COLUMNS:
        if col in runs.columns:
            values = runs[col]
            text = values.dropna().map(lambda v: isinstance(v, str) and v.lower() not in ("true", "false"))
            if len(text) and text.all():
                out = values.fillna("unknown").astype(str).str.replace("_", " ")
                return out.where(done, "")
    learned = runs["learned"] if "learned" in runs.columns else pd.Series(np.nan, index=runs.index)
    flag = learned.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                       else str(v).strip().lower() in ("true", "1", "1.0"))
    out = flag.map({True: "learned", False: "not learned"}).fillna("unknown").astype(str)
    if "marginal" in runs.columns:
        out = out.mask(runs["marginal"].fillna(False).astype(bool), "marginal")
    return out.where(done, "")


def settings(runs: pd.DataFrame) -> tuple[list[str], dict[str, Any]]:
    """(setting columns that vary between runs, {setting: value} of those that do not)."""
    cols = [c for c in COLUMNS if c in runs.columns and c not in NOT_SETTINGS]
    if "device_setting" in runs.columns:
        cols.append("device_setting")
    varying, constant = [], {}
    for c in cols:
        values = runs[c].astype(str).unique()
        if len(values) > 1:
            varying.append(c)
        else:
            constant[c] = runs[c].iloc[0] if len(runs) else ""
    factors = [f for f in FACTORS if f in varying]
    return factors + [c for c in varying if c not in factors], constant


def sig(value: Any, digits: int = 4) -> Any:
    """A number rounded to ``digits`` significant figures (keeps the page small); other values unchanged."""
    if isinstance(value, bool | np.bool_) or value is None:
        return value
    try:
        x = float(value)
    except (TypeError, ValueError):
        return value
    if not np.isfinite(x):
        return None
    if x == int(x) and abs(x) < 1e12:
        return int(x)
    return float(f"{x:.{digits}g}")


def setting_text(column: str, value: Any) -> str:
    if column in ("learning_rate", "min_lr") and value not in (None, ""):
        try:
            return format_number(float(value))
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def run_frame(runs: pd.DataFrame, varying: list[str]) -> pd.DataFrame:
    """One row per run: id, status, learning label, the varying settings and every metric (raw numbers)."""
    out = pd.DataFrame({"run": runs["exp_id"].astype(str), "status": runs["status"].astype(str),
                        "learning": learning_label(runs)}, index=runs.index)
    for col in varying:
        out[col.replace("_", " ")] = runs[col]
    for col, label in METRIC_COLUMNS:
        if col not in runs.columns:
            continue
        values = runs[col]
        if col in MEGABYTES:
            values = pd.to_numeric(values, errors="coerce") / 2**20
            values = values.where(values > 0)
        out[label] = values
    return out.reset_index(drop=True)
