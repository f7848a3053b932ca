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
from hpc_unet.analysis import figures, robustness, stats, verdicts
from hpc_unet.analysis.budget import budget_facts, edge_text, grid_edges
from hpc_unet.analysis.load import (
    FACTORS,
    IOU,
    LEARNED_FROM_PROVENANCE,
    OSCILLATION,
    PERFORMANCE,
    STABILITY,
    StudyData,
    arch_order,
    cell_status,
    hour_unit,
    load_baseline,
    load_study,
    parse_json,
)
from hpc_unet.analysis.report import Bundle, write_bundle
from hpc_unet.manifest import format_number

RUN_COLUMNS = ["exp_id", *FACTORS, "seed", "status", "attempts", "learning", "learned", "learned_skill", "learned_source",
               PERFORMANCE, IOU, "best_val_dice_05", "best_val_dice", "trivial_val_jaccard", "trivial_val_iou",
               "test_jaccard", "test_iou", "test_dice_05", "test_dice", STABILITY, OSCILLATION, "best_epoch", "overfit_gap_best", "overfit_gap_end",
               "epochs_run", "total_train_seconds", "jaccard_per_gpu_hour", "device"]


def primary_metric(spec_text: str) -> str:
    """The ranking metric's column from the spec's [analysis] primary_metric (default: the soft Jaccard)."""
    import tomllib

    from hpc_unet.spec import validate_analysis

    try:
        raw = tomllib.loads(spec_text).get("analysis", {}) if spec_text else {}
    except tomllib.TOMLDecodeError:
        raw = {}
    return {"soft_jaccard": PERFORMANCE, "iou": IOU}[validate_analysis(raw)["primary_metric"]]


def analyze(study_dir: str | Path, baseline_dir: str | Path | None = None, n_boot: int = 2000) -> Bundle:
    """Compute the whole analysis of a study (nothing is written)."""
    data = load_study(study_dir)
    completed, learned = data.completed, data.learned
    baseline = load_baseline(baseline_dir) if baseline_dir else None
    unit = hour_unit(data.runs)
    architectures = arch_order(data.manifest["architecture"].unique())
    levels = {f: sorted(data.manifest[f].unique()) if f != "architecture" else architectures for f in FACTORS}
    hypotheses, hyp_note = verdicts.hypotheses_from_spec(data.spec_text)
    if hyp_note:
        data.notes.append(hyp_note)
    budget = budget_facts(data.manifest, learned)
    setup = robustness.Setup(architectures=architectures, levels=levels, hypotheses=hypotheses, baseline=baseline,
                             history=data.history, hour_unit=unit, primary=primary_metric(data.spec_text),
                             budget_note=budget["note"], steps_note=budget["steps_note"],
                             timing_noise=verdicts.timing_noise(data.history, list(learned["exp_id"])))
    c = robustness.conclude(completed, setup, n_boot)
    left_out = robustness.candidates(completed, c.recs)
    flips = robustness.leave_one_out(completed, setup, left_out) if left_out else {}
    verdict_table = robustness.mark_fragile(c.verdicts, flips)
    anova_j, anova_s, anova_o, cells_j, recs, corr = c.anova_j, c.anova_s, c.anova_o, c.cells_j, c.recs, c.corr
    cells_s = stats.cell_intervals(learned, STABILITY)
    learning = _learning_facts(data)
    edges = _best_edges(recs, levels, setup.primary)

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
        "resources": resources(completed),
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

    robust = {"left_out": left_out, "flips": {k: list(v) for k, v in flips.items()}}
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
        "primary_metric": setup.primary,
        "budget": budget,
        "edges": edges,
        "robustness": robust,
        "split": _split_used(data),
        "headline": headline(data, recs, learning, unit, verdict_table, budget, edges, setup.primary, flips),
        "summary": _summary(data, verdict_table, recs, anova_j, anova_s, overall, learning, flips, budget,
                            setup.primary),
        "provenance": _provenance(data),
        "status_counts": {str(k): int(v) for k, v in data.runs["status"].value_counts().items()},
        "notes": data.notes,
    }
    from hpc_unet.analysis.transfer import add_to_bundle  # studies with an init_from axis (docs/transfer.md)

    add_to_bundle(data, tables, png, svg, info, n_boot=n_boot)
    return Bundle(info=info, tables=tables, png=png, svg=svg)


def _best_edges(recs: pd.DataFrame, levels: dict[str, list[Any]], primary: str) -> list[dict[str, Any]]:
    best = verdicts.kinds_of(recs, "best")
    if best.empty:
        return []
    top = best.loc[best["mean" if primary == PERFORMANCE else "val_iou"].idxmax()]
    return grid_edges(top.to_dict(), levels)


def resources(completed: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: parameters, saved model size, peak GPU memory (or the process's peak RSS on a CPU)
    and training time, medians over completed runs (the seed's secondary metrics)."""
    cols = ["architecture", "parameters", "model_MB", "peak_memory_MB", "memory_kind", "train_minutes", "runs"]
    rows = []
    for arch in arch_order(completed["architecture"].unique()):
        g = completed[completed["architecture"] == arch]

        def med(col: str, grp: pd.DataFrame = g) -> float:
            vals = pd.to_numeric(grp[col], errors="coerce") if col in grp.columns else pd.Series(dtype=float)
            return float(vals.median()) if vals.notna().any() else float("nan")

        gpu = med("peak_gpu_bytes")
        memory, kind = (gpu, "peak GPU") if np.isfinite(gpu) and gpu > 0 else (med("max_rss_bytes"), "peak RSS")
        rows.append({"architecture": arch, "parameters": med("param_count"), "model_MB": med("model_bytes") / 2**20,
                     "peak_memory_MB": memory / 2**20, "memory_kind": kind,
                     "train_minutes": med("total_train_seconds") / 60, "runs": len(g)})
    out = pd.DataFrame(rows, columns=cols)
    for col in ("model_MB", "peak_memory_MB", "train_minutes"):
        out[col] = out[col].map(sig2)
    return out


def sig2(x: float) -> float:
    """``x`` rounded to 2 significant figures (timings and sizes: more digits would be noise)."""
    if not np.isfinite(x) or x == 0:
        return x
    return float(f"{x:.2g}")


def run_analysis(study_dir: str | Path, baseline_dir: str | Path | None = None, n_boot: int = 2000) -> Bundle:
    """analyze, then write <study>/analysis/ (the bundle and report.md / report.html)."""
    bundle = analyze(study_dir, baseline_dir, n_boot=n_boot)
    write_bundle(Path(bundle.info["study"]["root"]) / "analysis", bundle)
    return bundle


# ----------------------------------------------------------------------------------------------- tables
def _anova_frame(result: stats.Anova) -> pd.DataFrame:
    """The ANOVA table with Holm-adjusted p-values over its terms (``p_holm``; the residual row has none)."""
    cols = ["term", "sum_sq", "df", "mean_sq", "F", "p", "p_holm", "partial_eta_sq"]
    if result.table is None:
        return pd.DataFrame(columns=cols)
    out = result.table.reset_index()
    out["p_holm"] = verdicts.holm(out["p"].where(out["term"] != "residual").to_numpy(dtype=float))
    return out[cols]


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
    out = out.merge(status[[*keys, "n_not_learned", "n_marginal", IOU, "best_val_dice_05", OSCILLATION, "best_epoch", "overfit_gap_end",
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
    """How many completed runs learned, were marginal, did not, or cannot be judged (and how)."""
    done = data.completed
    state = done["learning"] if "learning" in done.columns else pd.Series([None] * len(done), index=done.index)
    flat, half = state == "not learned", state == "marginal"
    unknown = state.isna()
    derived = (done.get("learned_source", pd.Series("", index=done.index)) == LEARNED_FROM_PROVENANCE)
    trivial = done["trivial_val_jaccard"].astype(float)
    return {"completed": int(len(done)), "learned": int((state == "learned").sum()),
            "not_learned": int(flat.sum()), "marginal": int(half.sum()), "unknown": int(unknown.sum()),
            "derived": int(derived.sum()), "not_learned_ids": [str(x) for x in done.loc[flat, "exp_id"]],
            "marginal_ids": [str(x) for x in done.loc[half, "exp_id"]],
            "trivial_jaccard": [float(trivial.min()), float(trivial.max())] if trivial.notna().any() else [],
            "rule": "learned = closes >= 10% of the gap between the best image-blind predictor and a perfect "
                    "score on both the soft Jaccard and the thresholded IoU; marginal = on one of them only"}


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


def _learning_words(learning: dict[str, Any]) -> str:
    done, flat, half = learning["completed"], learning["not_learned"], learning["marginal"]
    return (f"{done} runs completed; {learning['learned']} of them learned to segment, {half} marginal (better than "
            f"predicting the same value everywhere on one of the soft Jaccard and the thresholded IoU only) and "
            f"{flat} did not; marginal runs and runs that did not learn are left out of the stability, speed and "
            "recommendation results" + (f", and for {learning['unknown']} it is unknown" if learning["unknown"] else "")
            + ".")


def _best_row(recs: pd.DataFrame, primary: str) -> pd.Series | None:
    best = verdicts.kinds_of(recs, "best") if not recs.empty else recs
    if best.empty:
        return None
    return best.loc[best["mean" if primary == PERFORMANCE else "val_iou"].idxmax()]


def _fragile(flips: dict[str, Any], key: str) -> str:
    flip = flips.get(key)
    return f" (fragile: depends on {flip[0]}; without it: {flip[2] or 'none'})" if flip else ""


def headline(data: StudyData, recs: pd.DataFrame, learning: dict[str, Any], unit: str,
             verdict_table: pd.DataFrame | None = None, budget: dict[str, Any] | None = None,
             edges: list[dict[str, Any]] | None = None, primary: str = PERFORMANCE,
             flips: dict[str, Any] | None = None) -> str:
    """The report's opening paragraph in plain words: what ran, what won on what data, how sure, how the
    hypotheses came out, what next."""
    m = data.manifest
    budget, edges, flips = budget or {}, edges or [], flips or {}
    source, prov = _data_words(data)
    split = "whole slices held out" if "slice-level" in _split_used(data) else "patches split at random"
    counts = (f"{prov['patches_train']} training and {prov['patches_val']} validation patches, "
              if "patches_train" in prov and "patches_val" in prov else "")
    words = [f"This study trained {len(m)} U-Net models ({', '.join(arch_order(m['architecture'].unique()))}; "
             f"{m['learning_rate'].nunique()} learning rates x {m['batch_size'].nunique()} batch sizes x "
             f"{m['seed'].nunique()} seed(s)) on {source} ({counts}{split}) on {_device_words(data)}."]
    words.append(_learning_words(learning))
    top = _best_row(recs, primary)
    if top is None:
        words.append("No configuration learned, so there is nothing to recommend: check the data and the masks, "
                     "train longer or raise the learning rate, then run the grid again.")
        return " ".join(words)
    config = (f"{top['architecture']} at learning rate {format_number(float(top['learning_rate']))} and batch size "
              f"{int(top['batch_size'])}")
    ranked = "soft Jaccard" if primary == PERFORMANCE else "thresholded IoU"
    lead = f"The best setting by validation {ranked} was {config}{_fragile(flips, 'best')}"
    if np.isfinite(float(top.get("test_iou", np.nan))):
        n_test = f"{prov['patches_test']} " if prov.get("patches_test") else ""
        words.append(f"{lead}: on {n_test}held-out test patches it reached IoU {float(top['test_iou']):.3f} and Dice "
                     f"{float(top['test_dice']):.3f} (thresholded at 0.5); its validation soft Jaccard, used to choose "
                     f"it, was {float(top['mean']):.3f}.")
    else:
        words.append(f"{lead}: validation IoU {float(top['val_iou']):.3f} (thresholded at 0.5), soft Jaccard "
                     f"{float(top['mean']):.3f} [{float(top['ci_low']):.3f}, {float(top['ci_high']):.3f}]. These scores "
                     "come from the validation patches that also chose the setting and stopped training, so they are "
                     "optimistic; there was no held-out test set.")
    if str(top.get("tied_with", "")):
        words.append(f"Within noise it is tied with {top['tied_with']}.")
    if str(top.get("other_metric_best", "")):
        other = "thresholded IoU" if primary == PERFORMANCE else "soft Jaccard"
        words.append(f"By {other}, {top['other_metric_best']} ranks first for {top['architecture']}.")
    if edges:
        words.append(f"The best setting is on the grid's edge: {edge_text(edges)}.")
    if budget.get("note"):
        words.append(f"All of this is {budget['note']}.")
    reps = int(data.completed.groupby(list(FACTORS)).size().max()) if len(data.completed) else 0
    if reps >= 2:
        words.append(f"Intervals are over {reps} seeds per setting.")
    else:
        words.append("Each setting ran once, so the intervals show only how much the score depends on which "
                     "validation patches were used, not how much it varies between training runs.")
    if verdict_table is not None and len(verdict_table):
        words.append("Hypotheses: " + " ".join(f"{r['id']} ({r['claim']}): {r['verdict']}." for r in
                                                 verdict_table.to_dict("records")))
    nxt = ["repeat the recommended settings with 3 seeds (`hpc-unet followup`)" if reps < 2 else
           "train the recommended settings longer (`hpc-unet followup`)"]
    if budget.get("note"):
        nxt.append(f"train for more than {budget['epochs']} epochs (`hpc-unet followup --epochs`)")
    if edges:
        nxt.append("extend the grid beyond its edge (`hpc-unet followup` writes that spec)")
    if np.isnan(float(top.get("test_iou", np.nan))):
        nxt.append("add a held-out test set")
    flat = learning["not_learned"] + learning["marginal"]
    if flat:
        nxt.append(f"look at why {flat} run{'s' if flat > 1 else ''} did not learn or are marginal (the learning curves)")
    words.append("Next: " + "; ".join(nxt) + ".")
    return " ".join(words)


def _summary(data: StudyData, table: pd.DataFrame, recs: pd.DataFrame, anova_j: stats.Anova,
             anova_s: stats.Anova, corr: dict, learning: dict[str, Any], flips: dict[str, Any] | None = None,
             budget: dict[str, Any] | None = None, primary: str = PERFORMANCE) -> list[str]:
    runs, flips, budget = data.runs, flips or {}, budget or {}
    counts = runs["status"].value_counts()
    lines = [f"{len(runs)} experiments in the manifest; " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    lines.append(f"Did it learn: {learning['learned']} of {learning['completed']} completed runs learned, "
                 f"{learning['marginal']} marginal, {learning['not_learned']} did not"
                 + (f", {learning['unknown']} unknown (older shards without the check)" if learning["unknown"] else "")
                 + f" ({learning['rule']}). Runs that did not learn keep their Jaccard in the Jaccard analyses; "
                 "their stability, convergence and speed are undefined and, with the marginal runs', excluded from "
                 "the stability ANOVA, the correlations and the recommendations.")
    if budget.get("note"):
        lines.append(f"Training budget: {budget['note']}." + (f" {budget['steps_note']}." if budget.get("steps_note")
                                                                 else ""))
    top = _best_row(recs, primary)
    if top is not None:
        test = (f"; test IoU {float(top['test_iou']):.3f}, test Dice {float(top['test_dice']):.3f}"
                if np.isfinite(float(top["test_iou"])) else
                "; no test set: selected on validation, so optimistic")
        lines.append(f"Best configuration{_fragile(flips, 'best')}: {top['architecture']} at lr "
                     f"{format_number(float(top['learning_rate']))}, batch {int(top['batch_size'])}: val soft Jaccard "
                     f"{top['mean']:.3f} [{top['ci_low']:.3f}, {top['ci_high']:.3f}] ({top['ci_method']}), val IoU "
                     f"{float(top['val_iou']):.3f}, val Dice {float(top['val_dice']):.3f}{test}"
                     + (f"; tied within noise with {top['tied_with']}" if str(top.get("tied_with", "")) else "") + ".")
    for key, label, result in (("anova jaccard", "Jaccard", anova_j),
                               ("anova stability", "stability (runs that learned)", anova_s)):
        if result.table is None:
            lines.append(f"ANOVA of {label} skipped: {result.skipped}.")
            continue
        frame = _anova_frame(result).set_index("term").drop(index="residual")
        sig = frame[frame["p_holm"] < stats.ALPHA].sort_values("partial_eta_sq", ascending=False)
        terms = ", ".join(f"{t} (partial eta^2 {r['partial_eta_sq']:.2f}, Holm p={r['p_holm']:.2g})"
                          for t, r in sig.iterrows())
        lines.append(f"ANOVA of {label}{_fragile(flips, key)}: terms significant after Holm's correction over "
                     f"{len(frame)} terms: {terms or 'none'}.")
    if np.isfinite(float(corr.get("pearson_r", np.nan))):
        lines.append(f"Stability vs performance{_fragile(flips, 'correlation')}: Pearson r={float(corr['pearson_r']):.2f} "
                     f"(p={float(corr['pearson_p']):.2g}), Spearman rho={float(corr['spearman_rho']):.2f} "
                     f"(p={float(corr['spearman_p']):.2g}) over {int(corr['n'])} runs that learned.")
    tally = table["verdict"].map(lambda v: "fragile" if str(v).startswith("fragile") else v).value_counts()
    lines.append("Verdicts (p-values Holm-corrected over the verdicts): "
                 + (", ".join(f"{n} {v}" for v, n in tally.items()) or "none (no hypotheses declared)") + ".")
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
