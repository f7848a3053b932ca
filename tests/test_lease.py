"""The lease file's fields and the records it leaves, field by field (what status, submit and the next
taker read): holder identity from /proc and the environment, the restart record, release and
interruption, a heartbeat that finds itself taken over, and the stale/heartbeat settings."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from hpc_unet import lease as lease_mod
from hpc_unet.lease import (
    LeaseView,
    current_restarts,
    describe,
    judge,
    leased,
    read_lease,
    read_restarts,
    take,
)
from hpc_unet.study import Study, atomic_write_json


@pytest.fixture
def study(tmp_path: Path) -> Study:
    root = tmp_path / "s"
    (root / "runs").mkdir(parents=True)
    return Study.at(root)


def proc_start(pid: int) -> str:
    """Field 22 (starttime) of /proc/<pid>/stat, counted after the command name in parentheses."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split(" ")[22 - 3]


def test_a_taken_lease_names_its_holder(study, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SUBMITIT_JOB_ID", "local-7")
    t0 = time.time()
    lease = take(study, "e1", attempt=3)
    data = read_lease(study.run_dir("e1"))
    assert data == lease.data
    assert set(data) == {"exp_id", "state", "job_id", "host", "pid", "pid_start", "attempt", "token", "taken_at",
                         "heartbeat_at"}
    assert (data["exp_id"], data["state"], data["job_id"], data["attempt"]) == ("e1", "held", "local-7", 3)
    assert (data["host"], data["pid"]) == (socket.gethostname(), os.getpid())
    assert data["pid_start"] == proc_start(os.getpid()) and data["pid_start"].isdigit()
    assert len(data["token"]) == 16 and int(data["token"], 16) >= 0
    assert t0 <= data["taken_at"] == data["heartbeat_at"] <= time.time()
    assert lease.restarts == 0 and not lease.lost
    lease.end()
    assert read_lease(study.run_dir("e1")) is None
    lease.end()  # twice: nothing left to remove, no error


def test_the_slurm_job_id_is_the_array_task(study, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "501")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "500")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    assert take(study, "e1").data["job_id"] == "500_4"
    monkeypatch.delenv("SLURM_JOB_ID")  # not under Slurm: the array variables do not count
    monkeypatch.delenv("SUBMITIT_JOB_ID", raising=False)
    assert lease_mod._job_id() == ""


def test_a_leftover_is_counted_with_what_it_said(study):
    run = study.run_dir("e1")
    old = {"exp_id": "e1", "state": "interrupted", "job_id": "77_3", "host": "gpu42", "pid": 123, "attempt": 2,
           "taken_at": 10.0, "heartbeat_at": 20.0, "token": "x", "pid_start": "9"}
    atomic_write_json(run / "lease.json", old)
    lease = take(study, "e1", attempt=3)
    record = json.loads((run / "restarts.json").read_text())
    assert record == {"restarts": 1, "last_interrupted": {
        "job_id": "77_3", "host": "gpu42", "pid": 123, "attempt": 2, "taken_at": 10.0, "heartbeat_at": 20.0,
        "state": "interrupted", "found": "interrupted"}}
    assert lease.restarts == 1 == read_restarts(run)
    lease.end(interrupted=True)
    after = read_lease(run)
    assert after["state"] == "interrupted" and after["token"] == lease.data["token"]
    assert time.time() - 5 < after["ended_at"] <= time.time()
    assert not judge(after).live
    assert take(study, "e1").restarts == 2


def test_end_leaves_a_lease_another_task_took_over(study):
    lease = take(study, "e1")
    taken = {**lease.data, "token": "0123456789abcdef", "pid": 1}
    atomic_write_json(study.run_dir("e1") / "lease.json", taken)
    assert lease._refresh() is False
    lease.end()
    assert read_lease(study.run_dir("e1")) == taken
    lease.end(interrupted=True)
    assert read_lease(study.run_dir("e1")) == taken


def test_a_heartbeat_that_finds_itself_taken_over_stops_and_says_so(study, monkeypatch, capsys):
    monkeypatch.setenv(lease_mod.ENV_STALE, "0.4")  # a beat every 0.1 s
    lease = take(study, "e1")
    lease.start_heartbeat()
    assert lease._thread.name == "lease-e1" and lease._thread.daemon
    atomic_write_json(study.run_dir("e1") / "lease.json", {**lease.data, "token": "someone else"})
    deadline = time.monotonic() + 30
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lease.lost
    lease._thread.join(timeout=30)
    assert not lease._thread.is_alive()
    assert "lease of e1 was taken over by another task" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "stale", "beat"), [
    (None, 180.0, 20.0), ("", 180.0, 20.0), ("60", 60.0, 15.0), ("200", 200.0, 20.0), ("0", 180.0, 20.0),
    ("-5", 180.0, 20.0), ("soon", 180.0, 20.0), ("0.4", 0.4, 0.1), ("80", 80.0, 20.0),
])
def test_stale_and_heartbeat_seconds(monkeypatch, value, stale, beat):
    if value is None:
        monkeypatch.delenv(lease_mod.ENV_STALE, raising=False)
    else:
        monkeypatch.setenv(lease_mod.ENV_STALE, value)
    assert lease_mod.stale_seconds() == stale and lease_mod.heartbeat_seconds() == pytest.approx(beat)


def test_describe_names_the_holder():
    holder = {"job_id": "77_3", "host": "gpu42", "pid": 12, "heartbeat_at": 100.0}
    assert describe(holder, now=130.4) == "job 77_3 on gpu42 (pid 12, heartbeat 30 s ago)"
    assert describe({**holder, "job_id": ""}, now=100.0) == "job no job id on gpu42 (pid 12, heartbeat 0 s ago)"
    assert describe({"host": "h", "pid": 1}).endswith("heartbeat 0 s ago)")


def test_judge_a_holder_with_no_job_id_is_not_own_job():
    now = time.time()
    holder = {"state": "held", "job_id": "XXXX", "host": "elsewhere", "pid": 1, "heartbeat_at": now}
    assert judge(holder, now=now, host="here").live


def test_current_restarts_is_the_held_lease_s_count(study):
    run = study.run_dir("e1")
    atomic_write_json(run / "lease.json", {"state": "interrupted", "token": "x"})
    seen = []

    @leased
    def work(row, st, attempt=0):
        atomic_write_json(run / "restarts.json", {"restarts": 5})  # the file says otherwise meanwhile
        seen.append(current_restarts(st, row["exp_id"]))

    work({"exp_id": "e1"}, study, attempt=1)
    assert seen == [1]
    assert current_restarts(study, "e1") == 5  # no lease held: the record
    assert read_lease(run) is None


def test_pid_start_of_a_gone_process_is_empty():
    assert lease_mod._pid_start(2**22 + 7) == ""
    assert lease_mod._pid_start(os.getpid()) == proc_start(os.getpid())


def test_a_reused_pid_on_this_host_is_a_gone_holder(study):
    now = time.time()
    me = {"state": "held", "job_id": "", "host": "here", "pid": os.getpid(), "heartbeat_at": now}
    assert judge({**me, "pid_start": proc_start(os.getpid())}, now=now, host="here").live
    assert judge({**me, "pid_start": "1"}, now=now, host="here").why == "holder gone"  # same pid, other process
    assert judge({**me, "pid_start": ""}, now=now, host="here").live  # start unknown: not provably gone
    assert judge({**me, "pid": "not a pid"}, now=now, host="here").live  # unreadable pid: not provably gone


def test_a_heartbeat_survives_a_transient_error_and_stops_with_end(study, monkeypatch, capsys):
    monkeypatch.setenv(lease_mod.ENV_STALE, "0.4")  # a beat every 0.1 s
    for var in ("SLURM_JOB_ID", "SUBMITIT_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    lease = take(study, "e1")
    assert lease.data["job_id"] == ""
    real, failures = lease._refresh, []

    def flaky():
        if not failures:
            failures.append(1)
            raise OSError("stale NFS handle")
        return real()

    lease._refresh = flaky
    first = lease.data["heartbeat_at"]
    lease.start_heartbeat()
    deadline = time.monotonic() + 30
    while read_lease(study.run_dir("e1"))["heartbeat_at"] == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert failures and read_lease(study.run_dir("e1"))["heartbeat_at"] > first and not lease.lost
    lease.end()
    assert not lease._thread.is_alive() and read_lease(study.run_dir("e1")) is None
    assert capsys.readouterr().err == ""


def test_end_waits_for_a_heartbeat_in_flight(study, monkeypatch, capsys):
    """end() while a beat is half done: it waits for that beat, then releases; the beat never finds the lease
    gone and never reports a takeover (without the join the beat lands after the release and does)."""
    import threading

    monkeypatch.setenv(lease_mod.ENV_STALE, "0.4")  # a beat every 0.1 s
    lease = take(study, "e1")
    real, in_beat = lease._refresh, threading.Event()

    def slow():
        in_beat.set()
        time.sleep(0.3)  # the beat is in flight while end() runs
        return real()

    lease._refresh = slow
    lease.start_heartbeat()
    assert in_beat.wait(30)
    lease.end()
    assert not lease._thread.is_alive() and not lease.lost
    assert read_lease(study.run_dir("e1")) is None
    assert capsys.readouterr().err == ""


def test_the_messages_say_what_happened(study, monkeypatch, capsys):
    from hpc_unet.lease import LeaseHeld

    monkeypatch.delenv(lease_mod.ENV_STALE, raising=False)
    take(study, "e1")
    with pytest.raises(LeaseHeld, match=r"this task exits without training it and writes no shard \(the lease "
                                        r"is stale after 180 s without a heartbeat\)$"):
        take(study, "e1")
    monkeypatch.setenv(lease_mod.ENV_STALE, "0.4")
    lease = take(study, "e2")
    lease.start_heartbeat()
    atomic_write_json(study.run_dir("e2") / "lease.json", {**lease.data, "token": "someone else"})
    lease._thread.join(timeout=30)
    assert capsys.readouterr().err == ("hpc-unet: lease of e2 was taken over by another task (this one looked "
                                       "stale); the heartbeat stops\n")


def test_judge_gives_each_verdict_with_its_reason(monkeypatch):
    """Every branch of judge, with the whole view (live, holder, why): status prints the reason and the
    precedence rule reads it. Stale after STALE_S = 180 s (written out), pinned on both sides."""
    monkeypatch.delenv("HPC_UNET_LEASE_STALE_S", raising=False)
    now = 1000.0
    held = {"state": "held", "job_id": "77_3", "host": "elsewhere", "pid": 1, "heartbeat_at": now - 10}
    assert judge(None, now=now, host="here") == LeaseView(False, None, "none")
    assert judge({**held, "state": "released"}, now=now, host="here") == LeaseView(
        False, {**held, "state": "released"}, "released")
    assert judge({**held, "state": "interrupted"}, now=now, host="here").why == "interrupted"
    assert judge({**held, "state": ""}, now=now, host="here").why == "released"  # no state: not held
    assert judge({k: v for k, v in held.items() if k != "state"}, now=now, host="here").why == "released"
    assert judge(held, now=now, host="here", job_id="77_3") == LeaseView(False, held, "own job")
    assert judge(held, now=now, host="here", job_id="77_4") == LeaseView(True, held, "held")
    assert judge(held, now=now, host="here") == LeaseView(True, held, "held")
    gone = {**held, "host": "here", "pid": 2 ** 22 + 12345}  # above pid_max's default: no such process
    assert judge(gone, now=now, host="here") == LeaseView(False, gone, "holder gone")
    assert judge(gone, now=now, host="there").live  # another host's pid says nothing here
    for beat in ("soon", None, [1]):
        assert judge({**held, "heartbeat_at": beat}, now=now, host="here") == LeaseView(
            False, {**held, "heartbeat_at": beat}, "stale")
    no_beat = {k: v for k, v in held.items() if k != "heartbeat_at"}  # never beat: as old as the epoch
    assert judge(no_beat, now=now, host="here") == LeaseView(False, no_beat, "stale")
    assert judge(no_beat, now=180.0, host="here").live and not judge(no_beat, now=180.001, host="here").live
    edge = {**held, "heartbeat_at": now - 180.0}
    assert judge(edge, now=now, host="here").live  # exactly 180 s: still live
    assert judge(edge, now=now + 0.001, host="here") == LeaseView(False, edge, "stale")


def test_judge_reads_the_clock_and_host_when_not_given():
    holder = {"state": "held", "job_id": "", "host": socket.gethostname(), "pid": os.getpid(),
              "pid_start": "", "heartbeat_at": time.time()}
    assert judge(holder) == LeaseView(True, holder, "held")
    old = {**holder, "heartbeat_at": time.time() - 1000}
    assert judge(old).why == "stale"


def test_pid_start_of_a_process_whose_name_holds_parentheses(tmp_path):
    """The command name in /proc/<pid>/stat may contain ") 1 2 (": the fields start after the LAST ")"."""
    import subprocess

    odd = tmp_path / "x) 1 2 3 (y"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "30"])
    try:
        deadline = time.monotonic() + 10
        while "x) 1 2 3 (y" not in Path(f"/proc/{child.pid}/stat").read_text() and time.monotonic() < deadline:
            time.sleep(0.01)  # until exec has renamed the child
        assert "x) 1 2 3 (y" in Path(f"/proc/{child.pid}/stat").read_text()
        assert lease_mod._pid_start(child.pid) == proc_start(child.pid) != ""
    finally:
        child.kill()
        child.wait()


def test_unexpected_lease_and_restart_files(study):
    run = study.run_dir("e1")
    run.mkdir(parents=True)
    (run / "lease.json").write_text("[1, 2]")  # JSON, but not a lease
    assert read_lease(run) is None
    (run / "restarts.json").write_text("{}")  # no count recorded: none
    assert read_restarts(run) == 0
    (run / "restarts.json").write_text('{"restarts": 3}')
    assert read_restarts(run) == 3
