"""What Slurm says about array tasks: sacct when accounting answers, squeue when it does not.

submitit (1.5) reads job state only from sacct and has no fallback, so a cluster whose slurmdbd is
down or disabled would leave status blind. Here every query has a timeout; sacct is asked first (it keeps
finished jobs); the ids it does not know or reports as live are asked of squeue, because sacct lags the
controller; a job that squeue answered for and no longer lists is reported as FINISHED (it left the queue;
the caller decides completed/lost from the shards, leases and heartbeats on disk).

Nothing is read from a field Slurm may cut: squeue's ``%i`` (JobID) is cut at 30 characters even with an
explicit width (``%.200i`` prints ``90_[0-1,10,14-15,18,26-27,34-35%`` for a pending range, checked on
slurm-wlm 22.05), so squeue is asked with ``-r`` (one line per array task, never a range) for the
numeric fields ``%F`` (array job id) and ``%K`` (task id). sacct is read with ``--parsable2`` (``-P``),
which never cuts; its pending ranges (``90_[0-1,10,14-15%2]``) are expanded. Anything that cannot be
parsed makes the ids it might concern *unknown* (state ""), never FINISHED.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass

SACCT_FORMAT = "JobID,State,NodeList,Elapsed,Start,End"
TIMEOUT_S = 20.0
# Job ids as hpc-unet records them: "123" (a plain job) or "123_4" (task 4 of array 123).
TASK_ID_RE = re.compile(r"^(\d+)(?:_(\d+))?$")
# What sacct/squeue print: "123", "123_4", or a pending range "123_[4-9,12%2]".
ROW_ID_RE = re.compile(r"^(\d+)(?:_(\d+|\[[^\]]*\]))?$")
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
               "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT", "STOPPED"}
FINISHED = "FINISHED"  # squeue answered and no longer lists the job
# States in which the task has ended for good (no requeue pending).
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "REVOKED"}
# array job id, task id (N/A for a plain job), state, nodes (a pending job's "(reason)" instead), time used
SQUEUE_FORMAT = "%F|%K|%T|%R|%M"


@dataclass(frozen=True)
class TaskState:
    """One task's scheduler state. ``state`` is Slurm's base state name (``CANCELLED by 0`` ->
    ``CANCELLED``; ``raw`` keeps the original), FINISHED when it left squeue, "" when nothing answered."""

    state: str
    node: str = ""
    elapsed_seconds: float | None = None
    source: str = "none"  # "sacct", "squeue" or "none"
    raw: str = ""
    reason: str = ""  # why squeue says a job waits (e.g. "JobArrayTaskLimit"); "" when it does not say


def parse_elapsed(text: str) -> float | None:
    """Slurm durations: "MM:SS", "HH:MM:SS", "D-HH:MM:SS" (sacct and squeue %M) -> seconds."""
    text = text.strip()
    m = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$", text)
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


def base_state(raw: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``COMPLETED+`` -> ``COMPLETED``."""
    return raw.strip().split(" ")[0].rstrip("+").upper() if raw.strip() else ""


def expand_row_id(row_id: str) -> list[str]:
    """"123_[4-6,9%2]" -> ["123_4", "123_5", "123_6", "123_9"]; "123_4" and "123" unchanged."""
    m = ROW_ID_RE.match(row_id.strip())
    if not m:
        return []
    job, suffix = m.group(1), m.group(2)
    if suffix is None or not suffix.startswith("["):
        return [row_id.strip()]
    body = suffix[1:-1].split("%")[0]
    out: list[str] = []
    for part in body.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            continue
        out.extend(f"{job}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    """Run ``cmd``; None on timeout or failure to start. The command runs in its own session and the
    whole group is killed on timeout, so a child holding the pipes open cannot make status hang."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    except OSError:
        return None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        return None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _parse_rows(text: str, wanted: set[str], source: str, node_col: int, elapsed_col: int) -> dict[str, TaskState]:
    """Parse ``|``-separated rows whose first two columns are JobID and State (a row whose JobID does
    not parse, e.g. a range cut short, is skipped: its ids are then asked of squeue or stay unknown)."""
    found: dict[str, TaskState] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) <= max(node_col, elapsed_col):
            continue
        raw = cols[1].strip()
        node = cols[node_col].strip()
        node = "" if node in ("None assigned", "(null)") or node.startswith("(") else node
        state = TaskState(state=base_state(raw), node=node, elapsed_seconds=parse_elapsed(cols[elapsed_col]),
                          source=source, raw=raw)
        ids = expand_row_id(cols[0])
        for task_id in ids:
            # A plain job asked for as "123" may come back as "123"; exact matches win over ranges.
            if task_id in wanted and (task_id not in found or len(ids) == 1):
                found[task_id] = state
    return found


def query_sacct(job_ids: list[str], timeout: float = TIMEOUT_S) -> dict[str, TaskState] | None:
    """sacct's view of ``job_ids``; None when sacct fails (no slurmdbd, accounting disabled, timeout)."""
    bases = sorted({TASK_ID_RE.match(j).group(1) for j in job_ids if TASK_ID_RE.match(j)}, key=int)
    if not bases or shutil.which("sacct") is None:
        return None
    proc = _run(["sacct", "-j", ",".join(bases), f"--format={SACCT_FORMAT}", "--parsable2", "-n", "-X"], timeout)
    if proc is None or proc.returncode != 0:
        return None
    return _parse_rows(proc.stdout, set(job_ids), "sacct", node_col=2, elapsed_col=3)


def parse_squeue(text: str, wanted: set[str]) -> tuple[dict[str, TaskState], bool]:
    """Rows of ``squeue -r -o SQUEUE_FORMAT`` -> (states of the wanted ids, whether every line parsed)."""
    found: dict[str, TaskState] = {}
    clean = True
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) != 5 or not cols[0].strip().isdigit():
            clean = False
            continue
        job, task = cols[0].strip(), cols[1].strip()
        if task in ("N/A", ""):
            ids = [job]
        elif task.isdigit():
            ids = [f"{job}_{task}"]
        else:
            ids = expand_row_id(f"{job}_{task}" if task.startswith("[") else f"{job}_[{task}]")
            if not ids:
                clean = False
                continue
        raw = cols[2].strip()
        if not raw or not raw.replace("_", "").isalpha():
            clean = False
            continue
        node = cols[3].strip()
        reason = node[1:-1].strip() if node.startswith("(") and node.endswith(")") and node != "(null)" else ""
        node = "" if node in ("None assigned", "(null)") or node.startswith("(") else node
        state = TaskState(state=base_state(raw), node=node, elapsed_seconds=parse_elapsed(cols[4]),
                          source="squeue", raw=raw, reason=reason)
        for task_id in ids:
            if task_id in wanted:
                found[task_id] = state
    return found, clean


def query_squeue(job_ids: list[str], timeout: float = TIMEOUT_S) -> dict[str, TaskState] | None:
    """squeue's view of ``job_ids`` (all states, so recently ended jobs still show); a job it does not
    list has left the queue (FINISHED), unless a line of its answer could not be parsed (then the
    unlisted ids stay unknown). None when the controller does not answer."""
    bases = sorted({TASK_ID_RE.match(j).group(1) for j in job_ids if TASK_ID_RE.match(j)}, key=int)
    if not bases or shutil.which("squeue") is None:
        return None
    proc = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-o", SQUEUE_FORMAT], timeout)
    if proc is None:
        return None
    if proc.returncode != 0:
        # Every id unknown to the controller (purged after MinJobAge): all of them left the queue.
        if "Invalid job id" not in proc.stderr:
            return None
        proc.stdout = ""
    found, clean = parse_squeue(proc.stdout, set(job_ids))
    for task_id in job_ids:
        if task_id not in found and TASK_ID_RE.match(task_id):
            found[task_id] = TaskState(state=FINISHED if clean else "", source="squeue" if clean else "none")
    return found


def query_states(job_ids: list[str], timeout: float = TIMEOUT_S) -> dict[str, TaskState]:
    """Scheduler state of each task id ("123_4" or "123"): sacct first, squeue for the ids sacct does
    not know or reports as live (pending, running, requeued...).

    Without Slurm on PATH: an empty dict. When neither answers, each id maps to a TaskState with an
    empty state and source "none", so the caller falls back to the progress files on disk.
    """
    ids = [str(j) for j in dict.fromkeys(job_ids) if j]
    if not ids or (shutil.which("sacct") is None and shutil.which("squeue") is None):
        return {}
    states = query_sacct(ids, timeout) or {}
    # sacct lags the controller (records reach slurmdbd asynchronously, and after a slurmdbd outage
    # it shows RUNNING until the queued records arrive): the controller is the truth for live jobs.
    ask = [j for j in ids if j not in states or not states[j].state or states[j].state in LIVE_STATES]
    if ask:
        states.update(query_squeue(ask, timeout) or {})
    for task_id in ids:
        states.setdefault(task_id, TaskState(state="", source="none"))
    return states
