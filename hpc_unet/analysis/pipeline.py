"""analyze: study results -> statistics, verdicts, figures -> the analysis bundle and report.

Everything is computed in memory first and written only at the end, so an error in any step leaves the
previous analysis untouched; each file is then replaced atomically.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet import __version__
from hpc_unet.analysis import figures, stats, verdicts
from hpc_unet.analysis.load import (
    FACTORS,
    PERFORMANCE,
    STABILITY,
    StudyData,
    arch_order,
    cell_status,
    load_baseline,
    load_study,
    parse_json,
)
from hpc_unet.analysis.report import Bundle, write_bundle
from hpc_unet.manifest import format_number

RUN_COLUMNS = ["exp_id", *FACTORS, "seed", "status", "attempts", PERFORMANCE, STABILITY, "best_epoch",
               "overfit_gap_best", "overfit_gap_end", "epochs_run", "total_train_seconds", "jaccard_per_gpu_hour"]


def analyze(study_dir: str | Path, baseline_dir: str | Path | None = None, n_boot: int = 2000) -> Bundle:
    """Compute the whole analysis of a study (nothing is written)."""
    data = load_study(study_dir)
    completed = data.completed
    baseline = load_baseline(baseline_dir) if baseline_dir else None

    anova_j = stats.factorial_anova(completed, PERFORMANCE)
    anova_s = stats.factorial_anova(completed, STABILITY)
    cells_j = stats.cell_intervals(completed, PERFORMANCE, n_boot=n_boot)
    cells_s = stats.cell_intervals(completed, STABILITY)
    recs = verdicts.recommendations(completed, cells_j)
    architectures = arch_order(data.manifest["architecture"].unique())
    ctx = verdicts.Context(completed=completed, architectures=architectures, anova_j=anova_j, anova_s=anova_s,
                           cells_j=cells_j, recommendations=recs, baseline=baseline, history=data.history)
    verdict_table = verdicts.judge_all(ctx)
    corr = stats.correlations(completed, STABILITY, PERFORMANCE)

    status = cell_status(data.runs)
    tables: dict[str, pd.DataFrame] = {
        "verdicts": verdict_table,
        "recommendations": recs,
        "anova_jaccard": _anova_frame(anova_j),
        "anova_stability": _anova_frame(anova_s),
        "cells": _cells_table(status, cells_j, cells_s),
        "marginal_means": pd.concat([stats.marginal_means(completed, PERFORMANCE, anova_j),
                                     stats.marginal_means(completed, STABILITY, anova_s)], ignore_index=True),
        "correlation": corr,
        "pairwise_architectures": pd.concat([stats.pairwise_architectures(completed, PERFORMANCE),
                                             stats.pairwise_architectures(completed, STABILITY)],
                                            ignore_index=True),
        "runs": data.runs[[c for c in RUN_COLUMNS if c in data.runs.columns]],
        "failures": _failures(data.runs),
    }
    if baseline is not None:
        tables["baseline"] = baseline[[c for c in RUN_COLUMNS if c in baseline.columns]]

    png: dict[str, bytes] = {}
    svg: dict[str, bytes] = {}
    captions = []
    overall = corr.iloc[0].to_dict() if len(corr) else {}
    for name, caption, fig in figures.all_figures(status, cells_j, completed, data.history, overall):
        png[name] = figures.render(fig, "png")
        svg[name] = figures.render(fig, "svg")
        captions.append({"name": name, "caption": caption})

    info = {
        "study": {"name": data.name, "description": data.description,
                  "root": str(data.study.root)},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hpc_unet_version": __version__,
        "baseline": str(Path(baseline_dir).resolve()) if baseline_dir else "",
        "figures": captions,
        "anova": {"jaccard": _anova_meta(anova_j), "stability": _anova_meta(anova_s)},
        "ci_note": _ci_note(cells_j),
        "summary": _summary(data, verdict_table, recs, anova_j, anova_s, overall),
        "provenance": _provenance(data),
        "status_counts": {str(k): int(v) for k, v in data.runs["status"].value_counts().items()},
        "notes": data.notes,
    }
    return Bundle(info=info, tables=tables, png=png, svg=svg)


def run_analysis(study_dir: str | Path, baseline_dir: str | Path | None = None, n_boot: int = 2000) -> Bundle:
    """analyze, then write <study>/analysis/ (the bundle and report.md / report.html)."""
    bundle = analyze(study_dir, baseline_dir, n_boot=n_boot)
    write_bundle(Path(bundle.info["study"]["root"]) / "analysis", bundle)
    return bundle


# ----------------------------------------------------------------------------------------------- tables
def _anova_frame(result: stats.Anova) -> pd.DataFrame:
    cols = ["term", "sum_sq", "df", "mean_sq", "F", "p", "partial_eta_sq"]
    if result.table is None:
        return pd.DataFrame(columns=cols)
    return result.table.reset_index()[cols]


def _anova_meta(result: stats.Anova) -> dict[str, Any]:
    return {"formula": result.formula, "n": result.n, "skipped": result.skipped, "notes": result.notes,
            "df_resid": result.df_resid}


def _cells_table(status: pd.DataFrame, cells_j: pd.DataFrame, cells_s: pd.DataFrame) -> pd.DataFrame:
    keys = list(FACTORS)
    out = status[[*keys, "n_planned", "n_completed", "statuses"]].merge(
        cells_j[[*keys, "mean", "ci_low", "ci_high", "ci_method"]], on=keys, how="left")
    out = out.rename(columns={"mean": "jaccard"})
    stab = cells_s[[*keys, "mean", "ci_low", "ci_high"]].rename(
        columns={"mean": "val_loss_std", "ci_low": "std_ci_low", "ci_high": "std_ci_high"})
    out = out.merge(stab, on=keys, how="left")
    out = out.merge(status[[*keys, "best_epoch", "overfit_gap_end", "jaccard_per_gpu_hour"]], on=keys, how="left")
    out["ci_method"] = out["ci_method"].fillna("")
    return out


def _failures(runs: pd.DataFrame) -> pd.DataFrame:
    bad = runs[runs["status"] != "completed"].copy()
    bad.loc[bad["status"] == "missing", "error_message"] = "no result collected: not run yet, running, or not collected"
    cols = ["exp_id", "status", "error_type", "error_message", "attempts"]
    return bad[[c for c in cols if c in bad.columns]].reset_index(drop=True)


# -------------------------------------------------------------------------------------------- summaries
def _ci_note(cells_j: pd.DataFrame) -> str:
    counts = Counter(m.split(" over ")[0] if " over " in m else m for m in cells_j["ci_method"])
    parts = ", ".join(f"{n} cell(s) by {m}" for m, n in counts.items())
    return (f"Cell CIs of the Jaccard: {parts or 'none'}. A t-interval over seeds is used when a cell has 2 or "
            "more completed seeds; otherwise a percentile bootstrap over the run's validation patches "
            "(Jaccard = (sum I + 1) / (sum U + 1)), which reflects validation-sample uncertainty only, not "
            "seed-to-seed variation.")


def _summary(data: StudyData, table: pd.DataFrame, recs: pd.DataFrame, anova_j: stats.Anova,
             anova_s: stats.Anova, corr: dict) -> list[str]:
    runs = data.runs
    counts = runs["status"].value_counts()
    lines = [f"{len(runs)} experiments in the manifest; " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    best = recs[recs["kind"] == "best"] if not recs.empty else recs
    if len(best):
        top = best.loc[best["mean"].idxmax()]
        lines.append(f"Best configuration: {top['architecture']} at lr {format_number(float(top['learning_rate']))}, "
                     f"batch {int(top['batch_size'])}: best val Jaccard {top['mean']:.3f} "
                     f"[{top['ci_low']:.3f}, {top['ci_high']:.3f}] ({top['ci_method']}).")
    for label, result in (("Jaccard", anova_j), ("stability", anova_s)):
        if result.table is None:
            lines.append(f"ANOVA of {label} skipped: {result.skipped}.")
            continue
        sig = result.table.drop(index="residual")
        sig = sig[sig["p"] < stats.ALPHA].sort_values("partial_eta_sq", ascending=False)
        terms = ", ".join(f"{t} (partial eta^2 {r['partial_eta_sq']:.2f}, p={r['p']:.2g})" for t, r in sig.iterrows())
        lines.append(f"ANOVA of {label}: significant terms: {terms or 'none'}.")
    if np.isfinite(float(corr.get("pearson_r", np.nan))):
        lines.append(f"Stability vs performance: Pearson r={float(corr['pearson_r']):.2f} "
                     f"(p={float(corr['pearson_p']):.2g}), Spearman rho={float(corr['spearman_rho']):.2f} "
                     f"(p={float(corr['spearman_p']):.2g}) over {int(corr['n'])} runs.")
    tally = table["verdict"].value_counts()
    lines.append("Verdicts: " + ", ".join(f"{n} {v}" for v, n in tally.items()) + ".")
    return lines


def _unique(runs: pd.DataFrame, col: str) -> list[str]:
    if col not in runs.columns:
        return []
    return sorted({str(v) for v in runs[col].dropna() if str(v)})


def _provenance(data: StudyData) -> list[str]:
    m = data.manifest
    lrs = ", ".join(format_number(float(v)) for v in sorted(m["learning_rate"].unique()))
    lines = [
        f"Manifest: {len(m)} experiments = {m['architecture'].nunique()} architectures x "
        f"{m['learning_rate'].nunique()} learning rates ({lrs}) x {m['batch_size'].nunique()} batch sizes "
        f"({', '.join(str(int(b)) for b in sorted(m['batch_size'].unique()))}) x {m['seed'].nunique()} seed(s); "
        f"epochs {', '.join(str(int(e)) for e in sorted(m['epochs'].unique()))}; loss "
        f"{', '.join(sorted(map(str, m['loss'].unique())))}.",
    ]
    done = data.runs[data.runs["status"] != "missing"]
    for col, label in (("tf_version", "TensorFlow"), ("package_version", "hpc-unet"), ("git_commit", "git commit"),
                       ("device", "devices")):
        values = _unique(done, col)
        lines.append(f"{label}: {', '.join(values) if values else 'not recorded'}"
                     + (" (differs between runs!)" if len(values) > 1 and col != "device" else ""))
    prov = [parse_json(v) for v in done["data_provenance"]] if "data_provenance" in done.columns else []
    distinct = sorted({_json_text(p) for p in prov if p})
    if not distinct:
        lines.append("Data provenance: not recorded")
    elif len(distinct) == 1:
        lines.append(f"Data provenance: {distinct[0]}")
    else:
        lines.append(f"Data provenance DIFFERS between runs ({len(distinct)} variants): " + " | ".join(distinct[:3]))
    if "attempts" in done.columns:
        retried = done[pd.to_numeric(done["attempts"], errors="coerce") > 1]
        if len(retried):
            lines.append(f"{len(retried)} experiment(s) needed more than one attempt.")
    return lines


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
