"""End to end on a real single-node Slurm cluster (slurm/start.sh): arrays with GPU GRES, status with
and without slurmdbd, preemption (USR2 -> checkpoint -> requeue) and ``scontrol requeue``.

Needs root and the Debian packages (slurm/install.sh installs them). Skipped with the reason when they
are missing; with CI=true the same conditions fail instead, so CI cannot silently skip Slurm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit

from hpc_unet.dispatch import slurm
from hpc_unet.status.slurm_state import TaskState, query_states

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "slurm"
# 30 min: above submitit's 10 min threshold, so a USR2 counts as a preemption, not as a time limit.
OPTS = {"partition": "a40", "gpu_type": "a40", "cpus_per_task": 1, "mem": "1G", "time": "00:30:00"}


class Probe(submitit.helpers.Checkpointable):
    """Records its environment per run; on the first run it sleeps (to be preempted or requeued)."""

    def __init__(self, out: str, sleep: float = 0.0) -> None:
        self.out = out
        self.sleep = sleep

    def __call__(self) -> dict[str, Any]:
        env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "SLURM_RESTART_COUNT",
                                              "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "SLURM_JOB_PARTITION")}
        with open(self.out, "a") as fh:
            fh.write(json.dumps({"event": "run", **env}) + "\n")
        if not env["SLURM_RESTART_COUNT"]:
            deadline = time.time() + self.sleep
            while time.time() < deadline:
                time.sleep(0.2)
        return env

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        with open(self.out, "a") as fh:
            fh.write(json.dumps({"event": "checkpoint"}) + "\n")
        return super().checkpoint(*args, **kwargs)


# The job unpickles the task in a fresh interpreter where this test module is not importable.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Slurm cluster required in CI: {reason}")
    pytest.skip(reason)


def _sh(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, Any]]:
    """The local cluster: installed (apt) and started if needed; stopped afterwards only if this
    session started it (HPC_UNET_SLURM_KEEP=1 keeps it)."""
    if os.geteuid() != 0:
        _unavailable("the local Slurm cluster needs root (daemons, /etc/slurm, mknod)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        _unavailable("Slurm is not installed and apt-get is missing (slurm/install.sh needs Debian)")
    install = _sh("bash", str(SLURM_DIR / "install.sh"), timeout=900)
    if install.returncode != 0:
        _unavailable(f"slurm/install.sh failed: {install.stderr.strip()[-500:]}")
    was_up = _sh("sinfo", "-h").returncode == 0 and _sh("sacct", "-n", "-X", "-S", "now").returncode == 0
    t0 = time.monotonic()
    start = _sh("bash", str(SLURM_DIR / "start.sh"))
    if start.returncode != 0:
        _unavailable(f"slurm/start.sh failed: {(start.stderr or start.stdout).strip()[-800:]}")
    info = {"start_seconds": time.monotonic() - t0, "start_line": start.stdout.strip()}
    print(f"\n{info['start_line']} (fixture: {info['start_seconds']:.1f} s)")
    yield info
    if not was_up and not os.environ.get("HPC_UNET_SLURM_KEEP"):
        _sh("bash", str(SLURM_DIR / "stop.sh"))


def wait_states(job_ids: list[str], done: Callable[[dict[str, TaskState]], bool], timeout: float = 90,
                what: str = "") -> dict[str, TaskState]:
    deadline = time.monotonic() + timeout
    states: dict[str, TaskState] = {}
    while time.monotonic() < deadline:
        states = query_states(job_ids)
        if done(states):
            return states
        time.sleep(0.5)
    queue = _sh("squeue", "-t", "all", "-o", "%i %T %P %r %M").stdout
    raise AssertionError(f"timed out waiting for {what or job_ids}: {states}\n{queue}")


def wait_file(path: Path, predicate: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        if path.exists():
            events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if predicate(events):
                return events
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting on {path}: {events}")


def all_in(*states: str) -> Callable[[dict[str, TaskState]], bool]:
    return lambda s: bool(s) and all(v.state in states for v in s.values())


def log_text(folder: Path, job_id: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob(f"{job_id}_*log.*")))


def test_array_with_gres_completes(slurm_cluster: dict, tmp_path: Path) -> None:
    t0 = time.monotonic()
    executor = slurm.make_executor(tmp_path / "jobs", OPTS)
    outs = [tmp_path / f"probe{i}.jsonl" for i in range(4)]
    ids = slurm.submit_array(executor, [Probe(str(o)) for o in outs])
    assert len(ids) == 4 and all(j.endswith(f"_{i}") for i, j in enumerate(ids))
    # sacct learns of jobs a moment after squeue (slurmctld -> slurmdbd is asynchronous)
    states = wait_states(ids, lambda s: all_in("COMPLETED")(s) and {v.source for v in s.values()} == {"sacct"},
                         what="array to complete, seen by sacct")
    assert all(s.node and s.elapsed_seconds is not None for s in states.values())
    runs = [json.loads(o.read_text().splitlines()[0]) for o in outs]
    assert all(r["CUDA_VISIBLE_DEVICES"] in {"0", "1", "2", "3"} for r in runs), runs
    assert sorted(r["SLURM_ARRAY_TASK_ID"] for r in runs) == ["0", "1", "2", "3"]
    assert {r["SLURM_JOB_PARTITION"] for r in runs} == {"a40"}
    print(f"array of 4: {time.monotonic() - t0:.1f} s")


def test_status_falls_back_to_squeue_without_slurmdbd(slurm_cluster: dict, tmp_path: Path) -> None:
    t0 = time.monotonic()
    executor = slurm.make_executor(tmp_path / "jobs", OPTS)
    out = tmp_path / "probe.jsonl"
    done_id, running_id, cancel_id = slurm.submit_array(
        executor, [Probe(str(tmp_path / "quick.jsonl")), Probe(str(out), sleep=600),
                   Probe(str(tmp_path / "c.jsonl"), sleep=600)])
    wait_states([done_id, running_id, cancel_id],
                lambda s: s[done_id].state == "COMPLETED" and s[running_id].state == "RUNNING"
                and s[cancel_id].state == "RUNNING", what="one done, two running")
    assert _sh("scancel", cancel_id).returncode == 0
    cancelled = wait_states([cancel_id], all_in("CANCELLED"), what="cancelled")[cancel_id]
    assert cancelled.source == "sacct" and cancelled.raw.startswith("CANCELLED by")
    stop = _sh("bash", str(SLURM_DIR / "stop.sh"), "slurmdbd")
    assert stop.returncode == 0, stop.stderr
    try:
        assert _sh("sacct", "-n", "-X", "-j", done_id.split("_")[0]).returncode != 0
        states = query_states([done_id, running_id, cancel_id, "999999_0"])
        assert states[running_id] == TaskState("RUNNING", node=states[running_id].node,
                                                elapsed_seconds=states[running_id].elapsed_seconds,
                                                source="squeue", raw="RUNNING")
        assert states[done_id].state == "COMPLETED" and states[done_id].source == "squeue"
        # squeue shows COMPLETING until the steps are gone (submitit ignores SIGTERM; KillWait)
        assert states[cancel_id].state in ("CANCELLED", "COMPLETING") and states[cancel_id].source == "squeue"
        assert states["999999_0"].state == "FINISHED"  # long gone: left the queue
        assert _sh("scancel", running_id).returncode == 0
        wait_states([running_id], all_in("CANCELLED", "COMPLETING"), timeout=30, what="cancel without sacct")
    finally:
        start = _sh("bash", str(SLURM_DIR / "start.sh"))
        assert start.returncode == 0, start.stderr
    # sacct answers at once but shows RUNNING until slurmctld resends the records it queued while
    # slurmdbd was down; query_states asks squeue about live-looking jobs, so it is right all along
    states = query_states([running_id])
    assert states[running_id].state in ("CANCELLED", "COMPLETING"), states
    assert _sh("sacct", "-n", "-X", "-j", running_id.split("_")[0]).returncode == 0
    t1 = time.monotonic()
    wait_states([running_id], lambda s: s[running_id].source == "sacct", timeout=120,
                what="sacct to catch up")
    print(f"sacct caught up {time.monotonic() - t1:.1f} s after slurmdbd restarted")
    print(f"squeue fallback: {time.monotonic() - t0:.1f} s")


def test_preemption_sends_usr2_checkpoints_and_requeues(slurm_cluster: dict, tmp_path: Path) -> None:
    t0 = time.monotonic()
    folder = tmp_path / "jobs"
    executor = slurm.make_executor(folder, OPTS)
    out = tmp_path / "probe.jsonl"
    (job_id,) = slurm.submit_array(executor, [Probe(str(out), sleep=600)])
    wait_file(out, lambda ev: len(ev) >= 1)
    urgent = _sh("sbatch", "--parsable", "-p", "urgent", "--gres=gpu:a40:4", "-c", "1", "--mem=100M",
                 "-o", str(tmp_path / "urgent.out"), "--wrap", "sleep 1")
    assert urgent.returncode == 0, urgent.stderr
    events = wait_file(out, lambda ev: sum(e["event"] == "run" for e in ev) >= 2, timeout=90)
    assert [e["event"] for e in events][:3] == ["run", "checkpoint", "run"]
    assert int(events[2]["SLURM_RESTART_COUNT"]) >= 1
    wait_states([job_id], all_in("COMPLETED"), what="requeued job to complete")
    log = log_text(folder, job_id)
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log
    assert "Requeued job" in log
    urgent_state = wait_states([urgent.stdout.strip()], all_in("COMPLETED"), what="urgent job")
    assert urgent_state
    print(f"preemption round trip: {time.monotonic() - t0:.1f} s")


def test_scontrol_requeue_reruns_the_task(slurm_cluster: dict, tmp_path: Path) -> None:
    t0 = time.monotonic()
    folder = tmp_path / "jobs"
    executor = slurm.make_executor(folder, OPTS)
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    ids = slurm.submit_array(executor, [Probe(str(outs[0])), Probe(str(outs[1]), sleep=600)])
    wait_file(outs[1], lambda ev: len(ev) >= 1)
    wait_states(ids[:1], all_in("COMPLETED"), what="first task")
    requeue = _sh("scontrol", "requeue", ids[1])
    assert requeue.returncode == 0, requeue.stderr
    events = wait_file(outs[1], lambda ev: sum(e["event"] == "run" for e in ev) >= 2, timeout=90)
    # Slurm's SIGTERM is not USR2: submitit bypasses it, so no checkpoint() before the rerun
    assert [e["event"] for e in events][:2] == ["run", "run"]
    assert int(events[1]["SLURM_RESTART_COUNT"]) >= 1
    wait_states([ids[1]], all_in("COMPLETED"), what="requeued task")
    assert len(outs[0].read_text().splitlines()) == 1  # the other task did not rerun
    print(f"scontrol requeue round trip: {time.monotonic() - t0:.1f} s")


def test_cluster_settings_seen_by_hpc_unet(slurm_cluster: dict) -> None:
    assert slurm.cluster_max_array_size() == int(os.environ.get("HPC_UNET_SLURM_MAX_ARRAY_SIZE", "1001"))
    again = _sh("bash", str(SLURM_DIR / "start.sh"))
    assert again.returncode == 0 and "already running" in again.stdout
