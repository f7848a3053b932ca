"""Verdicts on the study's hypotheses (H1-H3) and success criteria, and per-architecture recommendations.

Every verdict is one of three words and carries its numbers. The rule throughout: a claim is
*supported* when the data point its way and the relevant test is significant at ALPHA, *not supported*
when they point the other way (significantly, or, for orderings the plan predicts, visibly),
*inconclusive* when the difference is within noise or the data to judge it are missing (with why).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTORS, PERFORMANCE, STABILITY, arch_order
from hpc_unet.analysis.stats import ALPHA, Anova, contrast, correlation, icc_oneway
from hpc_unet.manifest import format_number

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
LR_RANGE = (5e-4, 1e-3)
PREDICTED_LR = {"UNet": 5e-4, "Attention_UNet": 1e-3, "Attention_ResUNet": 1e-3}
STABILITY_REDUCTION = 0.5
ICC_GOOD, ICC_POOR = 0.75, 0.5  # Koo & Li (2016) reliability bands


@dataclass
class Verdict:
    id: str
    claim: str
    verdict: str
    evidence: str


@dataclass
class Context:
    """What the verdicts are judged on."""

    completed: pd.DataFrame
    architectures: list[str]
    anova_j: Anova
    anova_s: Anova
    cells_j: pd.DataFrame  # stats.cell_intervals of the Jaccard
    recommendations: pd.DataFrame
    baseline: pd.DataFrame | None = None
    history: pd.DataFrame | None = None


def lr_text(lr: float) -> str:
    return format_number(float(lr))


def p_text(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def _groups(frame: pd.DataFrame, by: str, metric: str) -> dict[float, np.ndarray]:
    data = frame[np.isfinite(frame[metric].astype(float))]
    return {k: g[metric].astype(float).to_numpy() for k, g in data.groupby(by, sort=True)}


def _direction(diff: float, p: float) -> str:
    """'+' significantly higher, '-' significantly lower, '=' within noise or untestable."""
    if not (np.isfinite(diff) and np.isfinite(p)) or p >= ALPHA:
        return "="
    return "+" if diff > 0 else "-"


# -------------------------------------------------------------------------------------------------- H1
def h1_range(ctx: Context) -> Verdict:
    claim = f"learning rates {lr_text(LR_RANGE[0])} to {lr_text(LR_RANGE[1])} give the best Jaccard for every architecture"
    parts, outcomes = [], []
    for arch in ctx.architectures:
        g = _groups(ctx.completed[ctx.completed["architecture"] == arch], "learning_rate", PERFORMANCE)
        inside = [lr for lr in g if LR_RANGE[0] <= lr <= LR_RANGE[1]]
        outside = [lr for lr in g if lr not in inside]
        if not inside or not outside:
            outcomes.append("=")
            parts.append(f"{arch}: no completed runs both inside and outside the range")
            continue
        means = {lr: v.mean() for lr, v in g.items()}
        bi, bo = max(inside, key=means.get), max(outside, key=means.get)
        diff, p = contrast(g[bi], g[bo], ctx.anova_j)
        outcomes.append(_direction(diff, p))
        best = max(means, key=means.get)
        parts.append(f"{arch}: best lr {lr_text(best)} (J={means[best]:.3f}); best inside {lr_text(bi)} vs best "
                     f"outside {lr_text(bo)}: {diff:+.3f}, {p_text(p)}")
    if outcomes and all(o == "+" for o in outcomes):
        verdict = SUPPORTED
    elif "-" in outcomes:
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
        parts.append("some differences are within noise or untestable")
    return Verdict("H1", claim, verdict, "; ".join(parts) or "no completed runs")


def h1_architecture(ctx: Context, arch: str, predicted: float) -> Verdict:
    claim = f"{arch} is best at lr {lr_text(predicted)}"
    g = _groups(ctx.completed[ctx.completed["architecture"] == arch], "learning_rate", PERFORMANCE)
    hit = [lr for lr in g if _same(lr, predicted)]
    if not hit:
        return Verdict(f"H1-{arch}", claim, INCONCLUSIVE, f"no completed {arch} runs at lr {lr_text(predicted)}")
    others = [lr for lr in g if lr != hit[0]]
    if not others:
        return Verdict(f"H1-{arch}", claim, INCONCLUSIVE, "no other learning rate completed to compare with")
    means = {lr: v.mean() for lr, v in g.items()}
    rival = max(others, key=means.get)
    diff, p = contrast(g[hit[0]], g[rival], ctx.anova_j)
    direction = _direction(diff, p)
    verdict = {"+": SUPPORTED, "-": NOT_SUPPORTED}.get(direction, INCONCLUSIVE)
    evidence = (f"J at {lr_text(predicted)} = {means[hit[0]]:.3f} vs best other lr {lr_text(rival)} = "
                f"{means[rival]:.3f} (diff {diff:+.3f}, {p_text(p)}, over batch sizes and seeds)")
    if verdict == INCONCLUSIVE:
        evidence += "; the difference is within noise"
    return Verdict(f"H1-{arch}", claim, verdict, evidence)


# -------------------------------------------------------------------------------------------------- H2
def _batch_p(ctx: Context) -> tuple[float, str]:
    p = ctx.anova_s.p("batch_size")
    if np.isfinite(p):
        t = ctx.anova_s.table
        assert t is not None
        row = t.loc["batch size"]
        return p, f"ANOVA batch effect F={row['F']:.2f}, {p_text(p)}, partial eta^2={row['partial_eta_sq']:.2f}"
    c = correlation(ctx.completed, "batch_size", STABILITY)
    p = float(c["spearman_p"])
    if np.isfinite(p) and float(c["spearman_rho"]) < 0:
        return p, f"Spearman rho(batch, std)={float(c['spearman_rho']):.2f}, {p_text(p)} (ANOVA unavailable)"
    return (1.0 if np.isfinite(p) else math.nan), f"no significant decrease ({p_text(p)}, ANOVA unavailable)"


def h2(ctx: Context) -> Verdict:
    claim = "val-loss std falls with batch size: BS32 < BS16 < BS8"
    g = _groups(ctx.completed, "batch_size", STABILITY)
    if len(g) < 2:
        return Verdict("H2", claim, INCONCLUSIVE, f"{len(g)} batch size(s) with completed runs; need 2 or more")
    means = [g[b].mean() for b in sorted(g)]
    order = ", ".join(f"BS{b}: {g[b].mean():.4f}" for b in sorted(g))
    p, test = _batch_p(ctx)
    evidence = f"mean val-loss std {order}; {test}"
    untested = [b for b in (8, 16, 32) if b not in g]
    if untested:
        evidence += f" (batch sizes {untested} have no completed runs)"
    if not all(a > b for a, b in zip(means, means[1:], strict=False)):
        return Verdict("H2", claim, NOT_SUPPORTED, evidence + "; the order is not the predicted one")
    if np.isfinite(p) and p < ALPHA:
        return Verdict("H2", claim, SUPPORTED, evidence)
    return Verdict("H2", claim, INCONCLUSIVE, evidence + "; the order is as predicted but not significant")


def _per_arch_batch_change(ctx: Context, metric: str) -> dict[str, tuple[float, float]]:
    """arch -> (mean at the smallest batch, mean at the largest batch)."""
    out = {}
    for arch in ctx.architectures:
        g = _groups(ctx.completed[ctx.completed["architecture"] == arch], "batch_size", metric)
        if len(g) >= 2:
            out[arch] = (g[min(g)].mean(), g[max(g)].mean())
    return out


def _gated(ctx_p: float, top_is_predicted: bool, evidence: str, what: str) -> tuple[str, str]:
    if not np.isfinite(ctx_p):
        return INCONCLUSIVE, evidence + f"; {what} untestable (no ANOVA term)"
    if ctx_p >= ALPHA:
        return INCONCLUSIVE, evidence + f"; {what} not significant ({p_text(ctx_p)}): the differences are within noise"
    return (SUPPORTED if top_is_predicted else NOT_SUPPORTED), evidence + f"; {what} {p_text(ctx_p)}"


def h2_unet(ctx: Context) -> Verdict:
    claim = "the stability gain from larger batches is strongest for UNet"
    change = _per_arch_batch_change(ctx, STABILITY)
    if "UNet" not in change or len(change) < 2:
        return Verdict("H2-UNet", claim, INCONCLUSIVE, "UNet and another architecture need runs at 2+ batch sizes")
    reduction = {a: 1 - hi / lo if lo > 0 else math.nan for a, (lo, hi) in change.items()}
    top = max(reduction, key=lambda a: reduction[a] if np.isfinite(reduction[a]) else -math.inf)
    evidence = "std reduction smallest->largest batch: " + ", ".join(f"{a} {r:.0%}" for a, r in reduction.items())
    verdict, evidence = _gated(ctx.anova_s.p("architecture", "batch_size"), top == "UNet", evidence,
                               "architecture x batch interaction on std")
    return Verdict("H2-UNet", claim, verdict, evidence)


# -------------------------------------------------------------------------------------------------- H3
def _sensitivity(ctx: Context) -> dict[str, float]:
    """arch -> std of its (lr, batch) cell means of the Jaccard: how much the settings move it."""
    cells = ctx.completed.groupby(list(FACTORS))[PERFORMANCE].mean().reset_index()
    out = {}
    for arch in ctx.architectures:
        grp = cells[cells["architecture"] == arch]
        if len(grp) >= 2:
            out[arch] = float(grp[PERFORMANCE].std(ddof=1))
    return out


def _interaction_gate(ctx: Context) -> float:
    """Bonferroni-adjusted min p of the architecture x lr and architecture x batch interactions."""
    ps = [p for p in (ctx.anova_j.p("architecture", "learning_rate"), ctx.anova_j.p("architecture", "batch_size"))
          if np.isfinite(p)]
    return min(1.0, len(ps) * min(ps)) if ps else math.nan


def h3_sensitive(ctx: Context) -> Verdict:
    claim = "UNet is the most sensitive to learning rate and batch size"
    sens = _sensitivity(ctx)
    if "UNet" not in sens or len(sens) < 2:
        return Verdict("H3-sensitive", claim, INCONCLUSIVE, "UNet and another architecture need 2+ completed cells")
    evidence = "std of cell-mean Jaccard over (lr, batch): " + ", ".join(f"{a} {s:.3f}" for a, s in sens.items())
    verdict, evidence = _gated(_interaction_gate(ctx), max(sens, key=sens.get) == "UNet", evidence,
                               "architecture x setting interactions (Bonferroni)")
    return Verdict("H3-sensitive", claim, verdict, evidence)


def h3_batch_gain(ctx: Context) -> Verdict:
    claim = "Attention_UNet gains most from larger batches"
    change = _per_arch_batch_change(ctx, PERFORMANCE)
    if "Attention_UNet" not in change or len(change) < 2:
        return Verdict("H3-batch", claim, INCONCLUSIVE, "Attention_UNet and another architecture need 2+ batch sizes")
    gain = {a: hi - lo for a, (lo, hi) in change.items()}
    evidence = "Jaccard gain smallest->largest batch: " + ", ".join(f"{a} {g:+.3f}" for a, g in gain.items())
    top = max(gain, key=gain.get)
    verdict, evidence = _gated(ctx.anova_j.p("architecture", "batch_size"), top == "Attention_UNet", evidence,
                               "architecture x batch interaction")
    return Verdict("H3-batch", claim, verdict, evidence)


def h3_robust(ctx: Context) -> Verdict:
    claim = "Attention_ResUNet is the most robust to learning rate and batch size"
    sens = _sensitivity(ctx)
    if "Attention_ResUNet" not in sens or len(sens) < 2:
        return Verdict("H3-robust", claim, INCONCLUSIVE,
                       "Attention_ResUNet and another architecture need 2+ completed cells")
    evidence = "std of cell-mean Jaccard over (lr, batch): " + ", ".join(f"{a} {s:.3f}" for a, s in sens.items())
    verdict, evidence = _gated(_interaction_gate(ctx), min(sens, key=sens.get) == "Attention_ResUNet", evidence,
                               "architecture x setting interactions (Bonferroni)")
    return Verdict("H3-robust", claim, verdict, evidence)


# ------------------------------------------------------------------------------------- success criteria
def _best(ctx: Context) -> dict[str, dict]:
    rec = ctx.recommendations
    if rec.empty:
        return {}
    best = rec[rec["kind"] == "best"]
    return {str(r["architecture"]): r for r in best.to_dict("records")}


def _baseline_means(ctx: Context, metric: str) -> dict[str, float]:
    if ctx.baseline is None:
        return {}
    data = ctx.baseline[np.isfinite(ctx.baseline[metric].astype(float))]
    return {str(a): float(g[metric].mean()) for a, g in data.groupby("architecture")}


def _against_baseline(ctx: Context, vid: str, claim: str, metric: str,
                      judge: Callable[[str, dict, float], tuple[bool | None, str]]) -> Verdict:
    """Shared frame for the baseline criteria: per architecture, judge(best_row, base_value) -> (ok, text)."""
    if ctx.baseline is None:
        return Verdict(vid, claim, INCONCLUSIVE, "no baseline given (pass --baseline DIR)")
    base = _baseline_means(ctx, metric)
    best = _best(ctx)
    parts, outcomes = [], []
    for arch in ctx.architectures:
        if arch not in base or arch not in best:
            parts.append(f"{arch}: no " + ("baseline run" if arch not in base else "completed grid run"))
            outcomes.append(None)
            continue
        ok, text = judge(arch, best[arch], base[arch])
        outcomes.append(ok)
        parts.append(f"{arch}: {text}")
    if outcomes and all(o is True for o in outcomes):
        verdict = SUPPORTED
    elif any(o is False for o in outcomes):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return Verdict(vid, claim, verdict, "; ".join(parts))


def s1_stability(ctx: Context) -> Verdict:
    def judge(arch: str, best: dict, base: float) -> tuple[bool | None, str]:
        new = float(best["val_loss_std"])
        if not (np.isfinite(new) and base > 0):
            return None, "std unavailable"
        red = 1 - new / base
        return red > STABILITY_REDUCTION, f"std {new:.4f} at the best configuration vs baseline {base:.4f} ({red:.0%} lower)"

    return _against_baseline(ctx, "S1", f">{STABILITY_REDUCTION:.0%} lower val-loss std than the baseline",
                             STABILITY, judge)


def s2_performance(ctx: Context) -> Verdict:
    def judge(arch: str, best: dict, base: float) -> tuple[bool | None, str]:
        j, hi = float(best["mean"]), float(best["ci_high"])
        text = f"best J {j:.3f} [{float(best['ci_low']):.3f}, {hi:.3f}] vs baseline {base:.3f}"
        if j >= base:
            return True, text
        if np.isfinite(hi) and hi < base:
            return False, text
        return None, text + " (lower, but the baseline lies inside the interval)"

    return _against_baseline(ctx, "S2", "best Jaccard at least the baseline's (performance maintained)",
                             PERFORMANCE, judge)


def s3_consistency(ctx: Context) -> Verdict:
    claim = "results are consistent across repeated runs"
    icc = icc_oneway(ctx.completed, PERFORMANCE)
    if not np.isfinite(float(icc["icc"])):
        return Verdict("S3", claim, INCONCLUSIVE, str(icc["note"]) or "ICC undefined")
    value = float(icc["icc"])
    evidence = (f"ICC(1) of the Jaccard = {value:.2f} over {icc['cells']} cells with repeated seeds "
                f"({icc['runs']} runs); seed-to-seed SD {float(icc['within_sd']):.4f}")
    if value >= ICC_GOOD:
        return Verdict("S3", claim, SUPPORTED, evidence + f" (>= {ICC_GOOD})")
    if value < ICC_POOR:
        return Verdict("S3", claim, NOT_SUPPORTED, evidence + f" (< {ICC_POOR}: seeds move scores as much as settings)")
    return Verdict("S3", claim, INCONCLUSIVE, evidence + f" (between {ICC_POOR} and {ICC_GOOD}: moderate)")


def _epochs_to_reach(ctx: Context, arch: str, best: dict, target: float) -> tuple[float, str]:
    """Mean epochs the best configuration's runs need to reach ``target`` val Jaccard (inf if never)."""
    runs = ctx.completed[(ctx.completed["architecture"] == arch)
                         & np.isclose(ctx.completed["learning_rate"], float(best["learning_rate"]))
                         & (ctx.completed["batch_size"] == int(best["batch_size"]))]
    if ctx.history is not None and "val_jacard_coef" in ctx.history.columns:
        hist = ctx.history[ctx.history["exp_id"].isin(runs["exp_id"])]
        if not hist.empty:
            epochs = []
            for _, h in hist.groupby("exp_id"):
                hit = h.loc[h["val_jacard_coef"] >= target, "epoch"]
                epochs.append(float(hit.min()) if len(hit) else math.inf)
            return float(np.mean(epochs)), "epochs to reach the baseline's best J"
    return float(runs["best_epoch"].mean()), "epochs to best (no history)"


def s4_convergence(ctx: Context) -> Verdict:
    base_epoch = _baseline_means(ctx, "best_epoch")

    def judge(arch: str, best: dict, base_j: float) -> tuple[bool | None, str]:
        if arch not in base_epoch:
            return None, "baseline best_epoch unavailable"
        epochs, how = _epochs_to_reach(ctx, arch, best, base_j)
        text = f"{how}: {epochs:.1f} vs baseline's epochs to best {base_epoch[arch]:.1f}"
        if not np.isfinite(epochs):
            return False, f"the best configuration never reached the baseline's best J {base_j:.3f}"
        return epochs < base_epoch[arch], text

    return _against_baseline(ctx, "S4", "faster convergence than the baseline", PERFORMANCE, judge)


def s5_efficiency(ctx: Context) -> Verdict:
    claim = "better Jaccard per GPU-hour than the baseline"
    eff = ctx.recommendations[ctx.recommendations["kind"] == "most efficient"] if not ctx.recommendations.empty \
        else ctx.recommendations
    listing = "; ".join(f"most efficient {r['architecture']}: lr {lr_text(r['learning_rate'])} bs {int(r['batch_size'])} "
                        f"({float(r['jaccard_per_gpu_hour']):.3f} J/GPU-h)" for r in eff.to_dict("records"))

    def judge(arch: str, best: dict, base: float) -> tuple[bool | None, str]:
        new = float(best["jaccard_per_gpu_hour"])
        if not np.isfinite(new):
            return None, "GPU time not recorded"
        return new >= base, f"best configuration {new:.3f} J/GPU-h vs baseline {base:.3f}"

    verdict = _against_baseline(ctx, "S5", claim, "jaccard_per_gpu_hour", judge)
    if listing:
        verdict.evidence += f" ({listing})"
    return verdict


def s6_recommendations(ctx: Context) -> Verdict:
    claim = "a recommended configuration for every architecture"
    best = _best(ctx)
    lacking = [a for a in ctx.architectures if a not in best]
    parts = [f"{a}: lr {lr_text(r['learning_rate'])} bs {int(r['batch_size'])} J {float(r['mean']):.3f} "
             f"[{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}] ({r['ci_method']})" for a, r in best.items()]
    if lacking:
        return Verdict("S6", claim, INCONCLUSIVE, f"no completed runs for {', '.join(lacking)}; " + "; ".join(parts))
    no_ci = [a for a, r in best.items() if not np.isfinite(float(r["ci_low"]))]
    if no_ci:
        return Verdict("S6", claim, INCONCLUSIVE, f"no interval for {', '.join(no_ci)}; " + "; ".join(parts))
    return Verdict("S6", claim, SUPPORTED, "; ".join(parts))


def judge_all(ctx: Context) -> pd.DataFrame:
    """All verdicts as a table (id, claim, verdict, evidence)."""
    verdicts = [h1_range(ctx)]
    verdicts += [h1_architecture(ctx, a, lr) for a, lr in PREDICTED_LR.items() if a in ctx.architectures]
    verdicts += [h2(ctx), h2_unet(ctx), h3_sensitive(ctx), h3_batch_gain(ctx), h3_robust(ctx)]
    verdicts += [s1_stability(ctx), s2_performance(ctx), s3_consistency(ctx), s4_convergence(ctx),
                 s5_efficiency(ctx), s6_recommendations(ctx)]
    return pd.DataFrame([asdict(v) for v in verdicts])


# ------------------------------------------------------------------------------------- recommendations
def recommendations(completed: pd.DataFrame, cells_j: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: the best cell (highest mean Jaccard), the most robust cell (highest mean minus
    std over the cell and its grid neighbours in lr and batch, so a slightly mis-set lr or batch still
    works) and the most efficient cell (highest Jaccard per GPU-hour), each with its Jaccard interval.
    """
    if completed.empty or cells_j.empty:
        return pd.DataFrame(columns=["architecture", "kind", "learning_rate", "batch_size"])
    extra = completed.groupby(list(FACTORS))[[STABILITY, "best_epoch", "jaccard_per_gpu_hour"]].mean()
    cells = cells_j.merge(extra.reset_index(), on=list(FACTORS), how="left")
    rows = []
    for arch in arch_order(cells["architecture"].unique()):
        grp = cells[(cells["architecture"] == arch) & np.isfinite(cells["mean"])]
        if grp.empty:
            continue
        lrs = sorted(completed["learning_rate"].unique())
        bss = sorted(completed["batch_size"].unique())
        value = {(lrs.index(r["learning_rate"]), bss.index(r["batch_size"])): r["mean"]
                 for r in grp.to_dict("records")}
        robust = []
        for r in grp.to_dict("records"):
            i, j = lrs.index(r["learning_rate"]), bss.index(r["batch_size"])
            hood = [value[k] for k in [(i, j), (i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)] if k in value]
            robust.append(float(np.mean(hood) - np.std(hood)))
        grp = grp.assign(robust_score=robust)
        picks = {"best": grp["mean"].idxmax(), "most robust": grp["robust_score"].idxmax()}
        if grp["jaccard_per_gpu_hour"].notna().any():
            picks["most efficient"] = grp["jaccard_per_gpu_hour"].idxmax()
        for kind, idx in picks.items():
            r = grp.loc[idx]
            rows.append({"architecture": arch, "kind": kind, "learning_rate": float(r["learning_rate"]),
                         "batch_size": int(r["batch_size"]), "n": int(r["n"]), "mean": float(r["mean"]),
                         "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]), "ci_method": r["ci_method"],
                         "robust_score": float(r["robust_score"]), "val_loss_std": float(r[STABILITY]),
                         "best_epoch": float(r["best_epoch"]),
                         "jaccard_per_gpu_hour": float(r["jaccard_per_gpu_hour"])})
    return pd.DataFrame(rows)
