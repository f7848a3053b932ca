"""`hpc-unet doctor`: on this GPU-less machine it reports no GPU and the CPU benchmark; an allocated GPU
that TensorFlow cannot see, unreadable data and a Slurm that does not answer are problems (exit 1).
Only the GPU allocation is mocked (CUDA_VISIBLE_DEVICES=0); TensorFlow really looks and finds none."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, cli

from hpc_unet.node_checks import slurm_check


def doctor(*args: str, **env: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", "doctor", "--json", "--bench-seconds", "1",
                           "--no-slurm", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HPC_UNET_THREADS": "1", **env})
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.slow
def test_doctor_json_reports_no_gpu_and_the_cpu_benchmark(tmp_path):
    code, report = doctor(CUDA_VISIBLE_DEVICES="")
    assert code == 0, report["problems"]
    assert report["gpus"]["count"] == 0 and report["gpus"]["required"] == ""
    assert report["gpus"]["tensorflow_said"]  # TensorFlow's own loader words, e.g. no CUDA driver
    assert report["versions"]["tensorflow"] == "2.21.0" and report["versions"]["python"]
    bench = report["benchmark"]
    assert bench["device"] == "CPU" and bench["float32"]["tflops"] > 0 and bench["float32"]["runs"] >= 4
    assert "bfloat16" in bench  # measured, or the reason it is unavailable
    assert report["problems"] == []


@pytest.mark.slow
def test_doctor_fails_when_an_allocated_gpu_is_unusable_and_data_is_missing(tmp_path):
    study = tmp_path / "study"
    images = tmp_path / "images.tif"
    images.write_bytes(b"x")
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "data.kind='tiff'",
               "--set", f"data.images='{images}'", "--set", f"data.masks='{tmp_path / 'missing.tif'}'",
               "--set", "train.device='auto'") == 0
    code, report = doctor("--study", str(study), "--bench-seconds", "0", CUDA_VISIBLE_DEVICES="0")
    assert code == 1
    assert report["study"]["unreadable"] == [str(tmp_path / "missing.tif")] and report["study"]["writable"]
    problems = " ".join(report["problems"])
    assert "a GPU is required (CUDA_VISIBLE_DEVICES=0)" in problems and "missing.tif" in problems
    assert "benchmark" not in report


def test_slurm_check_reports_a_silent_or_failing_controller(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    sinfo = fake / "sinfo"
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    sinfo.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\nexit 1\n")
    sinfo.chmod(0o755)
    got = slurm_check()
    assert got["state"] == "no answer" and "Unable to contact slurm controller" in got["problem"]
    sinfo.write_text("#!/bin/sh\nsleep 5\n")
    got = slurm_check(timeout=0.5)
    assert got["state"] == "no answer" and "did not answer" in got["problem"]
    sinfo.write_text("#!/bin/sh\necho 'a40* up 2 idle'\n")
    assert slurm_check() == {"state": "answers", "partitions": ["a40* up 2 idle"]}
