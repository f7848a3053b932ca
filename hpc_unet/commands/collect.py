"""Merge result shards into <study>/results/{results,history}.parquet; list what is missing or failed.

Idempotent and safe while tasks are still writing.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--json", action="store_true", help="print the collect report as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from hpc_unet.dispatch.submit import prune_checkpoints
    from hpc_unet.results.collect import collect
    from hpc_unet.study import Study

    study = Study.at(args.study).require()
    report = collect(study)
    freed = prune_checkpoints(study)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"collected {report.completed} completed of {report.experiments} experiments "
          f"-> {study.results_dir / 'results.parquet'}")
    if report.failed:
        print(f"not completed ({len(report.failed)}): " + ", ".join(f"{e} [{s}]" for e, s in report.failed.items()))
    if report.not_learned:
        print(f"completed but did not learn ({len(report.not_learned)}; no better than a trivial predictor): "
              + ", ".join(report.not_learned[:10]) + (" ..." if len(report.not_learned) > 10 else ""))
    if report.missing:
        shown = ", ".join(report.missing[:10]) + (" ..." if len(report.missing) > 10 else "")
        print(f"missing ({len(report.missing)}): {shown}")
    if report.duplicates:
        print(f"experiments with several attempts ({len(report.duplicates)}): the latest completed one counts")
    if freed:
        print(f"removed leftover checkpoints of completed experiments ({freed / 2**20:.1f} MiB)")
    if report.unreadable:
        print(f"unreadable shards skipped: {', '.join(report.unreadable)}")
    return 0
