"""The report's transfer section, for a study with an ``init_from`` axis (docs/transfer.md).

Per data budget (``train_fraction``) and start (scratch, or fine-tuned from a source), the primary
metric with a 95 % interval (Student t over seeds when the cell is replicated, else a percentile
bootstrap over the test patches of its one run), epochs to the best validation score, and the
difference fine-tuned minus scratch. Fine-tuning *helps* at a budget when that difference's interval
lies above 0; it *stops helping* at the smallest budget from which on it never helps again. The
source's zero-shot score (``hpc-unet evaluate`` of the source model on the target's test set, found in
this study's or the source study's ``analysis/evaluate``) is the budget-0 point.
No TensorFlow.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import PERFORMANCE, StudyData, parse_json
from hpc_unet.analysis.stats import LEVEL, t_interval, welch_interval

SCRATCH = "scratch"
ZERO_SHOT = "zero-shot (source)"
TEST_METRIC = "test_iou"


@dataclass
class Transfer:
    """The section's tables, facts for the text, and its figure."""

    table: pd.DataFrame        # budget x start: metric and epochs to best, with intervals
    differences: pd.DataFrame  # budget: fine-tuned - scratch, with interval and verdict
    facts: dict[str, Any]
    png: bytes
    svg: bytes


def has_transfer_axis(manifest: pd.DataFrame) -> bool:
    return "init_from" in manifest.columns and (manifest["init_from"].astype(str) != "none").any()


def primary_metric(data: StudyData) -> str:
    """``[analysis] primary_metric`` of the spec when set, else test IoU when every run has one, else the
    validation Jaccard."""
    try:
        chosen = tomllib.loads(data.spec_text or "").get("analysis", {}).get("primary_metric")
    except tomllib.TOMLDecodeError:
        chosen = None
    completed = data.completed
    if chosen and chosen in completed.columns:
        return str(chosen)
    if TEST_METRIC in completed.columns and len(completed) and np.isfinite(completed[TEST_METRIC].astype(float)).all():
        return TEST_METRIC
    return PERFORMANCE


def start_labels(frame: pd.DataFrame) -> pd.Series:
    """scratch | fine-tuned (| fine-tuned: <source label> when the study has several sources)."""
    from hpc_unet.transfer.source import label

    init = frame["init_from"].astype(str)
    sources = sorted(set(init) - {"none"})
    return init.map(lambda v: SCRATCH if v == "none" else
                    "fine-tuned" if len(sources) == 1 else f"fine-tuned: {label(v)}")


def _test_patches(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    inter, union = row.get("test_patch_intersection"), row.get("test_patch_union")
    try:
        i, u = np.asarray(inter, dtype=float).ravel(), np.asarray(union, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    return (i, u) if i.size >= 2 and i.size == u.size else None


def bootstrap_iou(inter: np.ndarray, union: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of pooled IoU sum(I) / sum(U) over resampled test patches."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, inter.size, size=(n_boot, inter.size))
    boots = inter[idx].sum(axis=1) / np.maximum(union[idx].sum(axis=1), 1e-12)
    lo, hi = np.quantile(boots, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def cell_interval(runs: pd.DataFrame, metric: str, n_boot: int) -> tuple[float, float, float, str]:
    """(mean, low, high, how) of ``metric`` over the runs of one budget x start cell."""
    values = runs[metric].astype(float).to_numpy()
    values = values[np.isfinite(values)]
    if values.size >= 2:
        mean, lo, hi = t_interval(values)
        return mean, lo, hi, f"t over {values.size} seeds"
    if values.size == 1 and metric == TEST_METRIC:
        patches = _test_patches(runs.iloc[0].to_dict())
        if patches is not None and n_boot > 0:
            lo, hi = bootstrap_iou(*patches, n_boot=n_boot)
            return float(values[0]), lo, hi, f"bootstrap over {patches[0].size} test patches"
    return (float(values[0]) if values.size else math.nan), math.nan, math.nan, "one run"


def difference(tuned: pd.DataFrame, scratch: pd.DataFrame, metric: str, n_boot: int) -> tuple[float, float, float, str]:
    """fine-tuned - scratch: Welch t over seeds, else a paired bootstrap over the (same) test patches."""
    a = tuned[metric].astype(float).to_numpy()
    b = scratch[metric].astype(float).to_numpy()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan, "no runs"
    if a.size >= 2 and b.size >= 2:
        d = welch_interval(a, b)
        return d.diff, d.low, d.high, d.method
    pa, pb = _test_patches(tuned.iloc[0].to_dict()), _test_patches(scratch.iloc[0].to_dict())
    if metric == TEST_METRIC and pa is not None and pb is not None and pa[0].size == pb[0].size and n_boot > 0:
        rng = np.random.default_rng(0)
        idx = rng.integers(0, pa[0].size, size=(n_boot, pa[0].size))

        def pooled(p: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return p[0][idx].sum(axis=1) / np.maximum(p[1][idx].sum(axis=1), 1e-12)

        lo, hi = np.quantile(pooled(pa) - pooled(pb), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return float(a.mean() - b.mean()), float(lo), float(hi), f"paired bootstrap over {pa[0].size} test patches"
    return float(a.mean() - b.mean()), math.nan, math.nan, "no interval (one run each, no test patches)"


def verdict(low: float, high: float) -> str:
    """helps (interval above 0) | hurts (below 0) | no difference shown (straddles 0, or no interval)."""
    if math.isfinite(low) and low > 0:
        return "helps"
    if math.isfinite(high) and high < 0:
        return "hurts"
    return "no difference shown"


def stops_helping(differences: pd.DataFrame) -> float | None:
    """The smallest budget from which on fine-tuning never helps; None when it helps at the largest budget.

    ``differences``: one row per budget with ``train_fraction`` and ``verdict``."""
    ordered = differences.sort_values("train_fraction")
    stop = None
    for budget, word in zip(ordered["train_fraction"], ordered["verdict"], strict=True):
        if word == "helps":
            stop = None
        elif stop is None:
            stop = float(budget)
    return stop


def _target_test_images(data: StudyData) -> set[str]:
    out = set()
    for value in data.completed.get("data_provenance", pd.Series(dtype=object)):
        prov = parse_json(value)
        if isinstance(prov, dict) and prov.get("test_images"):
            out.add(str(Path(prov["test_images"]).resolve()))
    return out


def zero_shot(data: StudyData, runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Evaluate rows of each source model on this study's test images (the budget-0 points); ``runs``: the
    completed runs with their ``start`` label."""
    wanted = _target_test_images(data)
    tuned = runs[runs["init_from"].astype(str) != "none"]
    sources = {}
    for row in tuned.to_dict("records"):
        record = parse_json(row.get("init_source")) or {}
        path = Path(str(row.get("init_path") or record.get("path") or ""))
        if record.get("exp_id") and path.name:
            sources[record["exp_id"]] = (path, row["start"])
    folders = {data.study.root / "analysis" / "evaluate"}
    folders |= {p.parents[3] / "analysis" / "evaluate" for p, _ in sources.values()
                if len(p.parents) > 3 and p.parent.name == "model"}
    out = []
    for folder in sorted(folders):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pairs = {str(Path(a).resolve()) for a, _ in found.get("dataset", {}).get("pairs", [])}
            if not wanted or not (pairs & wanted):
                continue
            for entry in found.get("table", []):
                if entry.get("kind") == "single" and entry.get("entry") in sources:
                    out.append({"source": entry["entry"], "start": sources[entry["entry"]][1],
                                "iou": entry.get("iou"), "iou_lo": entry.get("iou_lo"), "iou_hi": entry.get("iou_hi"),
                                "unit": entry.get("interval_unit", ""), "file": str(path)})
    return list({r["source"]: r for r in out}.values())


def analyze_transfer(data: StudyData, n_boot: int = 2000) -> Transfer | None:
    """The transfer section of ``data``, or None when the study has no init_from axis."""
    if not has_transfer_axis(data.manifest) or data.completed.empty:
        return None
    metric = primary_metric(data)
    runs = data.completed.copy()
    runs["train_fraction"] = runs.get("train_fraction", pd.Series(1.0, index=runs.index)).astype(float)
    runs["start"] = start_labels(runs)
    rows = []
    for (budget, start), cell in runs.groupby(["train_fraction", "start"], sort=True):
        mean, lo, hi, how = cell_interval(cell, metric, n_boot)
        ep, ep_lo, ep_hi = t_interval(cell["best_epoch"].astype(float))
        prov = parse_json(cell["data_provenance"].iloc[0]) if "data_provenance" in cell else None
        rows.append({"train_fraction": budget, "train_patches": (prov or {}).get("patches_train")
                     if isinstance(prov, dict) else None, "start": start, "runs": len(cell), metric: mean,
                     "low": lo, "high": hi, "interval": how, "epochs_to_best": ep, "epochs_low": ep_lo,
                     "epochs_high": ep_hi})
    zero = zero_shot(data, runs) if metric == TEST_METRIC else []
    for z in zero:
        rows.append({"train_fraction": 0.0, "train_patches": 0, "start": f"{ZERO_SHOT}: {z['source']}", "runs": 1,
                     metric: z["iou"], "low": z["iou_lo"], "high": z["iou_hi"],
                     "interval": f"bootstrap over {z['unit']} (hpc-unet evaluate)", "epochs_to_best": math.nan,
                     "epochs_low": math.nan, "epochs_high": math.nan})
    table = pd.DataFrame(rows).sort_values(["train_fraction", "start"], kind="stable").reset_index(drop=True)
    diffs = []
    for start in sorted(set(runs["start"]) - {SCRATCH}):
        for budget, cell in runs.groupby("train_fraction", sort=True):
            tuned, scratch = cell[cell["start"] == start], cell[cell["start"] == SCRATCH]
            if tuned.empty or scratch.empty:
                continue
            d, lo, hi, how = difference(tuned, scratch, metric, n_boot)
            diffs.append({"start": start, "train_fraction": budget, "difference": d, "low": lo, "high": hi,
                          "interval": how, "verdict": verdict(lo, hi)})
    differences = pd.DataFrame(diffs, columns=["start", "train_fraction", "difference", "low", "high", "interval",
                                               "verdict"])
    facts: dict[str, Any] = {"metric": metric, "sources": {}, "zero_shot": zero}
    for start, grp in differences.groupby("start"):
        facts["sources"][start] = {"stops_helping_at": stops_helping(grp),
                                   "helps_at": [float(b) for b, v in zip(grp["train_fraction"], grp["verdict"],
                                                                         strict=True) if v == "helps"],
                                   "hurts_at": [float(b) for b, v in zip(grp["train_fraction"], grp["verdict"],
                                                                         strict=True) if v == "hurts"]}
    png, svg = _figure(table, metric)
    return Transfer(table=table, differences=differences, facts=facts, png=png, svg=svg)


def _figure(table: pd.DataFrame, metric: str) -> tuple[bytes, bytes]:
    """Metric against budget (categorical axis, budget 0 = zero-shot), one line per start, 95 % intervals."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(table["train_fraction"].unique())
    x_of = {b: i for i, b in enumerate(budgets)}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for k, (start, grp) in enumerate(table.groupby("start", sort=False)):
        x = np.array([x_of[b] for b in grp["train_fraction"]]) + (k - 0.5) * 0.08
        y = grp[metric].to_numpy(float)
        err = np.array([y - grp["low"].to_numpy(float), grp["high"].to_numpy(float) - y])
        style = dict(marker="D", linestyle="none") if start.startswith(ZERO_SHOT) else dict(marker="o")
        ax.errorbar(x, y, yerr=np.nan_to_num(np.clip(err, 0, None)), capsize=3, label=start, **style)
    ax.set_xticks(range(len(budgets)), ["0 (zero-shot)" if b == 0 else f"{b:g}" for b in budgets])
    ax.set_xlabel("training data budget (train_fraction)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = []
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110)
        out.append(buf.getvalue())
    plt.close(fig)
    return out[0], out[1]


def add_to_bundle(data: StudyData, tables: dict[str, pd.DataFrame], png: dict[str, bytes], svg: dict[str, bytes],
                  info: dict[str, Any], n_boot: int = 2000) -> None:
    """The pipeline's hook: the transfer tables, figure and facts, when the study has an init_from axis."""
    result = analyze_transfer(data, n_boot=n_boot)
    if result is None:
        return
    tables["transfer"], tables["transfer_differences"] = result.table, result.differences
    png["transfer"], svg["transfer"] = result.png, result.svg
    info["transfer"] = result.facts
    info.setdefault("figures", []).append({"name": "transfer", "caption": f"Transfer: {result.facts['metric']} "
                                           "against the data budget, scratch vs fine-tuned (95 % intervals; "
                                           "budget 0 = the source zero-shot)"})


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def transfer_blocks(bundle: Any) -> list[tuple]:
    """Report blocks of the transfer section (empty for studies without one)."""
    facts = bundle.info.get("transfer")
    if not facts or "transfer" not in bundle.tables:
        return []
    metric = facts["metric"]
    table = bundle.tables["transfer"]
    shown = pd.DataFrame({
        "budget": table["train_fraction"], "train patches": table["train_patches"], "start": table["start"],
        "runs": table["runs"], metric.replace("_", " "): [_fmt(v) for v in table[metric]],
        "95% interval": [f"[{_fmt(a)}, {_fmt(b)}]" if _fmt(a) else "" for a, b in zip(table["low"], table["high"],
                                                                                         strict=True)],
        "interval over": table["interval"],
        "epochs to best": [f"{_fmt(e, 1)}" + (f" [{_fmt(a, 1)}, {_fmt(b, 1)}]" if _fmt(a) else "")
                           for e, a, b in zip(table["epochs_to_best"], table["epochs_low"], table["epochs_high"],
                                              strict=True)]})
    lines = []
    for start, fact in facts.get("sources", {}).items():
        stop, helps = fact["stops_helping_at"], ", ".join(f"{b:g}" for b in fact["helps_at"])
        hurts = ", ".join(f"{b:g}" for b in fact.get("hurts_at", []))
        if not helps:
            text = f"{start} does not beat scratch at any budget (no difference interval lies above 0)"
        elif stop is None:
            text = f"{start} beats scratch at budget(s) {helps}, the largest included: it helps with all the data tested"
        else:
            text = f"{start} beats scratch at budget(s) {helps}; from budget {stop:g} on it stops helping"
        lines.append(text + (f"; it is worse than scratch at budget(s) {hurts}" if hurts else ""))
    if not facts.get("zero_shot") and metric == TEST_METRIC:
        lines.append("no zero-shot score of the source found: run `hpc-unet evaluate --model SOURCE.keras --data "
                     "THIS_SPEC.toml --out STUDY/analysis/evaluate` for the budget-0 point")
    diffs = bundle.tables.get("transfer_differences", pd.DataFrame())
    blocks: list[tuple] = [("h2", "Transfer: fine-tuned vs scratch by data budget"),
                           ("p", f"{metric.replace('_', ' ')} per training-data budget (share of the training "
                                 "patches, the first in the split's order; validation and test sets identical "
                                 "across budgets). Intervals are 95 %; budget 0 is the source model applied "
                                 "as is (zero-shot)."),
                           ("ul", lines), ("table", "transfer", shown)]
    if len(diffs):
        blocks.append(("table", "transfer_differences", diffs.assign(
            difference=[_fmt(v) for v in diffs["difference"]], low=[_fmt(v) for v in diffs["low"]],
            high=[_fmt(v) for v in diffs["high"]])))
    return blocks
