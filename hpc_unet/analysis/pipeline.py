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
    IOU,
    OSCILLATION,
    PERFORMANCE,
    STABILITY,
    StudyData,
    arch_order,
    cell_status,
    hour_unit,
    load_baseline,
    load_study,
    not_learned,
    parse_json,
)
from hpc_unet.analysis.report import Bundle, write_bundle
from hpc_unet.manifest import format_number

RUN_COLUMNS = ["exp_id", *FACTORS, "seed", "status", "attempts", "learned", "learned_skill", "learned_source",
               PERFORMANCE, IOU, "best_val_dice_05", "best_val_dice", "trivial_val_jaccard", "trivial_val_iou",
               "test_jaccard", "test_iou", "test_dice_05", "test_dice", STABILITY, OSCILLATION, "best_epoch", "overfit_gap_best", "overfit_gap_end",
               "epochs_run", "total_train_seconds", "jaccard_per_gpu_hour", "device"]


def analyze(study_dir: str | Path, baseline_dir: str | Path | None = None, n_boot: int = 2000) -> Bundle:
    """Compute the whole analysis of a study (nothing is written)."""
    data = load_study(study_dir)
    completed, learned = data.completed, data.learned
    baseline = load_baseline(baseline_dir) if baseline_dir else None
    unit = hour_unit(data.runs)

    anova_j = stats.factorial_anova(completed, PERFORMANCE)
    anova_s = stats.factorial_anova(learned, STABILITY)
    anova_o = stats.factorial_anova(learned, OSCILLATION)
    cells_j = stats.cell_intervals(completed, PERFORMANCE, n_boot=n_boot)
    cells_s = stats.cell_intervals(learned, STABILITY)
    recs = verdicts.recommendations(learned, stats.cell_intervals(learned, PERFORMANCE, n_boot=n_boot))
    architectures = arch_order(data.manifest["architecture"].unique())
    levels = {f: sorted(data.manifest[f].unique()) if f != "architecture" else architectures for f in FACTORS}
    ctx = verdicts.Context(completed=completed, architectures=architectures, anova_j=anova_j, anova_s=anova_s,
                           cells_j=cells_j, recommendations=recs, baseline=baseline, history=data.history,
                           anova_o=anova_o, levels=levels, hour_unit=unit, n_boot=n_boot)
    hypotheses, hyp_note = verdicts.hypotheses_from_spec(data.spec_text)
    if hyp_note:
        data.notes.append(hyp_note)
    verdict_table = verdicts.judge_all(ctx, hypotheses)
    corr = stats.correlations(learned, STABILITY, PERFORMANCE)
    learning = _learning_facts(data)

    status = cell_status(data.runs)
    tables: dict[str, pd.DataFrame] = {
        "verdicts": verdict_table,
        "recommendations": recs,
        "anova_jaccard": _anova_frame(anova_j),
        "anova_stability": _anova_frame(anova_s),
        "anova_oscillation": _anova_frame(anova_o),
        "cells": _cells_table(status, cells_j, cells_s),
        "marginal_means": pd.concat([stats.marginal_means(completed, PERFORMANCE, anova_j),
                                     stats.marginal_means(learned, STABILITY, anova_s),
                                     stats.marginal_means(learned, OSCILLATION, anova_o)], ignore_index=True),
        "correlation": corr,
        "pairwise_architectures": pd.concat([stats.pairwise_architectures(completed, PERFORMANCE),
                                             stats.pairwise_architectures(learned, STABILITY)],
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
    examples = figures.load_examples(data.study.root, completed, recs)
    for name, caption, fig in figures.all_figures(status, cells_j, completed, data.history, overall, examples):
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
        "anova": {"jaccard": _anova_meta(anova_j), "stability": _anova_meta(anova_s),
                  "oscillation": _anova_meta(anova_o)},
        "ci_note": _ci_note(cells_j),
        "learning": learning,
        "hour_unit": unit,
        "split": _split_used(data),
        "headline": headline(data, recs, learning, unit),
        "summary": _summary(data, verdict_table, recs, anova_j, anova_s, overall, learning),
        "provenance": _provenance(data),
        "status_counts": {str(k): int(v) for k, v in data.runs["status"].value_counts().items()},
        "notes": data.notes,
    }
    from hpc_unet.analysis.transfer import add_to_bundle  # studies with an init_from axis (docs/transfer.md)

    add_to_bundle(data, tables, png, svg, info, n_boot=n_boot)
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
    out = out.merge(status[[*keys, "n_not_learned", IOU, "best_val_dice_05", OSCILLATION, "best_epoch", "overfit_gap_end",
                            "jaccard_per_gpu_hour"]], on=keys, how="left")
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


def _learning_facts(data: StudyData) -> dict[str, Any]:
    """How many completed runs learned, did not, or cannot be judged (and how that was decided)."""
    done = data.completed
    flat = not_learned(done)
    unknown = done["learned"].isna() if "learned" in done.columns else pd.Series(True, index=done.index)
    derived = (done.get("learned_source", pd.Series("", index=done.index)) != "recorded") & ~unknown
    trivial = done["trivial_val_jaccard"].astype(float)
    return {"completed": int(len(done)), "not_learned": int(flat.sum()), "unknown": int(unknown.sum()),
            "derived": int(derived.sum()), "not_learned_ids": [str(x) for x in done.loc[flat, "exp_id"]],
            "trivial_jaccard": [float(trivial.min()), float(trivial.max())] if trivial.notna().any() else [],
            "rule": "learned = closes >= 10% of the gap between the best image-blind predictor and a perfect "
                    "score, on the soft Jaccard or the thresholded IoU"}


def _split_used(data: StudyData) -> str:
    """'patch' or 'slice' and its description, from the runs' data provenance (or the manifest)."""
    done = data.runs[data.runs["status"] != "missing"]
    prov = [parse_json(v) for v in done["data_provenance"]] if "data_provenance" in done.columns else []
    texts = sorted({str(p.get("split", "")) for p in prov if isinstance(p, dict) and p.get("split")})
    if texts:
        return " | ".join(texts)
    mode = data.manifest["data_split"].iloc[0] if "data_split" in data.manifest.columns else "patch"
    return f"{mode} (not recorded in provenance)"


def _data_words(data: StudyData) -> tuple[str, dict[str, Any]]:
    done = data.runs[data.runs["status"] == "completed"]
    prov = [parse_json(v) for v in done["data_provenance"]] if "data_provenance" in done.columns else []
    first = next((p for p in prov if isinstance(p, dict)), {})
    kind = first.get("kind", "unknown")
    source = "synthetic EM-like images" if kind == "synthetic" else Path(str(first.get("images", "?"))).name
    return source, first


def _device_words(data: StudyData) -> str:
    devices = sorted({str(d) for d in data.completed.get("device", pd.Series(dtype=str)).dropna() if str(d)})
    return ", ".join(devices) if devices else "an unrecorded device"


def headline(data: StudyData, recs: pd.DataFrame, learning: dict[str, Any], unit: str) -> str:
    """The report's opening paragraph in plain words: what ran, what won on what data, how sure, what next."""
    m = data.manifest
    source, prov = _data_words(data)
    split = "whole slices held out" if "slice-level" in _split_used(data) else "patches split at random"
    counts = (f"{prov['patches_train']} training and {prov['patches_val']} validation patches, "
              if "patches_train" in prov and "patches_val" in prov else "")
    words = [f"This study trained {len(m)} U-Net models ({', '.join(arch_order(m['architecture'].unique()))}; "
             f"{m['learning_rate'].nunique()} learning rates x {m['batch_size'].nunique()} batch sizes x "
             f"{m['seed'].nunique()} seed(s)) on {source} ({counts}{split}) on {_device_words(data)}."]
    done, flat = learning["completed"], learning["not_learned"]
    words.append(f"{done} runs completed; {done - flat - learning['unknown']} of them learned to segment, {flat} "
                 "did not (they scored no better than predicting the same value everywhere) and are left out of "
                 "the stability and speed results" + (f", and for {learning['unknown']} it is unknown"
                                                     if learning["unknown"] else "") + ".")
    best = recs[recs["kind"] == "best"] if not recs.empty else recs
    if best.empty:
        words.append("No configuration learned, so there is nothing to recommend: check the data and the masks, "
                     "train longer or raise the learning rate, then run the grid again.")
        return " ".join(words)
    top = best.loc[best["mean"].idxmax()]
    config = (f"{top['architecture']} at learning rate {format_number(float(top['learning_rate']))} and batch size "
              f"{int(top['batch_size'])}")
    if np.isfinite(float(top.get("test_iou", np.nan))):
        n_test = f"{prov['patches_test']} " if prov.get("patches_test") else ""
        words.append(f"The best setting was {config}: on {n_test}held-out test patches it "
                     f"reached IoU {float(top['test_iou']):.3f} and Dice {float(top['test_dice']):.3f} (thresholded at "
                     f"0.5); its validation soft Jaccard, used to choose it, was {float(top['mean']):.3f}.")
    else:
        words.append(f"The best setting was {config}: validation IoU {float(top['val_iou']):.3f} (thresholded at 0.5), "
                     f"soft Jaccard {float(top['mean']):.3f} [{float(top['ci_low']):.3f}, {float(top['ci_high']):.3f}]. "
                     "These scores come from the validation patches that also chose the setting and stopped "
                     "training, so they are optimistic; there was no held-out test set.")
    reps = int(data.completed.groupby(list(FACTORS)).size().max()) if len(data.completed) else 0
    if reps >= 2:
        words.append(f"Intervals are over {reps} seeds per setting.")
    else:
        words.append("Each setting ran once, so the intervals show only how much the score depends on which "
                     "validation patches were used, not how much it varies between training runs.")
    nxt = ["repeat the recommended settings with 3 seeds (`hpc-unet followup`)" if reps < 2 else
           "train the recommended settings longer (`hpc-unet followup`)"]
    if np.isnan(float(top.get("test_iou", np.nan))):
        nxt.append("add a held-out test set")
    if flat:
        nxt.append(f"look at why {flat} run{'s' if flat > 1 else ''} did not learn (the learning curves)")
    words.append("Next: " + "; ".join(nxt) + ".")
    return " ".join(words)


def _summary(data: StudyData, table: pd.DataFrame, recs: pd.DataFrame, anova_j: stats.Anova,
             anova_s: stats.Anova, corr: dict, learning: dict[str, Any]) -> list[str]:
    runs = data.runs
    counts = runs["status"].value_counts()
    lines = [f"{len(runs)} experiments in the manifest; " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    lines.append(f"Did it learn: {learning['completed'] - learning['not_learned'] - learning['unknown']} of "
                 f"{learning['completed']} completed runs learned, {learning['not_learned']} did not"
                 + (f", {learning['unknown']} unknown (older shards without the check)" if learning["unknown"] else "")
                 + f" ({learning['rule']}). Runs that did not learn keep their Jaccard in the Jaccard analyses; "
                 "their stability and convergence are undefined and excluded from the stability ANOVA, the "
                 "correlations and the recommendations.")
    best = recs[recs["kind"] == "best"] if not recs.empty else recs
    if len(best):
        top = best.loc[best["mean"].idxmax()]
        test = (f"; test IoU {float(top['test_iou']):.3f}, test Dice {float(top['test_dice']):.3f}"
                if np.isfinite(float(top["test_iou"])) else
                "; no test set: selected on validation, so optimistic")
        lines.append(f"Best configuration: {top['architecture']} at lr {format_number(float(top['learning_rate']))}, "
                     f"batch {int(top['batch_size'])}: val soft Jaccard {top['mean']:.3f} "
                     f"[{top['ci_low']:.3f}, {top['ci_high']:.3f}] ({top['ci_method']}), val IoU "
                     f"{float(top['val_iou']):.3f}, val Dice {float(top['val_dice']):.3f}{test}.")
    for label, result in (("Jaccard", anova_j), ("stability (runs that learned)", anova_s)):
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
    lines.append("Verdicts: " + (", ".join(f"{n} {v}" for v, n in tally.items()) or "none (no hypotheses declared)")
                 + ".")
    return lines


def _unique(runs: pd.DataFrame, col: str) -> list[str]:
    if col not in runs.columns:
        return []
    return sorted({str(v) for v in runs[col].dropna() if str(v)})


def _provenance(data: StudyData) -> list[str]:
    m = data.manifest
    lrs = ", ".join(format_number(float(v)) for v in sorted(m["learning_rate"].unique()))
    lines = [
        f"Validation split: {_split_used(data)}.",
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
