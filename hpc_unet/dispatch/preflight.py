"""``submit --preflight``: run ``hpc-unet doctor``'s checks as one task on the target partition first.

A node whose TensorFlow cannot use its GPU (no CUDA libraries, driver mismatch), that cannot read the
study's data or write its directory, would fail every task of the array, or worse train on its CPU. One
short job on the same partition, with the same GRES, account and setup lines as the array, finds that
out before 36 GPUs are held; the array is submitted only when it reports no problem. With
``--executor local`` the job is a local subprocess (how the tests drive it).
"""

from __future__ import annotations

import time
from typing import Any

from hpc_unet.errors import UserError
from hpc_unet.study import Study

PREFLIGHT_MINUTES = 15  # time limit of the preflight job (a short job also backfills sooner)
BENCH_SECONDS = 10.0


def doctor_job(study_root: str, bench_seconds: float = BENCH_SECONDS) -> dict[str, Any]:
    """What the preflight task runs on the node (Slurm's sinfo is not asked: compute nodes may lack it)."""
    from hpc_unet.node_checks import collect_report

    return collect_report(study_root, bench_seconds, slurm=False)


def _executor(study: Study, executor: str, options: dict[str, Any] | None) -> Any:
    import submitit

    folder = study.jobs_dir / "preflight"
    if executor == "slurm":
        from hpc_unet.dispatch import slurm

        opts = dict(options or {})
        opts["time"] = f"00:{min(PREFLIGHT_MINUTES, slurm.time_to_minutes(opts.get('time', PREFLIGHT_MINUTES))):02d}:00"
        opts["job_name"] = f"{opts.get('job_name') or 'hpc-unet'}-preflight"
        return slurm.make_executor(folder, opts)
    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=PREFLIGHT_MINUTES)
    return ex


def _wait(job: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            raise UserError(f"the preflight job {job.job_id} did not finish within {timeout_s / 60:.0f} min "
                            "(still queued?); nothing submitted. Rerun later, or submit without --preflight")
        time.sleep(2)
    try:
        return job.result()
    except Exception as exc:
        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise UserError(f"the preflight job {job.job_id} failed ({last[:300]}); its log is in "
                        f"{job.paths.stderr}; nothing submitted") from None


def run_preflight(study: Study, executor: str, options: dict[str, Any] | None,
                  timeout_s: float = 3600.0, bench_seconds: float | None = None) -> dict[str, Any]:
    """Run the doctor job where the array would run; raise UserError (one line) when it finds a problem."""
    bench_seconds = BENCH_SECONDS if bench_seconds is None else bench_seconds
    if executor == "debug":
        report = doctor_job(str(study.root), bench_seconds)
        where = "this process"
    else:
        job = _executor(study, executor, options).submit(doctor_job, str(study.root), bench_seconds)
        report = _wait(job, timeout_s)
        partition = (options or {}).get("partition")
        where = f"job {job.job_id}" + (f" on partition {partition}" if partition else "")
    host = report.get("versions", {}).get("host", "?")
    if report["problems"]:
        raise UserError(f"preflight ({where}, node {host}) found: {'; '.join(report['problems'])}; "
                        "the array was not submitted")
    return report


def preflight_line(report: dict[str, Any]) -> str:
    """One line for the console: the node, its GPU and measured speed."""
    gpus = report["gpus"]["devices"]
    bench = report.get("benchmark", {})
    speed = bench.get("float32", {}).get("tflops")
    return (f"preflight ok on {report['versions']['host']}: "
            + (gpus[0]["name"] if gpus else "no GPU (not required)")
            + (f", conv float32 {speed} TFLOPS" if speed is not None else ""))
