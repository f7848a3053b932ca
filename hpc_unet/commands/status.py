"""Show the study's progress: counts, ETA, and a row per experiment grouped by architecture.

Reads the manifest, shards, progress files and submission records; for Slurm jobs also sacct (or squeue
when accounting does not answer).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--watch", action="store_true", help="refresh until every experiment has ended")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--summary", action="store_true", help="only the counts, no table")
    parser.add_argument("--all", action="store_true",
                        help="list completed experiments too in studies of more than 200 experiments")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from rich.live import Live

    from hpc_unet.manifest import read_manifest
    from hpc_unet.status.render import console as make_console
    from hpc_unet.status.render import status_renderable
    from hpc_unet.status.state import experiment_states, summarize
    from hpc_unet.study import Study

    study = Study.at(args.study).require()
    frame = read_manifest(study)

    def snapshot() -> tuple[list[dict], dict]:
        rows = experiment_states(study, frame)
        return rows, summarize(rows, study)

    rows, summary = snapshot()
    if args.json:
        print(json.dumps({"summary": summary, "experiments": rows}, indent=2, default=str))
        return 0
    console = make_console()
    if not args.watch:
        console.print(status_renderable(rows, summary, detail=not args.summary, show_all=args.all))
        return 0
    with Live(status_renderable(rows, summary, detail=not args.summary, show_all=args.all), console=console, refresh_per_second=1) as live:
        while summary["running"] + summary["queued"] > 0:
            time.sleep(args.interval)
            rows, summary = snapshot()
            live.update(status_renderable(rows, summary, detail=not args.summary, show_all=args.all))
    return 0
