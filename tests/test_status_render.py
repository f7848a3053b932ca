"""What `status` prints on a 36-experiment study in every state: one screen of 120x50 with the summary
at both ends, one vocabulary (1e-04 like ids, "not submitted", "stopped early"), queue positions and an
ETA that counts start-up and the first epoch."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, cli
from test_reliability_helpers import fake_shard

from hpc_unet.dispatch.records import SubmissionRecord
from hpc_unet.study import Study, atomic_write_json

EPOCHS = 12
WARM = 4.0  # seconds per warm epoch
OVERHEAD = 30.0  # start-up + first-epoch tracing + final evaluation beyond the warm epochs


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def build_study(root, alive_pid: int) -> tuple[Study, dict[str, str]]:
    """The seed grid on synthetic data (36 experiments): 14 completed (4 stopped early at epoch 7),
    4 running at epoch 5, 10 queued, 4 never submitted, 2 failed, 1 out of memory, 1 lost."""
    from hpc_unet.analysis.synthetic import spec_text
    from hpc_unet.manifest import read_manifest

    (root / "spec.toml").parent.mkdir(parents=True, exist_ok=True)
    (root / "spec.toml").write_text(spec_text(name="screen", epochs=EPOCHS))
    assert cli("manifest", "--grid", root / "spec.toml", "--study", root, "--quiet") == 0
    study = Study.at(root)
    ids = list(read_manifest(study)["exp_id"])
    kinds = ["completed"] * 10 + ["early"] * 4 + ["failed"] * 2 + ["oom", "lost"] + ["running"] * 4 \
        + ["queued"] * 10 + ["pending"] * 4
    now = time.time()
    tasks = []
    for exp_id, kind in zip(ids, kinds, strict=True):
        if kind != "pending":
            tasks.append({"exp_id": exp_id, "attempt": 1, "executor": "local",
                          "job_id": "999999999" if kind == "lost" else str(alive_pid)})
        if kind in ("completed", "early"):
            epochs = 7 if kind == "early" else EPOCHS
            fake_shard(study, exp_id, 1, epochs=epochs)
            start = now - 600
            atomic_write_json(study.progress_file(exp_id), {
                "exp_id": exp_id, "attempt": 1, "state": "completed", "epoch": epochs, "epochs": EPOCHS,
                "last_epoch_seconds": WARM, "best_val_jaccard": 0.7, "started_at": iso(start),
                "finished_at": start + OVERHEAD + epochs * WARM, "updated_at": now})
        elif kind in ("failed", "oom"):
            fake_shard(study, exp_id, 1, status=kind)
        elif kind == "running":
            atomic_write_json(study.progress_file(exp_id), {
                "exp_id": exp_id, "attempt": 1, "state": "running", "epoch": 5, "epochs": EPOCHS,
                "last_epoch_seconds": WARM, "best_val_jaccard": 0.5, "started_at": iso(now - OVERHEAD - 5 * WARM),
                "updated_at": now, "pid": alive_pid, "host": socket.gethostname()})
    SubmissionRecord(executor="local", tasks=tasks, name="screen").save(study)
    return study, dict(zip(ids, kinds, strict=True))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_36_experiment_study_fits_one_120x50_screen(tmp_path, sleeper):
    study, kinds = build_study(tmp_path / "s", sleeper)
    env = {**os.environ, "COLUMNS": "120", "LINES": "50", "PATH": os.path.dirname(sys.executable)}
    code = "import sys; from rich.console import Console; import hpc_unet.status.render as r; " \
           "r.console = lambda: Console(width=120, force_terminal=False); from hpc_unet.cli import main; " \
           "sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "status", "--study", str(study.root)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    lines = out.rstrip("\n").splitlines()
    assert len(lines) <= 50 and max(map(len, lines)) <= 120, out
    assert "…" not in out and "not shown" not in out, out  # nothing cut, no column left out
    header = next(ln for ln in lines if ln.startswith("experiment"))
    assert re.split(r"\s{2,}", header.strip()) == ["experiment", "state", "epochs", "best val Jaccard",
                                                   "epoch time", "time left", "job"], header
    summary = [i for i, ln in enumerate(lines) if "/36 done" in ln]
    assert len(summary) == 2 and summary[1] == len(lines) - 2, out  # at the top and at the bottom
    counts, eta = lines[summary[0]], lines[summary[0] + 1]
    assert lines[-2:] == [counts, eta]
    assert "14/36 done (4 stopped early)" in counts and "4 running" in counts
    assert "10 queued" in counts and "4 not submitted" in counts
    assert "4 not completed (2 failed, 1 out of memory, 1 lost)" in counts
    assert eta.startswith("ETA ") and "14 submitted left, 4 in parallel" in eta
    assert not {"rst", "s/ep", "lr", "bs"} & set(header.split())
    assert "pending" not in out and "0.0001" not in out
    early = [e for e, k in kinds.items() if k == "early"]
    assert all(any(e in ln and "stopped early" in ln and "7/12" in ln for ln in lines) for e in early)
    queued = [ln for ln in lines if "queued" in ln and "#" in ln]
    assert len(queued) == 10 and "#1 in queue" in queued[0] and "#10 in queue" in queued[-1]


def test_the_eta_counts_start_up_and_the_queue(tmp_path, sleeper, capsys):
    study, _ = build_study(tmp_path / "s", sleeper)
    capsys.readouterr()
    assert cli("status", "--study", study.root, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    summary = data["summary"]
    # completed runs stopped at 7 or 12 epochs: median fraction 1 -> 12 epochs expected
    full = OVERHEAD + EPOCHS * WARM  # 78 s per experiment
    running_left = full - (OVERHEAD + 5 * WARM)  # 28 s
    # 4 slots free at 28 s; 10 queued experiments of 78 s each fill them: 2 rounds + 2 more
    assert summary["parallel"] == 4
    assert summary["eta_seconds"] == pytest.approx(running_left + 3 * full, abs=10)
    warm_only = (4 * (EPOCHS - 5) + 10 * EPOCHS) * WARM / 4  # what counting warm epochs alone says
    assert summary["eta_seconds"] > 1.5 * warm_only
    queued = [e for e in data["experiments"] if e["state"] == "queued"]
    assert [e["eta"]["queue"] for e in queued] == list(range(1, 11))
    assert queued[0]["eta"]["starts_in"] == pytest.approx(running_left, abs=10)


def test_experiments_a_live_local_submit_will_start_are_queued_not_unsubmitted(tmp_path, sleeper, capsys):
    """`submit --executor local` starts its tasks as slots free up: the ones it has not started yet are in
    its plan (the submission record) and count in the queue and the ETA while that process lives."""
    study, kinds = build_study(tmp_path / "s", sleeper)
    pending = [e for e, k in kinds.items() if k == "pending"]
    record = SubmissionRecord(executor="local", name="zz-later", tasks=[],
                              options={"planned": pending, "pid": sleeper, "host": socket.gethostname()})
    record.save(study)
    capsys.readouterr()
    assert cli("status", "--study", study.root, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["queued"] == 14 and data["summary"]["pending"] == 0
    positions = {e["exp_id"]: e["eta"]["queue"] for e in data["experiments"] if e.get("eta", {}).get("queue")}
    assert [positions[e] for e in pending] == [11, 12, 13, 14]
    full = OVERHEAD + EPOCHS * WARM
    assert data["summary"]["eta_seconds"] == pytest.approx(full - (OVERHEAD + 5 * WARM) + 4 * full, abs=10)
    record.options["pid"] = 999999999  # the submit process is gone: nothing will start them
    record.save(study)
    assert cli("status", "--study", study.root, "--json") == 0
    assert json.loads(capsys.readouterr().out)["summary"]["pending"] == 4


def test_a_finished_local_submit_leaves_no_plan_behind(tmp_path):
    """When `submit --executor local` returns (here in this process, which lives on), its plan is cleared:
    experiments it did not start are 'not submitted' again, not queued forever."""
    from hpc_unet.dispatch.records import load_records
    from hpc_unet.status.eta import local_plan

    root = tmp_path / "s"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=1") == 0
    assert cli("submit", "--study", root, "--executor", "local") == 0
    study = Study.at(root)
    assert load_records(study)[-1]["options"]["planned"] == []
    assert local_plan(study.submissions_dir) == ([], 0)


SLURM_COLUMNS = ["experiment", "state", "epochs", "best val Jaccard", "epoch time", "time left", "job",
                 "Slurm state", "node"]


def slurm_rows(study):
    """The study's rows as status sees them on a cluster: Slurm's job ids, states and nodes on every row."""
    from hpc_unet.manifest import read_manifest
    from hpc_unet.status.state import experiment_states

    rows = experiment_states(study, read_manifest(study), query_slurm=False)
    for i, r in enumerate(rows):
        r["job_id"] = f"12345678_{i}"
        r["slurm_state"] = {"running": "RUNNING", "queued": "PENDING", "lost": "NODE_FAIL"}.get(
            r["state"], "OUT_OF_MEMORY" if r["state"] == "oom" else "COMPLETED")
        r["node"] = "" if r["state"] == "queued" else f"gpu-a40-{i:03d}"
    return rows


@pytest.mark.parametrize("width", [120, 150, 200])
def test_slurm_columns_are_shown_whole_or_named_never_cut(tmp_path, sleeper, width):
    """On a cluster every row has a job, a Slurm state and a node (147 columns in all here): at 120 the
    least needed columns are left out and named; what is shown is whole, at every width."""
    from rich.console import Console

    from hpc_unet.status.render import status_renderable
    from hpc_unet.status.state import summarize

    study, _ = build_study(tmp_path / "s", sleeper)
    rows = slurm_rows(study)
    console = Console(width=width, record=True, force_terminal=False, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(status_renderable(rows, summarize(rows, study)))
    out = console.export_text()
    lines = out.rstrip("\n").splitlines()
    assert max(map(len, lines)) <= width and "…" not in out, out
    header = re.split(r"\s{2,}", next(ln for ln in lines if ln.startswith("experiment")).strip())
    note = [ln for ln in lines if ln.startswith("not shown at")]
    dropped = [c for c in SLURM_COLUMNS if c not in header]
    assert header == [c for c in SLURM_COLUMNS if c in header]
    if width >= 150:
        assert header == SLURM_COLUMNS and not note
    else:
        assert {"experiment", "state", "epochs", "best val Jaccard", "time left"} <= set(header)
        assert note == [f"not shown at {width} columns: {', '.join(dropped)} (a wider terminal or "
                        "`status --json` shows them)"]
    cell = {"job": "job_id", "Slurm state": "slurm_state", "node": "node"}
    for r in rows:
        line = next(ln for ln in lines if ln.startswith(r["exp_id"] + " "))
        for column, key in cell.items():
            if column in header and r[key]:
                assert f" {r[key]}" in line, (column, line)
