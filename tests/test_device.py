"""The ``device`` setting and failing fast when an allocated GPU is unusable.

This machine has no GPU. The tests mock only the *allocation* (``CUDA_VISIBLE_DEVICES=0``, what Slurm
sets for a GRES): TensorFlow really starts, really looks for a GPU and really finds none, so the cause
line carries its real loader messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, cli

from hpc_unet.train.device import allocated_gpus, loader_summary


@pytest.mark.parametrize("env, spec, expected", [
    ({}, None, ""),
    ({"CUDA_VISIBLE_DEVICES": "0"}, None, "CUDA_VISIBLE_DEVICES=0"),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, None, ""),
    ({"CUDA_VISIBLE_DEVICES": ""}, None, ""),
    ({"SLURM_JOB_GPUS": "NoDevFiles"}, None, ""),
    ({"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, None, "SLURM_JOB_GPUS=2,3"),
    ({}, {"gpu_type": "a40"}, ""),  # a spec's GPU request counts only inside a Slurm job
    ({"SLURM_JOB_ID": "7"}, {"gpu_type": "a40"}, "[slurm] gpu_type = 'a40'"),
    ({"SLURM_JOB_ID": "7"}, {"gpus_per_task": 2}, "[slurm] gpus_per_task = 2"),
    ({"SLURM_JOB_ID": "7"}, {}, ""),
])
def test_allocated_gpus(env, spec, expected):
    assert allocated_gpus(env, spec) == expected


def test_loader_summary_keeps_loader_lines_on_one_line():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1 port.cc:153] oneDNN custom operations are on.\n"
            "I0000 00:00:1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
            "W0000 00:00:1 gpu_device.cc:2365] Cannot dlopen some GPU libraries.\n")
    assert loader_summary(text) == ("Could not find cuda drivers on your machine, GPU will not be used. | "
                                    "Cannot dlopen some GPU libraries.")
    assert loader_summary("") == "nothing (no loader messages)"


def make_study(root: Path, device: str) -> Path:
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=1",
               "--set", f"train.device='{device}'", "--set", "data.synth_slices=2") == 0
    return root


def train(root: Path, exp: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc_unet.cli", "train", "--study", str(root), "--experiment", exp],
                          env={**os.environ, "HPC_UNET_THREADS": "1", **env}, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_allocated_gpu_that_tensorflow_cannot_see_fails_fast(tmp_path, capsys):
    root = make_study(tmp_path / "study", "auto")
    exp = pd.read_parquet(root / "manifest.parquet")["exp_id"].iloc[0]
    proc = train(root, exp, CUDA_VISIBLE_DEVICES="0")
    assert proc.returncode != 0
    shards = list((root / "shards").glob("*.failed.summary.parquet"))
    assert len(shards) == 1, proc.stderr[-2000:]
    row = pd.read_parquet(shards[0]).iloc[0]
    assert row["error_type"] == "GPUUnavailable"
    cause = row["error_message"]
    assert "\n" not in cause
    assert "a GPU is required (CUDA_VISIBLE_DEVICES=0)" in cause and "sees none; TensorFlow said: " in cause
    assert "nothing (no loader messages)" not in cause  # TensorFlow's own words, not silenced
    assert 'device = "cpu"' in cause and "hpc-unet doctor" in cause
    # before any data was loaded or an epoch trained
    assert not (root / "cache").exists() or not any((root / "cache").iterdir())
    assert row["epochs_run"] == 0 and not (root / "runs" / exp / "checkpoint").exists()
    capsys.readouterr()
    assert cli("status", "--study", root, "--json") == 0
    status = json.loads(capsys.readouterr().out)
    rows = status["experiments"]
    assert rows[0]["state"] == "failed" and "a GPU is required (CUDA_VISIBLE_DEVICES=0)" in rows[0]["error"]
    assert cli("status", "--study", root) == 0
    assert "a GPU is required (CUDA_VISIBLE_DEVICES=0)" in capsys.readouterr().out.replace("\n", " ")


@pytest.mark.slow
def test_device_cpu_hides_the_allocated_gpu_and_trains(tmp_path):
    root = make_study(tmp_path / "study", "cpu")
    exp = pd.read_parquet(root / "manifest.parquet")["exp_id"].iloc[0]
    proc = train(root, exp, CUDA_VISIBLE_DEVICES="0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_parquet(next((root / "shards").glob("*.completed.summary.parquet"))).iloc[0]
    assert row["device"] == "CPU" and row["epochs_run"] == 1
    assert row["device_setting"] == "cpu"  # the setting survives beside the device used
