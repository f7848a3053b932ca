"""Figures of the grid, drawn with matplotlib's object API (no pyplot state, no display needed).

Cells without a usable value are drawn hatched grey with their status ('oom', 'missing', ...), never
coloured as a number, so a failed run cannot be mistaken for a poor one. Cells whose runs did not learn
keep their (low) Jaccard but are cross-hatched; their stability and convergence are undefined and drawn
as "did not learn", never as the best value.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import (
    FACTORS,
    METRICS,
    NEEDS_LEARNING,
    PERFORMANCE,
    STABILITY,
    arch_order,
    not_learned,
)
from hpc_unet.manifest import format_number

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

    from hpc_unet.analysis.patches import Patches

HEATMAPS = {
    "best_val_jaccard": "heatmap_jaccard",
    "best_val_iou": "heatmap_iou",
    "val_loss_std": "heatmap_stability",
    "val_loss_std_detrended": "heatmap_oscillation",
    "best_epoch": "heatmap_convergence",
    "overfit_gap_end": "heatmap_overfitting",
}
DPI = 110
VALUE_FORMAT = {"best_val_jaccard": "{:.3f}", "best_val_iou": "{:.3f}", "val_loss_std": "{:.3g}",
                "val_loss_std_detrended": "{:.3g}", "best_epoch": "{:.1f}", "overfit_gap_end": "{:.3g}"}
NOT_LEARNED_HATCH = "xxx"
# A run that did not learn has no meaningful overfitting gap either (its losses barely moved): drawn as
# "did not learn" like stability and convergence, so a flat run is never the "least overfitting" cell.
UNDEFINED_WITHOUT_LEARNING = (*NEEDS_LEARNING, "overfit_gap_end")
DIVERGING = ("overfit_gap_end",)
LABELS = {"overfit_gap_end": "val - train loss, last epoch\n(white: none, red: overfitting)"}


def cell_text(metric: str, value: float, ran: float = float("nan")) -> str:
    """A heatmap cell's number: whole epochs without a decimal, and how many epochs the runs ran."""
    if metric == "best_epoch":
        whole = abs(value - round(value)) < 1e-9
        text = f"{value:.0f}" if whole else f"{value:.1f}"
        if np.isfinite(ran):
            text += f" of {ran:.0f}" if abs(ran - round(ran)) < 1e-9 else f" of {ran:.1f}"
        return text
    return VALUE_FORMAT.get(metric, "{:.3g}").format(value)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def render(fig: Figure, fmt: str) -> bytes:
    """PNG or SVG bytes of a figure (Agg for PNG). SVG keeps text as text, so it stays searchable and editable."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, dpi=DPI)
    return buf.getvalue()


def _levels(frame: pd.DataFrame, col: str) -> list:
    values = frame[col].dropna().unique()
    return arch_order(values) if col == "architecture" else sorted(values)


FLAT_STATUSES = ("did not\nlearn", "marginal", "did not learn\nor marginal")


def flat_status(flat: int, marginal: int) -> str:
    """The label of a cell none of whose runs learned: a marginal run cleared the margin on one metric, so
    it is not called a run that did not learn (docs/analysis.md: Did it learn?)."""
    if marginal <= 0:
        return FLAT_STATUSES[0]
    return FLAT_STATUSES[1] if marginal >= flat else FLAT_STATUSES[2]


def heatmap(cells: pd.DataFrame, metric: str) -> Figure:
    """One panel per architecture over (lr, batch), annotated; colour scale shared across panels."""
    from matplotlib.patches import Patch, Rectangle

    label, higher_better = METRICS[metric]
    archs = _levels(cells, "architecture")
    lrs, bss = _levels(cells, "learning_rate"), _levels(cells, "batch_size")
    fig = _figure(3.2 * len(archs) + 1.2, 0.55 * len(lrs) + 2.1)
    flat_cells = marginal_cells = 0
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    values = cells[metric].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5 * abs(vmin or 1), vmax + 0.5 * abs(vmax or 1)
    cmap = _cmap("viridis" if higher_better else "viridis_r")
    if metric in DIVERGING:  # a gap: 0 is best, either sign is away from it
        cmap = _cmap("RdBu_r")
        vmax = max(abs(vmin), abs(vmax))
        vmin = -vmax
    image = None
    for ax, arch in zip(axes, archs, strict=True):
        sub = cells[cells["architecture"] == arch].set_index(["learning_rate", "batch_size"])
        grid = np.full((len(lrs), len(bss)), np.nan)
        for i, lr in enumerate(lrs):
            for j, bs in enumerate(bss):
                if (lr, bs) in sub.index:
                    grid[i, j] = sub.loc[(lr, bs), metric]
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i, lr in enumerate(lrs):
            for j, bs in enumerate(bss):
                value = grid[i, j]
                flat = 0
                if (lr, bs) not in sub.index:
                    status, partial = "not in grid", ""
                else:
                    rec = sub.loc[(lr, bs)]
                    flat = int(rec.get("n_not_learned", 0) or 0)
                    marg = min(int(rec.get("n_marginal", 0) or 0), flat)
                    marginal_cells += marg
                    status = str(rec["label"]) if rec["n_completed"] == 0 else "n/a"
                    if rec["n_completed"] > 0 and flat >= rec["n_completed"]:
                        status = flat_status(flat, marg)
                        if metric in UNDEFINED_WITHOUT_LEARNING:
                            value = np.nan
                    partial = str(rec["label"]) if rec["n_completed"] > 0 else ""
                    if 0 < flat < rec["n_completed"]:
                        parts = ([f"{flat - marg} flat"] if flat > marg else []) + ([f"{marg} marginal"] if marg else [])
                        partial = ", ".join(([partial] if partial else []) + parts)
                if flat and np.isfinite(value) or (flat and metric in UNDEFINED_WITHOUT_LEARNING):
                    flat_cells += 1
                if np.isfinite(value):
                    rgba = cmap((value - vmin) / (vmax - vmin))
                    dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
                    ran = float(rec.get("epochs_run", np.nan)) if (lr, bs) in sub.index else np.nan
                    text = cell_text(metric, value, ran) + (f"\n({partial})" if partial else "")
                    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1} if flat else None
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, bbox=box,
                            color="black" if flat or not dark else "white")
                    if flat:
                        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#b00000",
                                               hatch=NOT_LEARNED_HATCH, linewidth=0.8))
                elif flat and status in FLAT_STATUSES:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#eeeeee", edgecolor="#b00000",
                                           hatch=NOT_LEARNED_HATCH, linewidth=0.5))
                    ax.text(j, i, status, ha="center", va="center", fontsize=8, color="#b00000",
                            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
                else:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#d9d9d9", edgecolor="#7f7f7f",
                                           hatch="///", linewidth=0.5))
                    ax.text(j, i, status, ha="center", va="center", fontsize=8, color="#b00000",
                            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        ax.set_xticks(range(len(bss)), [str(int(b)) for b in bss])
        ax.set_yticks(range(len(lrs)), [format_number(float(lr)) for lr in lrs])
        ax.set_xlabel("batch size")
        ax.set_title(arch, fontsize=10)
    axes[0].set_ylabel("learning rate")
    if image is not None:
        text = LABELS.get(metric, label + ("\n(higher is better)" if higher_better else "\n(lower is better)"))
        fig.colorbar(image, ax=list(axes), label=text, shrink=0.9)
    handles = [Patch(facecolor="#d9d9d9", edgecolor="#7f7f7f", hatch="///", label="no value (status shown)")]
    if flat_cells:
        what = ("undefined: the runs did not learn" if metric in UNDEFINED_WITHOUT_LEARNING else
                "runs that did not learn (skill < 0.10)")
        if marginal_cells:
            what = ("undefined: the runs did not learn or are marginal" if metric in UNDEFINED_WITHOUT_LEARNING
                    else "runs that did not learn or are marginal (skill < 0.10 on both metrics, or on one)")
        handles.append(Patch(facecolor="none", edgecolor="#b00000", hatch=NOT_LEARNED_HATCH, label=what))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig


def _cmap(name: str) -> Colormap:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="#d9d9d9")


def comparison_lr(cells_j: pd.DataFrame) -> Figure:
    """Best Jaccard vs learning rate: a line per batch size, one panel per architecture, 95% CI bars."""
    archs = _levels(cells_j, "architecture")
    fig = _figure(3.4 * len(archs), 3.2)
    axes = fig.subplots(1, len(archs), squeeze=False, sharey=True)[0]
    for ax, arch in zip(axes, archs, strict=True):
        sub = cells_j[(cells_j["architecture"] == arch) & np.isfinite(cells_j["mean"])]
        for bs, grp in sub.groupby("batch_size"):
            grp = grp.sort_values("learning_rate")
            low = (grp["mean"] - grp["ci_low"]).fillna(0).clip(lower=0)
            high = (grp["ci_high"] - grp["mean"]).fillna(0).clip(lower=0)
            ax.errorbar(grp["learning_rate"], grp["mean"], yerr=[low, high], marker="o", capsize=3,
                        label=f"batch {int(bs)}")
        ax.set_xscale("log")
        ax.minorticks_off()
        lrs = _levels(cells_j, "learning_rate")
        ax.set_xticks(lrs, [format_number(float(lr)) for lr in lrs])
        _panel(ax, arch, "learning rate")
    return _first_panel_labels(fig, axes, "best val Jaccard", 8)


def stability_vs_batch(completed: pd.DataFrame) -> Figure:
    """Val-loss std vs batch size: a line per learning rate, bold line for the mean; panel per architecture."""
    archs = _levels(completed, "architecture")
    fig = _figure(3.4 * len(archs), 3.2)
    axes = fig.subplots(1, len(archs), squeeze=False, sharey=True)[0]
    lrs = _levels(completed, "learning_rate")
    colors = _colors(len(lrs))
    for ax, arch in zip(axes, archs, strict=True):
        sub = completed[completed["architecture"] == arch]
        for lr, grp in sub.groupby("learning_rate"):
            m = grp.groupby("batch_size")[STABILITY].mean()
            ax.plot(m.index, m.values, marker="o", color=colors[lrs.index(lr)], alpha=0.7,
                    label=f"lr {format_number(float(lr))}")
        m = sub.groupby("batch_size")[STABILITY].mean()
        ax.plot(m.index, m.values, color="black", linewidth=2.5, label="mean")
        ax.set_xscale("log", base=2)
        ax.set_xticks(_levels(completed, "batch_size"), [str(int(b)) for b in _levels(completed, "batch_size")])
        _panel(ax, arch, "batch size")
    return _first_panel_labels(fig, axes, "val-loss std (lower is more stable)", 7)


def _panel(ax: Any, arch: str, xlabel: str) -> None:
    """The common dressing of a per-architecture panel."""
    ax.set_xlabel(xlabel)
    ax.set_title(arch, fontsize=10)
    ax.grid(alpha=0.3)


def _first_panel_labels(fig: Figure, axes: Any, ylabel: str, legend_size: int) -> Figure:
    """The y label and the legend once, on the first panel (the panels share the y axis)."""
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=legend_size)
    return fig


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(max(n, 1))]


LINESTYLES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)))
NOT_LEARNED_COLOR = "#202020"  # black dotted: as visible as the others, unlike any lr colour
FLAT_COLORS = {"not learned": NOT_LEARNED_COLOR, "marginal": "#9a9a9a"}  # marginal: grey dotted


def learning_curves(completed: pd.DataFrame, history: pd.DataFrame) -> Figure:
    """Val Jaccard (top) and val loss (bottom) per epoch; panel per architecture, colour = lr, style = batch."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    hist = history.merge(completed[["exp_id", *FACTORS]], on="exp_id", how="inner").sort_values("epoch")
    rows = completed[not_learned(completed)]
    kinds = rows["learning"] if "learning" in rows.columns else pd.Series("not learned", index=rows.index)
    flat = {e: ("marginal" if k == "marginal" else "not learned") for e, k in zip(rows["exp_id"], kinds, strict=True)}
    archs = _levels(completed, "architecture")
    lrs, bss = _levels(completed, "learning_rate"), _levels(completed, "batch_size")
    colors = _colors(len(lrs))
    fig = _figure(3.4 * len(archs), 5.6)
    axes = fig.subplots(2, len(archs), squeeze=False, sharex=True)
    for col, arch in enumerate(archs):
        _draw_runs(axes[:, col], hist[hist["architecture"] == arch], flat, lrs, bss, colors)
        axes[0, col].set_title(arch, fontsize=10)
        axes[1, col].set_xlabel("epoch")
        for row in range(2):
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].set_ylabel("val Jaccard")
    axes[1, 0].set_ylabel("val loss")
    handles = [Line2D([], [], color=colors[i], label=f"lr {format_number(float(lr))}") for i, lr in enumerate(lrs)]
    handles += [Line2D([], [], color="black", linestyle=LINESTYLES[i % 4], label=f"batch {int(b)}")
                for i, b in enumerate(bss)]
    for kind, label in (("not learned", "did not learn"), ("marginal", "marginal")):
        if kind in flat.values():
            handles.append(Line2D([], [], color=FLAT_COLORS[kind], linestyle=":", linewidth=1.4, label=label))
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # below the panels, never over the curves
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=7, frameon=False)
    return fig


def _draw_runs(panels: Any, sub: pd.DataFrame, flat: dict, lrs: list, bss: list, colors: list) -> None:
    """One LineCollection per (lr, batch, learning) group and panel (``flat``: exp_id -> 'not learned' or
    'marginal'): thousands of runs draw in one call each
    (a Line2D per run made learning curves most of analyze's time at 3,600 experiments)."""
    from matplotlib.collections import LineCollection

    if sub.empty:
        return
    sub = sub.sort_values(["exp_id", "epoch"], kind="stable")
    ids = sub["exp_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    bounds = np.r_[starts, len(ids)]
    epochs = sub["epoch"].to_numpy(float)
    lr_of, bs_of = sub["learning_rate"].to_numpy(), sub["batch_size"].to_numpy()
    groups: dict[tuple, list[int]] = {}
    for k, start in enumerate(starts):
        groups.setdefault((lr_of[start], bs_of[start], flat.get(ids[start])), []).append(k)
    for (lr, bs, kind), runs in groups.items():
        style = {"colors": colors[lrs.index(lr)], "linestyles": LINESTYLES[bss.index(bs) % 4], "linewidths": 1,
                 "alpha": 0.8}
        if kind:
            style.update(colors=FLAT_COLORS[kind], linestyles=":", linewidths=1.4, alpha=0.9)
        for ax, metric in zip(panels, ("val_jacard_coef", "val_loss"), strict=True):
            if metric in sub:
                values = sub[metric].to_numpy(float)
                segments = [np.column_stack([epochs[bounds[k]:bounds[k + 1]], values[bounds[k]:bounds[k + 1]]])
                            for k in runs]
                ax.add_collection(LineCollection(segments, **style))
    for ax in panels:
        ax.autoscale_view()


def stability_vs_performance(completed: pd.DataFrame, corr: dict) -> Figure:
    """Scatter of val-loss std against best Jaccard, colour = architecture, marker = batch size."""
    archs = _levels(completed, "architecture")
    bss = _levels(completed, "batch_size")
    colors = _colors(len(archs))
    markers = ("o", "s", "^", "D", "v")
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    for (arch, bs), grp in completed.groupby(["architecture", "batch_size"]):
        ax.scatter(grp[STABILITY], grp[PERFORMANCE], color=colors[archs.index(arch)],
                   marker=markers[bss.index(bs) % len(markers)], label=f"{arch}, batch {int(bs)}", alpha=0.85)
    title = "stability vs performance"
    if np.isfinite(float(corr.get("pearson_r", np.nan))):
        title += (f"\nPearson r={float(corr['pearson_r']):.2f} (p={float(corr['pearson_p']):.2g}), "
                  f"Spearman rho={float(corr['spearman_rho']):.2f} (p={float(corr['spearman_p']):.2g})")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("val-loss std (lower is more stable)")
    ax.set_ylabel("best val Jaccard")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


Example = tuple[str, str, "Patches"]  # (architecture, which run, its scored patches)


def load_examples(root: Path, completed: pd.DataFrame, recs: pd.DataFrame) -> list[Example]:
    """The scored patches of each architecture's recommended (best) run, where the run stored them."""
    from hpc_unet.analysis.patches import load_patches

    out: list[Example] = []
    # a recommendation row lists every kind its cell wins ("best, most robust")
    best = recs[recs["kind"].astype(str).str.split(", ").map(lambda k: "best" in k)] \
        if not recs.empty and "kind" in recs.columns else recs
    for r in best.to_dict("records"):
        runs = completed[(completed["architecture"] == r["architecture"])
                         & np.isclose(completed["learning_rate"].astype(float), float(r["learning_rate"]))
                         & (completed["batch_size"].astype(int) == int(r["batch_size"])) & ~not_learned(completed)]
        for row in runs.to_dict("records"):
            patches = load_patches(root, str(row["exp_id"]), row.get("examples", ""))
            if patches is not None and patches.worst:
                what = (f"{row['exp_id']}: lr {format_number(float(r['learning_rate']))}, batch "
                        f"{int(r['batch_size'])}; {patches.split} patches")
                out.append((str(r["architecture"]), what, patches))
                break
    return out


def overlays(examples: list[Example]) -> Figure:
    """Per recommended run: its worst and best scored patch as image, truth, thresholded prediction, errors."""
    from matplotlib.patches import Patch

    from hpc_unet.analysis.patches import FN_RGB, FP_RGB, PANELS, TP_RGB, panels

    fig = _figure(11.0, 2.0 * len(examples) + 0.7)
    rows = fig.subfigures(len(examples), 1, squeeze=False)[:, 0]
    for sub, (arch, what, p) in zip(rows, examples, strict=True):
        sub.suptitle(f"{arch} ({what})", fontsize=9, fontweight="bold")
        axes = sub.subplots(1, 2 * len(PANELS))
        for k, (label, pos) in enumerate((("worst", p.worst[0]), ("best", p.best[0]))):
            for j, (ax, rgb) in enumerate(zip(axes[4 * k:4 * k + 4], panels(p.image[pos], p.mask[pos],
                                                                             p.predicted[pos]), strict=True)):
                ax.imshow(rgb, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                title = PANELS[j] if j else f"{label}: patch {int(p.index[pos])}\nIoU {float(p.iou[pos]):.2f}"
                ax.set_title(title, fontsize=7)
    handles = [Patch(color=np.asarray(c) / 255, label=t) for c, t in
               ((TP_RGB, "true positive"), (FP_RGB, "false positive"), (FN_RGB, "false negative (missed)"))]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def all_figures(cells: pd.DataFrame, cells_j: pd.DataFrame, completed: pd.DataFrame,
                history: pd.DataFrame | None, corr: dict, examples: list[Example] | None = None
                ) -> Iterable[tuple[str, str, Figure]]:
    """(name, caption, figure) for every figure the data allow."""
    learned = completed[~not_learned(completed)]
    if "epochs_run" in learned.columns and not cells.empty:
        ran = learned.groupby(list(FACTORS))["epochs_run"].mean().rename("epochs_run").reset_index()
        cells = cells.drop(columns="epochs_run", errors="ignore").merge(ran, on=list(FACTORS), how="left")
    for metric, name in HEATMAPS.items():
        label = METRICS[metric][0]
        extra = (" (runs that learned only; cells where no run learned show 'did not learn' or 'marginal')"
                 if metric in UNDEFINED_WITHOUT_LEARNING else
                 "; cross-hatched red: runs that did not learn or are marginal")
        if metric == "best_epoch":
            extra += "; 'B of N': best at epoch B of the N epochs run (N below the plan: early stopping)"
        yield name, (f"{label} per (learning rate, batch size) cell, mean over completed seeds{extra}; hatched "
                     "grey cells have no value and show their status; '(k/n ok)' marks cells where some runs "
                     "failed"), heatmap(cells, metric)
    if completed.empty:
        return
    if examples:
        yield "overlays", ("The worst and the best scored patch of each architecture's recommended run: image, "
                           "ground truth (yellow), prediction thresholded at 0.5, and its errors (green true "
                           "positive, orange false positive, blue false negative) with the patch's IoU"
                           ), overlays(examples)
    yield "comparison_lr", ("Best val Jaccard vs learning rate, a line per batch size; bars are the cell's 95% "
                            "CI (see the CI method column of the cell table)"), comparison_lr(cells_j)
    if not learned.empty:
        yield "stability_vs_batch", ("Val-loss std vs batch size (runs that learned), a line per learning rate "
                                     "and the mean in black"), stability_vs_batch(learned)
    if history is not None and not history.empty:
        yield "learning_curves", ("Validation Jaccard and loss per epoch of every completed run; colour = "
                                  "learning rate, line style = batch size, black dotted = did not learn"
                                  ), learning_curves(completed, history)
    if not learned.empty:
        yield "stability_vs_performance", ("Stability against best Jaccard of each run that learned"
                                           ), stability_vs_performance(learned, corr)
