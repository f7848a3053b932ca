"""Show the study's progress: counts, ETA, and a line per experiment grouped by architecture.

Reads the manifest, shards, leases, progress files and submission records; for Slurm jobs also sacct (or
squeue when accounting does not answer). Loads neither pandas nor (for --summary and --json) rich: it runs
every few seconds under --watch on a shared login node.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--watch", action="store_true", help="refresh until every experiment has ended")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--summary", action="store_true", help="only the counts and the ETA, no table")
    parser.add_argument("--all", action="store_true",
                        help="list completed experiments too in studies of more than 200 experiments")
    parser.add_argument("--tensorboard", action="store_true",
                        help="print the command that opens every run's TensorBoard log side by side "
                             "(runs with the train setting tensorboard = true)")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from hpc_unet.status.manifest_table import read_manifest_rows
    from hpc_unet.status.state import experiment_states, summarize
    from hpc_unet.study import Study

    study = Study.at(args.study).require()
    if args.tensorboard:
        from hpc_unet.status.tensorboard import tensorboard_command

        print(tensorboard_command(study))
        return 0
    records = read_manifest_rows(study)

    def snapshot() -> tuple[list[dict], dict]:
        rows = experiment_states(study, records)
        return rows, summarize(rows, study)

    rows, summary = snapshot()
    analysis = _analysis_job(study)
    if analysis:
        summary["analysis_job"] = analysis
    if args.json:
        print(json.dumps({"summary": summary, "experiments": rows}, indent=2, default=str))
        return 0
    if args.summary and not args.watch:
        from hpc_unet.status.render import summary_text

        print(summary["study"])
        print(summary_text(summary, rows))
        if summary.get("note"):
            print(summary["note"])
        if analysis:
            print(_analysis_line(analysis))
        return 0
    from hpc_unet.status.render import console as make_console
    from hpc_unet.status.render import status_renderable

    console = make_console()

    def view():  # noqa: ANN202 (a rich renderable)
        return status_renderable(rows, summary, detail=not args.summary, show_all=args.all)

    if not args.watch:
        console.print(view())
        if analysis:
            console.print(_analysis_line(analysis), highlight=False)
        return 0
    from rich.live import Live

    with Live(view(), console=console, refresh_per_second=1) as live:
        while summary["running"] + summary["queued"] + summary.get("unknown", 0) > 0:
            time.sleep(args.interval)
            rows, summary = snapshot()
            live.update(view())
    return 0


def _analysis_job(study):  # noqa: ANN001, ANN202 (Study -> dict | None)
    """The newest `submit --then-analyze` job with its Slurm state, or None."""
    from hpc_unet.dispatch import analyze_job
    from hpc_unet.dispatch.records import load_records

    job = analyze_job.latest(load_records(study))
    return analyze_job.describe(study, job) if job else None


def _analysis_line(info: dict) -> str:
    from hpc_unet.dispatch import analyze_job

    return analyze_job.line(info)
