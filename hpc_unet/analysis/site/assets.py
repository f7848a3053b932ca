"""The libraries the explore pages load, stored once beside them: plotly.js and the page style.

plotly.js comes from the installed plotly package (``plotly.offline.get_plotlyjs``), so the pages never
reach a CDN. The run table uses DataTables through itables: itables' offline loader carries its bundle
inside the one page that shows the table (an ES module cannot be loaded from file:// as a separate
file, so it is imported from a Blob URL, as itables does for notebooks without network).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hpc_unet.analysis.site.page import CSS
from hpc_unet.study import atomic_write, atomic_write_text

PLOTLY_JS = "plotly.min.js"
STYLE = "style.css"


def _same(path: Path, data: bytes) -> bool:
    return path.is_file() and path.stat().st_size == len(data) and \
        hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def write_assets(explore: Path) -> None:
    """plotly.min.js and style.css in ``explore`` (rewritten only when they changed)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs().encode("utf-8")
    if not _same(explore / PLOTLY_JS, js):
        atomic_write(explore / PLOTLY_JS, lambda tmp: tmp.write_bytes(js))
    if not (explore / STYLE).is_file() or (explore / STYLE).read_text() != CSS:
        atomic_write_text(explore / STYLE, CSS)


def datatables_loader() -> str:
    """itables' offline loader of DataTables (its JS and CSS inline, base64), for the run table's page."""
    import itables.options as opt
    from itables.javascript import generate_init_offline_itables_html

    return generate_init_offline_itables_html(opt.dt_bundle)


def datatable(frame, **options) -> str:  # noqa: ANN001 - a pandas DataFrame; itables types it loosely
    """An interactive table (sort by any column, search, a value list per column) by itables/DataTables."""
    from itables import to_html_datatable

    return to_html_datatable(frame, connected=False, **options)
