"""The conclusions of one analysis (ANOVAs, recommendations, verdicts, the summary's decisions) and
whether each survives leaving out one run.

A verdict or summary sentence that changes when a single run is left out "depends on" that run: the
report says "fragile: depends on <run>" instead of the verdict. Refitting everything once per run costs
too much at thousands of runs, so the runs left out are the ones that can matter: every marginal run,
then the runs farthest from their architecture's mean (Jaccard, stability) and the runs of each
architecture's two best cells, at most MAX_LEFT_OUT in all and fewer in large studies (docs/analysis.md:
robustness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis import stats, verdicts
from hpc_unet.analysis.load import OSCILLATION, PERFORMANCE, STABILITY, learned_runs, marginal
from hpc_unet.analysis.verdicts.recommend import cell_text

MAX_LEFT_OUT = 24
MIN_LEFT_OUT = 4
RUNS_REFIT = 20_000  # runs refitted over all leave-one-out refits: 24 at 36 runs, 5 at 3,600
LOO_BOOT = 200  # bootstrap resamples in the leave-one-out refits (and the reference they are compared with)


@dataclass
class Setup:
    """Everything besides the runs that the conclusions depend on."""

    architectures: list[str]
    levels: dict[str, list[Any]]
    hypotheses: list[dict[str, Any]]
    baseline: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    hour_unit: str = "GPU-hour"
    primary: str = PERFORMANCE
    budget_note: str = ""
    steps_note: str = ""
    timing_noise: float = float("nan")


@dataclass
class Conclusions:
    anova_j: stats.Anova
    anova_s: stats.Anova
    anova_o: stats.Anova
    cells_j: pd.DataFrame
    recs: pd.DataFrame
    verdicts: pd.DataFrame
    corr: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def conclude(completed: pd.DataFrame, setup: Setup, n_boot: int, fast: bool = False) -> Conclusions:
    """ANOVAs, cell intervals, recommendations, verdicts and correlations of these completed runs.

    ``fast`` (the leave-one-out refits) skips what no decision depends on: the oscillation ANOVA (evidence
    only), the cell intervals and the ties of the best cell.
    """
    learned = learned_runs(completed)
    anova_j = stats.factorial_anova(completed, PERFORMANCE)
    anova_s = stats.factorial_anova(learned, STABILITY)
    anova_o = stats.Anova(response=OSCILLATION, skipped="not computed") if fast else \
        stats.factorial_anova(learned, OSCILLATION)
    cells_j = pd.DataFrame() if fast else stats.cell_intervals(completed, PERFORMANCE, n_boot=n_boot)
    recs = verdicts.recommendations(learned, stats.cell_intervals(learned, PERFORMANCE, n_boot=0 if fast else n_boot),
                                    primary=setup.primary, n_boot=n_boot, noise=setup.timing_noise, ties=not fast)
    ctx = verdicts.Context(completed=completed, architectures=setup.architectures, anova_j=anova_j,
                           anova_s=anova_s, cells_j=cells_j, recommendations=recs, baseline=setup.baseline,
                           history=setup.history, anova_o=None if fast else anova_o, levels=setup.levels,
                           hour_unit=setup.hour_unit, n_boot=n_boot, primary=setup.primary,
                           budget_note=setup.budget_note, steps_note=setup.steps_note)
    table = verdicts.judge_all(ctx, setup.hypotheses)
    corr = stats.correlations(learned, STABILITY, PERFORMANCE)
    return Conclusions(anova_j, anova_s, anova_o, cells_j, recs, table, corr)


def significant_terms(anova: stats.Anova) -> list[str]:
    """ANOVA terms significant after Holm's correction over the model's terms, largest effect first."""
    if anova.table is None:
        return []
    t = anova.table.drop(index="residual")
    t = t.assign(p_holm=verdicts.holm(t["p"].to_numpy(dtype=float)))
    return list(t[t["p_holm"] < stats.ALPHA].sort_values("partial_eta_sq", ascending=False).index)


def best_cell(recs: pd.DataFrame, primary: str) -> str:
    best = verdicts.kinds_of(recs, "best")
    if best.empty:
        return ""
    col = "mean" if primary == PERFORMANCE else "val_iou"
    top = best.loc[best[col].idxmax()]
    return cell_text(top["architecture"], top["learning_rate"], top["batch_size"])


def decisions(c: Conclusions, primary: str) -> dict[str, str]:
    """What each verdict and summary sentence decides, as comparable strings."""
    out = {f"verdict {r['id']}": r["verdict"] for r in c.verdicts.to_dict("records")}
    out["best"] = best_cell(c.recs, primary)
    out["anova jaccard"] = ", ".join(sorted(significant_terms(c.anova_j)))  # which terms, not their order
    out["anova stability"] = ", ".join(sorted(significant_terms(c.anova_s)))
    row = c.corr.iloc[0].to_dict() if len(c.corr) else {}
    p, rho = float(row.get("spearman_p", np.nan)), float(row.get("spearman_rho", np.nan))
    out["correlation"] = ("negative" if rho < 0 else "positive") if np.isfinite(p) and p < stats.ALPHA else "none"
    return out


def candidates(completed: pd.DataFrame, recs: pd.DataFrame, limit: int | None = None) -> list[str]:
    """The runs whose removal can change a conclusion, most likely first (see the module docstring); at
    most MAX_LEFT_OUT, fewer in large studies (RUNS_REFIT runs refitted in all, at least MIN_LEFT_OUT),
    where one run weighs less and each refit costs more."""
    if limit is None:
        limit = max(MIN_LEFT_OUT, min(MAX_LEFT_OUT, RUNS_REFIT // max(1, len(completed))))
    order: list[str] = list(completed.loc[marginal(completed), "exp_id"])
    learned = learned_runs(completed)
    for metric in (PERFORMANCE, STABILITY):
        vals = learned[metric].astype(float)
        by_arch = learned.groupby("architecture")[metric]
        z = ((vals - by_arch.transform("mean")) / by_arch.transform("std")).abs()
        order += list(learned.loc[z.sort_values(ascending=False, na_position="last").index[:4], "exp_id"])
    for _, grp in completed[np.isfinite(completed[PERFORMANCE])].groupby("architecture"):
        cells = grp.groupby(["learning_rate", "batch_size"])[PERFORMANCE].mean().sort_values(ascending=False)
        for lr, bs in cells.index[:2]:
            order += list(grp[(grp["learning_rate"] == lr) & (grp["batch_size"] == bs)]["exp_id"])
    seen: list[str] = []
    for exp in order:
        if exp not in seen:
            seen.append(exp)
    return seen[:limit]


def leave_one_out(completed: pd.DataFrame, setup: Setup, runs: list[str]) -> dict[str, tuple[str, str, str]]:
    """decision -> (the first left-out run that changes it, its value with every run, its value without)."""
    reference = decisions(conclude(completed, setup, LOO_BOOT, fast=True), setup.primary)
    cell_of = {e: cell_text(a, lr, bs) for e, a, lr, bs in
               completed[["exp_id", "architecture", "learning_rate", "batch_size"]].itertuples(index=False)}
    flips: dict[str, tuple[str, str, str]] = {}
    for exp in runs:
        rest = completed[completed["exp_id"] != exp]
        if rest.empty:
            continue
        got = decisions(conclude(rest, setup, LOO_BOOT, fast=True), setup.primary)
        for key, value in reference.items():
            # the best cell's own run is not "another run it depends on": without it the cell is gone
            own = key == "best" and cell_of.get(exp) == value
            if key not in flips and not own and got.get(key, "") != value:
                flips[key] = (exp, value, got.get(key, ""))
    return flips


def mark_fragile(table: pd.DataFrame, flips: dict[str, tuple[str, str, str]]) -> pd.DataFrame:
    """Verdicts that flip without one run: verdict 'fragile: depends on <run>', the two values in the evidence."""
    table = table.copy()
    for i, r in table.iterrows():
        flip = flips.get(f"verdict {r['id']}")
        if flip is None or r["verdict"] == verdicts.NOT_APPLICABLE:
            continue
        exp, was, now = flip
        table.at[i, "evidence"] = f"{r['evidence']}; with every run '{r['verdict']}', without {exp} '{now}'"
        table.at[i, "verdict"] = f"fragile: depends on {exp}"
    return table
