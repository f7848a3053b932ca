"""The report section for ``hpc-unet evaluate`` results (``<analysis>/evaluate/*.json``), when present.

``analysis.report.write_report`` appends these blocks, so both ``analyze`` and ``report`` show the latest
evaluations. Figures are named ``../evaluate/<dataset>`` so that the Markdown link
``figures/../evaluate/<dataset>.png`` points at the file evaluate wrote. pandas only, no TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["entry", "kind", "architecture", "best_val_jaccard", "iou", "iou 95% interval", "dice",
           "dice 95% interval", "ensemble - best member IoU [95%]", "images"]


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for m in ("iou", "dice"):
        out[f"{m} 95% interval"] = [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in zip(out[f"{m}_lo"], out[f"{m}_hi"],
                                                                              strict=True)]
        out[m] = out[m].map(lambda v: f"{v:.4f}")
    out["best_val_jaccard"] = out["best_val_jaccard"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    vs = out.get("iou_vs_best_member", pd.Series([float("nan")] * len(out)))
    lo, hi = out.get("iou_vs_best_member_lo", vs), out.get("iou_vs_best_member_hi", vs)
    out["ensemble - best member IoU [95%]"] = ["" if pd.isna(d) else f"{d:+.4f} [{a:+.4f}, {b:+.4f}]"
                                               for d, a, b in zip(vs, lo, hi, strict=True)]
    return out[COLUMNS]


def evaluation_blocks(analysis_dir: Path) -> tuple[list[tuple[Any, ...]], dict[str, bytes]]:
    """Report blocks and figures of every complete evaluation (its JSON is written last)."""
    folder = Path(analysis_dir) / "evaluate"
    blocks: list[tuple[Any, ...]] = []
    png: dict[str, bytes] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            frame = pd.DataFrame(record["table"])
            figure = path.with_suffix(".png").read_bytes()
        except (OSError, ValueError, KeyError):
            continue  # an evaluation being written or damaged: rerun `hpc-unet evaluate`
        if frame.empty:
            continue
        if not blocks:
            blocks += [("h2", "Evaluation on held-out and other data"),
                       ("p", "From `hpc-unet evaluate`: the best run of each architecture (by validation Jaccard) "
                             "and the mean probability of the top-K runs, predicted on whole images with a "
                             "sliding window; IoU and Dice thresholded at 0.5, pooled over all pixels, with 95% "
                             "bootstrap intervals. Files: analysis/evaluate/.")]
        ds = record.get("dataset", {})
        name = f"../evaluate/{path.stem}"
        unit = frame["interval_unit"].iloc[0]
        blocks += [("h3", f"{ds.get('description', path.stem)}"),
                   ("p", f"{int(frame['images'].iloc[0])} image(s); intervals resample {unit}s "
                         f"({int(frame['interval_units'].iloc[0])})."),
                   ("table", f"evaluate-{path.stem}", _table(frame)),
                   ("figure", name, f"IoU per entry on {ds.get('name', path.stem)} (95% bootstrap intervals)")]
        png[name] = figure
    return blocks, png
