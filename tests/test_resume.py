"""Exact resume: a run killed (SIGKILL) after epoch k and started again ends exactly like an
uninterrupted run: same per-epoch history, same early-stopping epoch, bit-identical final weights.
Real TensorFlow training on CPU, in subprocesses, like a requeued array task."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli

EXP = "unet-lr1e-04-bs8-s0"
METRICS = ["epoch", "loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou", "lr"]


def make_study(root: Path) -> Path:
    # lr 1e-4 first loses soft Jaccard (it learns the background), so with patience 1/2 both
    # ReduceLROnPlateau and EarlyStopping act within the first epochs
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[1e-4]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=8",
               "--set", "train.early_stopping_patience=2", "--set", "train.reduce_lr_patience=1") == 0
    return root


def train(root: Path, fault: str | None = None, state: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HPC_UNET_THREADS="1")
    env.pop("HPC_UNET_FAULT", None)
    if fault:
        env["HPC_UNET_FAULT"] = fault
        env["HPC_UNET_FAULT_STATE"] = str(state)
    return subprocess.run([sys.executable, "-m", "hpc_unet.cli", "train", "--study", str(root), "--experiment", EXP],
                          env=env, capture_output=True, text=True, timeout=600)


def outcome(root: Path) -> tuple[pd.DataFrame, pd.Series, list[np.ndarray]]:
    import keras

    shards = sorted((root / "shards").glob("*.summary.parquet"))
    assert len(shards) == 1, shards
    summary = pd.read_parquet(shards[0]).iloc[0]
    history = pd.read_parquet(str(shards[0]).replace(".completed.summary", ".history"))
    model = keras.models.load_model(root / "runs" / EXP / "model" / "best.keras", safe_mode=True)
    return history, summary, model.get_weights()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("ref") / "study")
    proc = train(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return outcome(root)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["epoch-end@2", "mid-epoch@20", "checkpoint-write@3", "after-shard"])
def test_killed_run_resumes_exactly(tmp_path, reference, fault):
    root = make_study(tmp_path / "study")
    killed = train(root, f"{fault}:kill:1", tmp_path / "fault-state")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train(root, f"{fault}:kill:1", tmp_path / "fault-state")  # the fault fired once already
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history, summary, weights = outcome(root)
    ref_history, ref_summary, ref_weights = reference
    pd.testing.assert_frame_equal(history[METRICS], ref_history[METRICS])
    assert summary["epochs_run"] == ref_summary["epochs_run"] and summary["stopped_early"] == ref_summary["stopped_early"]
    assert summary["best_epoch"] == ref_summary["best_epoch"]
    for a, b in zip(weights, ref_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    if fault != "after-shard":
        assert summary["restarts"] == 1
        assert summary["resumed_from_epoch"] >= 1


@pytest.mark.slow
def test_reference_run_exercises_the_callbacks(reference):
    history, summary, _ = reference
    assert summary["stopped_early"], "the reference should stop early so resume must restore EarlyStopping"
    assert history["lr"].nunique() > 1, "ReduceLROnPlateau should have reduced the lr"
