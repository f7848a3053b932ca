"""Shared fixtures. TensorFlow-free unless a test asks for training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# submitit configures logging when first imported (logging.config.dictConfig), which closes every handler
# already installed; once TensorFlow is loaded that includes absl's, which closes its stream unless that
# stream is the current sys.stderr. Under pytest the stream is a capture buffer, and the first test to
# import submitit after one that imported TensorFlow killed the session ("I/O operation on closed file";
# seen with test_slurm_parsing's sbatch test in random order). Importing it here, first, makes the order
# irrelevant.
import submitit  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HPC_UNET_THREADS", "1")


@pytest.fixture
def smoke_spec(tmp_path: Path) -> Path:
    """A copy of manifests/smoke.toml the test may edit."""
    dst = tmp_path / "smoke.toml"
    shutil.copy(REPO / "manifests" / "smoke.toml", dst)
    return dst


def unavailable(reason: str) -> None:
    """Skip a test whose component (tensorboard, Slurm, Chromium) is missing here; fail it under CI=true,
    where every component is installed on purpose and a skip would hide a test that never ran."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_module(name: str):
    """``pytest.importorskip`` that fails under CI=true (see ``unavailable``)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} is not installed ({exc}); pip install -e '.[test]'")


def cli(*args: str) -> int:
    from hpc_unet.cli import main

    return main([str(a) for a in args])


@pytest.fixture
def tiny_study(tmp_path: Path):
    """A study of 2 experiments on tiny synthetic data (2 epochs): fast enough to train in a test."""
    from hpc_unet.study import Study

    root = tmp_path / "study"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet','Attention_ResUNet']", "--set", "train.epochs=2") == 0
    return Study.at(root)
