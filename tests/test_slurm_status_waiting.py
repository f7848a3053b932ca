"""Queued work on the real local cluster (slurm/start.sh) with its only node drained (the state a controller
outage during a step kill leaves behind, docs/reliability.md): `submit` queues the array although
`sbatch --test-only` cannot place it, and still refuses a request no node could run (one line, study
unchanged); `status` says why the task waits (the drain, then a user hold) in Slurm's words with what to do;
once the node is back and the hold released the task trains to completion."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_reliability_helpers import snapshot
from test_slurm_integration import (
    TINY,
    _sh,
    hpc,
    make_study,
    ok,
    slurm_cluster,  # noqa: F401 (the fixture; requested by name below)
    wait_left_queue,
)

pytestmark = [pytest.mark.slurm]

DRAINED = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"


def node() -> str:
    return _sh("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]


def waiting_until(study: Path, reason: str, timeout: float = 60) -> dict:
    """`status --json` once Slurm gives the task ``reason`` (a new job's reason is "None" until the
    scheduler has looked at it)."""
    deadline = time.monotonic() + timeout
    out: dict = {}
    while time.monotonic() < deadline:
        out = json.loads(ok(hpc("status", "--study", study, "--json")))
        if any(w["reason"] == reason for w in out["summary"]["waiting"]):
            return out
        time.sleep(1)
    raise AssertionError(f"status never said the task waits for {reason!r}: {out.get('summary')}\n"
                         f"{_sh('squeue', '-t', 'all', '-o', '%i %T %R').stdout}")


def test_status_says_why_a_task_waits_and_the_task_runs_once_freed(slurm_cluster: dict, tmp_path: Path) -> None:  # noqa: F811
    study = make_study(tmp_path / "w", [*TINY, 'grid.architecture=["UNet"]', "grid.learning_rate=[1e-3]",
                                        "grid.batch_size=[8]"])
    name = node()
    assert _sh("scontrol", "update", f"nodename={name}", "state=drain", "reason=hpc-unet-test").returncode == 0
    try:
        # sbatch --test-only refuses both; the real sbatch queues the one that fits and refuses the other
        before = snapshot(study)
        huge = hpc("submit", "--study", study, "--partition", "a40", "--mem", "100000G")
        lines = huge.stderr.strip().splitlines()
        assert huge.returncode == 2 and len(lines) == 1, huge.stderr
        assert "Requested node configuration is not available" in lines[0] and "nothing was submitted" in lines[0]
        assert {k: v for k, v in snapshot(study).items() if not k.startswith(("cache", "data"))} == \
               {k: v for k, v in before.items() if not k.startswith(("cache", "data"))}
        shown = ok(hpc("submit", "--study", study, "--partition", "a40"))
        assert f"note: nodes of this partition are down or drained ({name} (drained: hpc-unet-test))" in shown, shown
        assert "submitted 1 experiments" in shown, shown
        job = json.loads(next((study / "submissions").glob("*.json")).read_text())["tasks"][0]["job_id"]
        out = waiting_until(study, DRAINED)
        (seen,) = out["summary"]["waiting"]
        assert (seen["reason"], seen["count"], seen["jobs"]) == (DRAINED, 1, [job])
        assert seen["advice"].startswith("their nodes are down, drained, or held by a higher-priority partition: "
                                         "`sinfo -R` lists down and drained nodes"), seen
        assert [r["state"] for r in out["experiments"]] == ["queued"]
        shown = ok(hpc("status", "--study", study))
        assert f"1 queued wait on Slurm: {DRAINED}" in " ".join(shown.split()), shown
        assert _sh("scontrol", "uhold", job).returncode == 0
        out = waiting_until(study, "JobHeldUser")
        assert out["summary"]["waiting"][0]["advice"] == f"held: `scontrol release {job}` lets them start"
    finally:
        _sh("scontrol", "update", f"nodename={name}", "state=resume")
    assert _sh("scontrol", "release", job).returncode == 0
    wait_left_queue([job], timeout=300)
    out = json.loads(ok(hpc("status", "--study", study, "--json")))
    assert [r["state"] for r in out["experiments"]] == ["completed"] and out["summary"]["waiting"] == []
