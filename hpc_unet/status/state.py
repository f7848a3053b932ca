"""Per-experiment state from what is on disk (manifest, shards, progress, submission records) and,
for Slurm jobs, the scheduler (sacct, falling back to squeue; see slurm_state.py).

States: completed, skipped, failed, oom, diverged (a shard says so); running, queued (a live job);
lost (its job ended without writing a result: killed, cancelled, node failure); pending (never submitted).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import pandas as pd

from hpc_unet.dispatch.records import latest_tasks
from hpc_unet.results.shards import _rank as _status_rank  # the same choice as completed_experiments
from hpc_unet.results.shards import shard_index
from hpc_unet.study import Study, read_json

STALE_SECONDS = 15 * 60
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING"}
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "RESIZING"}


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


def experiment_states(study: Study, frame: pd.DataFrame | None = None, query_slurm: bool = True) -> list[dict[str, Any]]:
    from hpc_unet.manifest import read_manifest

    frame = read_manifest(study) if frame is None else frame
    index = shard_index(study)  # one directory scan for both (completed_experiments would scan again)
    shard_status = {exp: max(items, key=_status_rank)[2] for exp, items in index.items()}
    shard_attempts = {exp: max(a for a, _, _ in items) for exp, items in index.items()}
    read_progress = _progress_reader(study)
    tasks = latest_tasks(study)
    slurm_ids = [t["job_id"] for t in tasks.values() if t.get("executor") == "slurm" and t.get("job_id")]
    scheduler = slurm_states(slurm_ids) if query_slurm else {}
    now = time.time()
    rows = []
    for rec in frame[["exp_id", "architecture", "learning_rate", "batch_size", "seed", "epochs"]].to_dict("records"):
        exp_id = rec["exp_id"]
        prog = read_progress(exp_id)
        task = tasks.get(exp_id, {})
        sched = scheduler.get(task.get("job_id", "")) if task else None
        status = shard_status.get(exp_id)
        attempt_done = shard_attempts.get(exp_id, 0) >= task.get("attempt", 0)
        state = status if status else "pending"
        if task and not attempt_done:
            state = _live_state(task, prog, sched, now) or "lost"
        row = {**rec, "state": state, "epoch": prog.get("epoch", 0), "best_val_jaccard": prog.get("best_val_jaccard"),
               "last_epoch_seconds": prog.get("last_epoch_seconds"), "restarts": prog.get("restarts", 0),
               "job_id": task.get("job_id", ""), "executor": task.get("executor", ""),
               "slurm_state": getattr(sched, "state", "") if sched else "",
               "node": (getattr(sched, "node", "") if sched else "") or prog.get("host", ""),
               "elapsed_seconds": getattr(sched, "elapsed_seconds", None) if sched else None,
               "state_source": getattr(sched, "source", "") if sched else "disk",
               "updated_at": prog.get("updated_at"), "error": prog.get("error", "")}
        rows.append(row)
    return rows


def _live_state(task: dict[str, Any], prog: dict[str, Any], sched: Any, now: float) -> str | None:
    """running / queued while the job is alive, None when it has ended (the caller decides lost)."""
    same_attempt = prog.get("attempt") == task.get("attempt")
    if task.get("executor") == "slurm":
        if sched is not None and sched.state:
            base = sched.state.split()[0]
            if base in SLURM_RUNNING:
                return "running"
            if base in SLURM_QUEUED:
                return "queued"
            return None
        # no answer from the scheduler: trust a fresh progress file
        if same_attempt and prog.get("state") in ("starting", "running") and now - prog.get("updated_at", 0) < STALE_SECONDS:
            return "running"
        return "queued" if not same_attempt else None
    if same_attempt and prog.get("state") in ("starting", "running") and _pid_alive(prog.get("pid"), prog.get("host")):
        return "running"
    if _pid_alive(task.get("job_id"), socket.gethostname()):
        return "queued" if not same_attempt else "running"
    return None


def summarize(rows: list[dict[str, Any]], study: Study) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    done = counts.get("completed", 0) + counts.get("skipped", 0)
    failed = sum(counts.get(s, 0) for s in ("failed", "oom", "diverged", "lost"))
    remaining = len(rows) - done - failed
    eta = None
    epoch_secs = [r["last_epoch_seconds"] for r in rows if r.get("last_epoch_seconds")]
    running = counts.get("running", 0)
    if remaining and epoch_secs and running:
        left_epochs = sum(max(0, r["epochs"] - (r["epoch"] or 0)) for r in rows
                          if r["state"] in ("running", "queued", "pending"))
        eta = left_epochs * (sum(epoch_secs) / len(epoch_secs)) / running
    return {"study": str(study.root), "total": len(rows), "done": done, "failed": failed,
            "running": running, "queued": counts.get("queued", 0), "pending": counts.get("pending", 0),
            "counts": counts, "eta_seconds": eta}
