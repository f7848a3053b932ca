"""Verdicts on the hypotheses and success criteria a spec declares, and per-architecture recommendations.

The claims are data: ``[[hypothesis]]`` tables in the spec (id, claim, rule, the levels it names; see
``spec.HYPOTHESIS_RULES``). Each rule below judges one kind of claim. A hypothesis whose levels the grid
lacks is *not applicable* (and says which level is missing); otherwise it is *supported* when the data
point its way and the relevant test or interval excludes noise, *not supported* when they point the other
way (significantly, or, for orderings the claim predicts, visibly), *inconclusive* when the difference is
within noise or the data to judge it are missing (with why).

Stability and convergence are judged on runs that learned only: a run that never left the trivial
predictor has a flat curve (tiny std, best epoch 1), which says nothing about stability.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTORS, IOU, OSCILLATION, PERFORMANCE, STABILITY, arch_order, learned_runs
from hpc_unet.analysis.stats import ALPHA, Anova, Difference, contrast, correlation, difference, icc_oneway
from hpc_unet.errors import UserError
from hpc_unet.manifest import format_number

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_APPLICABLE = "supported", "not supported", "inconclusive", "not applicable"
ICC_GOOD, ICC_POOR = 0.75, 0.5  # Koo & Li (2016) reliability bands
NONINFERIORITY = 0.01  # S2: "maintained" = the interval of (grid - baseline) Jaccard lies above -0.01


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
    anova_o: Anova | None = None  # ANOVA of the oscillation measure (detrended std)
    levels: dict[str, list[Any]] = field(default_factory=dict)  # the grid's levels (manifest); default: data's
    hour_unit: str = "GPU-hour"
    n_boot: int = 2000

    @property
    def learned(self) -> pd.DataFrame:
        return learned_runs(self.completed)

    def grid_levels(self, factor: str) -> list[Any]:
        if factor in self.levels:
            return list(self.levels[factor])
        return sorted(self.completed[factor].unique()) if factor in self.completed.columns else []


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


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------- applicability
_COMPARES_ARCHITECTURES = ("stability_gain_strongest", "most_sensitive", "batch_gain_largest", "most_robust")
_NEEDS_BATCHES = ("std_falls_with_batch", "stability_gain_strongest", "batch_gain_largest")


def not_applicable(ctx: Context, h: dict[str, Any]) -> str:
    """Why the grid cannot test ``h`` ('' when it can): a level it names is not in the grid."""
    archs = ctx.grid_levels("architecture")
    if "architecture" in h and h["architecture"] not in archs:
        return f"the grid has no architecture {h['architecture']}"
    for lr in _listed(h.get("learning_rate", [])):
        if not any(_same(lr, x) for x in ctx.grid_levels("learning_rate")):
            return f"the grid has no lr {lr_text(lr)}"
    for bs in _listed(h.get("batch_size", [])):
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


# ----------------------------------------------------------------------------------------- hypotheses
def h1_range(ctx: Context, h: dict[str, Any]) -> Verdict:
    lo, hi = sorted(float(x) for x in h["learning_rate"])
    parts, outcomes = [], []
    for arch in ctx.architectures:
        g = _groups(ctx.completed[ctx.completed["architecture"] == arch], "learning_rate", PERFORMANCE)
        inside = [lr for lr in g if lo <= lr <= hi]
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
    return Verdict(h["id"], h["claim"], verdict, "; ".join(parts) or "no completed runs")


def h1_architecture(ctx: Context, h: dict[str, Any]) -> Verdict:
    arch, predicted = h["architecture"], float(_listed(h["learning_rate"])[0])
    g = _groups(ctx.completed[ctx.completed["architecture"] == arch], "learning_rate", PERFORMANCE)
    hit = [lr for lr in g if _same(lr, predicted)]
    if not hit:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, f"no completed {arch} runs at lr {lr_text(predicted)}")
    others = [lr for lr in g if lr != hit[0]]
    if not others:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, "no other learning rate completed to compare with")
    means = {lr: v.mean() for lr, v in g.items()}
    rival = max(others, key=means.get)
    diff, p = contrast(g[hit[0]], g[rival], ctx.anova_j)
    verdict = {"+": SUPPORTED, "-": NOT_SUPPORTED}.get(_direction(diff, p), INCONCLUSIVE)
    evidence = (f"J at {lr_text(predicted)} = {means[hit[0]]:.3f} vs best other lr {lr_text(rival)} = "
                f"{means[rival]:.3f} (diff {diff:+.3f}, {p_text(p)}, over batch sizes and seeds)")
    if verdict == INCONCLUSIVE:
        evidence += "; the difference is within noise"
    return Verdict(h["id"], h["claim"], verdict, evidence)


def _batch_p(frame: pd.DataFrame, anova: Anova | None, metric: str) -> tuple[float, str]:
    p = anova.p("batch_size") if anova is not None else math.nan
    if np.isfinite(p):
        assert anova is not None and anova.table is not None
        row = anova.table.loc["batch size"]
        return p, f"ANOVA batch effect F={row['F']:.2f}, {p_text(p)}, partial eta^2={row['partial_eta_sq']:.2f}"
    c = correlation(frame, "batch_size", metric)
    p = float(c["spearman_p"])
    if np.isfinite(p) and float(c["spearman_rho"]) < 0:
        return p, f"Spearman rho(batch, std)={float(c['spearman_rho']):.2f}, {p_text(p)} (ANOVA unavailable)"
    return (1.0 if np.isfinite(p) else math.nan), f"no significant decrease ({p_text(p)}, ANOVA unavailable)"


def _ordering(frame: pd.DataFrame, order: list[int], metric: str, anova: Anova | None) -> tuple[str, str]:
    """('+', '-', '=' or '?', evidence): does ``metric`` fall along the batch sizes in ``order``?"""
    g = _groups(frame, "batch_size", metric)
    present = [b for b in order if b in g]
    if len(present) < 2:
        return "?", f"{len(present)} listed batch size(s) with runs that learned"
    means = [g[b].mean() for b in present]
    text = ", ".join(f"BS{b}: {g[b].mean():.4f}" for b in present)
    p, test = _batch_p(frame, anova, metric)
    if not all(a > b for a, b in zip(means, means[1:], strict=False)):
        return "-", f"{text}; {test}; the order is not the predicted one"
    if np.isfinite(p) and p < ALPHA:
        return "+", f"{text}; {test}"
    return "=", f"{text}; {test}; the order is as predicted but not significant"


def h2(ctx: Context, h: dict[str, Any]) -> Verdict:
    order = [int(b) for b in _listed(h["batch_size"])]
    learned = ctx.learned
    raw, raw_text = _ordering(learned, order, STABILITY, ctx.anova_s)
    osc, osc_text = _ordering(learned, order, OSCILLATION, ctx.anova_o)
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
        evidence += f"; {excluded} run(s) that did not learn are excluded"
    verdict = {"+": SUPPORTED, "-": NOT_SUPPORTED}.get(raw, INCONCLUSIVE)
    return Verdict(h["id"], h["claim"], verdict, evidence)


def _per_arch_batch_change(frame: pd.DataFrame, archs: list[str], metric: str) -> dict[str, tuple[float, float]]:
    """arch -> (mean at the smallest batch, mean at the largest batch)."""
    out = {}
    for arch in archs:
        g = _groups(frame[frame["architecture"] == arch], "batch_size", metric)
        if len(g) >= 2:
            out[arch] = (g[min(g)].mean(), g[max(g)].mean())
    return out


def _gated(ctx_p: float, top_is_predicted: bool, evidence: str, what: str) -> tuple[str, str]:
    if not np.isfinite(ctx_p):
        return INCONCLUSIVE, evidence + f"; {what} untestable (no ANOVA term)"
    if ctx_p >= ALPHA:
        return INCONCLUSIVE, evidence + f"; {what} not significant ({p_text(ctx_p)}): the differences are within noise"
    return (SUPPORTED if top_is_predicted else NOT_SUPPORTED), evidence + f"; {what} {p_text(ctx_p)}"


def h2_unet(ctx: Context, h: dict[str, Any]) -> Verdict:
    arch = h["architecture"]
    change = _per_arch_batch_change(ctx.learned, ctx.architectures, STABILITY)
    if arch not in change or len(change) < 2:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE,
                       f"{arch} and another architecture need runs that learned at 2+ batch sizes")
    reduction = {a: 1 - hi / lo if lo > 0 else math.nan for a, (lo, hi) in change.items()}
    top = max(reduction, key=lambda a: reduction[a] if np.isfinite(reduction[a]) else -math.inf)
    evidence = "std reduction smallest->largest batch: " + ", ".join(f"{a} {r:.0%}" for a, r in reduction.items())
    osc = _per_arch_batch_change(ctx.learned, ctx.architectures, OSCILLATION)
    if osc:
        evidence += "; detrended: " + ", ".join(f"{a} {1 - hi / lo:.0%}" for a, (lo, hi) in osc.items() if lo > 0)
    verdict, evidence = _gated(ctx.anova_s.p("architecture", "batch_size"), top == arch, evidence,
                               "architecture x batch interaction on std")
    return Verdict(h["id"], h["claim"], verdict, evidence)


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


def _spread(ctx: Context, h: dict[str, Any], pick: Callable[..., str]) -> Verdict:
    arch = h["architecture"]
    sens = _sensitivity(ctx)
    if arch not in sens or len(sens) < 2:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, f"{arch} and another architecture need 2+ completed cells")
    evidence = "std of cell-mean Jaccard over (lr, batch): " + ", ".join(f"{a} {s:.3f}" for a, s in sens.items())
    verdict, evidence = _gated(_interaction_gate(ctx), pick(sens, key=sens.get) == arch, evidence,
                               "architecture x setting interactions (Bonferroni)")
    return Verdict(h["id"], h["claim"], verdict, evidence)


def h3_sensitive(ctx: Context, h: dict[str, Any]) -> Verdict:
    return _spread(ctx, h, max)


def h3_robust(ctx: Context, h: dict[str, Any]) -> Verdict:
    return _spread(ctx, h, min)


def h3_batch_gain(ctx: Context, h: dict[str, Any]) -> Verdict:
    arch = h["architecture"]
    change = _per_arch_batch_change(ctx.completed, ctx.architectures, PERFORMANCE)
    if arch not in change or len(change) < 2:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, f"{arch} and another architecture need 2+ batch sizes")
    gain = {a: hi - lo for a, (lo, hi) in change.items()}
    evidence = "Jaccard gain smallest->largest batch: " + ", ".join(f"{a} {g:+.3f}" for a, g in gain.items())
    verdict, evidence = _gated(ctx.anova_j.p("architecture", "batch_size"), max(gain, key=gain.get) == arch,
                               evidence, "architecture x batch interaction")
    return Verdict(h["id"], h["claim"], verdict, evidence)


# ------------------------------------------------------------------------------------- success criteria
def _best(ctx: Context) -> dict[str, dict]:
    rec = ctx.recommendations
    if rec.empty:
        return {}
    best = rec[rec["kind"] == "best"]
    return {str(r["architecture"]): r for r in best.to_dict("records")}


def _cell_runs(frame: pd.DataFrame, arch: str, lr: float, bs: int) -> pd.DataFrame:
    return frame[(frame["architecture"] == arch) & np.isclose(frame["learning_rate"].astype(float), float(lr))
                 & (frame["batch_size"].astype(int) == int(bs))]


def _against_baseline(ctx: Context, h: dict[str, Any],
                      judge: Callable[[str, pd.DataFrame, pd.DataFrame], tuple[bool | None, str]],
                      needs_learning: bool = False) -> Verdict:
    """Per architecture: judge(arch, runs of its best configuration, its baseline runs) -> (ok, text)."""
    if ctx.baseline is None:
        return Verdict(h["id"], h["claim"], INCONCLUSIVE, "no baseline given (pass --baseline DIR)")
    base_all = ctx.baseline
    base_runs = learned_runs(base_all) if needs_learning else base_all
    best = _best(ctx)
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
        runs = _cell_runs(ctx.learned, arch, r["learning_rate"], int(r["batch_size"]))
        ok, text = judge(arch, runs, base)
        outcomes.append(ok)
        parts.append(f"{arch}: {text}")
    if outcomes and all(o is True for o in outcomes):
        verdict = SUPPORTED
    elif any(o is False for o in outcomes):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return Verdict(h["id"], h["claim"], verdict, "; ".join(parts))


def _interval_verdict(d: Difference, good_above: float | None = None, good_below: float | None = None
                      ) -> bool | None:
    """True when the whole interval is on the good side of the threshold, False when wholly on the bad side."""
    if not d.has_interval:
        return None
    if good_above is not None:
        return True if d.low > good_above else False if d.high < good_above else None
    assert good_below is not None
    return True if d.high < good_below else False if d.low > good_below else None


def _with_note(ok: bool | None, text: str) -> tuple[bool | None, str]:
    """A judged difference; an interval that straddles zero is said to be inconclusive in words."""
    return ok, text + (" (no interval excluding 0: inconclusive)" if ok is None else "")


def s1_stability(ctx: Context, h: dict[str, Any]) -> Verdict:
    reduction = float(h["reduction"])

    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        d = difference(runs, base, STABILITY, n_boot=ctx.n_boot)
        b = float(base[STABILITY].mean())
        if not (np.isfinite(d.diff) and b > 0):
            return None, "std unavailable"
        ok = _interval_verdict(d, good_below=-reduction * b)
        text = (f"std {float(runs[STABILITY].mean()):.4f} vs baseline {b:.4f} ({-d.diff / b:.0%} lower); "
                f"difference {d.text('{:+.4f}')}; needs < {-reduction * b:+.4f}")
        od = difference(runs, base, OSCILLATION, n_boot=ctx.n_boot)
        ob = float(base[OSCILLATION].mean()) if OSCILLATION in base.columns else math.nan
        if np.isfinite(od.diff) and np.isfinite(ob) and ob > 0:
            text += f"; detrended std {float(runs[OSCILLATION].mean()):.4f} vs {ob:.4f} ({-od.diff / ob:.0%} lower)"
        if ok is None:
            text += " (the interval straddles the threshold or is missing: inconclusive)"
        return ok, text

    return _against_baseline(ctx, h, judge, needs_learning=True)


def s2_performance(ctx: Context, h: dict[str, Any]) -> Verdict:
    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        d = difference(runs, base, PERFORMANCE, n_boot=ctx.n_boot)
        ok = _interval_verdict(d, good_above=-NONINFERIORITY)
        if ok is None and d.has_interval and d.high < 0:
            ok = False
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
            for exp, h in hist.groupby("exp_id"):
                hit = h.loc[h["val_jacard_coef"] >= target, "epoch"]
                reach[exp] = float(hit.min()) if len(hit) else math.inf
            out["to_target"] = out["exp_id"].map(reach).astype(float)
            return out, "epochs to reach the baseline's best J"
    out["to_target"] = out["best_epoch"].astype(float)
    return out, "epochs to best (no history)"


def s4_convergence(ctx: Context, h: dict[str, Any]) -> Verdict:
    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        target = float(base[PERFORMANCE].mean())
        reached, how = _epochs_to_reach(ctx, runs, target)
        if not np.isfinite(reached["to_target"]).any():
            return False, f"the best configuration never reached the baseline's best J {target:.3f}"
        base_e = base.assign(to_target=base["best_epoch"].astype(float))
        d = difference(reached, base_e, "to_target", n_boot=ctx.n_boot)
        ok = _interval_verdict(d, good_below=0.0)
        text = (f"{how}: {float(reached['to_target'].mean()):.1f} vs baseline's epochs to best "
                f"{float(base_e['to_target'].mean()):.1f}; difference {d.text('{:+.1f}')}")
        return _with_note(ok, text)

    return _against_baseline(ctx, h, judge, needs_learning=True)


def s5_efficiency(ctx: Context, h: dict[str, Any]) -> Verdict:
    unit = ctx.hour_unit
    eff = ctx.recommendations[ctx.recommendations["kind"] == "most efficient"] if not ctx.recommendations.empty \
        else ctx.recommendations
    listing = "; ".join(f"most efficient {r['architecture']}: lr {lr_text(r['learning_rate'])} bs {int(r['batch_size'])} "
                        f"({float(r['jaccard_per_gpu_hour']):.3f} J per {unit})" for r in eff.to_dict("records"))

    def judge(arch: str, runs: pd.DataFrame, base: pd.DataFrame) -> tuple[bool | None, str]:
        d = difference(runs, base, "jaccard_per_gpu_hour", n_boot=ctx.n_boot)
        if not np.isfinite(d.diff):
            return None, "training time not recorded"
        ok = _interval_verdict(d, good_above=0.0)
        text = (f"best configuration {float(runs['jaccard_per_gpu_hour'].mean()):.3f} vs baseline "
                f"{float(base['jaccard_per_gpu_hour'].mean()):.3f} J per {unit}; difference {d.text()}")
        return _with_note(ok, text)

    verdict = _against_baseline(ctx, h, judge)
    if listing:
        verdict.evidence += f" ({listing})"
    return verdict


def s6_recommendations(ctx: Context, h: dict[str, Any]) -> Verdict:
    """Each architecture's recommended cell must beat its median cell beyond the interval of the difference."""
    best = _best(ctx)
    parts, outcomes = [], []
    for arch in ctx.architectures:
        if arch not in best:
            learned_any = (ctx.completed["architecture"] == arch).any()
            parts.append(f"{arch}: " + ("no run learned" if learned_any else "no completed runs"))
            outcomes.append(False if learned_any else None)
            continue
        r = best[arch]
        mine = ctx.completed[ctx.completed["architecture"] == arch]
        cells = mine.groupby(["learning_rate", "batch_size"])[PERFORMANCE].mean().sort_values(kind="stable")
        if len(cells) < 2:
            parts.append(f"{arch}: one completed cell, nothing to compare with")
            outcomes.append(None)
            continue
        median_key = cells.index[(len(cells) - 1) // 2]
        top = _cell_runs(ctx.completed, arch, r["learning_rate"], int(r["batch_size"]))
        med = _cell_runs(ctx.completed, arch, *median_key)
        d = difference(top, med, PERFORMANCE, n_boot=ctx.n_boot)
        ok = _interval_verdict(d, good_above=0.0)
        if ok is None and d.has_interval:
            ok = False  # within noise of a typical setting: the recommendation is not distinguishable
        outcomes.append(ok)
        parts.append(f"{arch}: lr {lr_text(r['learning_rate'])} bs {int(r['batch_size'])} J {float(r['mean']):.3f} vs "
                     f"median cell lr {lr_text(median_key[0])} bs {int(median_key[1])} J {float(cells[median_key]):.3f}:"
                     f" {d.text()}" + ("" if d.has_interval else " (no interval)")
                     + (" - within noise of the median cell" if ok is False else ""))
    if outcomes and all(o is True for o in outcomes):
        verdict = SUPPORTED
    elif any(o is False for o in outcomes):
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return Verdict(h["id"], h["claim"], verdict, "; ".join(parts) or "no completed runs")


RULES: dict[str, Callable[[Context, dict[str, Any]], Verdict]] = {
    "lr_range_best": h1_range,
    "best_lr": h1_architecture,
    "std_falls_with_batch": h2,
    "stability_gain_strongest": h2_unet,
    "most_sensitive": h3_sensitive,
    "batch_gain_largest": h3_batch_gain,
    "most_robust": h3_robust,
    "baseline_stability": s1_stability,
    "baseline_performance": s2_performance,
    "consistency": s3_consistency,
    "baseline_convergence": s4_convergence,
    "baseline_efficiency": s5_efficiency,
    "recommended_beats_median": s6_recommendations,
}


def hypotheses_from_spec(spec_text: str) -> tuple[list[dict[str, Any]], str]:
    """(the spec's validated [[hypothesis]] tables, a note when there are none or they are invalid)."""
    from hpc_unet.spec import validate_hypotheses

    try:
        raw = tomllib.loads(spec_text).get("hypothesis", []) if spec_text else []
        found = validate_hypotheses(raw)
    except (tomllib.TOMLDecodeError, UserError) as exc:
        return [], f"the study's spec.toml has invalid [[hypothesis]] tables ({exc}); no verdicts"
    if not found:
        return [], ("the study's spec declares no [[hypothesis]] tables, so no claims are judged (see "
                    "manifests/seed-grid.toml for the seed's)")
    return found, ""


def judge(ctx: Context, h: dict[str, Any]) -> Verdict:
    """One hypothesis: 'not applicable' when the grid lacks its levels, else its rule's verdict."""
    why = not_applicable(ctx, h)
    if why:
        return Verdict(h["id"], h["claim"], NOT_APPLICABLE, why)
    return RULES[h["rule"]](ctx, h)


def judge_all(ctx: Context, hypotheses: list[dict[str, Any]]) -> pd.DataFrame:
    """All verdicts as a table (id, claim, verdict, evidence)."""
    return pd.DataFrame([asdict(judge(ctx, h)) for h in hypotheses], columns=["id", "claim", "verdict", "evidence"])


# ------------------------------------------------------------------------------------- recommendations
EXTRA = [STABILITY, OSCILLATION, "best_epoch", "jaccard_per_gpu_hour", IOU, "best_val_dice_05", "test_jaccard",
         "test_iou", "test_dice_05", "learned_skill"]


def recommendations(learned: pd.DataFrame, cells_j: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, among runs that learned: the best cell (highest mean Jaccard), the most robust cell
    (highest mean minus std over the cell and its grid neighbours in lr and batch, so a slightly mis-set lr
    or batch still works) and the most efficient cell (highest Jaccard per device-hour), each with its
    Jaccard interval, thresholded IoU/Dice and test scores.
    """
    if learned.empty or cells_j.empty:
        return pd.DataFrame(columns=["architecture", "kind", "learning_rate", "batch_size"])
    extra = learned.reindex(columns=[*FACTORS, *EXTRA]).groupby(list(FACTORS))[EXTRA].mean()
    cells = cells_j.merge(extra.reset_index(), on=list(FACTORS), how="inner")
    rows = []
    lrs = sorted(learned["learning_rate"].unique())
    bss = sorted(learned["batch_size"].unique())
    for arch in arch_order(cells["architecture"].unique()):
        grp = cells[(cells["architecture"] == arch) & np.isfinite(cells["mean"])]
        if grp.empty:
            continue
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
                         "val_iou": float(r[IOU]), "val_dice": float(r["best_val_dice_05"]),
                         "test_jaccard": float(r["test_jaccard"]), "test_iou": float(r["test_iou"]),
                         "test_dice": float(r["test_dice_05"]), "robust_score": float(r["robust_score"]),
                         "val_loss_std": float(r[STABILITY]), "val_loss_std_detrended": float(r[OSCILLATION]),
                         "best_epoch": float(r["best_epoch"]),
                         "jaccard_per_gpu_hour": float(r["jaccard_per_gpu_hour"])})
    return pd.DataFrame(rows)
