"""augment = "d4": the 8 symmetries, drawn from (seed, epoch), identical on reruns, and a run killed mid-epoch
with augmentation on resumes bit-identically (real TensorFlow training on CPU, in subprocesses)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli
from test_resume import train

EXP = "unet-lr5e-03-bs8-s0"
METRICS = ["epoch", "loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou", "lr"]


def _batches(augment: str, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    from hpc_unet.train.pipeline import train_dataset

    rng = np.random.default_rng(0)
    x = rng.random((10, 8, 8, 1)).astype(np.float32)
    y = (x > 0.5).astype(np.float32)
    return [(a.numpy(), b.numpy()) for a, b in train_dataset(x, y, 4, seed, 3, 0, augment=augment)]


def test_d4_is_seeded_and_moves_images_and_masks_together():
    from hpc_unet.train.pipeline import epoch_transforms

    first, again, plain = _batches("d4"), _batches("d4"), _batches("none")
    assert len(first) == len(plain) == 9  # 3 epochs of ceil(10 / 4) batches
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert np.array_equal(x, x2) and np.array_equal(y, y2)
        assert np.array_equal(y, (x > 0.5).astype(np.float32))  # the mask got the same symmetry as its image
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, plain, strict=True))
    for (x, _), (p, _) in zip(first, plain, strict=True):  # same samples, each one of its 8 symmetries
        for xi, pi in zip(x[..., 0], p[..., 0], strict=True):
            variants = [np.rot90(v, k) for v in (pi, pi[:, ::-1]) for k in range(4)]
            assert any(np.array_equal(xi, v) for v in variants)
    codes = epoch_transforms(1000, 3, 2)
    assert set(np.unique(codes)) == set(range(8)) and not np.array_equal(codes[0], codes[1])


def _make_study(root: Path) -> Path:
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[5e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=4", "--set", "train.augment='d4'") == 0
    return root


def _train(root: Path, fault: str | None = None, state: Path | None = None) -> subprocess.CompletedProcess:
    """``hpc-unet train`` in a subprocess, as tests/test_resume.py runs it (optionally with a fault)."""
    return train(root, fault, state, exp=EXP)


def _outcome(root: Path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    import keras

    shards = sorted((root / "shards").glob("*.completed.summary.parquet"))
    assert len(shards) == 1, shards
    history = pd.read_parquet(str(shards[0]).replace(".completed.summary", ".history"))
    model = keras.models.load_model(root / "runs" / EXP / "model" / "best.keras", safe_mode=True)
    return history, model.get_weights()


@pytest.mark.slow
def test_augmented_run_killed_mid_epoch_resumes_bit_identically(tmp_path):
    ref_root = _make_study(tmp_path / "ref")
    proc = _train(ref_root)
    assert proc.returncode == 0, proc.stderr[-2000:]

    root = _make_study(tmp_path / "killed")
    killed = _train(root, "mid-epoch@20:kill:1", tmp_path / "fault-state")  # batch 20 is in epoch 2
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = _train(root, "mid-epoch@20:kill:1", tmp_path / "fault-state")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history, weights = _outcome(root)
    ref_history, ref_weights = _outcome(ref_root)
    pd.testing.assert_frame_equal(history[METRICS], ref_history[METRICS], check_exact=True)
    for a, b in zip(weights, ref_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    summary = pd.read_parquet(next((root / "shards").glob("*.completed.summary.parquet"))).iloc[0]
    assert summary["restarts"] == 1 and summary["resumed_from_epoch"] >= 1 and summary["augment"] == "d4"
