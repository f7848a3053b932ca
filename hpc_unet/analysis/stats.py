"""Statistics of a factorial grid: ANOVA with effect sizes, confidence intervals, correlations and
paired architecture comparisons.

Every function degrades instead of failing: when the data cannot support a test it returns the reason,
which the report prints, rather than a number computed from too little data.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTOR_LABELS, FACTORS, PERFORMANCE, patch_arrays

ALPHA = 0.05
LEVEL = 0.95


# ---------------------------------------------------------------------------------------------- ANOVA
@dataclass
class Anova:
    """A Type II factorial ANOVA, or the reason it was skipped."""

    response: str
    table: pd.DataFrame | None = None  # index: term label; sum_sq, df, mean_sq, F, p, partial_eta_sq
    formula: str = ""
    n: int = 0
    mse: float = math.nan
    df_resid: float = 0.0
    skipped: str = ""
    notes: list[str] = field(default_factory=list)

    def p(self, *factors: str) -> float:
        """p-value of the term made of exactly these factors (NaN when not in the model)."""
        if self.table is None:
            return math.nan
        key = term_label(factors)
        return float(self.table.loc[key, "p"]) if key in self.table.index else math.nan


def term_label(factors: tuple[str, ...] | list[str]) -> str:
    order = {f: i for i, f in enumerate(FACTORS)}
    return " x ".join(FACTOR_LABELS.get(f, f) for f in sorted(factors, key=lambda f: order.get(f, 99)))


def _design(data: pd.DataFrame, terms: list[tuple[str, ...]]) -> np.ndarray:
    """Treatment-coded design matrix (intercept + one block per term), to check estimability."""
    dummies = {f: pd.get_dummies(data[f].astype(str), drop_first=True, dtype=float)
               for t in terms for f in t}
    blocks = [np.ones((len(data), 1))]
    for t in terms:
        block = np.ones((len(data), 1))
        for f in t:
            d = dummies[f].to_numpy()
            block = (block[:, :, None] * d[:, None, :]).reshape(len(data), -1)
        blocks.append(block)
    return np.hstack(blocks)


def _full_rank(data: pd.DataFrame, terms: list[tuple[str, ...]]) -> bool:
    # replicates repeat rows of the design matrix, which leaves its rank unchanged: one row per cell suffices
    factors = sorted({f for t in terms for f in t})
    x = _design(data[factors].drop_duplicates(), terms)
    return int(np.linalg.matrix_rank(x)) == x.shape[1]


def _factors_of(key: str) -> frozenset[str]:
    return frozenset(re.findall(r"C\((\w+)\)", key))


def factorial_anova(frame: pd.DataFrame, response: str, factors: tuple[str, ...] = FACTORS) -> Anova:
    """Type II ANOVA of ``response`` on the factors with >= 2 levels.

    With one run per cell the highest interaction is the error term (it is left out of the model);
    with replicates the full model is fitted. Interactions that empty cells make inestimable are
    dropped with a note, so an unbalanced grid still gets its main effects tested.
    """
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    result = Anova(response=response)
    data = frame[[*factors, response]].copy()
    data = data[np.isfinite(data[response].astype(float))]
    result.n = len(data)
    active = [f for f in factors if data[f].nunique() >= 2]
    for f in factors:
        if f not in active:
            result.notes.append(f"{FACTOR_LABELS.get(f, f)} has fewer than 2 levels with data; left out")
    if not active:
        result.skipped = "no factor has 2 or more levels with completed runs"
        return result
    if no_spread(data[response].to_numpy(dtype=float)):
        # e.g. every run's best epoch is the last: F is 0/0, and sums of squares are rounding dust
        result.skipped = f"every run has the same {response}; there is no variance to explain"
        return result
    if data.groupby(active).size().max() >= 2:
        max_order = len(active)
    else:
        max_order = max(1, len(active) - 1)
        if len(active) > 1:
            result.notes.append("one run per cell: the highest-order interaction serves as the error term")
    terms: list[tuple[str, ...]] = [(f,) for f in active]
    if not _full_rank(data, terms):
        result.skipped = "the main-effects design is not estimable"
        return result
    for order in range(2, max_order + 1):
        for combo in itertools.combinations(active, order):
            if _full_rank(data, [*terms, combo]):
                terms.append(combo)
            else:
                result.notes.append(f"interaction {term_label(combo)} dropped: empty cells make it inestimable")
    n_params = 1 + sum(math.prod(data[f].nunique() - 1 for f in t) for t in terms)
    df_resid = len(data) - n_params
    if df_resid <= 0:
        result.skipped = (f"residual degrees of freedom = {df_resid} ({len(data)} runs, {n_params} model "
                          "parameters): add replicates or more grid cells")
        return result
    result.formula = f"{response} ~ " + " + ".join(":".join(f"C({f})" for f in t) for t in terms)
    model = ols(result.formula, data=data).fit()
    raw = anova_lm(model, typ=2)
    resid_ss = float(raw.loc["Residual", "sum_sq"])
    labels = {frozenset(t): term_label(t) for t in terms}
    rows = []
    for key, rec in raw.iterrows():
        label = "residual" if key == "Residual" else labels.get(_factors_of(str(key)), str(key))
        ss, df = float(rec["sum_sq"]), float(rec["df"])
        rows.append({"term": label, "sum_sq": ss, "df": df, "mean_sq": ss / df if df else math.nan,
                     "F": float(rec["F"]), "p": float(rec["PR(>F)"]),
                     "partial_eta_sq": ss / (ss + resid_ss) if key != "Residual" and ss + resid_ss > 0
                     else math.nan})
    result.table = pd.DataFrame(rows).set_index("term")
    result.df_resid = float(model.df_resid)
    result.mse = resid_ss / result.df_resid
    return result


# -------------------------------------------------------------------------------------------- intervals
def no_spread(x: np.ndarray) -> bool:
    """True when the values are equal up to rounding: ``x.std() > 0`` is not enough, since [0.7, 0.7, 0.7]
    has a standard deviation of 1e-16, and a t-test on it returns p ~ 0 instead of no test."""
    x = np.asarray(x, dtype=float)
    return x.size == 0 or float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def t_interval(values: np.ndarray | pd.Series, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval over independent values (NaN bounds when n < 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def bootstrap_jaccard(intersection: np.ndarray, union: np.ndarray, n_boot: int = 2000, level: float = LEVEL,
                      seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): percentile bootstrap over validation patches of (sum I + 1) / (sum U + 1).

    This captures how much the score depends on which patches were in the validation set, not
    seed-to-seed variation, so it is narrower than a replicate interval.
    """
    i = np.asarray(intersection, dtype=float)
    u = np.asarray(union, dtype=float)
    point = float((i.sum() + 1) / (u.sum() + 1))
    if i.size < 2 or n_boot < 1:
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, i.size, size=(n_boot, i.size))
    boots = (i[idx].sum(axis=1) + 1) / (u[idx].sum(axis=1) + 1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return point, float(lo), float(hi)


def cell_intervals(completed: pd.DataFrame, metric: str, n_boot: int = 2000) -> pd.DataFrame:
    """Per (architecture, lr, batch) cell: n, mean, std and a 95% CI of ``metric`` with its method.

    >= 2 runs: t-interval over seeds. One run: for the Jaccard, a bootstrap over its validation patches;
    for other metrics there is no interval from one run.
    """
    rows = []
    for key, grp in completed.groupby(list(FACTORS), sort=True):
        vals = grp[metric].astype(float)
        vals = vals[np.isfinite(vals)]
        rec = dict(zip(FACTORS, key, strict=True))
        rec.update(n=len(vals), mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan, ci_method="none")
        if len(vals) >= 2:
            mean, lo, hi = t_interval(vals)
            rec.update(mean=mean, std=float(vals.std(ddof=1)), ci_low=lo, ci_high=hi,
                       ci_method=f"t over {len(vals)} seeds")
        elif len(vals) == 1:
            rec["mean"] = float(vals.iloc[0])
            patches = patch_arrays(grp.iloc[0]) if metric == PERFORMANCE else None
            if patches is not None:
                _, lo, hi = bootstrap_jaccard(*patches, n_boot=n_boot)
                rec.update(ci_low=lo, ci_high=hi, ci_method=f"bootstrap over {patches[0].size} val patches")
            else:
                rec["ci_method"] = "none (one run)"
        rows.append(rec)
    cols = [*FACTORS, "n", "mean", "std", "ci_low", "ci_high", "ci_method"]
    return pd.DataFrame(rows, columns=cols)


def group_means(completed: pd.DataFrame, metric: str, by: list[str], anova: Anova | None) -> pd.DataFrame:
    """Means of ``metric`` per level(s) of ``by`` with 95% CIs.

    With a fitted ANOVA the interval uses its residual mean square (mean +- t(df_E) sqrt(MSE/n)), the
    textbook interval for a marginal mean; otherwise a t-interval over the runs at that level.
    """
    from scipy import stats

    rows = []
    data = completed[np.isfinite(completed[metric].astype(float))]
    use_mse = anova is not None and anova.table is not None and anova.df_resid > 0
    for key, grp in data.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        vals = grp[metric].astype(float).to_numpy()
        rec = dict(zip(by, key, strict=True))
        if use_mse:
            assert anova is not None
            half = float(stats.t.ppf(0.5 + LEVEL / 2, anova.df_resid) * math.sqrt(anova.mse / len(vals)))
            mean = float(vals.mean())
            rec.update(n=len(vals), mean=mean, ci_low=mean - half, ci_high=mean + half,
                       ci_method=f"ANOVA MSE t (df={anova.df_resid:g})")
        else:
            mean, lo, hi = t_interval(vals)
            rec.update(n=len(vals), mean=mean, ci_low=lo, ci_high=hi,
                       ci_method=f"t over {len(vals)} runs" if len(vals) >= 2 else "none (one run)")
        rows.append(rec)
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "ci_low", "ci_high", "ci_method"])


def marginal_means(completed: pd.DataFrame, metric: str, anova: Anova | None) -> pd.DataFrame:
    """Marginal mean of ``metric`` at every level of every factor (long format)."""
    parts = []
    for factor in FACTORS:
        g = group_means(completed, metric, [factor], anova)
        g.insert(0, "factor", factor)
        g = g.rename(columns={factor: "level"})
        g["level"] = g["level"].astype(str)
        parts.append(g)
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "metric", metric)
    return out


def contrast(a: np.ndarray, b: np.ndarray, anova: Anova | None) -> tuple[float, float]:
    """(mean(a) - mean(b), two-sided p): t-test with the ANOVA error term, else Welch's t-test."""
    from scipy import stats

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if anova is not None and anova.table is not None and anova.df_resid > 0 and anova.mse > 0:
        se = math.sqrt(anova.mse * (1 / a.size + 1 / b.size))
        return diff, float(2 * stats.t.sf(abs(diff) / se, anova.df_resid))
    if a.size >= 2 and b.size >= 2 and not (no_spread(a) and no_spread(b)):
        return diff, float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return diff, math.nan


# ------------------------------------------------------------------------------------------ correlation
def correlation(frame: pd.DataFrame, x: str, y: str) -> dict[str, float | int | str]:
    """Pearson and Spearman correlation of two columns with p-values (reason when n < 3 or constant)."""
    from scipy import stats

    data = frame[[x, y]].astype(float)
    data = data[np.isfinite(data).all(axis=1)]
    out: dict[str, float | int | str] = {"n": len(data), "pearson_r": math.nan, "pearson_p": math.nan,
                                         "spearman_rho": math.nan, "spearman_p": math.nan, "note": ""}
    if len(data) < 3:
        out["note"] = f"only {len(data)} runs; a correlation needs at least 3"
    elif data[x].nunique() < 2 or data[y].nunique() < 2:
        out["note"] = "one of the variables is constant"
    else:
        pr = stats.pearsonr(data[x], data[y])
        sr = stats.spearmanr(data[x], data[y])
        out.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue),
                   spearman_rho=float(sr.statistic), spearman_p=float(sr.pvalue))
    return out


def correlations(completed: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Correlation over all runs and within each architecture."""
    rows = [{"scope": "all runs", **correlation(completed, x, y)}]
    for arch, grp in completed.groupby("architecture", sort=True):
        rows.append({"scope": str(arch), **correlation(grp, x, y)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ architecture comparisons
def pairwise_architectures(completed: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Paired comparisons of architectures over shared (lr, batch, seed) cells, Holm-corrected.

    Wilcoxon signed-rank is the primary test (no normality assumption with ~12 pairs); the paired t-test
    is shown beside it. Holm's correction runs over the architecture pairs of this metric.
    """
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    key = ["learning_rate", "batch_size", "seed"]
    data = completed[np.isfinite(completed[metric].astype(float))]
    wide = data.pivot_table(index=key, columns="architecture", values=metric, aggfunc="mean")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        pair = wide[[a, b]].dropna()
        d = (pair[a] - pair[b]).to_numpy(dtype=float)
        rec = {"metric": metric, "arch_a": a, "arch_b": b, "n_pairs": len(d),
               "mean_diff": float(d.mean()) if d.size else math.nan,
               "median_diff": float(np.median(d)) if d.size else math.nan,
               "wilcoxon_p": math.nan, "paired_t_p": math.nan, "holm_p": math.nan, "note": ""}
        if d.size < 2:
            rec["note"] = f"{d.size} shared cell(s); at least 2 needed"
        elif not np.any(d != 0):
            rec["note"] = "all differences are zero"
            rec["wilcoxon_p"] = rec["paired_t_p"] = 1.0
        else:
            rec["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
            if not no_spread(d):
                rec["paired_t_p"] = float(stats.ttest_rel(pair[a], pair[b]).pvalue)
        rows.append(rec)
    out = pd.DataFrame(rows, columns=["metric", "arch_a", "arch_b", "n_pairs", "mean_diff", "median_diff",
                                      "wilcoxon_p", "paired_t_p", "holm_p", "note"])
    ok = out["wilcoxon_p"].notna()
    if ok.any():
        out.loc[ok, "holm_p"] = multipletests(out.loc[ok, "wilcoxon_p"], method="holm")[1]
    return out


# ------------------------------------------------------------------------------------------ reliability
def icc_oneway(completed: pd.DataFrame, metric: str) -> dict[str, float | int | str]:
    """ICC(1): share of variance between grid cells vs between seeds of a cell (one-way random effects).

    High values mean the configuration, not the seed, decides the score: results repeat across runs.
    Uses only cells with >= 2 runs; n0 handles unequal replicate counts.
    """
    data = completed[np.isfinite(completed[metric].astype(float))]
    groups = [g[metric].astype(float).to_numpy() for _, g in data.groupby(list(FACTORS)) if len(g) >= 2]
    out: dict[str, float | int | str] = {"cells": len(groups), "runs": int(sum(len(g) for g in groups)),
                                         "icc": math.nan, "within_sd": math.nan, "note": ""}
    if len(groups) < 2:
        out["note"] = (f"{len(groups)} cell(s) with >= 2 completed seeds; repeated runs (replicates >= 2) "
                       "are needed to judge consistency")
        return out
    n_total = sum(len(g) for g in groups)
    k = len(groups)
    grand = np.concatenate(groups).mean()
    ssb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
    msb = ssb / (k - 1)
    msw = ssw / (n_total - k)
    n0 = (n_total - sum(len(g) ** 2 for g in groups) / n_total) / (k - 1)
    out["within_sd"] = float(math.sqrt(msw))
    denom = msb + (n0 - 1) * msw
    out["icc"] = float((msb - msw) / denom) if denom > 0 else math.nan
    return out


# ------------------------------------------------------------------------------ differences with intervals
@dataclass
class Difference:
    """mean(a) - mean(b) with a 95% interval and how it was obtained ('' bounds when none)."""

    diff: float
    low: float = math.nan
    high: float = math.nan
    method: str = "none"

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, fmt: str = "{:+.3f}") -> str:
        if not math.isfinite(self.diff):
            return f"n/a ({self.method})"  # not "+nan": nothing to compare
        bounds = f" [{fmt.format(self.low)}, {fmt.format(self.high)}]" if self.has_interval else ""
        return f"{fmt.format(self.diff)}{bounds} ({self.method})"


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> Difference:
    """Welch's t-interval for mean(a) - mean(b) (Welch-Satterthwaite df); needs >= 2 values on each side."""
    from scipy import stats

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if no_spread(a) and no_spread(b):
        return Difference(diff, diff, diff, f"t over seeds ({a.size} vs {b.size}), no spread")
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    return Difference(diff, diff - half, diff + half, f"Welch t over seeds ({a.size} vs {b.size} runs)")


def _patch_sets(runs: pd.DataFrame, per_hour: bool) -> list[tuple[np.ndarray, np.ndarray, float]] | None:
    """(I, U, divisor) per run, or None when a run lacks patch lists (or time, for per-hour scores)."""
    out = []
    cols = [c for c in ("val_patch_intersection", "val_patch_union", "total_train_seconds") if c in runs.columns]
    for row in runs[cols].to_dict("records"):
        patches = patch_arrays(row)
        hours = float(row.get("total_train_seconds", math.nan)) / 3600.0 if per_hour else 1.0
        if patches is None or not (math.isfinite(hours) and hours > 0):
            return None
        out.append((*patches, hours))
    return out or None


def _boot_scores(sets: list[tuple[np.ndarray, np.ndarray, float]], idx: np.ndarray | None,
                 rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Per resample: the mean over runs of the pooled Jaccard (divided by the run's hours)."""
    total = np.zeros(n_boot)
    for inter, union, div in sets:
        take = idx if idx is not None else rng.integers(0, inter.size, size=(n_boot, inter.size))
        total += (inter[take].sum(axis=1) + 1) / (union[take].sum(axis=1) + 1) / div
    return total / len(sets)


def patch_bootstrap_difference(a: list[tuple[np.ndarray, np.ndarray, float]],
                               b: list[tuple[np.ndarray, np.ndarray, float]], n_boot: int = 2000,
                               level: float = LEVEL, seed: int = 0) -> Difference:
    """Percentile bootstrap of mean pooled Jaccard(a) - (b) over validation patches.

    When every run has the same number of patches (the same validation set, as within a study and its
    baseline on the same data) the resample is paired: one set of patch indices for both sides.
    """
    def point(sets: list) -> float:
        return float(np.mean([(i.sum() + 1) / (u.sum() + 1) / d for i, u, d in sets]))

    diff = point(a) - point(b)
    sizes = {i.size for i, _, _ in [*a, *b]}
    rng = np.random.default_rng(seed)
    if len(sizes) == 1:
        n = sizes.pop()
        idx = rng.integers(0, n, size=(n_boot, n))
        boots = _boot_scores(a, idx, rng, n_boot) - _boot_scores(b, idx, rng, n_boot)
        how = "paired"
    else:
        boots = _boot_scores(a, None, rng, n_boot) - _boot_scores(b, None, rng, n_boot)
        how = "unpaired"
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    n_patches = max(i.size for i, _, _ in [*a, *b])
    return Difference(diff, float(lo), float(hi), f"{how} bootstrap over {n_patches} val patches")


def difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, n_boot: int = 2000) -> Difference:
    """mean(a[metric]) - mean(b[metric]) with the best interval the runs allow.

    >= 2 runs on both sides: Welch's t over seeds. Otherwise, for the Jaccard and Jaccard per hour, a
    bootstrap over validation patches (validation-sample uncertainty only). Otherwise no interval.
    """
    va = a[metric].astype(float).to_numpy()
    vb = b[metric].astype(float).to_numpy()
    va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    if va.size == 0 or vb.size == 0:
        return Difference(math.nan, method="no values")
    if va.size >= 2 and vb.size >= 2:
        return welch_interval(va, vb)
    if metric in (PERFORMANCE, "jaccard_per_gpu_hour"):
        per_hour = metric != PERFORMANCE
        sa, sb = _patch_sets(a, per_hour), _patch_sets(b, per_hour)
        if sa is not None and sb is not None:
            return patch_bootstrap_difference(sa, sb, n_boot=n_boot)
    return Difference(float(va.mean() - vb.mean()),
                      method=f"no interval: {va.size} vs {vb.size} run(s); replicate seeds for one")
