"""One page per run: settings and provenance as tables, train/validation curves with the learning-rate
schedule (ReduceLROnPlateau's reductions marked), its scored validation patches (worst and best, with
false positives and negatives in colour and the patch IoU), its history table and the tail of its log.

Pages are string templates around one figure dictionary, so thousands of them cost seconds.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.patches import ERROR_LEGEND, FN_RGB, FP_RGB, TP_RGB, TRUTH_RGB
from hpc_unet.analysis.site.charts import epoch_axis, log_range
from hpc_unet.analysis.site.page import esc, inline, kv_table, page, plot, value_text
from hpc_unet.analysis.site.runs import setting_text, sig

PROVENANCE = ("status", "attempt", "attempts", "restarts", "resumed_from_epoch", "job_id", "host", "device",
              "device_setting", "started_at", "finished_at", "tf_version", "package_version", "git_commit",
              "total_train_seconds", "mean_epoch_seconds", "peak_gpu_bytes", "max_rss_bytes", "param_count",
              "model_bytes", "examples", "error_type", "error_message", "phase_seconds", "data_provenance")
LOG_BYTES = 6000
_LOG_NAME = re.compile(r"^(?P<job>.+?)_\d+_log\.(?P<kind>out|err)$")


def log_index(jobs_dir: Path) -> dict[str, dict[str, Path]]:
    """submitit's logs by job id ('1234_5' or a local pid): {'out': path, 'err': path}, found in one walk."""
    index: dict[str, dict[str, Path]] = {}
    if not jobs_dir.is_dir():
        return index
    for path in jobs_dir.rglob("*_log.*"):
        found = _LOG_NAME.match(path.name)
        if found:
            index.setdefault(found.group("job"), {})[found.group("kind")] = path
    return index


def tail(path: Path, limit: int = LOG_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text if size <= limit else "...\n" + text.split("\n", 1)[-1]


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value.strip().startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value) not in ("", "nan", "None")


def curves(hist: pd.DataFrame, best_epoch: Any) -> dict[str, Any]:
    """Loss (top, lr on the right, steps where ReduceLROnPlateau lowered it) and Jaccard/IoU (bottom)."""
    x = hist["epoch"].astype(int).tolist()
    traces = []
    for col, name, axis, style in (("loss", "train loss", "y", "solid"), ("val_loss", "val loss", "y", "solid"),
                                   ("jacard_coef", "train soft Jaccard", "y2", "dot"),
                                   ("val_jacard_coef", "val soft Jaccard", "y2", "solid"),
                                   ("val_iou", "val IoU", "y2", "dash")):
        if col in hist.columns:
            traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "name": name,
                           "y": [sig(v, 5) for v in hist[col]], "xaxis": "x" if axis == "y" else "x2",
                           "yaxis": axis, "line": {"dash": style}, "marker": {"size": 4}})
    shapes, notes = [], []
    lr_axis = {"overlaying": "y", "side": "right", "type": "log", "title": {"text": "lr"}, "showgrid": False,
               "tickformat": ".0e"}
    if "lr" in hist.columns:
        lr = hist["lr"].astype(float).to_numpy()
        traces.append({"type": "scatter", "mode": "lines", "x": x, "y": [sig(v) for v in lr], "name": "learning rate",
                       "xaxis": "x", "yaxis": "y3", "line": {"shape": "hv", "color": "#555", "dash": "dash"}})
        lr_axis.update(log_range(lr))
        for k in np.flatnonzero(lr[1:] < lr[:-1] * (1 - 1e-9)):
            notes.append({"x": x[k + 1], "y": 1, "yref": "paper", "text": "lr ↓", "showarrow": False,
                          "font": {"size": 10, "color": "#555"}})
    if _present(best_epoch):
        shapes.append({"type": "line", "x0": float(best_epoch), "x1": float(best_epoch), "y0": 0, "y1": 1,
                       "xref": "x2", "yref": "paper", "line": {"color": "#2ca02c", "dash": "dot", "width": 1}})
    n = float(max(x)) if x else 1.0
    layout = {"xaxis": epoch_axis(n, anchor="y", matches="x2", showticklabels=False),
              "xaxis2": epoch_axis(n, anchor="y2", title={"text": "epoch"}),
              "yaxis": {"domain": [0.55, 1], "title": {"text": "loss"}},
              "yaxis2": {"domain": [0, 0.45], "title": {"text": "score"}},
              "yaxis3": lr_axis, "legend": {"orientation": "h", "x": 0, "y": -0.15, "yanchor": "top"},
              "shapes": shapes, "annotations": notes, "hovermode": "x unified"}
    return {"data": traces, "layout": layout}


def _history_table(hist: pd.DataFrame) -> str:
    cols = [c for c in hist.columns if c not in ("exp_id", "attempt_id")]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    values = hist[cols].to_numpy(dtype=object).tolist()
    rows = "".join("<tr><td>" + "</td><td>".join(value_text(sig(v, 5)) for v in r) + "</td></tr>" for r in values)
    return f"<div class='scroll'><table class='t h'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def legend() -> str:
    def swatch(rgb: tuple[int, int, int], text: str) -> str:
        return f"<span style='background:rgb{rgb}'></span>{esc(text)}"

    return ("<p class='legend'>Each patch: image, truth" + swatch(TRUTH_RGB, "") + "(tinted), prediction > 0.5 "
            "(white), errors:" + swatch(TP_RGB, "true positive") + swatch(FP_RGB, "false positive")
            + swatch(FN_RGB, "false negative (missed)") + "</p>")


def render(row: dict[str, Any], hist: pd.DataFrame | None, settings: tuple[list[str], list[str]], label: str,
           images: list[tuple[str, str]] | None, patch_note: str, log: dict[str, Path], study_root: Path,
           explore: Path, inline_shared: bool = True) -> str:
    exp_id = str(row["exp_id"])
    parts = [f"<h1>{esc(exp_id)}</h1>"]
    badge = (f" <span class='badge {re.sub('[^a-z]+', '-', label)}'>{esc(label)}</span>" if label else "")
    facts = [f"status {esc(row.get('status', ''))}{badge}"]
    for col, name in (("best_val_jaccard", "val soft Jaccard"), ("best_val_iou", "val IoU"), ("test_iou", "test IoU")):
        if _present(row.get(col)):
            facts.append(f"{name} {float(row[col]):.4f}")
    if _present(row.get("best_epoch")):
        facts.append(f"best at epoch {int(row['best_epoch'])} of {int(row.get('epochs_run') or 0)}")
    parts.append("<p>" + "; ".join(facts) + ".</p>")
    if _present(row.get("error_message")):
        parts.append(f"<p><b>{esc(row.get('error_type', ''))}</b>: {esc(row['error_message'])}</p>")
    if hist is not None and len(hist):
        parts.append("<h2>Curves and learning-rate schedule</h2>")
        parts.append(plot(curves(hist, row.get("best_epoch")), "curves", 460))
    parts.append("<h2>Validation patches</h2>")
    if images:
        parts.append(legend() + f"<p>{inline(patch_note)}</p><div class='grid'>")
        parts += [f"<div class='card'><img class='patch' src='{esc(src)}' alt='{esc(cap)}'><div class='cap'>"
                  f"{esc(cap)}</div></div>" for src, cap in images]
        parts.append("</div>")
    else:
        parts.append(f"<p>{inline(patch_note)}</p>")
    varying, shared = settings
    parts.append("<div class='two'><div><h2>Settings</h2>")
    parts.append(kv_table((c.replace("_", " "), setting_text(c, row.get(c, ""))) for c in varying))
    if len(shared) and inline_shared:
        parts.append(f"<details><summary>{len(shared)} settings shared by every run</summary>")
        parts.append(kv_table((c.replace("_", " "), setting_text(c, row.get(c, ""))) for c in shared) + "</details>")
    elif len(shared):
        parts.append(f"<p>The {len(shared)} settings shared by every run are listed on <a href='../runs.html'>the "
                     "run table's page</a>.</p>")
    parts.append("</div><div><h2>Provenance</h2>")
    parts.append(kv_table((c.replace("_", " "), _parsed(row[c])) for c in PROVENANCE
                          if c in row and _present(row[c])) + "</div></div>")
    if hist is not None and len(hist):
        csv = study_root / "runs" / exp_id / "history.csv"
        link = ""
        if csv.is_file():
            rel = Path(*([".."] * len(explore.joinpath("runs").relative_to(study_root).parts))) / "runs" / exp_id / "history.csv"
            link = f" (<a href='{esc(rel.as_posix())}'>history.csv</a>)"
        parts.append(f"<h2>History{link}</h2>" + _history_table(hist))
    if log:
        parts.append("<h2>Log tail</h2><p>The end of the task's submitit log (a local task that trained several "
                     "experiments shares one log).</p>")
        for kind in ("err", "out"):
            if kind in log:
                parts.append(f"<h3>{esc(log[kind].name)}</h3><pre class='log'>{esc(tail(log[kind]))}</pre>")
    return page(exp_id, "\n".join(parts), here="runs", depth=1, plotly=hist is not None and len(hist) > 0)


def patch_images(patches: Any, exp_id: str, img_dir: Path, k: int = 4) -> tuple[list[tuple[str, str, bytes]], str]:
    """(file name, caption, PNG bytes) of the run's worst and best patches, and the note above them."""
    from hpc_unet.analysis.patches import png, strip

    out = []
    for label, positions in (("worst", patches.worst[:k]), ("best", patches.best[:k])):
        for pos in positions:
            idx = int(patches.index[pos])
            tp, fp, fn = (int(patches.counts[c][pos]) for c in ("tp", "fp", "fn"))
            caption = (f"{label}: {patches.split} patch {idx}, IoU {float(patches.iou[pos]):.3f} "
                       f"(TP {tp}, FP {fp}, FN {fn} pixels)")
            name = f"{exp_id}-{patches.split[:3]}{idx}.png"
            if not any(n == name for n, _, _ in out):
                out.append((name, caption, png(strip(patches.image[pos], patches.mask[pos], patches.predicted[pos]))))
    if patches.all_iou is not None:
        scored = patches.all_iou[np.isfinite(patches.all_iou)]
        note = (f"{len(scored)} of {len(patches.all_iou)} validation patches have something to score (truth or "
                f"prediction); their IoU: median {np.median(scored):.3f}, lowest {scored.min():.3f}, highest "
                f"{scored.max():.3f}. {ERROR_LEGEND}.") if len(scored) else "No patch has foreground to score."
    else:
        note = (f"This run stored only its {len(patches.index)} example {patches.split} patches (trained before "
                f"the per-patch scores existed). {ERROR_LEGEND}.")
    return out, note
