"""Statistics, figures, verdicts and the report for a study's collected results.

Reads <study>/results/{results,history}.parquet (written by `hpc-unet collect`) and the manifest, and
writes <study>/analysis/: figures/ (PNG + SVG), tables/ (CSV), summary.json, report.md and a
self-contained report.html. Everything is computed before anything is written, and each file is
replaced atomically, so a failed analysis leaves the previous one intact. With --baseline DIR the
success criteria are judged against that study (e.g. one made from manifests/baseline.toml).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory with collected results")
    parser.add_argument("--baseline", metavar="DIR",
                        help="study directory of the baseline setup, to judge the success criteria against")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="bootstrap resamples for single-run confidence intervals (default 2000)")
    parser.add_argument("--quiet", action="store_true", help="print only where the report is")


def run(args: argparse.Namespace) -> int:
    from hpc_unet.analysis.console import print_summary
    from hpc_unet.analysis.pipeline import run_analysis

    bundle = run_analysis(args.study, args.baseline, n_boot=args.bootstrap)
    report = f"{bundle.info['study']['root']}/analysis/report.html"
    if args.quiet:
        print(report)
    else:
        print_summary(bundle, report)
    return 0
