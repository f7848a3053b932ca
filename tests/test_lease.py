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
from hpc_unet.lease import current_restarts, describe, judge, leased, read_lease, read_restarts, take
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
