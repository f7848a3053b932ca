"""squeue / sacct parsing without a cluster: long non-contiguous pending ranges, cut or garbled answers
(unknown, never finished), and `hpc-unet status` / `submit` with the controller down (fake clients on PATH)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import cli
from test_reliability_helpers import fake_shard, make_study, snapshot

from hpc_unet.dispatch.records import SubmissionRecord
from hpc_unet.status.slurm_state import (
    FINISHED,
    _parse_rows,
    expand_row_id,
    parse_squeue,
    query_squeue,
    query_states,
)

LONG = "90_[0-1,10,14-15,18,26-27,34-35%2]"  # 34 characters: squeue's %i cuts it at 30
LONG_IDS = ["90_0", "90_1", "90_10", "90_14", "90_15", "90_18", "90_26", "90_27", "90_34", "90_35"]


def test_long_non_contiguous_range_expands_to_every_task() -> None:
    assert expand_row_id(LONG) == LONG_IDS
    assert expand_row_id("1234567_[3,5-7,100-102,2000%16]") == [
        "1234567_3", "1234567_5", "1234567_6", "1234567_7", "1234567_100", "1234567_101", "1234567_102",
        "1234567_2000"]
    assert expand_row_id("90_7") == ["90_7"] and expand_row_id("90") == ["90"]


@pytest.mark.parametrize("cut", [LONG[:30], LONG[:-1], "90_[0-1,10,14-15,18,26-27,34-35%", "90_[", "garbage"])
def test_a_cut_range_parses_to_nothing(cut: str) -> None:
    assert expand_row_id(cut) == []


def test_sacct_rows_with_a_long_range() -> None:
    text = f"90_2|COMPLETED|vm|00:01:02\n90_3|RUNNING|vm|00:00:10\n{LONG}|PENDING|None assigned|00:00:00\n"
    found = _parse_rows(text, {*LONG_IDS, "90_2", "90_3", "90_4"}, "sacct", node_col=2, elapsed_col=3)
    assert {k: v.state for k, v in found.items()} == {"90_2": "COMPLETED", "90_3": "RUNNING",
                                                      **{t: "PENDING" for t in LONG_IDS}}
    assert found["90_2"].elapsed_seconds == 62.0 and found["90_10"].node == ""
    assert "90_4" not in found  # sacct does not know it: asked of squeue next, never assumed finished
    cut = _parse_rows(f"{LONG[:30]}|PENDING|None assigned|00:00:00\n", set(LONG_IDS), "sacct", 2, 3)
    assert cut == {}


def test_squeue_rows_one_task_per_line() -> None:
    text = "90|0|RUNNING|vm|1:05\n90|10|PENDING|(Priority)|0:00\n91|N/A|COMPLETED|vm|0:03\n"
    found, clean = parse_squeue(text, {"90_0", "90_10", "91", "90_5"})
    assert clean and {k: v.state for k, v in found.items()} == {"90_0": "RUNNING", "90_10": "PENDING",
                                                                "91": "COMPLETED"}
    assert found["90_0"].elapsed_seconds == 65.0 and found["90_10"].node == ""
    # a range in the task column (should not happen with -r) is still read whole
    found, clean = parse_squeue(f"90|{LONG[3:]}|PENDING||0:00\n", set(LONG_IDS))
    assert clean and sorted(found) == sorted(LONG_IDS)


@pytest.mark.parametrize("line", ["90_[0-1,10,14-15,18,26-27,34-35%|PENDING", "90|0|RUNNING|vm", "x|1|RUNNING|vm|0:01",
                                  "90|[0-1,10|PENDING||0:00", "90|1||vm|0:01"])
def test_squeue_unparsable_line_is_flagged(line: str) -> None:
    _found, clean = parse_squeue("90|0|RUNNING|vm|0:01\n" + line + "\n", {"90_0", "90_5"})
    assert not clean


def fake_clients(bin_dir: Path, squeue: str | None, sacct: str | None, scontrol: str | None = None) -> None:
    """Executables named like Slurm's clients printing fixed text (None: fail like a down controller)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    down = ("echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1")
    for name, body in (("squeue", squeue), ("sacct", sacct), ("scontrol", scontrol), ("sbatch", None),
                       ("srun", None), ("sinfo", None)):
        script = bin_dir / name
        text = f"cat <<'EOF'\n{body}\nEOF\n" if body is not None else down
        script.write_text(f"#!/bin/sh\n{text}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"

    def use(squeue: str | None, sacct: str | None, scontrol: str | None = None) -> None:
        fake_clients(bin_dir, squeue, sacct, scontrol)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    return use


def test_cut_squeue_answer_leaves_ids_unknown(on_path) -> None:
    on_path(squeue=f"{LONG[:30]}|PENDING|x|0:00", sacct=None)
    states = query_squeue(LONG_IDS)
    assert states is not None and {s.state for s in states.values()} == {""}
    on_path(squeue="90|0|RUNNING|vm|0:01", sacct=None)
    states = query_states(["90_0", "90_1"])
    assert states["90_0"].state == "RUNNING" and states["90_1"].state == FINISHED  # a clean answer: left the queue


def slurm_study(tmp_path: Path):
    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8]")
    from hpc_unet.manifest import read_manifest

    ids = list(read_manifest(study)["exp_id"])
    record = SubmissionRecord(executor="slurm", options={"partition": "a40"},
                              tasks=[{"exp_id": e, "attempt": 1, "job_id": f"90_{i}", "array_index": i}
                                     for i, e in enumerate(ids)])
    record.save(study)
    return study, ids


def test_status_with_the_controller_down_says_unknown_not_lost(tmp_path: Path, on_path, capsys) -> None:
    study, ids = slurm_study(tmp_path)
    capsys.readouterr()
    fake_shard(study, ids[0], 1)
    on_path(squeue=None, sacct=None)
    assert cli("status", "--study", study.root, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    states = {r["exp_id"]: r["state"] for r in out["experiments"]}
    assert states[ids[0]] == "completed"  # what the disk knows is still shown
    assert {states[e] for e in ids[1:]} == {"unknown"}
    assert "did not answer" in out["summary"]["note"]
    assert cli("status", "--study", study.root) == 0
    text = capsys.readouterr().out
    assert "2 unknown" in text and "did not answer" in text and "ended without a result" not in text


def test_status_with_a_cut_squeue_range_is_not_lost(tmp_path: Path, on_path, capsys) -> None:
    """The bug of issue 10: a pending range cut at 30 characters made every task of it 'finished'."""
    study, ids = slurm_study(tmp_path)
    capsys.readouterr()
    on_path(squeue="90|0|RUNNING|vm|0:05\n" + LONG[:30] + "|PENDING|(null)|0:00", sacct=None)
    assert cli("status", "--study", study.root, "--json") == 0
    states = {r["exp_id"]: r["state"] for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert states[ids[0]] == "running" and {states[e] for e in ids[1:]} == {"unknown"}


def test_status_lost_only_with_evidence(tmp_path: Path, on_path, capsys) -> None:
    study, ids = slurm_study(tmp_path)
    capsys.readouterr()
    rows = "\n".join(f"90_{i}|{'FAILED' if i == 1 else 'PENDING'}|vm|00:00:01" for i in range(len(ids)))
    queue = "\n".join(f"90|{i}|PENDING|(Priority)|0:00" for i in range(len(ids)) if i != 1)
    on_path(squeue=queue, sacct=rows)
    assert cli("status", "--study", study.root, "--json") == 0
    states = {r["exp_id"]: r["state"] for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert states[ids[1]] == "lost"  # sacct: ended; squeue: not live; no lease, no heartbeat
    assert {states[e] for e in ids if e != ids[1]} == {"queued"}


def test_submit_with_the_controller_down_is_one_line_and_writes_nothing(tmp_path: Path, on_path, capsys) -> None:
    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8]")
    before = snapshot(study.root)
    capsys.readouterr()
    on_path(squeue=None, sacct=None, scontrol=None)
    assert cli("submit", "--study", study.root, "--partition", "a40") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "controller does not answer" in err[0] and "Unable to contact" in err[0], err
    assert snapshot(study.root) == before  # no data cache, no jobs/slurm pickles, no record


def test_sbatch_failure_is_one_line_and_removes_what_submitit_wrote(tmp_path: Path, monkeypatch, capsys) -> None:
    """The checks pass (controller up, partition and GPU type exist, --test-only accepts) but the real
    sbatch refuses: one line with Slurm's message, exit 2, no pickles or scripts left in jobs/, no record."""
    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8]")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    message = "Batch job submission failed: Job violates accounting/QOS policy (job submit limit)"
    bodies = {
        "scontrol": 'case "$1" in ping) echo "Slurmctld(primary) at vm is UP";; '
                    'show) echo "MaxArraySize            = 1001";; esac',
        "sinfo": 'echo "a40|gpu:a40:4"',
        "sbatch": 'for a in "$@"; do [ "$a" = "--test-only" ] && { cat >/dev/null; '
                  'echo "sbatch: Job 5 to start at 2026-01-01T00:00:00" >&2; exit 0; }; done\n'
                  f'echo "sbatch: error: {message}" >&2; exit 1',
        "srun": "exit 1", "squeue": "exit 0", "sacct": "exit 1",
    }
    for name, body in bodies.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    capsys.readouterr()
    before = {k: v for k, v in snapshot(study.root).items() if not k.startswith(("cache", "data"))}
    assert cli("submit", "--study", study.root, "--partition", "a40") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "nothing was submitted" in err[0], err
    after = {k: v for k, v in snapshot(study.root).items() if not k.startswith(("cache", "data"))}
    assert after == before  # the data cache is built after the checks and kept for the next submit
