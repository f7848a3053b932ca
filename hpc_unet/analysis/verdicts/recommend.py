"""Per-architecture recommendations among runs that learned: the best cell by the primary metric (with
the runners-up it is tied with), the most robust cell (best worst case over its grid neighbourhood, among
the cells whose neighbourhood is complete: a corner's robustness beyond the grid is unknown) and
the most efficient cell (Jaccard per device-hour, ranked only beyond the timing noise). A cell that wins
several kinds is one row."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTORS, IOU, OSCILLATION, PERFORMANCE, STABILITY, arch_order
from hpc_unet.analysis.stats import difference
from hpc_unet.analysis.verdicts.common import cell_runs, lr_text

EXTRA = [STABILITY, OSCILLATION, "best_epoch", "jaccard_per_gpu_hour", IOU, "best_val_dice_05", "test_jaccard",
         "test_iou", "test_dice_05", "learned_skill"]
TIE_CANDIDATES = 5  # runners-up checked for a tie with the best cell (by mean), per architecture


def cell_text(arch: str, lr: float, bs: int) -> str:
    return f"{arch} lr {lr_text(lr)} bs {int(bs)}"


def tied_with(learned: pd.DataFrame, cells: pd.DataFrame, metric: str, n_boot: int) -> list[str]:
    """Cells (sorted by ``metric`` mean, best first) whose difference to the first has an interval that
    includes 0: the runners-up within noise. Cells without an interval are not called tied."""
    if len(cells) < 2:
        return []
    top = cells.iloc[0]
    best_runs = cell_runs(learned, top["architecture"], top["learning_rate"], top["batch_size"])
    out = []
    for r in cells.iloc[1:TIE_CANDIDATES + 1].to_dict("records"):
        d = difference(best_runs, cell_runs(learned, r["architecture"], r["learning_rate"], r["batch_size"]),
                       metric, n_boot=n_boot)
        if d.has_interval and d.low <= 0 <= d.high:
            out.append(cell_text(r["architecture"], r["learning_rate"], r["batch_size"]))
    return out


def _robust_scores(grp: pd.DataFrame, value: dict[tuple[int, int], float], lrs: list, bss: list
                   ) -> tuple[list[float], list[int]]:
    """Worst cell mean over the cell and its lr/batch neighbours that exist in the grid, and how many
    neighbours that is (a corner has 2, an edge 3, an inner cell 4). A neighbour in the grid without a
    learned run counts as a failure (0): a setting next to one that did not learn is not robust."""
    scores, counts = [], []
    for r in grp.to_dict("records"):
        i, j = lrs.index(r["learning_rate"]), bss.index(r["batch_size"])
        hood = [(i + di, j + dj) for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
                if 0 <= i + di < len(lrs) and 0 <= j + dj < len(bss)]
        scores.append(float(min([value[(i, j)], *(value.get(k, 0.0) for k in hood)])))
        counts.append(len(hood))
    return scores, counts


def timing_noise(history: pd.DataFrame | None, exp_ids: list[str]) -> float:
    """Median over runs of the relative spread (std / mean) of their steady epoch times (epochs 2+):
    differences of Jaccard per hour within this share are timing noise. NaN without history."""
    if history is None or "epoch_seconds" not in history.columns:
        return math.nan
    hist = history[history["exp_id"].isin(exp_ids) & (history["epoch"] > 1)]
    stats = hist.groupby("exp_id")["epoch_seconds"].agg(["mean", "std"])
    cv = (stats["std"] / stats["mean"]).replace([np.inf, -np.inf], np.nan).dropna()
    return float(cv.median()) if len(cv) else math.nan


def recommendations(learned: pd.DataFrame, cells_j: pd.DataFrame, primary: str = PERFORMANCE,
                    n_boot: int = 2000, noise: float = math.nan, ties: bool = True) -> pd.DataFrame:
    """One row per recommended cell and architecture with the kinds it wins ('best', 'most robust',
    'most efficient'), its Jaccard interval, thresholded IoU/Dice, test scores, the cells it is tied with,
    its neighbour count and the other metric's pick when that differs."""
    cols = ["architecture", "kind", "learning_rate", "batch_size"]
    if learned.empty or cells_j.empty:
        return pd.DataFrame(columns=cols)
    extra = learned.reindex(columns=[*FACTORS, *EXTRA]).groupby(list(FACTORS))[EXTRA].mean()
    cells = cells_j.merge(extra.reset_index(), on=list(FACTORS), how="inner")
    cells["rank_value"] = cells["mean"] if primary == PERFORMANCE else cells[primary]
    other = IOU if primary == PERFORMANCE else "mean"
    rows = []
    lrs = sorted(learned["learning_rate"].unique())
    bss = sorted(learned["batch_size"].unique())
    for arch in arch_order(cells["architecture"].unique()):
        grp = cells[(cells["architecture"] == arch) & np.isfinite(cells["rank_value"])]
        if grp.empty:
            continue
        grp = grp.sort_values("rank_value", ascending=False, kind="stable")
        value = {(lrs.index(r["learning_rate"]), bss.index(r["batch_size"])): r["rank_value"]
                 for r in grp.to_dict("records")}
        robust, neighbours = _robust_scores(grp, value, lrs, bss)
        grp = grp.assign(robust_score=robust, neighbours=neighbours)
        picks: dict[int, list[str]] = {}
        picks.setdefault(grp.index[0], []).append("best")
        # robustness is claimed only where it was measured on every side the grid has: among the cells with
        # the most neighbours (inner cells of a 3x3 or larger grid), the best worst case, then the better mean
        # (a cell next to one that did not learn has worst case 0: none is robust, and none is named)
        measured = grp[(grp["neighbours"] == grp["neighbours"].max()) & (grp["robust_score"] > 0)]
        if len(measured):
            robust_pick = measured.sort_values(["robust_score", "rank_value"], ascending=False, kind="stable").index[0]
            picks.setdefault(robust_pick, []).append("most robust")
        eff = grp[np.isfinite(grp["jaccard_per_gpu_hour"])].sort_values("jaccard_per_gpu_hour", ascending=False)
        eff_ties: list[str] = []
        if len(eff):
            picks.setdefault(eff.index[0], []).append("most efficient")
            top_eff = float(eff["jaccard_per_gpu_hour"].iloc[0])
            if np.isfinite(noise):
                near = eff.iloc[1:][eff["jaccard_per_gpu_hour"].iloc[1:] >= top_eff * (1 - 2 * noise)]
                eff_ties = [cell_text(arch, r["learning_rate"], r["batch_size"]) for r in near.to_dict("records")]
        tied = tied_with(learned, grp, primary, n_boot) if ties else []
        other_pick = grp.sort_values(other, ascending=False, kind="stable").iloc[0] if grp[other].notna().any() else None
        for idx, kinds in picks.items():
            r = grp.loc[idx]
            rec = {"architecture": arch, "kind": ", ".join(kinds), "learning_rate": float(r["learning_rate"]),
                   "batch_size": int(r["batch_size"]), "n": int(r["n"]), "mean": float(r["mean"]),
                   "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]), "ci_method": r["ci_method"],
                   "val_iou": float(r[IOU]), "val_dice": float(r["best_val_dice_05"]),
                   "test_jaccard": float(r["test_jaccard"]), "test_iou": float(r["test_iou"]),
                   "test_dice": float(r["test_dice_05"]), "robust_score": float(r["robust_score"]),
                   "neighbours": int(r["neighbours"]), "val_loss_std": float(r[STABILITY]),
                   "val_loss_std_detrended": float(r[OSCILLATION]), "best_epoch": float(r["best_epoch"]),
                   "jaccard_per_gpu_hour": float(r["jaccard_per_gpu_hour"]),
                   "tied_with": "; ".join(tied) if "best" in kinds else "",
                   "efficiency_tied_with": "; ".join(eff_ties) if "most efficient" in kinds else "",
                   "other_metric_best": ""}
            if "best" in kinds and other_pick is not None and other_pick.name != idx:
                rec["other_metric_best"] = cell_text(arch, other_pick["learning_rate"], other_pick["batch_size"])
            rows.append(rec)
    return pd.DataFrame(rows)


def kinds_of(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The recommendation rows whose kinds include ``kind``."""
    if frame.empty or "kind" not in frame.columns:
        return frame
    return frame[frame["kind"].astype(str).str.split(", ").map(lambda k: kind in k)]
