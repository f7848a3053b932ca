"""Per-experiment state from what is on disk (manifest, shards, leases, progress, submission records) and,
for Slurm jobs, the scheduler (sacct, falling back to squeue; see slurm_state.py).

States: completed, skipped, failed, oom, diverged (a shard says so); running, queued (a live lease or a
live job); unknown (the scheduler did not answer or could not be parsed: never taken for an end); lost (its
job is known to have ended without a result, no live task holds its lease, no fresh heartbeat); pending
(never submitted). Which evidence wins is one rule, status/precedence.py, shared with submit and collect.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from hpc_unet.dispatch.records import latest_tasks
from hpc_unet.lease import judge, read_lease, stale_seconds
from hpc_unet.results.shards import (
    HISTORY_SUFFIX,
    attempt_rank,
    is_whole_parquet,
    parse_summary_name,
    shard_scan,
)
from hpc_unet.status import precedence
from hpc_unet.status.precedence import Evidence
from hpc_unet.status.waiting import waiting
from hpc_unet.study import Study, read_json

if TYPE_CHECKING:  # status runs without pandas (startup time; docs/bench.md)
    import pandas as pd

SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "STOPPED"}
SCHEDULER_DOWN = ("Slurm did not answer (controller down or unreachable): states come from the files on disk; "
                  "experiments whose job state is unknown are shown as unknown, never as lost")


def _pid_alive(pid: Any, host: Any) -> bool:
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def _read_progress(study: Study, exp_id: str) -> dict[str, Any]:
    try:
        return read_json(study.progress_file(exp_id))
    except (OSError, ValueError):
        return {}


def _progress_reader(study: Study) -> Any:
    """exp_id -> progress dict ({} if absent or unreadable), with string paths: pathlib's joins cost
    more than the read itself when a status reads thousands of progress files."""
    runs = str(study.runs_dir)
    join = os.path.join

    def read(exp_id: str) -> dict[str, Any]:
        try:
            with open(join(runs, exp_id, "progress.json"), "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    return read


def slurm_states(job_ids: list[str]) -> dict[str, Any]:
    if not job_ids:
        return {}
    try:
        from hpc_unet.status.slurm_state import query_states
    except ImportError:
        return {}
    return query_states(job_ids)


def scheduler_view(task: dict[str, Any], sched: Any, prog: dict[str, Any]) -> str:
    """The latest task as precedence sees it: running, queued, ended or unknown ('' when none)."""
    if not task:
        return precedence.SCHED_NONE
    if task.get("executor") == "slurm":
        state = getattr(sched, "state", "") if sched is not None else ""
        if not state:
            return precedence.SCHED_UNKNOWN
        from hpc_unet.status.slurm_state import ENDED_STATES, FINISHED

        if state in SLURM_RUNNING:
            return precedence.SCHED_RUNNING
        if state in SLURM_QUEUED:
            return precedence.SCHED_QUEUED
        if state in ENDED_STATES or state == FINISHED:
            return precedence.SCHED_ENDED
        return precedence.SCHED_UNKNOWN  # a state this code does not know is not an end
    same_attempt = prog.get("attempt") == task.get("attempt")
    if _pid_alive(task.get("job_id"), socket.gethostname()):
        return precedence.SCHED_RUNNING if same_attempt else precedence.SCHED_QUEUED
    return precedence.SCHED_ENDED


def progress_fresh(prog: dict[str, Any], now: float) -> bool:
    """A progress file that says training and was written within the lease's stale time, by a process
    not known to be dead (the heartbeat of runs that hold no lease)."""
    if prog.get("state") not in ("starting", "running"):
        return False
    try:
        if now - float(prog.get("updated_at", 0)) > stale_seconds():
            return False
    except (TypeError, ValueError):
        return False
    return not (prog.get("host") == socket.gethostname() and not _pid_alive(prog.get("pid"), prog.get("host")))


def evidence(shard_items: list[tuple[int, str, str]] | None, task: dict[str, Any], sched: Any,
             prog: dict[str, Any], lease: dict[str, Any] | None, now: float) -> Evidence:
    """Everything precedence needs about one experiment, from the reads status already made."""
    shard = max(shard_items, key=attempt_rank)[2] if shard_items else None
    shard_attempt = max(a for a, _, _ in shard_items) if shard_items else 0
    view = judge(lease, now)
    task_attempt = int(task.get("attempt", 0) or 0)
    return Evidence(shard=shard, shard_attempt=shard_attempt, task_attempt=task_attempt,
                    lease_live=view.live, scheduler=scheduler_view(task, sched, prog),
                    heartbeat_fresh=lease is None and progress_fresh(prog, now),
                    progress_failure=_progress_failure(prog, shard_attempt, task_attempt))


def _progress_failure(prog: dict[str, Any], shard_attempt: int, task_attempt: int) -> str:
    """The failure a progress file records for an attempt newer than every shard and not older than the
    latest task ('' if none): what a task that could not write its failure shard leaves."""
    try:
        attempt = int(prog.get("attempt", 0) or 0)
    except (TypeError, ValueError):
        return ""
    state = prog.get("state")
    return str(state) if state in precedence.FAILURES and attempt > shard_attempt and attempt >= task_attempt else ""


def _restarts(prog: dict[str, Any], lease: dict[str, Any] | None, ev: Evidence) -> int:
    """Interruptions so far: the count its last task started with, plus one for a lease left behind by a
    task that did not end normally (counted for good by the next task that takes the lease)."""
    try:
        counted = int(prog.get("restarts", 0) or 0)
    except (TypeError, ValueError):
        counted = 0
    return counted + (1 if lease is not None and not ev.lease_live else 0)


def experiment_states(study: Study, frame: pd.DataFrame | list[dict[str, Any]] | None = None,
                      query_slurm: bool = True) -> list[dict[str, Any]]:
    """One row per experiment; ``frame`` is the manifest (a DataFrame, or rows from read_manifest_rows)."""
    from hpc_unet.status.manifest_table import STATUS_COLUMNS, read_manifest_rows

    if frame is None:
        records = read_manifest_rows(study)
    elif isinstance(frame, list):
        records = frame
    else:
        records = frame[list(STATUS_COLUMNS)].to_dict("records")
    index, damaged = shard_scan(study)  # one directory scan for both (completed_experiments would scan again)
    damaged_of: dict[str, list[str]] = {}
    for name in damaged:
        damaged_of.setdefault(parse_summary_name(name)[0], []).append(name)  # type: ignore[index]
    read_progress = _progress_reader(study)
    tasks = latest_tasks(study)
    slurm_ids = [t["job_id"] for t in tasks.values() if t.get("executor") == "slurm" and t.get("job_id")]
    scheduler = slurm_states(slurm_ids) if query_slurm else {}
    now = time.time()
    rows = []
    for rec in records:
        exp_id = rec["exp_id"]
        prog = read_progress(exp_id)
        task = tasks.get(exp_id, {})
        sched = scheduler.get(task.get("job_id", "")) if task else None
        items = index.get(exp_id)
        done = bool(items) and max(items, key=attempt_rank)[2] in precedence.DONE
        lease = None if done else read_lease(study.run_dir(exp_id))  # a result outranks any lease
        ev = evidence(items, task, sched, prog, lease, now)
        state = precedence.decide(ev)
        row = {**rec, "state": state, "epoch": prog.get("epoch", 0), "best_val_jaccard": prog.get("best_val_jaccard"),
               "learned": prog.get("learned"), "learning": prog.get("learning"),
               "last_epoch_seconds": prog.get("last_epoch_seconds"), "restarts": _restarts(prog, lease, ev),
               "job_id": task.get("job_id", ""), "executor": task.get("executor", ""),
               "slurm_state": getattr(sched, "state", "") if sched else "",
               "slurm_reason": getattr(sched, "reason", "") if state == "queued" else "",
               "node": (getattr(sched, "node", "") if sched else "") or prog.get("host", ""),
               "elapsed_seconds": getattr(sched, "elapsed_seconds", None) if sched else None,
               "state_source": getattr(sched, "source", "") if sched else "disk",
               "lease": (lease or {}).get("job_id", "") if ev.lease_live else "",
               "updated_at": prog.get("updated_at"), "error": prog.get("error", ""),
               "started_at": prog.get("started_at"), "finished_at": prog.get("finished_at")}
        row["damaged_shards"] = _damaged(study, exp_id, items, damaged_of.get(exp_id, []))
        if row["damaged_shards"] and not row["error"]:
            row["error"] = (f"result shard {row['damaged_shards'][0]} is damaged (truncated or not Parquet); "
                            "remove it, and `hpc-unet submit` reruns the experiment if it has no other result")
        rows.append(row)
    return rows


def _damaged(study: Study, exp_id: str, items: list[tuple[int, str, str]] | None, summaries: list[str]) -> list[str]:
    """The experiment's damaged summary shards, and the history shard of the attempt that counts when that
    one is damaged or gone: the files collect reports unreadable (one footer check per experiment)."""
    out = list(summaries)
    if items:
        history = max(items, key=attempt_rank)[1] + HISTORY_SUFFIX
        if not is_whole_parquet(os.path.join(study.shards_dir, history)):
            out.append(history)
    return out


def summarize(rows: list[dict[str, Any]], study: Study) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    done = counts.get("completed", 0) + counts.get("skipped", 0)
    failed = sum(counts.get(s, 0) for s in ("failed", "oom", "diverged", "lost"))
    from hpc_unet.status.eta import estimate, local_plan

    running = counts.get("running", 0)
    planned, capacity = local_plan(study.submissions_dir) if counts.get("pending") or counts.get("queued") else ([], 0)
    eta = estimate(rows, time.time(), planned, capacity)  # also sets each row's "eta" (left, queue position)
    waiting_locally = sum(1 for r in rows if r["state"] == "pending" and (r.get("eta") or {}).get("local"))
    down = any(r.get("executor") == "slurm" and r.get("state_source") == "none" for r in rows)
    return {"study": str(study.root), "total": len(rows), "done": done, "failed": failed,
            "running": running, "queued": counts.get("queued", 0) + waiting_locally,
            "pending": counts.get("pending", 0) - waiting_locally,
            "unknown": counts.get("unknown", 0), "restarts": sum(int(r.get("restarts") or 0) for r in rows),
            "unreadable": sorted(n for r in rows for n in r.get("damaged_shards", ())),
            "counts": counts, "eta_seconds": eta.seconds, "parallel": eta.parallel, "eta_basis": eta.basis,
            "note": SCHEDULER_DOWN if down else "", "waiting": waiting(rows)}
