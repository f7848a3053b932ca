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


def stop_controller() -> None:
    """Stop slurmctld once every step that is ending has told it so.

    A killed step retries its completion message every 60 s while slurmctld is down, and slurmd's
    UnkillableStepTimeout (60 s) runs out first: the node is drained "Kill task failed" and nothing
    runs again. Measured here: a node failure, then slurmctld stopped 7 s later while the killed
    steps were still exiting (KillWait), left the node drained for the rest of the test. A real
    outage can do the same on a real site; the tests stop the controller to exercise hpc-unet, not
    that, so they wait until every slurmstepd belongs to a RUNNING job (bounded: 90 s)."""
    deadline = time.monotonic() + 90
    ending: list[str] = []
    while time.monotonic() < deadline:
        running = set(_sh("squeue", "-h", "-t", "RUNNING", "-o", "%A").stdout.split())
        steps = _sh("pgrep", "-a", "slurmstepd").stdout.splitlines()
        ending = [s for s in steps if s.partition("[")[2].partition(".")[0] not in running]
        if not ending:
            break
        time.sleep(0.25)
    assert not ending, f"steps still ending after 90 s: {ending}"
    assert _sh("bash", str(SLURM_DIR / "stop.sh"), "slurmctld").returncode == 0


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
    # slurmdbd was down (~13 s here); query_states asks squeue about live-looking jobs, so it is right
    states = query_states([running_id])
    assert states[running_id].state in ("CANCELLED", "COMPLETING"), states
    assert _sh("sacct", "-n", "-X", "-j", running_id.split("_")[0]).returncode == 0
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
    (urgent_task,) = urgent_state.values()
    assert urgent_task.node and (urgent_task.elapsed_seconds or 0) >= 1  # it ran its `sleep 1` on the node
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


# --- the real pipeline: hpc-unet manifest / submit / status / collect on Slurm -----------------------

SMOKE = REPO / "manifests" / "smoke.toml"
# The smoke grid on the smallest settings that still train: 36 one-epoch experiments (~6 CPU-s each).
TINY = ["train.epochs=1", "train.run_eagerly=true", "train.base_filters=4", "data.synth_slices=2",
        "data.synth_height=64", "data.synth_width=64"]
# One experiment with epochs long enough (~1 s each after tracing) to be interrupted between them, and
# enough of them that the task is still training after `scontrol requeue` (it trains on through
# KillWait=5 s, because submitit ignores the SIGTERM, until the SIGKILL).
LONG_EPOCHS = 16
ONE_LONG = ['grid.architecture=["UNet"]', "grid.learning_rate=[1e-3]", "grid.batch_size=[8]",
            f"train.epochs={LONG_EPOCHS}",
            "train.early_stopping=false", "data.synth_slices=24", "data.synth_height=256", "data.synth_width=256",
            "train.base_filters=8"]
HISTORY_VALUES = ["epoch", "loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou", "dice",
                  "val_dice", "lr"]


def hpc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a fresh process (nothing carries over but the study directory)."""
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    return proc


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def make_study(path: Path, sets: list[str]) -> Path:
    ok(hpc("manifest", "--grid", SMOKE, "--study", path, "--quiet", *[a for s in sets for a in ("--set", s)]))
    return path


def submit(study: Path, *flags: str) -> list[dict[str, Any]]:
    """`hpc-unet submit` on Slurm; the task entries it recorded."""
    out = ok(hpc("submit", "--study", study, "--partition", "a40", *flags))
    assert "submitted" in out, f"hpc-unet submit submitted nothing: {out}"
    return submitted_jobs(study)


def status(study: Path) -> dict[str, dict[str, Any]]:
    return {r["exp_id"]: r for r in json.loads(ok(hpc("status", "--study", study, "--json")))["experiments"]}


def submitted_jobs(study: Path) -> list[dict[str, Any]]:
    """Task entries of the newest submission record."""
    records = sorted((study / "submissions").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text())["tasks"]


def wait_left_queue(job_ids: list[str], timeout: float) -> None:
    wait_states(job_ids, lambda s: all(v.state not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED",
                                                       "CONFIGURING", "") for v in s.values()),
                timeout=timeout, what=f"{len(job_ids)} tasks to finish")


def shard_history(study: Path, exp_id: str) -> Any:
    import pandas as pd

    (path,) = (study / "shards").glob(f"{exp_id}.*.history.parquet")
    return pd.read_parquet(path)[HISTORY_VALUES].reset_index(drop=True)


def read_progress(study: Path, exp_id: str) -> dict[str, Any]:
    try:
        return json.loads((study / "runs" / exp_id / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_smoke_study_array_cancel_resubmit_and_status_without_sacct(slurm_cluster: dict, tmp_path: Path) -> None:
    """36 tasks as one array; one cancelled -> shown as lost -> resubmitting reruns only it;
    status stays right while slurmdbd is down; collect gives 36 rows."""
    t0 = time.monotonic()
    study = make_study(tmp_path / "smoke", TINY)
    dry = ok(hpc("submit", "--study", study, "--partition", "a40", "--dry-run"))
    assert "#SBATCH --array=0-35%36" in dry and "#SBATCH --gres=gpu:a40:1" in dry
    tasks = submit(study)
    assert len(tasks) == 36 and len({t["job_id"].split("_")[0] for t in tasks}) == 1
    victim = tasks[-1]  # index 35: still pending while the first four run
    assert _sh("scancel", victim["job_id"]).returncode == 0
    ids = [t["job_id"] for t in tasks]
    wait_states(ids, lambda s: sum(v.state == "COMPLETED" for v in s.values()) >= 4, timeout=180,
                what="first tasks to complete")

    assert _sh("bash", str(SLURM_DIR / "stop.sh"), "slurmdbd").returncode == 0
    try:
        rows = status(study)
        assert rows[victim["exp_id"]]["state"] == "lost"
        # a task cancelled while pending inside the array's range gets no record of its own: neither
        # squeue nor sacct lists it afterwards, so it shows as FINISHED (left the queue), i.e. lost
        assert rows[victim["exp_id"]]["slurm_state"] in ("CANCELLED", "FINISHED")
        live = [r for r in rows.values() if r["state"] in ("running", "queued")]
        assert live and all(r["state_source"] == "squeue" for r in live)
        assert {r["state"] for r in rows.values()} <= {"completed", "running", "queued", "lost"}
        assert sum(r["state"] == "completed" for r in rows.values()) >= 4
    finally:
        assert _sh("bash", str(SLURM_DIR / "start.sh")).returncode == 0

    wait_left_queue(ids, timeout=600)
    rows = status(study)
    assert sum(r["state"] == "completed" for r in rows.values()) == 35
    assert rows[victim["exp_id"]]["state"] == "lost"
    t_array = time.monotonic() - t0

    again = submit(study)
    assert [t["exp_id"] for t in again] == [victim["exp_id"]]
    wait_left_queue([again[0]["job_id"]], timeout=120)
    assert status(study)[victim["exp_id"]]["state"] == "completed"
    report = ok(hpc("collect", "--study", study))
    assert "36 completed of 36" in report
    import pandas as pd

    assert len(pd.read_parquet(study / "results" / "results.parquet")) == 36
    print(f"smoke array of 36: {t_array:.1f} s; with resubmit and collect: {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
def test_preempted_and_requeued_training_resumes_exactly(slurm_cluster: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Preemption (USR2 -> checkpoint -> requeue) and then `scontrol requeue` (SIGTERM, SIGKILL) of a
    training task: each rerun resumes at its checkpointed epoch and the history equals an uninterrupted run."""
    t0 = time.monotonic()
    monkeypatch.setenv("HPC_UNET_THREADS", "1")  # same numerics for the Slurm task and the reference
    study = make_study(tmp_path / "interrupted", ONE_LONG)
    reference = make_study(tmp_path / "reference", ONE_LONG)
    (exp_id,) = status(study)
    ref = subprocess.Popen([sys.executable, "-m", "hpc_unet.cli", "train", "--study", str(reference),
                            "--experiment", exp_id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        (task,) = submit(study)
        job_id = task["job_id"]
        seen: list[tuple[int, Any, Any]] = []

        def progress_at(pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                p = read_progress(study, exp_id)
                if p:
                    now = (p.get("restarts", 0), p.get("state"), p.get("epoch"))
                    if not seen or seen[-1] != now:
                        seen.append(now)  # transitions only
                    if pred(p):
                        return p
                time.sleep(0.1)
            raise AssertionError(f"timed out waiting for {what} after {time.monotonic() - t0:.0f} s; "
                                 f"progress (restarts, state, epoch) seen: {seen}")

        first = progress_at(lambda p: p.get("restarts", 0) == 0 and (p.get("epoch") or 0) >= 1, 120,
                            "epoch 1 checkpointed")
        urgent = _sh("sbatch", "--parsable", "-p", "urgent", "--gres=gpu:a40:4", "-c", "1", "--mem=100M",
                     "-o", str(tmp_path / "urgent.out"), "--wrap", "sleep 1")
        assert urgent.returncode == 0, urgent.stderr

        def advanced_after_resume(p: dict[str, Any]) -> bool:
            resumed = [e for r, st, e in seen if r == 1 and st == "running" and e is not None]
            return p.get("restarts", 0) == 1 and bool(resumed) and (p.get("epoch") or 0) > min(resumed)

        second = progress_at(advanced_after_resume, 120, "second run to finish an epoch")
        assert _sh("scontrol", "requeue", job_id).returncode == 0
        progress_at(lambda p: p.get("restarts", 0) == 2, 120, "third run")
        wait_left_queue([job_id], timeout=180)
        assert ref.wait(timeout=300) == 0, ref.stdout.read() if ref.stdout else ""
    finally:
        if ref.poll() is None:
            ref.kill()
    rows = status(study)
    assert rows[exp_id]["state"] == "completed" and rows[exp_id]["restarts"] == 2
    # every rerun started from its newest checkpoint, never from epoch 0: the second run's progress
    # never went below the epoch the first one had reached, and the last run says where it resumed
    epochs = [e for r, st, e in seen if r == 1 and st == "running" and e is not None]
    assert epochs and min(epochs) >= first["epoch"], seen
    import pandas as pd

    summary = pd.read_parquet(next((study / "shards").glob(f"{exp_id}.*.completed.summary.parquet"))).iloc[0]
    assert second["epoch"] <= summary["resumed_from_epoch"] < LONG_EPOCHS and summary["restarts"] == 2, seen
    log = log_text(study / "jobs" / "slurm", job_id)
    assert "this job is preempted" in log
    pd.testing.assert_frame_equal(shard_history(study, exp_id), shard_history(reference, exp_id), check_exact=True)
    print(f"preempt + requeue of a training task, resumed at epochs {min(epochs)} and "
          f"{summary['resumed_from_epoch']}: {time.monotonic() - t0:.1f} s; progress seen: {seen}")
