"""`submit --preflight` through the local executor (no Slurm): the doctor job runs first, in its own
process; a problem it finds (here: the study sets device = "gpu" and this machine has none; submitit's
local executor sets CUDA_VISIBLE_DEVICES itself, so an allocation cannot be mocked through it) stops the
submission with one line and nothing trained, cached or recorded."""

from __future__ import annotations

import pytest
from conftest import REPO, cli


def make_study(root, device: str):
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=1",
               "--set", f"train.device='{device}'", "--set", "data.synth_slices=2") == 0
    return root


@pytest.fixture(autouse=True)
def short_benchmark(monkeypatch):
    monkeypatch.setattr("hpc_unet.dispatch.preflight.BENCH_SECONDS", 0.5)


@pytest.mark.slow
def test_preflight_failure_refuses_to_submit(tmp_path, monkeypatch, capsys):
    root = make_study(tmp_path / "study", "gpu")
    assert cli("submit", "--study", root, "--executor", "local", "--preflight") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "preflight (job" in err and 'a GPU is required (the study sets device = "gpu")' in err
    assert "the array was not submitted" in err
    assert not list((root / "shards").glob("*")) if (root / "shards").exists() else True
    assert not (root / "cache").exists() or not any((root / "cache").iterdir())
    assert not (root / "runs").exists() or not any((root / "runs").iterdir())


@pytest.mark.slow
def test_preflight_success_then_the_study_runs(tmp_path, capsys):
    root = make_study(tmp_path / "study", "cpu")
    assert cli("submit", "--study", root, "--executor", "local", "--preflight") == 0
    out = capsys.readouterr().out
    assert "preflight ok on " in out and "no GPU (not required)" in out
    assert len(list((root / "shards").glob("*.completed.summary.parquet"))) == 1
