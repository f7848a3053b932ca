"""Rebuild report.md and report.html from an existing analysis (<study>/analysis/).

Uses only what `hpc-unet analyze` wrote there (summary.json, tables/*.csv, figures/*.png), so nothing is
recomputed. When the study has no analysis yet, runs the full analysis first.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--baseline", metavar="DIR", help="baseline study, used only if the analysis must be run")


def run(args: argparse.Namespace) -> int:
    from hpc_unet.analysis.report import SUMMARY, read_bundle, write_report
    from hpc_unet.study import Study

    study = Study.at(args.study).require()
    directory = study.analysis_dir
    if not (directory / SUMMARY).exists():
        from hpc_unet.analysis.pipeline import run_analysis

        print(f"no analysis in {directory} yet; running it")
        run_analysis(study.root, args.baseline)
        print(f"report: {directory / 'report.html'}")
        return 0
    md, page = write_report(directory, read_bundle(directory))
    print(f"report: {page} (and {md.name})")
    return 0
