"""Fault injection end to end, through the CLI as a user runs it: `hpc-unet submit --executor local`,
then `hpc-unet submit` again, then `hpc-unet collect`. Real TensorFlow training on CPU (tiny models, 3
epochs); each task is a submitit subprocess, killed or failed by HPC_UNET_FAULT (see hpc_unet/study.py).

After every interruption the study ends complete and *correct*: the same per-epoch history, best score
and final weights as an uninterrupted run, with one result per experiment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import cli
from test_reliability_helpers import make_study

from hpc_unet.results.shards import shard_index
from hpc_unet.status.state import experiment_states
from hpc_unet.study import Study

pytestmark = pytest.mark.slow

EXP = "unet-lr5e-03-bs8-s0"
ONE = ("grid.learning_rate=[5e-3]", "grid.batch_size=[8]", "grid.architecture=['UNet']", "train.epochs=3")
METRICS = ["epoch", "loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou", "dice", "val_dice", "lr"]
SAME = ["best_val_jaccard", "best_val_iou", "best_epoch", "epochs_run", "stopped_early", "final_loss",
        "final_val_loss"]


def submit(root: Path, fault: str | None = None, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HPC_UNET_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("HPC_UNET_FAULT", None)
    if fault:
        env["HPC_UNET_FAULT"] = fault
        env["HPC_UNET_FAULT_STATE"] = str(root.parent / "fault-state")
    return subprocess.run([sys.executable, "-m", "hpc_unet.cli", "submit", "--study", str(root),
                           "--executor", "local", *flags], env=env, capture_output=True, text=True, timeout=900)


def collected(root: Path, capsys=None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """`hpc-unet collect --json` (the library call where capsys is not available)."""
    if capsys is None:
        from hpc_unet.results.collect import collect

        report = json.loads(json.dumps(collect(Study.at(root)).as_dict()))
    else:
        capsys.readouterr()
        assert cli("collect", "--study", root, "--json") == 0
        report = json.loads(capsys.readouterr().out)
    results = pd.read_parquet(root / "results" / "results.parquet").set_index("exp_id")
    history = pd.read_parquet(root / "results" / "history.parquet")
    return report, results, history


def weights(root: Path, exp_id: str = EXP) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(root / "runs" / exp_id / "model" / "best.keras", safe_mode=True).get_weights()


def states(root: Path) -> dict[str, str]:
    return {s["exp_id"]: s["state"] for s in experiment_states(Study.at(root), query_slurm=False)}


def task_logs(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((root / "jobs").rglob("*.err")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every faulted study must reproduce exactly."""
    root = make_study(tmp_path_factory.mktemp("ref") / "study", *ONE).root
    proc = submit(root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report, results, history = collected(root)
    assert report["completed"] == 1
    return results.loc[EXP], history, weights(root)


def assert_same_as_reference(root: Path, reference, results: pd.DataFrame, history: pd.DataFrame) -> None:
    ref_summary, ref_history, ref_weights = reference
    row = results.loc[EXP]
    assert row["status"] == "completed"
    for key in SAME:
        assert row[key] == ref_summary[key], key
    pd.testing.assert_frame_equal(history[METRICS].reset_index(drop=True), ref_history[METRICS].reset_index(drop=True),
                                  check_exact=True)
    assert history["attempt_id"].nunique() == 1 and history["attempt_id"].iloc[0] == row["attempt_id"]
    for a, b in zip(weights(root), ref_weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fault,resumed_from", [
    ("mid-epoch@20", 1),        # killed in epoch 2 (13 steps per epoch): epoch 1's checkpoint remains
    ("checkpoint-write@3", 2),  # killed while writing epoch 3's checkpoint: epoch 2's remains
    ("shard-between", 3),       # killed after the history shard, before the summary: training was done
    ("after-shard", None),      # killed after the summary shard, before cleaning up: the result stands
])
def test_killed_task_then_plain_resubmit_completes_the_study(tmp_path, capsys, reference, fault, resumed_from):
    root = make_study(tmp_path / "s", *ONE).root
    first = submit(root, f"{fault}:kill:1")
    if resumed_from is None:
        assert first.returncode == 0, first.stdout[-3000:]  # the result was written before the kill
        assert states(root) == {EXP: "completed"}
    else:
        assert first.returncode == 1 and "lost" in first.stdout, first.stdout[-3000:]
        assert states(root) == {EXP: "lost"}
        assert EXP not in shard_index(Study.at(root))
    second = submit(root, f"{fault}:kill:1")  # the fault's budget is spent: a plain resubmission
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    if resumed_from is None:
        assert "nothing to submit" in second.stdout
    assert states(root) == {EXP: "completed"}

    report, results, history = collected(root, capsys)
    assert report["completed"] == 1 and report["missing"] == [] and report["unreadable"] == []
    assert report["duplicates"] == {} and results.loc[EXP, "attempts"] == 1
    assert_same_as_reference(root, reference, results, history)
    if resumed_from is not None:  # the resubmission is attempt 2 and lost at most the interrupted epoch
        assert results.loc[EXP, "attempt"] == 2 and results.loc[EXP, "resumed_from_epoch"] == resumed_from
    if fault == "shard-between":  # attempt 1's orphan history shard is on disk but never collected
        orphans = [p.name for p in (root / "shards").glob(f"{EXP}.a001.*.history.parquet")]
        assert len(orphans) == 1 and not list((root / "shards").glob(f"{EXP}.a001.*.summary.parquet"))


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, reference):
    root = make_study(tmp_path / "s", *ONE).root
    assert submit(root, "epoch-end@2:kill:1").returncode == 1  # killed right after epoch 2's checkpoint
    ckpt = root / "runs" / EXP / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir() if not p.name.startswith(".")) == ["e0001", "e0002"]
    model = ckpt / "e0002" / "model.npz"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # e.g. a disk that lost the tail
    second = submit(root, "epoch-end@2:kill:1")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "falling back to the previous one" in task_logs(root)
    report, results, history = collected(root, capsys)
    assert report["completed"] == 1 and results.loc[EXP, "resumed_from_epoch"] == 1
    assert_same_as_reference(root, reference, results, history)
    assert not ckpt.exists()  # checkpoints are removed once the result is written


BATCHES = ("grid.learning_rate=[1e-3]", "grid.architecture=['UNet']", "train.epochs=2")


def oom_shard(root: Path, exp_id: str) -> pd.Series:
    (path,) = (root / "shards").glob(f"{exp_id}.a001.*.oom.summary.parquet")
    return pd.read_parquet(path).iloc[0]


def test_oom_is_recorded_with_memory_figures_and_the_study_goes_on(tmp_path, capsys):
    root = make_study(tmp_path / "s", *BATCHES, "grid.batch_size=[8, 16]").root
    first = submit(root, "mid-epoch@1:oom:1")  # the first task runs out of memory in its first step
    assert first.returncode == 1, first.stdout[-3000:]
    assert states(root) == {"unet-lr1e-03-bs8-s0": "oom", "unet-lr1e-03-bs16-s0": "completed"}
    shard = oom_shard(root, "unet-lr1e-03-bs8-s0")
    assert shard["status"] == "oom" and shard["error_type"] == "ResourceExhaustedError"  # TensorFlow's own
    assert shard["max_rss_bytes"] > 100 * 2**20 and shard["peak_gpu_bytes"] == 0  # CPU: no GPU peak
    assert shard["device"] == "CPU" and shard["param_count"] > 0 and shard["epochs_run"] == 0
    # default policy "record": an oom is not retried by a plain resubmission
    again = submit(root)
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout[-2000:]
    report, results, _ = collected(root, capsys)
    assert report["completed"] == 1 and report["failed"] == {"unet-lr1e-03-bs8-s0": "oom"}
    assert results.loc["unet-lr1e-03-bs8-s0", "max_rss_bytes"] > 0


def test_oom_policy_skip_larger_batches(tmp_path, capsys):
    root = make_study(tmp_path / "s", *BATCHES, "grid.batch_size=[8, 16, 32]",
                      'policy.on_oom="skip-larger-batches"').root
    first = submit(root, "mid-epoch@1:oom:1")
    assert first.returncode == 1
    assert states(root) == {"unet-lr1e-03-bs8-s0": "oom", "unet-lr1e-03-bs16-s0": "skipped",
                            "unet-lr1e-03-bs32-s0": "skipped"}
    report, results, _ = collected(root, capsys)
    for exp in ("unet-lr1e-03-bs16-s0", "unet-lr1e-03-bs32-s0"):
        assert "unet-lr1e-03-bs8-s0" in results.loc[exp, "error_message"]
        assert results.loc[exp, "epochs_run"] == 0
    retry = submit(root, None, "--retry-failed")  # the oom one reruns (fresh) and fits: no fault this time
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert states(root) == {"unet-lr1e-03-bs8-s0": "completed", "unet-lr1e-03-bs16-s0": "skipped",
                            "unet-lr1e-03-bs32-s0": "skipped"}  # skipped counts as done: not rerun


def test_real_nan_loss_is_recorded_as_diverged(tmp_path, capsys):
    root = make_study(tmp_path / "s", "grid.learning_rate=[10.0]", "grid.batch_size=[8]",
                      "grid.architecture=['UNet']", "train.epochs=3", "train.clipnorm=0").root
    first = submit(root)  # lr 10 (the bound) without clipping: the loss is NaN within the first epoch (checked)
    assert first.returncode == 1
    report, results, history = collected(root, capsys)
    row = results.loc["unet-lr1e+01-bs8-s0"]
    assert row["status"] == "diverged" and row["diverged_epoch"] == 1 and "not finite" in row["error_message"]
    assert row["epochs_run"] == 0 and history.empty
    assert "nothing to submit" in submit(root).stdout  # not rerun without --retry-failed


def test_diverged_run_is_retried_fresh_on_request(tmp_path, capsys, reference):
    root = make_study(tmp_path / "s", *ONE).root
    first = submit(root, "mid-epoch@20:nan:1")  # NaN weights in epoch 2: a real NaN loss follows
    assert first.returncode == 1
    assert states(root) == {EXP: "diverged"}
    assert (root / "runs" / EXP / "checkpoint" / "e0001").is_dir()  # a retry must not resume from this
    assert "nothing to submit" in submit(root).stdout
    retry = submit(root, "mid-epoch@20:nan:1", "--retry-failed")
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    report, results, history = collected(root, capsys)
    a1, a2 = report["duplicates"][EXP]
    assert report["chosen"] == {EXP: a2} and ".a002." in a2 and results.loc[EXP, "attempts"] == 2
    first_row = pd.read_parquet(next((root / "shards").glob(f"{a1}.diverged.summary.parquet"))).iloc[0]
    assert first_row["diverged_epoch"] == 2 and first_row["epochs_run"] == 1
    assert results.loc[EXP, "resumed_from_epoch"] == 0 and results.loc[EXP, "restarts"] == 0
    assert_same_as_reference(root, reference, results, history)
