"""HTML building blocks shared by the report's pages: the page shell, text with `code`, static tables,
key/value tables and plotly figures.

Every page works from the file system with no network: scripts and styles are files beside the pages
(``explore/plotly.min.js``, ``explore/style.css``), never a CDN. Figures are plain plotly figure
dictionaries drawn by ``Plotly.newPlot`` (the library's own call), so a page costs a JSON dump, not a
plotly object per trace; that keeps a page per run affordable at thousands of runs.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

EXPLORE = "explore"
NAV = (("report", "Report"), ("runs", "Runs"), ("curves-architecture", "Learning curves"),
       ("importance", "Importance"), ("gallery", "Worst patches"))
_CODE = re.compile(r"`([^`]+)`")
LONG_CELL = 24  # characters: a cell this long that fills half its column becomes a numbered note under the table

CSS = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1220px;margin:0 auto 3em;padding:0 12px;color:#222;line-height:1.4}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:6px 0;margin-bottom:10px;z-index:10}
nav a{margin-right:14px;text-decoration:none;color:#0b5cad}nav a.here{font-weight:bold;color:#222}
.scroll{max-width:100%;overflow-x:auto}
table.t{border-collapse:collapse;margin:0.4em 0 1.2em;font-size:0.82em;max-width:100%}
table.t th,table.t td{border:1px solid #ccc;padding:2px 5px;text-align:left;vertical-align:top;overflow-wrap:break-word}
table.t th{background:#f2f2f2}table.kv th{width:15em;font-weight:normal;color:#444}table.kv td{overflow-wrap:anywhere}
td.num{text-align:right;white-space:nowrap}table.many{font-size:0.72em}table.many th,table.many td{padding:2px 3px}table.h td{text-align:right}
img{max-width:100%;height:auto}img.patch{image-rendering:pixelated;width:100%;max-width:560px;height:auto;display:block}
figure{margin:1em 0 2em}figcaption{font-size:0.9em;color:#555}
.supported{background:#d8f0d8}.not-supported{background:#f6d5d5}.inconclusive{background:#f7efd2}
.not-applicable{background:#e6e6e6}.fragile{background:#f7e0c8}
code{background:#f1f1f1;padding:0 3px;border-radius:3px;font-size:0.92em}p,li{overflow-wrap:break-word}
td.supported,td.not-supported,td.inconclusive,td.not-applicable{white-space:nowrap}
.notes{font-size:0.8em;color:#555;margin:-0.8em 0 1.2em}.notes li{margin:0.1em 0}
.plot{width:100%}.two{display:grid;grid-template-columns:1fr 1fr;gap:16px}.two>div{min-width:0}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;font-size:0.85em}
.card .cap{margin-top:4px}pre.log{background:#f7f7f7;border:1px solid #ddd;padding:6px;font-size:0.78em;
white-space:pre-wrap;overflow-wrap:anywhere;max-height:28em;overflow-y:auto}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:0.85em}
.learned{background:#d8f0d8}.marginal{background:#f7efd2}.not-learned{background:#f6d5d5}
.legend span{display:inline-block;width:0.9em;height:0.9em;margin:0 3px 0 10px;vertical-align:-1px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def inline(text: Any) -> str:
    """Escaped text in which `backticked` words become <code> (the report's text uses Markdown's ticks)."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", esc(text))


def prefix(depth: int) -> str:
    """The relative path from a page ``depth`` folders below explore/ (-1: analysis/) to explore/."""
    return f"{EXPLORE}/" if depth < 0 else "../" * depth


def nav(here: str, depth: int) -> str:
    base = prefix(depth)
    links = []
    for name, label in NAV:
        href = ("../" * (depth + 1) + "report.html") if name == "report" else f"{base}{name}.html"
        if depth < 0 and name == "report":
            href = "report.html"
        cls = " class='here'" if name == here else ""
        links.append(f"<a href='{href}'{cls}>{label}</a>")
    return "<nav>" + "".join(links) + "</nav>"


def page(title: str, body: str, *, here: str = "", depth: int = 0, plotly: bool = False, head: str = "") -> str:
    """A whole page: local style sheet, the plotly library from explore/ when the page draws figures."""
    base = prefix(depth)
    script = f"<script src='{base}plotly.min.js'></script>" if plotly else ""
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><link rel='stylesheet' href='{base}style.css'>{script}{head}</head>"
            f"<body>{nav(here, depth)}\n{body}\n</body></html>\n")


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip() in ("", "nan", "None", "n/a")


def _numeric_text(value: str) -> bool:
    """A number, p-value or interval: kept on one line."""
    number = r"[-+]?(\d[\d.]*(e[-+]?\d+)?|inf|<0\.001)%?"
    return bool(re.fullmatch(rf"{number}|(.{{0,12}}\s)?\[{number}, {number}\]", value.strip()))


def table(frame: pd.DataFrame, *, classes: str = "", verdict_column: str = "verdict") -> str:
    """A static table sized for the page: columns empty in every row are left out, a long text that is the
    same in every row (an interval method, say) is said once under the table, and one that repeats down
    half a column or more becomes a numbered note."""
    keep = [c for c in frame.columns if not all(_is_empty(v) for v in frame[c])]
    same = [c for c in keep if len(frame) > 1 and frame[c].astype(str).nunique() == 1
            and len(str(frame[c].iloc[0])) > LONG_CELL]
    constant = [(c, str(frame[c].iloc[0])) for c in same]
    frame = frame[[c for c in keep if c not in same]]
    notes: list[str] = []
    noted: dict[str, int] = {}
    body_rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            text = "" if _is_empty(value) else str(value)
            cls = []
            if col == verdict_column and text:
                cls.append(re.sub(r"[^a-z]+", "-", text.lower().split(":")[0].strip()))
            if text and _numeric_text(text):
                cls.append("num")
            repeated = len(text) > LONG_CELL and (frame[col] == value).sum() >= max(2, len(frame) / 2)
            if repeated:
                if text not in noted:
                    notes.append(text)
                    noted[text] = len(notes)
                content = f"<sup>[{noted[text]}]</sup>"
            else:
                content = inline(text)
            attr = f" class='{' '.join(cls)}'" if cls else ""
            cells.append(f"<td{attr}>{content}</td>")
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "<tr>" + "".join(f"<th>{inline(c)}</th>" for c in frame.columns) + "</tr>"
    if len(frame.columns) > 12:
        classes += " many"
    out = f"<div class='scroll'><table class='t {classes}'><thead>{head}</thead><tbody>{''.join(body_rows)}</tbody></table></div>"
    if notes:
        out += "<ol class='notes'>" + "".join(f"<li>{inline(n)}</li>" for n in notes) + "</ol>"
    if constant:
        out += "<ul class='notes'>" + "".join(f"<li>{inline(c)}, every row: {inline(v)}</li>" for c, v in constant) + "</ul>"
    return out


def kv_table(pairs: Iterable[tuple[str, Any]]) -> str:
    """Settings or provenance as a two-column table (nested values flattened as 'a.b')."""
    rows = []
    for key, value in flatten(pairs):
        rows.append(f"<tr><th>{esc(key)}</th><td>{inline(value)}</td></tr>")
    return f"<div class='scroll'><table class='t kv'><tbody>{''.join(rows)}</tbody></table></div>"


def flatten(pairs: Iterable[tuple[str, Any]], stem: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        name = f"{stem}.{key}" if stem else str(key)
        if isinstance(value, dict):
            out += flatten(value.items(), name)
        elif isinstance(value, list | tuple) and value and all(isinstance(v, dict) for v in value):
            for k, v in enumerate(value):
                out += flatten(v.items(), f"{name}[{k}]")
        else:
            out.append((name, value_text(value)))
    return out


def value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(v) for v in value)
    return str(value)


def json_for_script(obj: Any) -> str:
    """JSON that is safe inside <script> (NaN/inf become null, '</' cannot end the script). The common case,
    plain Python values without NaN, is dumped directly; only a figure with NaN or NumPy values is cleaned."""
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        text = json.dumps(_clean(obj), separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if hasattr(obj, "item"):
        return _clean(obj.item())
    return obj


def plot(figure: dict[str, Any], div_id: str, height: int = 420) -> str:
    """A div drawn by plotly.js from a figure dictionary ({"data": [...], "layout": {...}})."""
    layout = {"margin": {"l": 60, "r": 60, "t": 40, "b": 50}, "height": height, **figure.get("layout", {})}
    spec = json_for_script({"data": figure.get("data", []), "layout": layout})
    return (f"<div id='{esc(div_id)}' class='plot' style='height:{height}px'></div>"
            f"<script>(function(){{var f={spec};Plotly.newPlot('{esc(div_id)}',f.data,f.layout,"
            "{responsive:true,displaylogo:false});})();</script>")


def bullet_list(items: Sequence[Any]) -> str:
    return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>"
