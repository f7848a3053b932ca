"""``submit --then-analyze``: a small CPU job that runs ``collect`` and ``analyze`` once every array of
the submission has ended, so the report exists when the last task ends.

The job waits with ``--dependency=afterany:<array>:<array>...`` (every array of the submission, also
the MaxArraySize chunks; ``afterany``: failed or cancelled tasks do not block the report, they show in
it). It asks for no GPU, one CPU, 4 GB and 1 hour on the study's partition, account and qos, and runs
the study's setup lines first. Its script is written by hpc-unet (every value shell-quoted, paths
checked by dispatch/jobscript.py) to ``jobs/analyze/analyze-<n>.sbatch``; its log goes to
``jobs/analyze/<job>.out``. ``status`` shows its state.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from hpc_unet.dispatch import jobscript
from hpc_unet.errors import UserError
from hpc_unet.study import Study, atomic_write_text

RESOURCES = {"cpus-per-task": 1, "mem": "4G", "time": 60}


def render_script(study: Study, opts: dict[str, Any], arrays: list[str]) -> str:
    """The analysis job's sbatch script (``arrays``: the base job ids it waits for)."""
    if not arrays or not all(a.isdigit() for a in arrays):
        raise UserError(f"the analysis job needs the numeric job ids of the arrays, not {arrays!r}")
    root = jobscript.refuse_control(study.root, "the study path")
    python = jobscript.refuse_control(sys.executable, "the Python executable path")
    log = str(study.jobs_dir / "analyze" / "%j.out")
    flags: dict[str, Any] = {"job-name": "hpc-unet-analyze", "dependency": "afterany:" + ":".join(arrays),
                             **RESOURCES, "output": log, "error": log, "open-mode": "append"}
    for key in ("partition", "account", "qos"):
        if opts.get(key):
            flags[key] = opts[key]
    lines = ["#!/bin/bash", "", "# Parameters"]
    lines += [f"#SBATCH --{key}={shlex.quote(str(value))}" for key, value in flags.items()]
    if opts.get("setup"):
        lines += ["", "# setup", *opts["setup"]]
    cli = [python, "-m", "hpc_unet.cli"]
    lines += ["", "# collect the shards, then analyze (the report)", "set -e",
              shlex.join([*cli, "collect", "--study", root]),
              shlex.join([*cli, "analyze", "--study", root]), ""]
    return "\n".join(lines)


def submit(study: Study, opts: dict[str, Any], arrays: list[str]) -> dict[str, Any]:
    """Write the script and submit it with sbatch; {"job_id", "after", "script"}. One-line UserError
    with Slurm's message when sbatch refuses it."""
    import subprocess

    from hpc_unet.dispatch.slurm import slurm_message

    folder = study.jobs_dir / "analyze"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("analyze-*.sbatch")))
    script_path = folder / f"analyze-{n}.sbatch"
    atomic_write_text(script_path, render_script(study, opts, arrays))
    try:
        proc = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"sbatch of the analysis job failed ({exc}); the arrays are submitted: run "
                        f"`hpc-unet collect` and `hpc-unet analyze` when they end") from None
    if proc.returncode != 0:
        raise UserError(f"sbatch refused the analysis job: {slurm_message(proc.stdout + proc.stderr)}; the arrays "
                        "are submitted: run `hpc-unet collect` and `hpc-unet analyze` when they end")
    job_id = proc.stdout.strip().split(";")[0]
    return {"job_id": job_id, "after": list(arrays), "script": str(script_path)}


def latest(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest analysis job of the study's submission records, or None."""
    for record in reversed(records):
        if record.get("analyze_job"):
            return dict(record["analyze_job"])
    return None


def describe(study: Study, job: dict[str, Any], query: bool = True) -> dict[str, Any]:
    """The analysis job with its state (squeue/sacct, as status asks), for ``status``."""
    state = "unknown"
    if query:
        from hpc_unet.status.slurm_state import query_states

        found = query_states([job["job_id"]]).get(job["job_id"])
        state = found.raw or found.state if found else "unknown"
    report = study.analysis_dir / "report.html"
    return {**job, "state": state, "log": str(Path(study.jobs_dir / "analyze" / f"{job['job_id']}.out")),
            "report": str(report) if report.exists() else ""}


def line(info: dict[str, Any]) -> str:
    """One status line: ``analysis job 123: PENDING, runs collect + analyze after arrays 100, 101``."""
    text = (f"analysis job {info['job_id']}: {info['state']}, runs collect + analyze after array"
            f"{'s' if len(info['after']) > 1 else ''} {', '.join(info['after'])}; log {info['log']}")
    return text + (f"; report {info['report']}" if info.get("report") else "")
