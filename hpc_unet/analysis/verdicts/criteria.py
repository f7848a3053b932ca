"""Verdicts on the success criteria: the best configurations against a baseline (S1 stability, S2
performance, S4 convergence, S5 efficiency), consistency across seeds (S3), and whether the recommended
setting beats a typical one on patches it was not chosen on (S6)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import OSCILLATION, PERFORMANCE, STABILITY, learned_runs, patch_arrays
from hpc_unet.analysis.stats import LEVEL, Difference, difference, icc_oneway
from hpc_unet.analysis.verdicts.common import (
    ICC_GOOD,
    ICC_POOR,
    INCONCLUSIVE,
    NONINFERIORITY,
    NOT_SUPPORTED,
    SUPPORTED,
    Context,
    Verdict,
    best_cells,
    cell_runs,
    combine,
    interval_verdict,
    lr_text,
    with_note,
)


def _against_baseline(ctx: Context, h: dict[str, Any],
                      judge: Callable[[str, pd.DataFrame, pd.DataFrame], tuple[bool | None, str]],
                      needs_learning: bool = False) -> Verdict:
    """Per architecture: judge(arch, runs of its best configuration, its baseline runs) -> (ok, text)."""
    if ctx.baseline is None:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, "no baseline given (pass --baseline DIR)")
    base_all = ctx.baseline
    base_runs = learned_runs(base_all) if needs_learning else base_all
    best = best_cells(ctx)
    parts, outcomes = [], []
    for arch in ctx.architectures:
        base = base_runs[base_runs["architecture"] == arch]
        if arch not in best or base.empty:
            why = ("no completed grid run that learned" if arch not in best else
                   "its baseline run did not learn, so its stability/convergence is undefined"
                   if (base_all["architecture"] == arch).any() else "no baseline run")
            parts.append(f"{arch}: {why}")
            outcomes.append(None)
            continue
        r = best[arch]
        runs = cell_runs(ctx.learned, arch, r["learning_rate"], int(r["batch_size"]))
        ok, text = judge(arch, runs, base)
        outcomes.append(ok)
        parts.append(f"{arch}: {text}")
    return Verdict(h["id"], h["claim"], combine(outcomes), "; ".join(parts))


def s1_stability(ctx: Context, h: dict[str, Any]) -> Verdict:
    reduction = float(h["reduction"])

    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        d = difference(runs, base, STABILITY, n_boot=ctx.n_boot)
        b = float(base[STABILITY].mean())
        if not (np.isfinite(d.diff) and b > 0):
            return None, "std unavailable"
        ok = interval_verdict(d, good_below=-reduction * b)
        text = (f"std {float(runs[STABILITY].mean()):.4f} vs baseline {b:.4f} ({-d.diff / b:.0%} lower); "
                f"difference {d.text('{:+.4f}')}; needs < {-reduction * b:+.4f}")
        has_osc = OSCILLATION in runs.columns and OSCILLATION in base.columns
        od = difference(runs, base, OSCILLATION, n_boot=ctx.n_boot) if has_osc else Difference(math.nan)
        ob = float(base[OSCILLATION].mean()) if has_osc else math.nan
        if np.isfinite(od.diff) and np.isfinite(ob) and ob > 0:
            text += f"; detrended std {float(runs[OSCILLATION].mean()):.4f} vs {ob:.4f} ({-od.diff / ob:.0%} lower)"
        if ok is None:
            text += " (the interval straddles the threshold or is missing: inconclusive)"
        return ok, text

    return _against_baseline(ctx, h, judge, needs_learning=True)


def s2_performance(ctx: Context, h: dict[str, Any]) -> Verdict:
    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        d = difference(runs, base, PERFORMANCE, n_boot=ctx.n_boot)
        ok = interval_verdict(d, good_above=-NONINFERIORITY)
        text = (f"best J {float(runs[PERFORMANCE].mean()):.3f} vs baseline {float(base[PERFORMANCE].mean()):.3f}: "
                f"difference {d.text()}; maintained if the interval lies above {-NONINFERIORITY:+.2f}")
        return ok, text

    return _against_baseline(ctx, h, judge)


def s3_consistency(ctx: Context, h: dict[str, Any]) -> Verdict:
    icc = icc_oneway(ctx.completed, PERFORMANCE)
    if not np.isfinite(float(icc["icc"])):
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, str(icc["note"]) or "ICC undefined")
    value = float(icc["icc"])
    evidence = (f"ICC(1) of the Jaccard = {value:.2f} over {icc['cells']} cells with repeated seeds "
                f"({icc['runs']} runs); seed-to-seed SD {float(icc['within_sd']):.4f}")
    if value >= ICC_GOOD:
        return Verdict(h["id"], h["claim"], SUPPORTED, evidence + f" (>= {ICC_GOOD})")
    if value < ICC_POOR:
        return Verdict(h["id"], h["claim"], NOT_SUPPORTED,
                       evidence + f" (< {ICC_POOR}: seeds move scores as much as settings)")
    return Verdict(h["id"], h["claim"], INCONCLUSIVE, evidence + f" (between {ICC_POOR} and {ICC_GOOD}: moderate)")


def _epochs_to_reach(ctx: Context, runs: pd.DataFrame, target: float) -> tuple[pd.DataFrame, str]:
    """runs with a ``to_target`` column: epochs to reach ``target`` val Jaccard (inf if never)."""
    out = runs.copy()
    if ctx.history is not None and "val_jacard_coef" in ctx.history.columns:
        hist = ctx.history[ctx.history["exp_id"].isin(runs["exp_id"])]
        if not hist.empty:
            reach = {}
            for exp, hh in hist.groupby("exp_id"):
                hit = hh.loc[hh["val_jacard_coef"] >= target, "epoch"]
                reach[exp] = float(hit.min()) if len(hit) else math.inf
            out["to_target"] = out["exp_id"].map(reach).astype(float)
            return out, "epochs to reach the baseline's best J"
    out["to_target"] = out["best_epoch"].astype(float)
    return out, "epochs to best (no history)"


def s4_convergence(ctx: Context, h: dict[str, Any]) -> Verdict:
    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        base_e = base.assign(to_target=base["best_epoch"].astype(float))
        if not np.isfinite(base_e["to_target"]).any():
            return None, "the baseline has no best epoch recorded, so its convergence is unknown"
        target = float(base[PERFORMANCE].mean())
        reached, how = _epochs_to_reach(ctx, runs, target)
        finite = reached["to_target"][np.isfinite(reached["to_target"])]
        if finite.empty:
            return False, f"the best configuration never reached the baseline's best J {target:.3f}"
        never = len(reached) - len(finite)
        runs_text = f"{float(finite.mean()):.1f}" + (f" ({never} of {len(reached)} runs never reached it)"
                                                     if never else "")
        d = difference(reached, base_e, "to_target", n_boot=ctx.n_boot)  # over the runs that reached it
        ok = interval_verdict(d, good_below=0.0)
        text = (f"{how}: {runs_text} vs baseline's epochs to best "
                f"{float(base_e['to_target'].mean()):.1f}; difference {d.text('{:+.1f}')}")
        if ok and never:
            return None, text + " (faster where it got there, but not every run did: inconclusive)"
        return with_note(ok, text)

    return _against_baseline(ctx, h, judge, needs_learning=True)


def s5_efficiency(ctx: Context, h: dict[str, Any]) -> Verdict:
    unit = ctx.hour_unit
    recs = ctx.recommendations
    eff = recs[recs["kind"].astype(str).str.contains("most efficient")] if not recs.empty else recs
    listing = "; ".join(f"most efficient {r['architecture']}: lr {lr_text(r['learning_rate'])} bs {int(r['batch_size'])} "
                        f"({float(r['jaccard_per_gpu_hour']):.2g} J per {unit})" for r in eff.to_dict("records"))

    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        d = difference(runs, base, "jaccard_per_gpu_hour", n_boot=ctx.n_boot)
        if not np.isfinite(d.diff):
            return None, "training time not recorded"
        ok = interval_verdict(d, good_above=0.0)
        text = (f"best configuration {float(runs['jaccard_per_gpu_hour'].mean()):.2g} vs baseline "
                f"{float(base['jaccard_per_gpu_hour'].mean()):.2g} J per {unit}; difference {d.text('{:+.2g}')}")
        return with_note(ok, text)

    verdict = _against_baseline(ctx, h, judge)
    if listing:
        verdict.evidence += f" ({listing})"
    return verdict


# ------------------------------------------------------------------------------------------------- S6
SPLIT_SEED = 0  # the patch halves are a fixed, seeded split so the report is reproducible


def _patch_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def _split_half(ctx: Context, arch: str, n_boot: int) -> tuple[bool | None, str] | None:
    """Select the best learned cell on one half of the validation patches and estimate, on the other half,
    its pooled Jaccard minus the median over the architecture's learned cells, with a paired bootstrap over
    the held-out half. None when the runs lack equal-length per-patch lists."""
    mine = ctx.learned[ctx.learned["architecture"] == arch]
    cells: dict[tuple[float, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    cols = ["learning_rate", "batch_size", *(c for c in ("val_patch_intersection", "val_patch_union") if c in mine)]
    for row in mine[cols].to_dict("records"):
        patches = patch_arrays(row)
        if patches is None:
            return None
        cells.setdefault((float(row["learning_rate"]), int(row["batch_size"])), []).append(patches)
    sizes = {i.size for runs in cells.values() for i, _ in runs}
    if len(cells) < 2 or len(sizes) != 1 or sizes.pop() < 4:
        return None
    keys = list(cells)
    inter = np.stack([np.mean([i for i, _ in cells[k]], axis=0) for k in keys])  # cells x patches (mean over seeds)
    union = np.stack([np.mean([u for _, u in cells[k]], axis=0) for k in keys])
    select, estimate = _patch_halves(inter.shape[1])
    pooled = (inter[:, select].sum(1) + 1) / (union[:, select].sum(1) + 1)
    top = int(np.argmax(pooled))
    held = (inter[:, estimate].sum(1) + 1) / (union[:, estimate].sum(1) + 1)
    diff = float(held[top] - np.median(held))
    rng = np.random.default_rng(SPLIT_SEED + 1)
    idx = estimate[rng.integers(0, estimate.size, size=(n_boot, estimate.size))]
    boots = (inter[:, idx].sum(2) + 1) / (union[:, idx].sum(2) + 1)  # cells x resamples
    dist = boots[top] - np.median(boots, axis=0)
    lo, hi = np.quantile(dist, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    d = Difference(diff, float(lo), float(hi), f"paired bootstrap over {estimate.size} held-out val patches")
    ok = interval_verdict(d, good_above=0.0)
    lr, bs = keys[top]
    reps = max(len(v) for v in cells.values())
    text = (f"lr {lr_text(lr)} bs {bs} chosen on {select.size} patches; on the other {estimate.size} its J "
            f"{held[top]:.3f} vs the median of {len(keys)} learned cells {float(np.median(held)):.3f}: {d.text()}")
    if reps < 2:
        text += "; one run per cell, so the spread between training runs is unknown"
    return ok, text + ("" if ok is not None else " - within noise of the median cell (inconclusive)")


def s6_recommendations(ctx: Context, h: dict[str, Any]) -> Verdict:
    """Each architecture's best cell, chosen on half of the validation patches, must beat the median of its
    learned cells on the other half beyond the interval of the difference."""
    parts, outcomes = [], []
    for arch in ctx.architectures:
        if not (ctx.learned["architecture"] == arch).any():
            done = (ctx.completed["architecture"] == arch).any()
            parts.append(f"{arch}: " + ("no run learned" if done else "no completed runs"))
            outcomes.append(False if done else None)
            continue
        judged = _split_half(ctx, arch, ctx.n_boot)
        if judged is None:
            parts.append(f"{arch}: needs 2+ learned cells with per-patch scores of equal length (none to split)")
            outcomes.append(None)
            continue
        outcomes.append(judged[0])
        parts.append(f"{arch}: {judged[1]}")
    return Verdict(h["id"], h["claim"], combine(outcomes), "; ".join(parts) or "no completed runs")
