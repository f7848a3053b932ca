"""A failure that cannot be recorded normally (issue 20): a full disk under the failure shard, and a
checkpoint write that fails in the background. Real TensorFlow training on CPU in subprocesses, as an
array task runs; the full disk is a real ENOSPC from a small tmpfs mounted for the test (root only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from conftest import unavailable
from test_reliability_helpers import make_study

from hpc_unet.manifest import read_manifest

TINY = ("grid.learning_rate=[1e-3]", "grid.batch_size=[16]", "grid.architecture=['UNet']", "train.epochs=3",
        "train.early_stopping=false", "data.synth_slices=4")


def _run(*args: str, fault: str | None = None, state: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HPC_UNET_FAULT"}
    if fault:
        env["HPC_UNET_FAULT"] = fault
        env["HPC_UNET_FAULT_STATE"] = str(state)
    return subprocess.run([sys.executable, "-m", "hpc_unet.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _status_row(root: Path, exp: str) -> dict:
    out = _run("status", "--study", str(root), "--json")
    assert out.returncode == 0, out.stderr
    return next(r for r in json.loads(out.stdout)["experiments"] if r["exp_id"] == exp)


def test_a_checkpoint_write_error_surfaces_in_its_own_epoch(tmp_path):
    """The bundle of epoch 2 fails on the background writer (injected at the checkpoint-write point); the
    failure is recorded with 2 epochs: shard, progress.json and status agree (it said 3 in the shard)."""
    study = make_study(tmp_path / "s", *TINY)
    exp = read_manifest(study)["exp_id"][0]
    proc = _run("train", "--study", str(study.root), "--experiment", exp, fault="checkpoint-write@2:raise",
                state=tmp_path / "fault")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    shard = pd.read_parquet(next(study.shards_dir.glob("*.failed.summary.parquet"))).iloc[0]
    assert "injected fault at checkpoint-write" in shard["error_message"]
    progress = json.loads(study.progress_file(exp).read_text())
    assert progress["state"] == "failed"
    assert shard["epochs_run"] == progress["epoch"] == 2
    row = _status_row(study.root, exp)
    assert row["state"] == "failed" and row["epoch"] == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs: the study lives on it, so filling it gives the training a real ENOSPC (root, as the
    CI that starts Slurm runs; elsewhere the test skips, and fails under CI=true)."""
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "none", str(mount)], capture_output=True)
    if made.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / f"filler-{uuid.uuid4().hex}", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_a_failure_on_a_full_disk_is_recorded_in_progress_and_shown_by_status(tmp_path, small_disk):
    study = make_study(small_disk / "s", *TINY)
    exp = read_manifest(study)["exp_id"][0]
    assert _run("data", "prepare", "--study", str(study.root)).returncode == 0
    _fill(small_disk, leave=12 * 1024)  # a checkpoint bundle and a shard need more; progress.json fits
    proc = _run("train", "--study", str(study.root), "--experiment", exp)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "No space left on device" in out
    assert "could not be written" in out and "its shard is in" not in out
    assert not list(study.shards_dir.glob("*.summary.parquet")) if study.shards_dir.exists() else True
    progress = json.loads(study.progress_file(exp).read_text())
    assert progress["state"] == "failed" and "No space left on device" in progress["error"]
    row = _status_row(study.root, exp)
    assert row["state"] == "failed" and "No space left on device" in row["error"]
