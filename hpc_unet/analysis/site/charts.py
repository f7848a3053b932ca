"""The study-wide interactive figures as plotly figure dictionaries: learning curves grouped by a factor
(with the learning rate on a second axis), importance of each ANOVA term with intervals, and per-factor
slices of the primary metric. Pure functions of frames; no file is written here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.site.runs import setting_text

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
CURVE_OF = {"best_val_jaccard": ("val_jacard_coef", "val soft Jaccard"), "best_val_iou": ("val_iou", "val IoU"),
            "best_val_dice": ("val_dice", "val Dice"), "best_val_dice_05": ("val_dice", "val Dice")}
WEBGL_POINTS = 20_000  # above this many points a curve figure draws with WebGL (scattergl)
MAX_CURVES = 600  # runs drawn on one grouped learning-curves page
MAX_LEVELS = 12  # a setting with more levels (seeds, say) is not offered as a grouping
NOT_LEARNED = ("not learned", "marginal", "did not learn")


def epoch_axis(max_epoch: float, **extra: Any) -> dict[str, Any]:
    """Whole epochs only: a tick every 1, 2, 5, ... epochs, never 2.5."""
    n = max(1, int(math.ceil(max_epoch)))
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if n / s <= 15)
    return {"tickmode": "linear", "tick0": 0 if step > 1 else 1, "dtick": step, "tickformat": "d",
            "rangemode": "tozero" if step > 1 else "normal", **extra}


def log_range(values: Any) -> dict[str, Any]:
    """An explicit log-axis range around positive values (plotly would guess one while the traces are hidden)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return {}
    lo, hi = math.log10(v.min()), math.log10(v.max())
    pad = max(0.15, (hi - lo) * 0.08)
    return {"range": [lo - pad, hi + pad]}


def _segments(sub: pd.DataFrame, column: str) -> tuple[list, list, list]:
    """x, y, run id lists of many runs in one trace (``sub`` sorted by run, then epoch), each run followed by
    a gap (None): one trace per group draws thousands of runs."""
    ids = sub["exp_id"].to_numpy()
    n = len(ids)
    if not n:
        return [], [], []
    ends = np.flatnonzero(np.r_[ids[1:] != ids[:-1], True])  # last row of each run
    slots = np.arange(n) + np.searchsorted(ends, np.arange(n))  # each earlier run adds one gap
    size = n + len(ends)
    x = np.full(size, None, dtype=object)
    y = np.full(size, None, dtype=object)
    text = np.full(size, None, dtype=object)
    values = sub[column].to_numpy(dtype=float)
    x[slots] = sub["epoch"].to_numpy().astype(int).tolist()
    y[slots] = [float(f"{v:.4g}") if np.isfinite(v) else None for v in values]
    text[slots] = ids.astype(str).tolist()
    return x.tolist(), y.tolist(), text.tolist()


def sample_runs(runs: pd.DataFrame, key: str, limit: int = MAX_CURVES) -> tuple[pd.DataFrame, str]:
    """At most ``limit`` runs, the same share of every level of ``key`` (every k-th run of each), so a
    curves page of thousands of runs stays a few megabytes; '' when all are kept."""
    if len(runs) <= limit:
        return runs, ""
    levels = runs[key].nunique(dropna=False)
    per = max(1, limit // max(levels, 1))
    rows: list[int] = []
    for _, positions in runs.reset_index(drop=True).groupby(key, dropna=False, sort=False).indices.items():
        rows += positions[np.linspace(0, len(positions) - 1, min(per, len(positions))).round().astype(int)].tolist()
    kept = runs.iloc[sorted(rows)]
    return kept, (f"{len(kept)} of {len(runs)} completed runs are drawn (up to {per} per {key.strip('_')}, spread "
                  "over the grid); the run table and the run pages have them all.")


def level_text(factor: str, value: Any) -> str:
    return f"{factor.replace('_', ' ')} {setting_text(factor, value)}"


def learning_curves(history: pd.DataFrame, runs: pd.DataFrame, factor: str, primary: str,
                    labels: pd.Series) -> dict[str, Any] | None:
    """Validation metric (top, lr on the right axis) and validation loss (bottom) per epoch of every
    completed run, one colour per level of ``factor``; runs that did not learn are dotted, marginal
    runs dash-dotted."""
    curve, curve_label = CURVE_OF.get(primary, ("val_jacard_coef", "val soft Jaccard"))
    done = runs[runs["status"] == "completed"].assign(_learning=labels[runs["status"] == "completed"])
    key = factor if factor != "learning" else "_learning"
    cols = ["exp_id", "_learning"] + ([factor] if factor != "learning" else [])
    done, sampled = sample_runs(done[cols], key)
    hist = history.merge(done, on="exp_id", how="inner")
    if hist.empty or curve not in hist.columns:
        return None
    hist = hist.sort_values(["exp_id", "epoch"], kind="stable")
    kind = "scattergl" if len(hist) * 2 > WEBGL_POINTS else "scatter"
    levels = sorted(hist[key].dropna().unique(), key=lambda v: (str(type(v)), v))
    traces = []
    for k, level in enumerate(levels):
        colour = PALETTE[k % len(PALETTE)]
        name = str(level) if factor in ("learning", "architecture") else level_text(factor, level)
        sub = hist[hist[key] == level]
        for kind in ("learned", "marginal", "did not learn"):
            flat = kind != "learned"
            is_marginal = sub["_learning"] == "marginal"
            part = sub[~sub["_learning"].isin(NOT_LEARNED) if not flat else
                       (is_marginal if kind == "marginal" else sub["_learning"].isin(NOT_LEARNED) & ~is_marginal)]
            if part.empty:
                continue
            dash = {"learned": "solid", "marginal": "dashdot", "did not learn": "dot"}[kind]
            suffix = f" ({kind})" if flat and factor != "learning" else ""
            for row, (column, axis) in enumerate(((curve, "y"), ("val_loss", "y2"))):
                if column not in part.columns:
                    continue
                x, y, ids = _segments(part, column)
                traces.append({"type": kind, "mode": "lines", "x": x, "y": y, "text": ids, "xaxis": "x" if row == 0
                               else "x2", "yaxis": axis, "name": name + suffix, "legendgroup": name + suffix,
                               "showlegend": row == 0, "connectgaps": False,
                               "line": {"color": colour, "width": 1.6 if flat else 1.2, "dash": dash},
                               "hovertemplate": "%{text}<br>epoch %{x}: %{y:.4f}<extra>" + name + "</extra>"})
        if "lr" in sub.columns:
            x, y, ids = _segments(sub, "lr")
            traces.append({"type": kind, "mode": "lines", "x": x, "y": y, "text": ids, "xaxis": "x", "yaxis": "y3",
                           "name": f"lr schedule: {name}", "legendgroup": f"lr {name}", "visible": "legendonly",
                           "line": {"color": colour, "width": 1, "dash": "dash", "shape": "hv"},
                           "hovertemplate": "%{text}<br>epoch %{x}: lr %{y:.3g}<extra></extra>"})
    max_epoch = float(hist["epoch"].max())
    layout = {
        "xaxis": epoch_axis(max_epoch, anchor="y", matches="x2", showticklabels=False),
        "xaxis2": epoch_axis(max_epoch, anchor="y2", title={"text": "epoch"}),
        "yaxis": {"domain": [0.52, 1], "title": {"text": curve_label}},
        "yaxis2": {"domain": [0, 0.44], "title": {"text": "val loss"}},
        "yaxis3": {"overlaying": "y", "side": "right", "type": "log", "title": {"text": "learning rate"},
                   "showgrid": False, "tickformat": ".0e",
                   **(log_range(hist["lr"]) if "lr" in hist.columns else {})},
        "legend": {"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"},
        "hovermode": "closest", "margin": {"l": 70, "r": 70, "t": 30, "b": 40},
    }
    return {"data": traces, "layout": layout, "sampled": sampled}


def eta_interval(F: float, df1: float, df2: float, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of partial eta squared by inverting the noncentral F distribution (Steiger 2004):
    find the noncentrality lambda at which the observed F is the upper / lower quantile, then
    eta^2 = lambda / (lambda + df1 + df2 + 1)."""
    from scipy.optimize import brentq
    from scipy.stats import f as f_dist
    from scipy.stats import ncf

    if not (np.isfinite(F) and df1 > 0 and df2 > 0):
        return math.nan, math.nan
    alpha = (1 - level) / 2

    def lam(target: float) -> float:
        if f_dist.cdf(F, df1, df2) <= target:
            return 0.0  # even lambda = 0 puts F below this quantile
        hi = max(10.0, F * df1 * 4)
        while ncf.cdf(F, df1, df2, hi) > target:
            hi *= 4
            if hi > 1e9:
                return math.inf
        return brentq(lambda x: ncf.cdf(F, df1, df2, x) - target, 0.0, hi, xtol=1e-10)

    lo, hi = lam(1 - alpha), lam(alpha)

    def eta(x: float) -> float:
        return 1.0 if math.isinf(x) else x / (x + df1 + df2 + 1)

    return eta(lo), eta(hi)


def importance(anova: pd.DataFrame, df_resid: float) -> pd.DataFrame:
    """Partial eta squared of every term with its 95% interval, largest first."""
    terms = anova[anova["term"].astype(str).str.lower() != "residual"].copy()
    if terms.empty or not np.isfinite(df_resid) or df_resid <= 0:
        return pd.DataFrame(columns=["term", "partial_eta_sq", "low", "high", "p"])
    bounds = [eta_interval(float(F), float(d), float(df_resid)) for F, d in zip(terms["F"], terms["df"], strict=True)]
    terms["low"], terms["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    terms["term"] = terms["term"].astype(str).str.replace(r"C\((\w+)\)", r"\1", regex=True).str.replace("_", " ")
    return terms[["term", "partial_eta_sq", "low", "high", "p"]].sort_values("partial_eta_sq", ascending=True)


def importance_figure(tables: dict[str, pd.DataFrame]) -> dict[str, Any] | None:
    """One horizontal point-and-interval panel per response (Jaccard, stability, ...)."""
    names = [n for n, t in tables.items() if len(t)]
    if not names:
        return None
    traces, layout = [], {"showlegend": False, "hovermode": "closest"}
    width = 1 / len(names)
    for k, name in enumerate(names):
        t = tables[name]
        ax = "" if k == 0 else str(k + 1)
        traces.append({"type": "scatter", "mode": "markers", "x": t["partial_eta_sq"].round(4).tolist(),
                       "y": t["term"].tolist(), "xaxis": f"x{ax}", "yaxis": f"y{ax}",
                       "marker": {"size": 9, "color": PALETTE[k]},
                       "error_x": {"type": "data", "symmetric": False,
                                   "array": (t["high"] - t["partial_eta_sq"]).clip(lower=0).round(4).tolist(),
                                   "arrayminus": (t["partial_eta_sq"] - t["low"]).clip(lower=0).round(4).tolist()},
                       "customdata": [[f"{lo:.3f}", f"{hi:.3f}", _p(p)] for lo, hi, p in
                                      zip(t["low"], t["high"], t["p"], strict=True)],
                       "hovertemplate": "%{y}: %{x:.3f} [%{customdata[0]}, %{customdata[1]}], p %{customdata[2]}"
                                        "<extra></extra>"})
        lo, hi = k * width + 0.02, (k + 1) * width - 0.02
        layout[f"xaxis{ax}"] = {"domain": [lo + 0.1, hi], "range": [0, 1], "title": {"text": f"{name}: partial eta²"},
                                "anchor": f"y{ax}"}
        layout[f"yaxis{ax}"] = {"anchor": f"x{ax}", "automargin": True}
    return {"data": traces, "layout": layout}


def _p(p: Any) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return ""
    return "" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def slices(runs: pd.DataFrame, factors: list[str], primary: str, label: str, labels: pd.Series) -> dict[str, Any] | None:
    """The primary metric of every completed run against each factor's levels (box + points, hover = run)."""
    done = runs[(runs["status"] == "completed") & np.isfinite(pd.to_numeric(runs[primary], errors="coerce"))]
    factors = [f for f in factors if f in done.columns][:6]
    if done.empty or not factors:
        return None
    cols = min(3, len(factors))
    nrows = math.ceil(len(factors) / cols)
    traces, layout = [], {"showlegend": False, "hovermode": "closest"}
    for k, factor in enumerate(factors):
        ax = "" if k == 0 else str(k + 1)
        r, c = divmod(k, cols)
        levels = sorted(done[factor].dropna().unique(), key=lambda v: (str(type(v)), v))
        names = [setting_text(factor, v) for v in levels]
        x = done[factor].map(dict(zip(levels, names, strict=True)))
        status = labels.reindex(done.index).fillna("")
        traces.append({"type": "box", "x": x.tolist(), "y": done[primary].astype(float).round(5).tolist(),
                       "text": [f"{e} ({s})" for e, s in zip(done["exp_id"].astype(str), status, strict=True)],
                       "boxpoints": "all", "jitter": 0.4,
                       "pointpos": 0, "xaxis": f"x{ax}", "yaxis": f"y{ax}", "name": factor,
                       "marker": {"size": 5, "color": PALETTE[0]},
                       "line": {"color": "#555"}, "fillcolor": "rgba(0,0,0,0)",
                       "hovertemplate": "%{text}<br>%{y:.4f}<extra></extra>"})
        x0, x1 = c / cols + 0.04, (c + 1) / cols - 0.02
        y1 = 1 - r / nrows - 0.06
        y0 = 1 - (r + 1) / nrows + 0.06
        layout[f"xaxis{ax}"] = {"domain": [x0, x1], "anchor": f"y{ax}", "type": "category",
                                "categoryorder": "array", "categoryarray": names,
                                "title": {"text": factor.replace("_", " ")}}
        layout[f"yaxis{ax}"] = {"domain": [y0, y1], "anchor": f"x{ax}", "title": {"text": label if c == 0 else ""}}
    return {"data": traces, "layout": layout}
