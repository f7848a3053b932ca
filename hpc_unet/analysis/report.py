"""The analysis bundle on disk (tables as CSV, figures as PNG/SVG, summary.json) and the report built from it.

analyze writes the bundle and then the report; ``hpc-unet report`` rebuilds report.md and report.html
from the bundle alone, so a report can be regenerated (or restyled) without recomputing anything.
Every file is written atomically: an interrupted write leaves the previous file in place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.errors import UserError
from hpc_unet.manifest import format_number
from hpc_unet.study import atomic_write, atomic_write_json, atomic_write_text

SUMMARY = "summary.json"


@dataclass
class Bundle:
    """Everything the report shows: JSON-able facts, named tables and named figures (PNG, and SVG)."""

    info: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    png: dict[str, bytes] = field(default_factory=dict)
    svg: dict[str, bytes] = field(default_factory=dict)


def write_bundle(directory: Path, bundle: Bundle) -> None:
    """Tables and figures first, then summary.json, then the report; stale tables/figures are removed."""
    tables_dir, figures_dir = directory / "tables", directory / "figures"
    for name, frame in bundle.tables.items():
        atomic_write(tables_dir / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False))
    for store, ext in ((bundle.png, "png"), (bundle.svg, "svg")):
        for name, data in store.items():
            atomic_write(figures_dir / f"{name}.{ext}", lambda tmp, d=data: tmp.write_bytes(d))
    info = {**bundle.info, "tables": list(bundle.tables)}
    atomic_write_json(directory / SUMMARY, info)
    _remove_stale(tables_dir, {f"{n}.csv" for n in bundle.tables})
    _remove_stale(figures_dir, {f"{n}.{e}" for n in bundle.png for e in ("png", "svg")})
    write_report(directory, Bundle(info=info, tables=bundle.tables, png=bundle.png))


def _remove_stale(directory: Path, keep: set[str]) -> None:
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_file() and not path.name.startswith(".") and path.name not in keep:
                path.unlink(missing_ok=True)


def read_bundle(directory: Path) -> Bundle:
    """The bundle an earlier analyze wrote (UserError naming the fix when it is absent or damaged)."""
    summary = directory / SUMMARY
    if not summary.exists():
        raise UserError(f"{directory} holds no analysis ({SUMMARY} missing); run `hpc-unet analyze` first")
    try:
        info = json.loads(summary.read_text())
        tables = {n: pd.read_csv(directory / "tables" / f"{n}.csv") for n in info.get("tables", [])}
        png = {f["name"]: (directory / "figures" / f"{f['name']}.png").read_bytes() for f in info.get("figures", [])}
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"the analysis in {directory} is incomplete ({exc}); rerun `hpc-unet analyze`") from exc
    return Bundle(info=info, tables=tables, png=png)


def write_report(directory: Path, bundle: Bundle) -> tuple[Path, Path]:
    blocks = build_blocks(bundle)
    from hpc_unet.analysis.transfer import transfer_blocks
    from hpc_unet.predict.report import evaluation_blocks  # `hpc-unet evaluate` results, when present

    extra, extra_png = evaluation_blocks(directory)
    blocks = blocks[:-1] + transfer_blocks(bundle) + extra + blocks[-1:]
    md, page = directory / "report.md", directory / "report.html"
    atomic_write_text(md, to_markdown(blocks))
    from hpc_unet.analysis.site import write_site  # report.html and the explore/ pages

    write_site(directory, bundle, blocks, {**bundle.png, **extra_png})
    return md, page


# ------------------------------------------------------------------------------------------- formatting
def p_text(p: Any) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, str) and not value):
        return ""
    if isinstance(value, str):
        return value
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "inf" if x == math.inf else ""
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.{digits}g}"


def sig2(value: Any) -> str:
    """Two significant figures without an exponent for everyday magnitudes (381.248 -> '380')."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{float(f'{x:.2g}'):g}" if math.isfinite(x) else ""


def interval(lo: Any, hi: Any) -> str:
    a, b = num(lo), num(hi)
    return f"[{a}, {b}]" if a and b else "n/a"


def _lr(value: Any) -> str:
    try:
        return format_number(float(value))
    except (TypeError, ValueError):
        return str(value)


def _yes_no(value: Any) -> str:
    """A learned flag as text, the same before and after a CSV round trip."""
    text = str(value).strip().lower()
    return {"true": "yes", "1": "yes", "1.0": "yes", "false": "no", "0": "no", "0.0": "no"}.get(text, "")


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series([np.nan] * len(frame), index=frame.index)


def display(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A table of strings for the report: lr in exponent form, p-values as p, CIs as [low, high]."""
    f = frame.copy()
    out = pd.DataFrame(index=f.index)
    if name.startswith("anova_"):
        out["term"] = f["term"]
        for col, label in (("sum_sq", "SS"), ("df", "df"), ("mean_sq", "MS"), ("F", "F")):
            out[label] = f[col].map(num)
        out["p"] = f["p"].map(p_text)
        out["Holm p"] = _col(f, "p_holm").map(p_text)
        out["partial eta^2"] = f["partial_eta_sq"].map(lambda v: num(v, 3))
        return out
    if name == "verdicts":
        out = f[["id", "claim", "verdict", "evidence"]].fillna("")
        out["p (Holm)"] = [f"{p_text(a)} ({p_text(b)})" if p_text(a) else "" for a, b in
                           zip(_col(f, "p"), _col(f, "p_holm"), strict=True)]
        return out
    if name == "recommendations":
        return _recommendations(f)
    if name == "failures":
        f["attempts"] = _col(f, "attempts").map(num)
        return f.fillna("").astype(str).map(lambda s: s if len(s) < 200 else s[:197] + "...")
    for col in f.columns:
        if col == "learned":
            out[col] = f[col].map(_yes_no)
        elif col == "learning_rate":
            out["lr"] = f[col].map(_lr)
        elif col == "ci_low":
            out["95% CI"] = [interval(a, b) for a, b in zip(f["ci_low"], _col(f, "ci_high"), strict=True)]
        elif col == "ci_high":
            continue
        elif col.endswith("_p") or col == "p":
            out[col.replace("_", " ")] = f[col].map(p_text)
        elif pd.api.types.is_numeric_dtype(f[col]):
            out[col.replace("_", " ")] = f[col].map(num)
        else:
            out[col.replace("_", " ")] = f[col].fillna("").astype(str)
    return out


def _per_unit(frame: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Column labels name the device the runs used ('per CPU-hour' on a CPU), not always a GPU."""
    frame = frame.copy()
    frame.columns = [str(c).replace("gpu hour", unit) for c in frame.columns]
    return frame


def _recommendations(f: pd.DataFrame) -> pd.DataFrame:
    """The recommendations table narrow enough for a page: 3 decimals, the interval beside its mean."""
    def three(col: str) -> pd.Series:
        return _col(f, col).map(lambda v: f"{float(v):.3f}" if pd.notna(v) and math.isfinite(float(v)) else "")

    out = pd.DataFrame(index=f.index)
    out["architecture"], out["kind"] = _col(f, "architecture"), _col(f, "kind")
    out["lr"], out["batch"] = _col(f, "learning_rate").map(_lr), _col(f, "batch_size").map(num)
    out["n"] = _col(f, "n").map(num)
    out["val soft Jaccard [95% CI]"] = [f"{a} {interval(lo, hi)}" if a else "" for a, lo, hi in
                                        zip(three("mean"), three("ci_low"), three("ci_high"), strict=True)]
    out["CI method"] = _col(f, "ci_method").fillna("").astype(str)
    for col, label in (("val_iou", "val IoU"), ("val_dice", "val Dice"), ("test_iou", "test IoU"),
                       ("test_dice", "test Dice"), ("val_loss_std", "val-loss std"),
                       ("val_loss_std_detrended", "oscillation")):
        out[label] = three(col)
    out["best epoch"] = _col(f, "best_epoch").map(num)
    out["J per gpu hour"] = _col(f, "jaccard_per_gpu_hour").map(sig2)
    out["neighbours"] = _col(f, "neighbours").map(num)
    for col, label in (("tied_with", "tied with (within noise)"), ("efficiency_tied_with", "efficiency tied with"),
                       ("other_metric_best", "other metric's best")):
        if _col(f, col).fillna("").astype(str).str.len().any():
            out[label] = _col(f, col).fillna("").astype(str)
    return out


# ----------------------------------------------------------------------------------------------- blocks
Block = tuple  # ("h1"|"h2"|"p"|"ul"|"table"|"figure", ...)

TABLE_TITLES = {
    "verdicts": "Verdicts",
    "recommendations": "Recommended configurations",
    "anova_jaccard": "ANOVA of best val Jaccard",
    "anova_stability": "ANOVA of stability (val-loss std, runs that learned)",
    "anova_oscillation": "ANOVA of oscillation (detrended val-loss std, runs that learned)",
    "cells": "Cells: means and 95% confidence intervals",
    "marginal_means": "Marginal means with 95% confidence intervals",
    "correlation": "Correlation of stability with performance",
    "resources": "Model size, memory and training time per architecture (medians)",
    "pairwise_architectures": "Paired architecture comparisons (Holm-corrected)",
    "baseline": "Baseline runs",
    "failures": "Runs that did not complete",
}


def build_blocks(bundle: Bundle) -> list[Block]:
    info, tables = bundle.info, bundle.tables
    study = info.get("study", {})
    blocks: list[Block] = [("h1", f"Analysis of study '{study.get('name', '?')}'")]
    blocks.append(("p", f"{study.get('description') + '. ' if study.get('description') else ''}Generated {info.get('generated_at', '')} by hpc-unet "
                        f"{info.get('hpc_unet_version', '')} from {study.get('root', '')}."))
    unit = info.get("hour_unit", "GPU-hour")
    if info.get("headline"):
        blocks.append(("h2", "In short"))
        blocks.append(("p", info["headline"]))
    blocks.append(("h2", "Summary"))
    blocks.append(("ul", info.get("summary", [])))
    for name in ("verdicts", "recommendations"):
        if name in tables:
            blocks.append(("h2", TABLE_TITLES[name]))
            if name == "recommendations":
                blocks.append(("p", "Among runs that learned (marginal runs excluded): best = highest mean of the "
                                    "primary metric, with the cells tied with it within noise; most robust = the "
                                    "best worst case over the cell and its lr/batch neighbours in the grid (a "
                                    "neighbour that did not learn counts as 0; 'neighbours' says how many it has); "
                                    f"most efficient = highest Jaccard per {unit} (2 significant figures; cells "
                                    "within the timing noise are listed as tied). A cell that wins several kinds is "
                                    "one row. val IoU / val Dice are thresholded at 0.5; test columns are on the "
                                    "held-out test set (empty without one)."))
            blocks.append(("table", name, _per_unit(display(name, tables[name]), unit)))
    blocks.append(("h2", "Glossary"))
    blocks.append(("ul", GLOSSARY))
    blocks.append(("h2", "Figures"))
    for fig in info.get("figures", []):
        blocks.append(("figure", fig["name"], fig["caption"]))
    blocks.append(("h2", "Statistics"))
    for key, name in (("jaccard", "anova_jaccard"), ("stability", "anova_stability"),
                      ("oscillation", "anova_oscillation")):
        meta = info.get("anova", {}).get(key, {})
        if not meta:
            continue
        blocks.append(("h3", TABLE_TITLES[name]))
        if meta.get("skipped"):
            blocks.append(("p", f"Skipped: {meta['skipped']}."))
        else:
            blocks.append(("p", f"Type II ANOVA, OLS `{meta.get('formula', '')}` on {meta.get('n', 0)} completed "
                                "runs; partial eta^2 = SS_effect / (SS_effect + SS_residual)."))
        if meta.get("notes"):
            blocks.append(("ul", meta["notes"]))
        if name in tables:
            blocks.append(("table", name, _per_unit(display(name, tables[name]), unit)))
    for name in ("cells", "marginal_means", "correlation", "pairwise_architectures", "resources"):
        if name in tables:
            blocks.append(("h3", TABLE_TITLES[name]))
            if name == "cells":
                blocks.append(("p", info.get("ci_note", "")))
            blocks.append(("table", name, _per_unit(display(name, tables[name]), unit)))
    if "baseline" in tables:
        blocks.append(("h2", "Baseline"))
        blocks.append(("p", f"Baseline study: {info.get('baseline', '')} (matched by architecture)."))
        blocks.append(("table", "baseline", _per_unit(display("baseline", tables["baseline"]), unit)))
    blocks.append(("h2", "What was run"))
    blocks.append(("ul", info.get("provenance", [])))
    learning = info.get("learning", {})
    if learning.get("not_learned_ids"):
        blocks.append(("h3", "Runs that did not learn"))
        blocks.append(("p", f"{learning.get('rule', '')}: " + ", ".join(learning["not_learned_ids"])))
    if "failures" in tables and len(tables["failures"]):
        blocks.append(("h3", TABLE_TITLES["failures"]))
        blocks.append(("table", "failures", display("failures", tables["failures"])))
    if info.get("notes"):
        blocks.append(("h3", "Notes"))
        blocks.append(("ul", info["notes"]))
    blocks.append(("p", "Definitions, tests and verdict rules: docs/analysis.md. Tables: analysis/tables/*.csv."))
    return blocks


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            if block[1]:
                lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            frame = block[2]
            lines.append("| " + " | ".join(_md_cell(c) for c in frame.columns) + " |")
            lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
            lines.append("")
        elif kind == "figure":
            lines += [f"![{block[1]}](figures/{block[1]}.png)", "", f"*{block[2]}* (SVG: figures/{block[1]}.svg)", ""]
    return "\n".join(lines)


GLOSSARY = [
    "Soft Jaccard: (sum of p*t + 1) / (sum of t + sum of p - sum of p*t + 1) over all validation pixels, with "
    "the predicted probabilities p (not thresholded) and the true mask t; the metric the study monitors "
    "(Keras name jacard_coef). Under-confident models (e.g. with focal loss) score lower on it than on IoU.",
    "IoU (intersection over union) and Dice: the same overlap with the prediction thresholded at 0.5, the "
    "numbers a segmentation is usually judged by; over pooled pixel counts Dice = 2 IoU / (1 + IoU). (The "
    "runs table also keeps the soft Dice of the probabilities, best_val_dice / test_dice.)",
    "Did it learn: a run learned when its best validation soft Jaccard and its IoU each close at least 10% of "
    "the gap between the best image-blind predictor (all background, all foreground, or the mask fraction "
    "everywhere) and a perfect score; marginal when only one of the two does. Runs that did not learn or are "
    "marginal keep their Jaccard; their stability, convergence and speed are undefined.",
    "Stability (the seed's measure): the standard deviation of the validation loss over all epochs. It also "
    "grows when the loss falls fast, so a run that learns a lot looks unstable.",
    "Oscillation: the standard deviation of the validation loss around a straight line fitted over the epochs "
    "(detrended std); it measures only the epoch-to-epoch wobble, not the descent.",
    "Partial eta squared: the share of the variation a factor explains, SS_effect / (SS_effect + SS_residual); "
    "about 0.01 is small, 0.06 medium, 0.14 large.",
    "95% interval (CI): t over seeds when a setting ran with 2 or more seeds; otherwise a bootstrap over the "
    "validation patches (resampling patches), which shows only how much the score depends on the patches "
    "chosen, not on the training run. Differences against the baseline or the median setting use Welch's t "
    "over seeds or a paired patch bootstrap the same way.",
    "Verdicts: supported / not supported when the data point one way beyond noise (p-values Holm-corrected over "
    "the report's verdicts); inconclusive when the difference is within noise, whichever way it points; not "
    "applicable when the grid lacks a level the claim names; fragile: depends on <run> when leaving that one "
    "run out changes the verdict.",
]
