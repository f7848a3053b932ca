"""The per-experiment lease (hpc_unet/lease.py) and the precedence rule (status/precedence.py), without
Slurm: fresh vs stale, concurrent takers, takeover and restart counting, `train`, `submit` and `collect`
respecting a live lease, and every pair of competing evidence."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli
from test_reliability_helpers import fake_shard, make_study

from hpc_unet import lease as lease_mod
from hpc_unet.lease import LeaseHeld, judge, read_lease, read_restarts, take
from hpc_unet.status.precedence import Evidence, decide, may_prune, should_submit
from hpc_unet.study import Study, atomic_write_json


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8]")


def exp_ids(study: Study) -> list[str]:
    from hpc_unet.manifest import read_manifest

    return list(read_manifest(study)["exp_id"])


def plant(study: Study, exp_id: str, **fields) -> None:
    """A lease file as another task would have left it."""
    now = time.time()
    data = {"exp_id": exp_id, "state": "held", "job_id": "77_3", "host": "gpu42", "pid": 12345, "pid_start": "",
            "attempt": 1, "token": "feedfacecafebeef", "taken_at": now, "heartbeat_at": now, **fields}
    atomic_write_json(study.run_dir(exp_id) / "lease.json", data)


def test_fresh_lease_of_another_host_refuses(study: Study) -> None:
    exp = exp_ids(study)[0]
    plant(study, exp)
    with pytest.raises(LeaseHeld, match=r"job 77_3 on gpu42 .*writes no shard"):
        take(study, exp)
    assert read_lease(study.run_dir(exp))["token"] == "feedfacecafebeef"  # untouched
    assert read_restarts(study.run_dir(exp)) == 0


@pytest.mark.parametrize("fields,why", [
    ({"heartbeat_at": time.time() - 10_000}, "stale"),
    ({"host": socket.gethostname(), "pid": 2**22 + 7}, "holder gone"),
    ({"state": "interrupted"}, "interrupted"),
])
def test_leftover_lease_is_taken_over_and_counted(study: Study, fields: dict, why: str) -> None:
    exp = exp_ids(study)[0]
    plant(study, exp, **fields)
    assert judge(read_lease(study.run_dir(exp))).why == why
    lease = take(study, exp, attempt=2)
    assert lease.restarts == 1 and read_restarts(study.run_dir(exp)) == 1
    record = json.loads((study.run_dir(exp) / "restarts.json").read_text())
    assert record["last_interrupted"]["job_id"] == "77_3" and record["last_interrupted"]["found"] == why
    lease.end()
    assert read_lease(study.run_dir(exp)) is None
    again = take(study, exp)  # released cleanly: not an interruption
    assert again.restarts == 1
    again.end(interrupted=True)
    assert take(study, exp).restarts == 2


def test_own_slurm_job_takes_over_at_once(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requeued task (same array task id) replaces its own previous run's lease, however fresh."""
    exp = exp_ids(study)[0]
    plant(study, exp, job_id="77_3")
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert take(study, exp).restarts == 1
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    with pytest.raises(LeaseHeld):
        take(study, exp)


def test_stale_after_the_stated_timeout(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = exp_ids(study)[0]
    assert lease_mod.stale_seconds() == lease_mod.STALE_S == 180
    plant(study, exp, heartbeat_at=time.time() - 100)
    assert judge(read_lease(study.run_dir(exp))).live
    monkeypatch.setenv(lease_mod.ENV_STALE, "60")
    assert judge(read_lease(study.run_dir(exp))).why == "stale"


def test_heartbeat_refreshes_while_held(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lease_mod.ENV_STALE, "0.4")  # heartbeat every 0.1 s
    exp = exp_ids(study)[0]
    lease = take(study, exp)
    lease.start_heartbeat()
    first = read_lease(study.run_dir(exp))["heartbeat_at"]
    deadline = time.monotonic() + 30  # a bounded wait for the next beat (0.1 s apart), not a fixed sleep
    while read_lease(study.run_dir(exp))["heartbeat_at"] == first and time.monotonic() < deadline:
        time.sleep(0.02)
    view = judge(read_lease(study.run_dir(exp)))
    assert view.live and view.holder["heartbeat_at"] > first
    lease.end()
    assert read_lease(study.run_dir(exp)) is None


def _contend(root: str, exp: str, barrier, release, out: str) -> None:
    barrier.wait(timeout=120)  # all six take at the same moment
    try:
        lease = take(Study.at(root), exp)
    except LeaseHeld:
        Path(out).write_text("refused")
        return
    Path(out).write_text("won")
    release.wait(timeout=120)  # held until the test has seen every other taker's answer
    lease.end()


def test_concurrent_takers_exactly_one_wins(study: Study, tmp_path: Path) -> None:
    """Six processes take one lease at once: exactly one wins while it holds it.

    The winner holds the lease until every other taker has answered (the test releases it), so a slow
    taker on a loaded machine still meets a held lease: a second winner can only come from the lock.
    Fresh (spawned) processes, not forks of a pytest process that may have TensorFlow's threads.
    """
    exp = exp_ids(study)[0]
    ctx = mp.get_context("spawn")
    barrier, release = ctx.Barrier(6), ctx.Event()
    outs = [tmp_path / f"taker{i}" for i in range(6)]
    procs = [ctx.Process(target=_contend, args=(str(study.root), exp, barrier, release, str(o))) for o in outs]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 180

    def settled() -> bool:  # every taker answered, or died without an answer (a failure below)
        return all((o.exists() and o.read_text() != "") or not p.is_alive() for o, p in zip(outs, procs, strict=True))

    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    results = sorted(o.read_text() if o.exists() else "no answer" for o in outs)
    release.set()
    for p in procs:
        p.join(timeout=60)
    assert results == ["refused"] * 5 + ["won"], results
    assert read_lease(study.run_dir(exp)) is None and read_restarts(study.run_dir(exp)) == 0


@pytest.fixture
def live_holder(study: Study):
    """A real other process on this host holding the first experiment's lease."""
    exp = exp_ids(study)[0]
    code = ("import sys, time; from hpc_unet.study import Study; from hpc_unet.lease import take; "
            "l = take(Study.at(sys.argv[1]), sys.argv[2]); l.start_heartbeat(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(study.root), exp], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield exp, proc
    proc.kill()
    proc.wait()


def test_train_by_hand_refuses_a_held_experiment(study: Study, live_holder, capsys) -> None:
    exp, proc = live_holder
    assert cli("train", "--study", study.root, "--experiment", exp) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{exp} is being trained by" in err[0] and f"pid {proc.pid}" in err[0], err
    assert not study.shards_dir.exists() or not any(study.shards_dir.iterdir())
    assert not study.progress_file(exp).exists()


def test_submit_and_status_leave_a_held_experiment_alone(study: Study, live_holder, capsys) -> None:
    exp, proc = live_holder
    capsys.readouterr()
    assert cli("submit", "--study", study.root, "--executor", "local", "--dry-run") == 0
    planned = capsys.readouterr().out
    assert f"\t{exp}\t" not in planned and len(planned.strip().splitlines()) == len(exp_ids(study)) - 1
    assert cli("status", "--study", study.root, "--json") == 0
    rows = {r["exp_id"]: r for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert rows[exp]["state"] == "running" and rows[exp]["lease"] == ""  # local holder: no job id
    proc.kill()
    proc.wait()
    assert cli("status", "--study", study.root, "--json") == 0
    rows = {r["exp_id"]: r for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert rows[exp]["state"] == "pending"  # never submitted; the dead holder's lease no longer counts


def test_collect_keeps_checkpoints_under_a_live_lease(study: Study, live_holder, capsys) -> None:
    exp, proc = live_holder
    other = exp_ids(study)[1]
    for e in (exp, other):
        fake_shard(study, e, 1)
        ckpt = study.run_dir(e) / "checkpoint" / "e0001"
        ckpt.mkdir(parents=True)
        (ckpt / "model.npz").write_bytes(b"x" * 1000)
    assert cli("collect", "--study", study.root) == 0
    assert (study.run_dir(exp) / "checkpoint" / "e0001" / "model.npz").exists()  # a live task holds it
    assert not (study.run_dir(other) / "checkpoint").exists()
    proc.kill()
    proc.wait()
    assert cli("collect", "--study", study.root) == 0
    assert not (study.run_dir(exp) / "checkpoint").exists()


def test_collect_keeps_checkpoints_under_a_fresh_progress_heartbeat(study: Study) -> None:
    exp = exp_ids(study)[0]
    fake_shard(study, exp, 1)
    (study.run_dir(exp) / "checkpoint").mkdir(parents=True)
    atomic_write_json(study.progress_file(exp), {"state": "running", "updated_at": time.time(), "host": "gpu42",
                                                 "pid": 1, "epoch": 3})
    assert cli("collect", "--study", study.root) == 0
    assert (study.run_dir(exp) / "checkpoint").exists()


# --- precedence: every pair of competing evidence -----------------------------------------------------

LIVE_LEASE = {"lease_live": True}
SCHED = {s: {"scheduler": s} for s in ("running", "queued", "ended", "unknown")}


@pytest.mark.parametrize("other,expected", [
    ({}, "completed"), (LIVE_LEASE, "completed"), *[(SCHED[s], "completed") for s in SCHED],
    ({"heartbeat_fresh": True}, "completed"),
    ({"task_attempt": 2, "scheduler": "ended"}, "completed"),  # a later "already completed" no-op attempt
    ({"task_attempt": 2, "scheduler": "unknown"}, "completed"),
])
def test_completed_outranks_everything(other: dict, expected: str) -> None:
    ev = Evidence(**{"shard": "completed", "shard_attempt": 1, "task_attempt": 1, **other})
    assert decide(ev) == expected
    assert should_submit(decide(ev), retry_failed=True) is False


@pytest.mark.parametrize("shard", ["skipped"])
def test_skipped_counts_as_done(shard: str) -> None:
    assert decide(Evidence(shard=shard, shard_attempt=1, task_attempt=2, scheduler="ended")) == "skipped"


@pytest.mark.parametrize("sched", ["running", "queued", "ended", "unknown", ""])
def test_live_lease_outranks_scheduler_and_failure(sched: str) -> None:
    assert decide(Evidence(task_attempt=1, scheduler=sched, lease_live=True)) == "running"
    assert decide(Evidence(shard="failed", shard_attempt=2, task_attempt=2, scheduler=sched,
                           lease_live=True)) == "running"


@pytest.mark.parametrize("sched", ["running", "queued", "ended", "unknown"])
def test_failure_of_the_latest_attempt_outranks_the_scheduler(sched: str) -> None:
    ev = Evidence(shard="oom", shard_attempt=2, task_attempt=2, scheduler=sched)
    assert decide(ev) == "oom"
    assert not should_submit("oom") and should_submit("oom", retry_failed=True)


@pytest.mark.parametrize("sched,expected", [("running", "running"), ("queued", "queued"), ("unknown", "unknown"),
                                            ("ended", "lost")])
def test_an_older_failure_yields_to_the_newer_task(sched: str, expected: str) -> None:
    assert decide(Evidence(shard="failed", shard_attempt=1, task_attempt=2, scheduler=sched)) == expected


@pytest.mark.parametrize("sched,fresh,expected", [
    ("ended", False, "lost"), ("ended", True, "unknown"), ("unknown", False, "unknown"),
    ("running", True, "running"), ("queued", False, "queued")])
def test_lost_needs_an_ended_job_and_no_heartbeat(sched: str, fresh: bool, expected: str) -> None:
    assert decide(Evidence(task_attempt=1, scheduler=sched, heartbeat_fresh=fresh)) == expected
    assert should_submit(expected) == (expected == "lost")


def test_nothing_submitted() -> None:
    assert decide(Evidence()) == "pending" and should_submit("pending")
    assert decide(Evidence(shard="diverged", shard_attempt=1)) == "diverged"  # `train` by hand, no record
    assert decide(Evidence(lease_live=True)) == "running"  # `train` by hand, now


@pytest.mark.parametrize("ev,ok", [
    (Evidence(shard="completed", shard_attempt=1), True),
    (Evidence(shard="completed", shard_attempt=1, lease_live=True), False),
    (Evidence(shard="completed", shard_attempt=1, heartbeat_fresh=True), False),
    (Evidence(shard="failed", shard_attempt=1), False),
    (Evidence(), False),
])
def test_prune_only_completed_and_unheld(ev: Evidence, ok: bool) -> None:
    assert may_prune(ev) is ok


def test_status_submit_and_collect_agree(study: Study, capsys) -> None:
    """A completed attempt 1 beside a later failed attempt 2: all three say completed, none reruns it."""
    exp = exp_ids(study)[0]
    fake_shard(study, exp, 1)
    fake_shard(study, exp, 2, status="failed", tag="0000beef")
    capsys.readouterr()
    assert cli("status", "--study", study.root, "--json") == 0
    rows = {r["exp_id"]: r for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert rows[exp]["state"] == "completed"
    assert cli("submit", "--study", study.root, "--executor", "local", "--dry-run", "--retry-failed") == 0
    assert f"\t{exp}\t" not in capsys.readouterr().out
    assert cli("collect", "--study", study.root, "--json") == 0
    assert exp not in json.loads(capsys.readouterr().out)["failed"]
    assert os.environ.get(lease_mod.ENV_STALE) is None
