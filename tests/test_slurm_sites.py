"""Slurm sites configured unlike the project's cluster, on the real local cluster (slurm/start.sh):

- a site with ``JobRequeue=0`` and no accounting (no slurmdbd: sacct has nothing): a short sibling of the
  preemption storm (6 experiments, ``--array-parallelism 2``) through a preemption, a node failure (the
  node set ``down`` mid-array, then resumed), a ``slurmctld`` restart and an ``scontrol requeue``: every
  experiment completes exactly once, the interrupted ones resume from their checkpoints, and an interrupted
  history equals an uninterrupted run. Without ``--requeue`` in the script such a site cancels the
  preempted and node-failed tasks (see the measurement in docs/reliability.md);
- a USR2 that reaches a task before Python has installed submitit's handler: requeued, not FAILED;
- ``submit --then-analyze``: the analysis job waits for every array (MaxArraySize chunks) and leaves the
  report; ``status`` shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_slurm_integration import (
    SLURM_DIR,
    TINY,
    _sh,
    hpc,
    make_study,
    ok,
    shard_history,
    slurm_cluster,  # noqa: F401 (the fixture; requested by name below)
    status,
    stop_controller,
    wait_left_queue,
    wait_states,
)
from test_storm import HISTORY_VALUES, PARALLELISM, STORM, Storm

from hpc_unet.results.shards import parse_summary_name

pytestmark = [pytest.mark.slurm]

# 6 experiments: 3 architectures x 2 learning rates, batch 8
# 16 epochs: a task hit at epoch 1-2 still has > KillWait (5 s) of training left on a quiet machine, so
# the node failure interrupts it rather than letting it finish while Slurm waits to kill it
SIX = [*STORM, "grid.learning_rate=[1e-3,5e-3]", "grid.batch_size=[8]", "train.epochs=16"]
SITE = {"HPC_UNET_SLURM_JOB_REQUEUE": "0", "HPC_UNET_SLURM_ACCOUNTING": "0"}


def start(env: dict[str, str]) -> str:
    proc = _sh("env", *[f"{k}={v}" for k, v in env.items()], "bash", str(SLURM_DIR / "start.sh"), timeout=180)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def other_site(slurm_cluster: dict) -> Iterator[dict[str, str]]:  # noqa: F811 (the fixture above)
    """The cluster reconfigured as a site with JobRequeue=0 and no accounting; back to the defaults after."""
    line = start(SITE)
    config = _sh("scontrol", "show", "config").stdout
    assert any(ln.split() == ["JobRequeue", "=", "0"] for ln in config.splitlines()), line
    assert "accounting_storage/none" in config
    assert _sh("sacct", "-n", "-X").returncode != 0 or not _sh("sacct", "-n", "-X").stdout.strip()
    yield SITE
    start({})


def node_name() -> str:
    return _sh("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]


def node_failure(s: Storm, label: str) -> None:
    """Every training task loses its node: down (Slurm ends the jobs with NODE_FAIL), then resume."""
    s.wait_target(min_epoch=1)
    targets = s.mid_training(0)
    node = node_name()
    down = _sh("scontrol", "update", f"nodename={node}", "state=down", "reason=hpc-unet-test")
    assert down.returncode == 0, down.stderr
    s.log(f"{label}: node {node} set down, hitting {sorted(e for e, _ in targets)}")
    s.hit(targets, "node failure")
    states = _sh("squeue", "-h", "-r", "-t", "all", "-o", "%K|%T|%r").stdout.splitlines()
    s.log(f"{label}: squeue after the node failure: {states}")
    resume = _sh("scontrol", "update", f"nodename={node}", "state=resume")
    s.log(f"{label}: resume -> {resume.returncode} {resume.stderr.strip()} "
          f"(ReturnToService=2 may have returned it already); node {_sh('sinfo', '-h', '-o', '%T').stdout.split()}")


def controller_restart(s: Storm, label: str, env: dict[str, str]) -> None:
    """slurmctld stopped while tasks train, status asked during the outage, then started again."""
    s.wait_target(min_epoch=1)
    stop_controller()
    s.log(f"{label}: slurmctld stopped")
    try:
        time.sleep(5)
        s.status("slurmctld down")  # asserts: nothing lost without evidence
    finally:
        s.log(f"{label}: {start(env)}")


@pytest.mark.slow
def test_sibling_storm_on_a_site_with_jobrequeue_0_and_no_accounting(other_site: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPC_UNET_THREADS", "1")  # the same numerics for the Slurm tasks and the reference
    s = Storm(make_study(tmp_path / "site", SIX), tmp_path / "report.json")
    n = len(s.all_exps())
    assert n == 6
    out = ok(hpc("submit", "--study", s.root, "--partition", "a40", "--array-parallelism", str(PARALLELISM)))
    s.log(f"submitted {n} experiments: {out.strip().splitlines()[-1]}")
    s.urgent("event 1 (preemption)")
    node_failure(s, "event 2 (node failure)")
    controller_restart(s, "event 3 (slurmctld restart)", other_site)
    # by now every task may have started (resumed ones start past epoch 0): any early epoch will do,
    # 16 epochs leave more than KillWait of training after it
    s.requeue("event 4 (scontrol requeue)", max_epoch=8)
    final = s.wait_done(timeout=900)
    seconds = time.monotonic() - s.t0

    summaries = sorted(p.name for p in s.study.shards_dir.glob("*.summary.parquet"))
    per_exp = pd.Series([parse_summary_name(name)[0] for name in summaries]).value_counts()
    assert len(summaries) == n and all(name.endswith(".completed.summary.parquet") for name in summaries), summaries
    assert set(per_exp.index) == set(s.all_exps()) and set(per_exp) == {1}  # each exactly once
    logs = "".join(p.read_text(errors="replace") for p in (s.root / "jobs" / "slurm").glob("*_log.err"))
    assert logs.count("is being trained by") == 0
    assert "Requested operation is presently disabled" not in logs  # scontrol requeue allowed (--requeue)
    results = pd.concat([pd.read_parquet(p) for p in s.study.shards_dir.glob("*.summary.parquet")]).set_index("exp_id")
    for exp, hits in s.interrupted.items():
        assert results.loc[exp, "restarts"] >= hits, (exp, hits, results.loc[exp, "restarts"])
        assert final[exp]["restarts"] == results.loc[exp, "restarts"]
    assert {r["state"] for r in final.values()} == {"completed"}
    assert s.kinds.get("node failure") and s.kinds.get("urgent"), s.kinds
    assert not s.collateral and not s.lost_seen, (s.collateral, s.lost_seen)  # nothing needed resubmitting
    resumed = results[results["resumed_from_epoch"] > 0]
    failed_node = sorted(e for e in s.kinds["node failure"] if e in resumed.index)
    assert failed_node, ("no node-failed task resumed from a checkpoint", s.kinds, dict(results["resumed_from_epoch"]))
    # the history of a task that lost its node equals an uninterrupted run
    pick = failed_node[0]
    reference = make_study(tmp_path / "reference", SIX)
    ok(hpc("submit", "--study", reference, "--executor", "local", "--only", pick, timeout=600))
    pd.testing.assert_frame_equal(shard_history(s.root, pick)[HISTORY_VALUES],
                                  shard_history(reference, pick)[HISTORY_VALUES], check_exact=True)
    figures = {"seconds": round(seconds, 1), "events": s.events, "status_lines": s.status_lines,
               "interrupted": s.interrupted, "kinds": {k: sorted(v) for k, v in s.kinds.items()},
               "restarts": {e: int(v) for e, v in results["restarts"].items()},
               "resumed_from_epoch": {e: int(v) for e, v in resumed["resumed_from_epoch"].items()},
               "completed_shards": len(summaries), "compared_to_uninterrupted": pick}
    print(json.dumps(figures, indent=2))
    if os.environ.get("HPC_UNET_STORM_REPORT"):
        Path(os.environ["HPC_UNET_STORM_REPORT"]).write_text(json.dumps(figures, indent=2))


SLOW_START = """
import os, time
if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and os.environ.get("SLURM_JOB_ID"):
    with open(os.environ["HPC_UNET_TEST_STARTS"], "a") as fh:
        fh.write((os.environ.get("SLURM_RESTART_COUNT") or "0") + "\\n")
    if not os.environ.get("SLURM_RESTART_COUNT"):
        time.sleep(8)   # the first start: Python is still starting when USR2 comes
"""


def test_usr2_before_python_handles_it_requeues_the_task(slurm_cluster: dict, tmp_path: Path,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """USR2 (as on preemption) while Python starts: before, the task died of the signal (FAILED, exit 12);
    now the step wrapper records it and the task hands it to submitit, which requeues; the rerun completes."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    starts = tmp_path / "starts.txt"
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("HPC_UNET_TEST_STARTS", str(starts))
    study = make_study(tmp_path / "early", [*TINY, 'grid.architecture=["UNet"]', "grid.learning_rate=[1e-3]",
                                            "grid.batch_size=[8]"])
    out = ok(hpc("submit", "--study", study, "--partition", "a40"))
    assert "submitted 1 experiments" in out
    job = json.loads(next((study / "submissions").glob("*.json")).read_text())["tasks"][0]["job_id"]
    deadline = time.monotonic() + 120
    while not starts.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert starts.exists(), _sh("squeue", "-t", "all").stdout
    time.sleep(1)
    assert _sh("scancel", "--signal=USR2", job).returncode == 0
    wait_left_queue([job], timeout=300)
    rows = status(study)
    assert [r["state"] for r in rows.values()] == ["completed"], rows
    assert starts.read_text().split() == ["0", "1"]  # started, requeued once, started again
    log = "".join(p.read_text(errors="replace") for p in (study / "jobs" / "slurm").glob(f"{job}_*log.err"))
    assert "USR2 arrived before Python could handle it" in log and "this job is preempted" in log
    assert len(list((study / "shards").glob("*.completed.summary.parquet"))) == 1


def test_then_analyze_waits_for_every_array_and_writes_the_report(slurm_cluster: dict,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    study = make_study(tmp_path / "ta", [*TINY, 'grid.architecture=["UNet"]', "grid.learning_rate=[1e-3,5e-3]",
                                         "grid.batch_size=[8]"])
    out = ok(hpc("submit", "--study", study, "--partition", "a40", "--max-array-size", "1", "--then-analyze"))
    record = json.loads(next((study / "submissions").glob("*.json")).read_text())
    arrays = sorted({t["job_id"].split("_")[0] for t in record["tasks"]}, key=int)
    job = record["analyze_job"]
    assert len(arrays) == 2 and job["after"] == arrays, record  # both MaxArraySize chunks
    assert f"analysis job {job['job_id']} runs collect + analyze after array(s) {', '.join(arrays)}" in out
    deps = _sh("scontrol", "show", "job", job["job_id"]).stdout
    assert f"Dependency=afterany:{arrays[0]}" in deps and f"afterany:{arrays[1]}" in deps, deps
    shown = ok(hpc("status", "--study", study))
    assert f"analysis job {job['job_id']}: PENDING" in shown, shown
    wait_left_queue([t["job_id"] for t in record["tasks"]], timeout=300)
    states = wait_states([job["job_id"]], lambda st: st[job["job_id"]].state in ("COMPLETED", "FAILED"), timeout=300,
                         what="analysis job")
    log = (study / "jobs" / "analyze" / f"{job['job_id']}.out").read_text()
    assert states[job["job_id"]].state == "COMPLETED", log
    assert "2 completed of 2" in log and (study / "analysis" / "report.html").exists(), log
    shown = json.loads(ok(hpc("status", "--study", study, "--json")))["summary"]["analysis_job"]
    assert shown["state"] == "COMPLETED" and shown["report"].endswith("report.html"), shown
    # the analysis started after the last training task ended (its dependency held it)
    ends = [p.stat().st_mtime for p in (study / "shards").glob("*.completed.summary.parquet")]
    assert (study / "analysis" / "report.html").stat().st_mtime > max(ends)


def test_start_sh_switches_configurations(slurm_cluster: dict) -> None:  # noqa: F811
    """The site knobs rewrite the config and restart the Slurm daemons; a bad value is one line."""
    bad = subprocess.run(["env", "HPC_UNET_SLURM_JOB_REQUEUE=2", "bash", str(SLURM_DIR / "start.sh")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "must be 0 or 1" in bad.stderr
    assert "JobRequeue=1" in start({}) and "already running" in start({})
