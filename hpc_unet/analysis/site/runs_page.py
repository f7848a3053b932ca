"""runs.html: every run in a sortable, filterable table (DataTables via itables) with a link to its page,
and a parallel-coordinates view of the settings against the primary metric (plotly; drag along an axis
to keep only the runs in that range).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import METRICS
from hpc_unet.analysis.site.assets import datatable, datatables_loader
from hpc_unet.analysis.site.charts import sample_runs
from hpc_unet.analysis.site.page import esc, inline, page, plot
from hpc_unet.analysis.site.runs import setting_text, sig

CATEGORICAL = ("status", "learning", "architecture", "device")
PARCOORDS_LINES = 1000  # WebGL lines; a sample beyond this keeps the page quick where the GPU is software


def table_html(frame: pd.DataFrame, linked: set[str]) -> str:
    """The DataTables table: numbers rounded to 4 significant figures, run ids linked to their pages."""
    shown = frame.copy()
    shown["run"] = [f"<a href='runs/{esc(r)}.html'>{esc(r)}</a>" if r in linked else esc(r) for r in shown["run"]]
    for col in shown.columns:
        if col != "run" and pd.api.types.is_numeric_dtype(shown[col]) and not pd.api.types.is_bool_dtype(shown[col]):
            values = [sig(v) for v in shown[col]]
            shown[col] = pd.Series(values, dtype=object).where(pd.notna(pd.Series(values, dtype=float)), "")
        elif col != "run":
            shown[col] = shown[col].astype(str).replace({"nan": "", "None": ""}).map(esc)
    lists = [k for k, c in enumerate(shown.columns) if c in CATEGORICAL or shown[c].nunique() <= 12]
    return datatable(shown, allow_html=True, maxBytes=0, showIndex=False, pageLength=50,
                     lengthMenu=[25, 50, 100, 500, -1], scrollX=True, deferRender=True, classes="display compact nowrap",
                     columnControl=["order", ["orderAsc", "orderDesc", "spacer", "search"]],
                     columnDefs=[{"targets": lists, "columnControl": ["order", ["orderAsc", "orderDesc", "spacer",
                                                                                "searchList"]]}],
                     order=[])


def parcoords(runs: pd.DataFrame, varying: list[str], primary: str) -> dict[str, Any] | None:
    """Settings -> primary metric over completed runs; categorical settings as numbered levels."""
    done = runs[(runs["status"] == "completed") & np.isfinite(pd.to_numeric(runs[primary], errors="coerce"))]
    if done.empty or not varying:
        return None
    done, sampled = sample_runs(done, varying[0], PARCOORDS_LINES)
    dims = []
    for col in varying[:8]:
        values = done[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            levels = sorted(values.dropna().unique())
            log = col in ("learning_rate", "min_lr") and min(levels) > 0
            pos = np.log10(values.astype(float)) if log else values.astype(float)
            ticks = [float(np.log10(v)) if log else float(v) for v in levels]
        else:
            levels = sorted(values.astype(str).unique())
            pos = values.astype(str).map({v: k for k, v in enumerate(levels)}).astype(float)
            ticks = list(range(len(levels)))
        dims.append({"label": col.replace("_", " "), "values": pos.tolist(), "tickvals": ticks,
                     "ticktext": [setting_text(col, v) for v in levels]})
    label = METRICS.get(primary, (primary.replace("_", " "), True))[0]
    score = done[primary].astype(float)
    dims.append({"label": label, "values": score.tolist()})
    return {"data": [{"type": "parcoords", "dimensions": dims,
                      "line": {"color": score.tolist(), "colorscale": "Viridis", "showscale": True,
                               "colorbar": {"title": {"text": "score"}}}}],
            "layout": {"margin": {"l": 120, "r": 90, "t": 60, "b": 30}}, "sampled": sampled}


def render(runs: pd.DataFrame, frame: pd.DataFrame, varying: list[str], constant: dict[str, Any], primary: str,
           linked: set[str], title: str) -> str:
    parts = [f"<h1>{esc(title)}: runs</h1>",
             f"<p>{len(frame)} runs. A column's ⇅ button sorts it and its ☰ menu filters it; the search box "
             "filters every column. A run's id opens its page (settings, provenance, curves, patches, log).</p>"]
    if constant:
        text = "; ".join(f"{k.replace('_', ' ')} {setting_text(k, v)}" for k, v in constant.items())
        parts.append(f"<details><summary>Settings shared by every run ({len(constant)})</summary><p>{inline(text)}"
                     "</p></details>")
    parts.append(table_html(frame, linked))
    fig = parcoords(runs, varying, primary)
    if fig is not None:
        parts.append("<h2>Settings against the primary metric</h2><p>One line per completed run, coloured by "
                     f"{esc(METRICS.get(primary, (primary, True))[0])}. Drag along an axis to keep only the runs in "
                     "that range; drag the axis titles to reorder them." + (f" {fig['sampled']}" if fig["sampled"] else "")
                     + "</p>")
        parts.append(plot(fig, "parcoords", 460))
    return page(f"{title}: runs", "\n".join(parts), here="runs", depth=0, plotly=fig is not None,
                head=datatables_loader())
