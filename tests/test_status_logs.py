"""Logs people look at: history.csv next to the checkpoints as the run goes, an optional TensorBoard log,
and `status --tensorboard` printing the command that opens the study's runs side by side."""

from __future__ import annotations

import csv

import pytest
from conftest import cli, require_module
from test_reliability_helpers import make_study

pytestmark = pytest.mark.slow


def test_history_csv_and_tensorboard_log_as_the_run_goes(tmp_path, capsys):
    require_module("tensorboard")
    root = tmp_path / "study"
    study = make_study(root, "grid.learning_rate=[1e-3]", "grid.batch_size=[8]", "grid.architecture=['UNet']",
                       "train.epochs=2", "train.tensorboard=true")
    capsys.readouterr()
    assert cli("status", "--study", root, "--tensorboard") == 2  # nothing logged yet: says how to turn it on
    assert "tensorboard = true" in capsys.readouterr().err
    exp_id = "unet-lr1e-03-bs8-s0"
    assert cli("train", "--study", root, "--experiment", exp_id) == 0
    run = study.run_dir(exp_id)
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_jacard_coef"]) <= 1 and float(r["epoch_seconds"]) > 0 for r in rows)
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}
    capsys.readouterr()
    assert cli("status", "--study", root, "--tensorboard") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"tensorboard --logdir {study.runs_dir}") and "1 runs with logs" in out
