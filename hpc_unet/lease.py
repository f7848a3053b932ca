"""Per-experiment lease: at most one live task trains an experiment, and every interruption is counted.

``runs/<exp_id>/lease.json`` names the holder (job id, host, pid and its start time, attempt, a random
token) and a heartbeat time that a background thread refreshes every HEARTBEAT_S while the holder trains.
Takers serialise on an fcntl lock of ``runs/<exp_id>/.lease.lock`` (read, check, write as one step; POSIX
locks work across nodes on NFSv4, Lustre and GPFS), and the file itself is replaced atomically, so readers
without the lock (status, submit, collect) see the old holder or the new one.

A lease is *live* while its heartbeat is younger than ``stale_seconds()`` (STALE_S, 180 s, or the
environment variable HPC_UNET_LEASE_STALE_S) and its holder is not provably gone: a holder on this host
whose pid has died (or was reused) is gone at once, and a taker with the holder's own Slurm job id takes
over at once (Slurm runs one instance of a job id at a time, so that holder is the requeued task's
previous run). Wall clocks of the nodes are compared, so they must agree to well under STALE_S (NTP).

A holder that ends normally (a result or failure shard written, or nothing to do) removes the file. One
stopped by a signal (preemption, requeue, kill) leaves it behind: the next taker finds it and counts one
interruption in ``runs/<exp_id>/restarts.json``, across attempts and arrays. A second task that finds a
live lease raises LeaseHeld: it trains nothing and writes no shard (a shard of an attempt that never
trained could be mistaken for a result), so the experiment's state stays that of the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError
from hpc_unet.study import Study, atomic_write_json

LEASE_FILE = "lease.json"
LOCK_FILE = ".lease.lock"
RESTARTS_FILE = "restarts.json"
STALE_S = 180.0
HEARTBEAT_S = 20.0
ENV_STALE = "HPC_UNET_LEASE_STALE_S"


class LeaseHeld(UserError):
    """Another live task holds the experiment's lease; this one must not train it."""

    exit_code = 3


def stale_seconds() -> float:
    """Heartbeat age after which a lease no longer counts (HPC_UNET_LEASE_STALE_S overrides STALE_S)."""
    try:
        value = float(os.environ.get(ENV_STALE, "") or STALE_S)
    except ValueError:
        return STALE_S
    return value if value > 0 else STALE_S


def heartbeat_seconds() -> float:
    return min(HEARTBEAT_S, stale_seconds() / 4)


def _pid_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot ('' when unknown): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_gone(pid: Any, start: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False
    now_start = _pid_start(int(pid))
    return bool(start and now_start and now_start != start)


def _job_id() -> str:
    from hpc_unet import runinfo

    return runinfo.job_id() if os.environ.get("SLURM_JOB_ID") else ""


def read_lease(run_dir: Path) -> dict[str, Any] | None:
    """The lease file's content; None when absent or unreadable (a reader never sees a part: atomic writes)."""
    try:
        with open(run_dir / LEASE_FILE, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class LeaseView:
    """What a reader concludes about a lease file."""

    live: bool
    holder: dict[str, Any] | None
    why: str  # "held", "none", "released", "interrupted", "stale", "holder gone", "own job"


def judge(holder: dict[str, Any] | None, now: float | None = None, host: str | None = None,
          job_id: str = "") -> LeaseView:
    """Is ``holder`` (a lease file's content) live for a reader on ``host`` (running as Slurm ``job_id``)?"""
    if holder is None:
        return LeaseView(False, None, "none")
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    if holder.get("state") != "held":
        return LeaseView(False, holder, str(holder.get("state") or "released"))
    if job_id and holder.get("job_id") == job_id:
        return LeaseView(False, holder, "own job")
    if holder.get("host") == host and _pid_gone(holder.get("pid"), holder.get("pid_start")):
        return LeaseView(False, holder, "holder gone")
    try:
        age = now - float(holder.get("heartbeat_at", 0))
    except (TypeError, ValueError):
        return LeaseView(False, holder, "stale")
    if age > stale_seconds():
        return LeaseView(False, holder, "stale")
    return LeaseView(True, holder, "held")


def describe(holder: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = now - float(holder.get("heartbeat_at", now))
    job = holder.get("job_id") or "no job id"
    return f"job {job} on {holder.get('host')} (pid {holder.get('pid')}, heartbeat {age:.0f} s ago)"


def read_restarts(run_dir: Path) -> int:
    """Interruptions of this experiment so far, over all attempts and arrays."""
    try:
        with open(run_dir / RESTARTS_FILE, "rb") as fh:
            return int(json.loads(fh.read()).get("restarts", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Lease:
    """A held lease; ``restarts`` is the experiment's interruption count including the one just found."""

    def __init__(self, run_dir: Path, data: dict[str, Any], restarts: int) -> None:
        self.run_dir = run_dir
        self.data = data
        self.restarts = restarts
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _refresh(self) -> bool:
        with _locked(self.run_dir):
            current = read_lease(self.run_dir)
            if not current or current.get("token") != self.data["token"]:
                return False
            self.data["heartbeat_at"] = time.time()
            atomic_write_json(self.run_dir / LEASE_FILE, self.data)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(heartbeat_seconds()):
            try:
                if not self._refresh():
                    self.lost = True
                    print(f"hpc-unet: lease of {self.run_dir.name} was taken over by another task "
                          "(this one looked stale); the heartbeat stops", file=sys.stderr, flush=True)
                    return
            except OSError:
                continue  # a transient filesystem error: try again at the next beat

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.run_dir.name}", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def end(self, interrupted: bool = False) -> None:
        """Release (remove the file), or with ``interrupted`` mark it so: not live, counted by the next taker."""
        self._stop_heartbeat()
        with _locked(self.run_dir):
            current = read_lease(self.run_dir)
            if not current or current.get("token") != self.data["token"]:
                return
            if interrupted:
                atomic_write_json(self.run_dir / LEASE_FILE, {**self.data, "state": "interrupted",
                                                              "ended_at": time.time()})
            else:
                (self.run_dir / LEASE_FILE).unlink(missing_ok=True)


def take(study: Study, exp_id: str, attempt: int = 0) -> Lease:
    """Take ``exp_id``'s lease or raise LeaseHeld naming the live holder.

    A leftover lease (its holder was interrupted) is taken over and counted as one restart.
    """
    run_dir = study.run_dir(exp_id)
    job_id = _job_id()
    with _locked(run_dir):
        holder = read_lease(run_dir)
        view = judge(holder, job_id=job_id)
        if view.live:
            assert holder is not None
            raise LeaseHeld(f"{exp_id} is being trained by {describe(holder)}; this task exits without "
                            f"training it and writes no shard (the lease is stale after {stale_seconds():.0f} s "
                            "without a heartbeat)")
        restarts = read_restarts(run_dir)
        if holder is not None:
            restarts += 1
            atomic_write_json(run_dir / RESTARTS_FILE, {
                "restarts": restarts, "last_interrupted": {k: holder.get(k) for k in (
                    "job_id", "host", "pid", "attempt", "taken_at", "heartbeat_at", "state")} | {"found": view.why}})
        now = time.time()
        data = {"exp_id": exp_id, "state": "held", "job_id": job_id or os.environ.get("SUBMITIT_JOB_ID", ""),
                "host": socket.gethostname(), "pid": os.getpid(), "pid_start": _pid_start(os.getpid()),
                "attempt": attempt, "token": secrets.token_hex(8), "taken_at": now, "heartbeat_at": now}
        atomic_write_json(run_dir / LEASE_FILE, data)
    from hpc_unet.tempfiles import sweep_run_dir, sweep_shard_temps

    sweep_run_dir(run_dir)  # the only live holder now: temporaries in its folders are dead writers'
    sweep_shard_temps(study, exp_id)
    return Lease(run_dir, data, restarts)


_CURRENT: dict[str, Lease] = {}


def current_restarts(study: Study, exp_id: str) -> int:
    """The restart count of the lease this process holds for ``exp_id`` (else the recorded count)."""
    lease = _CURRENT.get(str(study.run_dir(exp_id)))
    return lease.restarts if lease is not None else read_restarts(study.run_dir(exp_id))


def leased(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``run_experiment(row, study, ...)``: take the lease first, hold it (with heartbeat) while it
    runs, release it when it returns or records a failure, and mark it interrupted when the process is
    being stopped (SystemExit from submitit's preemption handler, KeyboardInterrupt)."""

    @functools.wraps(fn)
    def wrapper(row: dict[str, Any], study: Study, *args: Any, **kwargs: Any) -> Any:
        lease = take(study, row["exp_id"], int(kwargs.get("attempt", 0) or 0))
        key = str(lease.run_dir)
        _CURRENT[key] = lease
        lease.start_heartbeat()
        try:
            result = fn(row, study, *args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            lease.end(interrupted=True)
            raise
        except BaseException:
            lease.end()
            raise
        finally:
            _CURRENT.pop(key, None)
        lease.end()
        return result

    return wrapper
