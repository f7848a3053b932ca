"""Verdicts on the study's hypotheses about settings: which lr is best (H1), does stability improve with
batch size (H2), which architecture is most sensitive, most robust or gains most from larger batches (H3).

Every comparison between levels is matched (``common.matched``): only the settings present at every level
compared enter it, and the evidence says how many. Stability is judged on runs that learned only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTORS, OSCILLATION, PERFORMANCE, STABILITY
from hpc_unet.analysis.stats import ALPHA, Anova, contrast, correlation
from hpc_unet.analysis.verdicts.common import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Context,
    Verdict,
    direction,
    groups,
    listed,
    lr_text,
    matched,
    p_text,
    same,
)

_COMPARES_ARCHITECTURES = ("stability_gain_strongest", "most_sensitive", "batch_gain_largest", "most_robust")
_NEEDS_BATCHES = ("std_falls_with_batch", "stability_gain_strongest", "batch_gain_largest")


def not_applicable(ctx: Context, h: dict[str, Any]) -> str:
    """Why the grid cannot test ``h`` ('' when it can): a level it names is not in the grid."""
    archs = ctx.grid_levels("architecture")
    if "architecture" in h and h["architecture"] not in archs:
        return f"the grid has no architecture {h['architecture']}"
    for lr in listed(h.get("learning_rate", [])):
        if not any(same(lr, x) for x in ctx.grid_levels("learning_rate")):
            return f"the grid has no lr {lr_text(lr)}"
    for bs in listed(h.get("batch_size", [])):
        if int(bs) not in {int(b) for b in ctx.grid_levels("batch_size")}:
            return f"the grid has no batch size {int(bs)}"
    rule = h["rule"]
    if rule in _COMPARES_ARCHITECTURES and len(archs) < 2:
        return "the grid has one architecture; this claim compares architectures"
    if rule in _NEEDS_BATCHES and len(ctx.grid_levels("batch_size")) < 2:
        return "the grid has one batch size"
    if rule == "lr_range_best":
        lo, hi = sorted(float(x) for x in h["learning_rate"])
        if all(lo <= float(x) <= hi for x in ctx.grid_levels("learning_rate")):
            return f"the grid has no lr outside {lr_text(lo)} to {lr_text(hi)}"
    if rule == "best_lr" and len(ctx.grid_levels("learning_rate")) < 2:
        return "the grid has one learning rate"
    return ""


def _lr_groups(ctx: Context, arch: str) -> tuple[dict[float, np.ndarray], int]:
    """An architecture's Jaccards per lr over the (batch, seed) settings completed at every lr."""
    kept, n = matched(ctx.completed[ctx.completed["architecture"] == arch], "learning_rate", PERFORMANCE)
    return groups(kept, "learning_rate", PERFORMANCE), n


def h1_range(ctx: Context, h: dict[str, Any]) -> Verdict:
    lo, hi = sorted(float(x) for x in h["learning_rate"])
    parts, outcomes, ps = [], [], []
    for arch in ctx.architectures:
        g, n = _lr_groups(ctx, arch)
        inside = [lr for lr in g if lo <= lr <= hi]
        outside = [lr for lr in g if lr not in inside]
        if not inside or not outside:
            outcomes.append("=")
            parts.append(f"{arch}: no matched runs both inside and outside the range")
            continue
        means = {lr: v.mean() for lr, v in g.items()}
        bi, bo = max(inside, key=means.get), max(outside, key=means.get)
        diff, p = contrast(g[bi], g[bo], ctx.anova_j)
        outcomes.append(direction(diff, p))
        ps.append((outcomes[-1], p))
        best = max(means, key=means.get)
        parts.append(f"{arch}: best lr {lr_text(best)} (J={means[best]:.3f}); best inside {lr_text(bi)} vs best "
                     f"outside {lr_text(bo)}: {diff:+.3f}, {p_text(p)} (over {n} matched batch/seed settings)")
    if outcomes and all(o == "+" for o in outcomes):
        verdict, p = SUPPORTED, max(p for _, p in ps)
    elif "-" in outcomes:
        verdict, p = NOT_SUPPORTED, min(p for o, p in ps if o == "-")
    else:
        verdict, p = INCONCLUSIVE, math.nan
        parts.append("some differences are within noise or untestable")
    return Verdict(h["id"], h["claim"], verdict, "; ".join(parts) or "no completed runs", p)


def h1_architecture(ctx: Context, h: dict[str, Any]) -> Verdict:
    arch, predicted = h["architecture"], float(listed(h["learning_rate"])[0])
    g, n = _lr_groups(ctx, arch)
    hit = [lr for lr in g if same(lr, predicted)]
    if not hit:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, f"no matched {arch} runs at lr {lr_text(predicted)}")
    others = [lr for lr in g if lr != hit[0]]
    if not others:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, "no other learning rate completed to compare with")
    means = {lr: v.mean() for lr, v in g.items()}
    rival = max(others, key=means.get)
    diff, p = contrast(g[hit[0]], g[rival], ctx.anova_j)
    verdict = {"+": SUPPORTED, "-": NOT_SUPPORTED}.get(direction(diff, p), INCONCLUSIVE)
    evidence = (f"J at {lr_text(predicted)} = {means[hit[0]]:.3f} vs best other lr {lr_text(rival)} = "
                f"{means[rival]:.3f} (diff {diff:+.3f}, {p_text(p)}, over {n} matched batch/seed settings)")
    if verdict == INCONCLUSIVE:
        evidence += "; the difference is within noise"
    return Verdict(h["id"], h["claim"], verdict, evidence, p)


def _batch_p(frame: pd.DataFrame, anova: Anova | None, metric: str) -> tuple[float, str]:
    p = anova.p("batch_size") if anova is not None else math.nan
    if np.isfinite(p):
        assert anova is not None and anova.table is not None
        row = anova.table.loc["batch size"]
        return p, f"ANOVA batch effect F={row['F']:.2f}, {p_text(p)}, partial eta^2={row['partial_eta_sq']:.2f}"
    c = correlation(frame, "batch_size", metric)
    p = float(c["spearman_p"])
    return p, f"Spearman rho(batch, std)={float(c['spearman_rho']):.2f}, {p_text(p)} (ANOVA unavailable)"


def _ordering(frame: pd.DataFrame, order: list[int], metric: str, anova: Anova | None
              ) -> tuple[str, str, float]:
    """('+', '-', '=' or '?', evidence, p): does ``metric`` fall along the batch sizes in ``order``?

    Symmetric: the order decides the direction only when the batch effect is significant; within noise it
    is '=' whichever way the means point.
    """
    kept, n = matched(frame, "batch_size", metric, [b for b in order])
    g = groups(kept, "batch_size", metric)
    present = [b for b in order if b in g]
    if len(present) < 2:
        return "?", f"{len(present)} listed batch size(s) with matched runs that learned", math.nan
    means = [g[b].mean() for b in present]
    text = ", ".join(f"BS{b}: {g[b].mean():.4f}" for b in present) + f" (means over {n} matched settings)"
    p, test = _batch_p(frame, anova, metric)
    falls = all(a > b for a, b in zip(means, means[1:], strict=False))
    if not (np.isfinite(p) and p < ALPHA):
        order_words = "as predicted" if falls else "not the predicted one"
        return "=", f"{text}; {test}; the order is {order_words} but within noise", p
    if falls:
        return "+", f"{text}; {test}", p
    return "-", f"{text}; {test}; the order is not the predicted one", p


def h2(ctx: Context, h: dict[str, Any]) -> Verdict:
    order = [int(b) for b in listed(h["batch_size"])]
    learned = ctx.learned
    raw, raw_text, p = _ordering(learned, order, STABILITY, ctx.anova_s)
    osc, osc_text, _ = _ordering(learned, order, OSCILLATION, ctx.anova_o)
    evidence = f"val-loss std (the seed's measure) {raw_text}"
    if OSCILLATION in learned.columns and learned[OSCILLATION].notna().any():
        evidence += f" | detrended std (oscillation) {osc_text}"
        if {raw, osc} == {"+", "-"}:
            evidence += (" | the two measures disagree: the raw std also counts the descent of the loss, the "
                         "detrended std only its oscillation (docs/analysis.md)")
    missing = [b for b in order if b not in set(learned["batch_size"].astype(int))]
    if missing:
        evidence += f" (batch sizes {missing} have no runs that learned)"
    excluded = len(ctx.completed) - len(learned)
    if excluded:
        evidence += f"; {excluded} run(s) that did not learn or are marginal are excluded"
    if ctx.steps_note:
        evidence += f"; {ctx.steps_note}"
    verdict = {"+": SUPPORTED, "-": NOT_SUPPORTED}.get(raw, INCONCLUSIVE)
    return Verdict(h["id"], h["claim"], verdict, evidence, p if verdict != INCONCLUSIVE else math.nan)


def per_arch_batch_change(frame: pd.DataFrame, archs: list[str], metric: str
                          ) -> dict[str, tuple[float, float, int]]:
    """arch -> (mean at the smallest batch, mean at the largest, matched settings), over the lr/seed
    settings present at both."""
    out = {}
    for arch in archs:
        mine = frame[frame["architecture"] == arch]
        sizes = sorted(set(mine.loc[np.isfinite(mine[metric].astype(float)), "batch_size"]))
        if len(sizes) < 2:
            continue
        kept, n = matched(mine, "batch_size", metric, [sizes[0], sizes[-1]])
        g = groups(kept, "batch_size", metric)
        if len(g) == 2:
            out[arch] = (g[min(g)].mean(), g[max(g)].mean(), n)
    return out


def reduction(lo: float, hi: float) -> float:
    """Relative fall from the smallest to the largest batch: 1 - hi / lo (NaN when lo <= 0)."""
    return 1 - hi / lo if lo > 0 else math.nan


def _gated(p: float, top_is_predicted: bool, evidence: str, what: str) -> tuple[str, str]:
    if not np.isfinite(p):
        return INCONCLUSIVE, evidence + f"; {what} untestable (no ANOVA term)"
    if p >= ALPHA:
        return INCONCLUSIVE, evidence + f"; {what} not significant ({p_text(p)}): the differences are within noise"
    return (SUPPORTED if top_is_predicted else NOT_SUPPORTED), evidence + f"; {what} {p_text(p)}"


def _gated_verdict(h: dict[str, Any], p: float, top_is_predicted: bool, evidence: str, what: str) -> Verdict:
    verdict, evidence = _gated(p, top_is_predicted, evidence, what)
    return Verdict(h["id"], h["claim"], verdict, evidence, p if verdict != INCONCLUSIVE else math.nan)


def h2_unet(ctx: Context, h: dict[str, Any]) -> Verdict:
    arch = h["architecture"]
    change = per_arch_batch_change(ctx.learned, ctx.architectures, STABILITY)
    if arch not in change or len(change) < 2:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE,
                       f"{arch} and another architecture need matched runs that learned at 2+ batch sizes")
    red = {a: reduction(lo, hi) for a, (lo, hi, _) in change.items()}
    top = max(red, key=lambda a: red[a] if np.isfinite(red[a]) else -math.inf)
    evidence = "std reduction smallest->largest batch: " + ", ".join(
        f"{a} {r:.0%} (over {change[a][2]} matched lr/seed settings)" for a, r in red.items())
    osc = per_arch_batch_change(ctx.learned, ctx.architectures, OSCILLATION)
    if osc:
        evidence += "; detrended: " + ", ".join(f"{a} {reduction(lo, hi):.0%}" for a, (lo, hi, _) in osc.items()
                                                if lo > 0)
    return _gated_verdict(h, ctx.anova_s.p("architecture", "batch_size"), top == arch, evidence,
                          "architecture x batch interaction on std")


def _sensitivity(ctx: Context) -> tuple[dict[str, float], int]:
    """arch -> std of its (lr, batch) cell means of the Jaccard over the cells every architecture completed."""
    cells = ctx.completed.groupby(list(FACTORS))[PERFORMANCE].mean().reset_index()
    cells = cells[cells["architecture"].isin(ctx.architectures)]
    kept, n = matched(cells, "architecture", PERFORMANCE)
    out = {}
    for arch in ctx.architectures:
        grp = kept[kept["architecture"] == arch]
        if len(grp) >= 2:
            out[arch] = float(grp[PERFORMANCE].std(ddof=1))
    return out, n


def _interaction_gate(ctx: Context) -> float:
    """Bonferroni-adjusted min p of the architecture x lr and architecture x batch interactions."""
    ps = [p for p in (ctx.anova_j.p("architecture", "learning_rate"), ctx.anova_j.p("architecture", "batch_size"))
          if np.isfinite(p)]
    return min(1.0, len(ps) * min(ps)) if ps else math.nan


def _spread(ctx: Context, h: dict[str, Any], pick: Callable[..., str]) -> Verdict:
    arch = h["architecture"]
    sens, n = _sensitivity(ctx)
    if arch not in sens or len(sens) < 2:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE,
                       f"{arch} and another architecture need 2+ cells completed by every architecture")
    evidence = (f"std of cell-mean Jaccard over the {n} (lr, batch) cells every architecture completed: "
                + ", ".join(f"{a} {s:.3f}" for a, s in sens.items()))
    return _gated_verdict(h, _interaction_gate(ctx), pick(sens, key=sens.get) == arch, evidence,
                          "architecture x setting interactions (Bonferroni)")


def h3_sensitive(ctx: Context, h: dict[str, Any]) -> Verdict:
    return _spread(ctx, h, max)


def h3_robust(ctx: Context, h: dict[str, Any]) -> Verdict:
    return _spread(ctx, h, min)


def h3_batch_gain(ctx: Context, h: dict[str, Any]) -> Verdict:
    arch = h["architecture"]
    change = per_arch_batch_change(ctx.completed, ctx.architectures, PERFORMANCE)
    if arch not in change or len(change) < 2:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, f"{arch} and another architecture need 2+ batch sizes")
    gain = {a: hi - lo for a, (lo, hi, _) in change.items()}
    evidence = "Jaccard gain smallest->largest batch: " + ", ".join(
        f"{a} {g:+.3f} (over {change[a][2]} matched lr/seed settings)" for a, g in gain.items())
    if ctx.steps_note:
        evidence += f"; {ctx.steps_note}"
    return _gated_verdict(h, ctx.anova_j.p("architecture", "batch_size"), max(gain, key=gain.get) == arch,
                          evidence, "architecture x batch interaction")
