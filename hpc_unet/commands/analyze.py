"""Statistics, figures, verdicts and the report for a study's collected results.

Reads <study>/results/{results,history}.parquet (written by `hpc-unet collect`) and the manifest, and
writes <study>/analysis/: figures/ (PNG + SVG), tables/ (CSV), summary.json, report.md and a
self-contained report.html. Everything is computed before anything is written, and each file is
replaced atomically, so a failed analysis leaves the previous one intact. With --baseline DIR the
success criteria are judged against that study (e.g. one made from manifests/baseline.toml).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpc_unet.analysis.report import Bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory with collected results")
    parser.add_argument("--baseline", metavar="DIR",
                        help="study directory of the baseline setup, to judge the success criteria against")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="bootstrap resamples for single-run confidence intervals (default 2000)")
    parser.add_argument("--quiet", action="store_true", help="print only where the report is")


def run(args: argparse.Namespace) -> int:
    from hpc_unet.analysis.pipeline import run_analysis

    bundle = run_analysis(args.study, args.baseline, n_boot=args.bootstrap)
    report = f"{bundle.info['study']['root']}/analysis/report.html"
    if args.quiet:
        print(report)
    else:
        print_summary(bundle, report)
    return 0


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
