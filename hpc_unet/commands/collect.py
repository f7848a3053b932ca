"""Merge result shards into <study>/results/{results,history}.parquet; list what is missing or failed.

Idempotent and safe while tasks are still writing. An unchanged study returns the previous report at
once (nothing read, nothing written).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpc_unet.study import Study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--json", action="store_true", help="print the collect report as JSON")


def _leftover_checkpoints(study: Study) -> bool:
    """Does any experiment with a result shard (by file name) still have a checkpoint directory? A cheap
    check, so the pruning below (shards, leases, heartbeats: it decides) runs only when there may be work."""
    from hpc_unet.results.shards import parse_summary_name

    if not study.runs_dir.is_dir() or not study.shards_dir.is_dir():
        return False
    with_ckpt = {e.name for e in os.scandir(study.runs_dir) if os.path.isdir(os.path.join(e.path, "checkpoint"))}
    if not with_ckpt:
        return False
    for name in os.listdir(study.shards_dir):
        parsed = parse_summary_name(name)
        if parsed is not None and parsed[0] in with_ckpt:
            return True
    return False


def run(args: argparse.Namespace) -> int:
    import json

    from hpc_unet.results.collect import collect
    from hpc_unet.study import Study

    study = Study.at(args.study).require()
    report = collect(study)
    from hpc_unet.tempfiles import sweep_shard_temps

    sweep_shard_temps(study)  # what killed tasks left half written (a live task's own are kept)
    freed = 0
    if _leftover_checkpoints(study):
        from hpc_unet.dispatch.submit import prune_checkpoints

        freed = prune_checkpoints(study)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"collected {report.completed} completed of {report.experiments} experiments "
          f"-> {study.results_dir / 'results.parquet'}")
    if report.failed:
        print(f"not completed ({len(report.failed)}): " + ", ".join(f"{e} [{s}]" for e, s in report.failed.items()))
    if report.missing:
        shown = ", ".join(report.missing[:10]) + (" ..." if len(report.missing) > 10 else "")
        print(f"missing ({len(report.missing)}): {shown}")
    for label, ids in (("did not learn", report.not_learned), ("marginal (beat the image-blind predictor on "
                                                                  "one metric only)", report.marginal)):
        if ids:
            print(f"{label} ({len(ids)}): " + ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""))
    if report.duplicates:
        print(f"experiments with several attempts ({len(report.duplicates)}): the latest completed one counts")
    if freed:
        print(f"removed leftover checkpoints of completed experiments ({freed / 2**20:.1f} MiB)")
    if report.unreadable:
        print(f"unreadable shards skipped: {', '.join(report.unreadable)}")
    return 0
