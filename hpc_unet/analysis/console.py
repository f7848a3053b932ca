"""The verdict table printed after `hpc-unet analyze` and `hpc-unet demo`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpc_unet.analysis.report import Bundle


def print_summary(bundle: Bundle, report: str) -> None:
    """Verdict table and where the report is."""
    from rich.console import Console
    from rich.table import Table

    colours = {"supported": "green", "not supported": "red", "inconclusive": "yellow", "not applicable": "white"}
    console = Console()
    if bundle.info.get("headline"):
        console.print(bundle.info["headline"], highlight=False)
    for line in bundle.info.get("summary", [])[:2]:
        console.print(line, highlight=False)
    table = Table(title="Verdicts")
    for col in ("id", "claim", "verdict"):
        table.add_column(col)
    for row in bundle.tables["verdicts"].itertuples(index=False):
        table.add_row(row.id, row.claim, f"[{colours.get(row.verdict, 'white')}]{row.verdict}[/]")
    console.print(table)
    console.print(f"report: {report}  (markdown: report.md, tables: tables/*.csv, figures: figures/)",
                  highlight=False)
