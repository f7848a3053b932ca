"""predict shows progress in tiles (issue 20: an 8000 x 8000 image ran 404 s with no sign of life).
A tiny model trained for one epoch (real TensorFlow on CPU); the image is small but the model's 32-pixel
tiles with 50 % overlap make many tiles, so the progress lines are those of a large image."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_reliability_helpers import make_study

from hpc_unet.manifest import read_manifest


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress") / "s"
    study = make_study(root, "grid.learning_rate=[1e-3]", "grid.batch_size=[16]", "grid.architecture=['UNet']",
                       "train.epochs=1", "data.synth_slices=4")
    exp = read_manifest(study)["exp_id"][0]
    from conftest import cli

    assert cli("train", "--study", study.root, "--experiment", exp) == 0
    return study.run_dir(exp) / "model" / "best.keras"


def _tiles_per_axis(length: int, patch: int) -> int:
    """Windows 50 % apart, first at 0, last flush with the edge (docs/predict.md), counted by hand."""
    return 1 if length <= patch else math.ceil((length - patch) / (patch / 2)) + 1


def _predict(model, tmp_path, *extra):
    image = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 136), dtype=np.uint8)).save(image)
    return subprocess.run([sys.executable, "-m", "hpc_unet.cli", "predict", "--model", str(model), "--images",
                           str(image), "--out", str(tmp_path / "out"), "--batch-size", "4", *extra],
                          capture_output=True, text=True, timeout=300)


def test_predict_reports_tiles_done_of_total_with_an_eta(model, tmp_path):
    proc = _predict(model, tmp_path)
    assert proc.returncode == 0, proc.stderr
    total = _tiles_per_axis(200, 32) * _tiles_per_axis(136, 32)  # 12 x 8 = 96 tiles in 24 batches of 4
    assert total == 96
    lines = [m for m in (re.search(r"predict: (\d+)/(\d+) tiles \((\d+)%\)", x) for x in proc.stderr.splitlines())
             if m]
    assert len(lines) >= 2, proc.stderr  # the first batch, then (throttled) the last
    done = [int(m[1]) for m in lines]
    assert all(int(m[2]) == total for m in lines) and done == sorted(done) and done[-1] == total
    assert done[0] == 4  # the first line comes after the first batch
    assert len(lines) <= 24 and "ETA" in proc.stderr


def test_predict_quiet_prints_no_progress(model, tmp_path):
    proc = _predict(model, tmp_path, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "tiles (" not in proc.stderr
