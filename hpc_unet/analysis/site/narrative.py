"""report.html: the report's blocks (the same as report.md) as one page that fits a 1280 px window.

The figures stay embedded as PNG data URIs, so this page alone can be mailed or archived; the explore
pages beside it (explore/) add the interactive views. A list item that carries a JSON object (the data
provenance) is shown as a table, not as the raw JSON.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from hpc_unet.analysis.site.page import bullet_list, esc, inline, kv_table, page, table

EXPLORE_LINKS = ("<p>Explore the runs: <a href='explore/runs.html'>sortable run table and parallel coordinates</a>, "
                 "<a href='explore/curves-architecture.html'>learning curves</a>, <a href='explore/importance.html'>"
                 "importance and slices</a>, <a href='explore/gallery.html'>worst patches of the recommended runs"
                 "</a>; one page per run from the run table (offline files beside this page).</p>")
_JSON_ITEM = re.compile(r"^(?P<label>[^{:]{1,80}):\s*(?P<obj>\{.*\})\s*$", re.S)


def _item(text: Any) -> str:
    found = _JSON_ITEM.match(str(text))
    if found:
        try:
            obj = json.loads(found.group("obj"))
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return f"<li>{inline(found.group('label'))}:{kv_table(obj.items())}</li>"
    return f"<li>{inline(text)}</li>"


def render(blocks: list[tuple], png: dict[str, bytes], title: str, explore_links: bool = True) -> str:
    """The page; ``png`` maps figure names to PNG bytes (embedded)."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{inline(block[1])}</{kind}>")
            if kind == "h1" and explore_links:
                out.append(EXPLORE_LINKS)
        elif kind == "p":
            if block[1]:
                out.append(f"<p>{inline(block[1])}</p>")
        elif kind == "ul":
            items = list(block[1])
            if any(_JSON_ITEM.match(str(i)) for i in items):
                out.append("<ul>" + "".join(_item(i) for i in items) + "</ul>")
            else:
                out.append(bullet_list(items))
        elif kind == "table":
            out.append(table(block[2]))
        elif kind == "figure":
            data = png.get(block[1])
            if data is None:
                continue
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            out.append(f"<figure><img alt='{esc(block[1])}' src='{uri}'><figcaption>{inline(block[2])}"
                       "</figcaption></figure>")
    return page(title, "\n".join(out), here="report", depth=-1)
