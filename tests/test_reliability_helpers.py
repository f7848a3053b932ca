"""Helpers shared by the reliability tests (no tests here, no TensorFlow)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from conftest import REPO, cli

from hpc_unet.manifest import get_row
from hpc_unet.results.shards import write_shard
from hpc_unet.study import Study

SMOKE = REPO / "manifests" / "smoke.toml"


def make_study(root: Path, *sets: str, grid: Path = SMOKE) -> Study:
    """``hpc-unet manifest`` as a user runs it; ``sets`` are ``table.key=value`` overrides."""
    args = ["manifest", "--grid", grid, "--study", root, "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert cli(*args) == 0
    return Study.at(root)


def fake_shard(study: Study, exp_id: str, attempt: int, status: str = "completed", tag: str = "0000abcd",
               finished_at: str = "2025-01-01T00:00:00+0000", epochs: int = 3, best: float | None = None,
               row: dict[str, Any] | None = None) -> str:
    """Write a result shard (history + summary) like a finished attempt; returns its attempt_id."""
    row = row if row is not None else get_row(study, exp_id)
    attempt_id = f"{exp_id}.a{attempt:03d}.{tag}"
    score = best if best is not None else 0.5 + attempt / 100
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.1 / e, "jacard_coef": score * e / epochs,
                "val_jacard_coef": score * e / epochs, "iou": 0.4, "val_iou": 0.4, "dice": 0.5, "val_dice": 0.5,
                "lr": 1e-3, "epoch_seconds": 1.0} for e in range(1, epochs + 1)]
    if status != "completed":
        history = history[:1]
    summary = {**row, "attempt": attempt, "attempt_id": attempt_id, "status": status, "finished_at": finished_at,
               "started_at": finished_at, "best_val_jaccard": score if status == "completed" else math.nan,
               "epochs_run": len(history), "best_epoch": len(history), "restarts": 0, "resumed_from_epoch": 0,
               "error_type": "" if status == "completed" else "RuntimeError",
               "error_message": "" if status == "completed" else f"fabricated {status}",
               "diverged_epoch": 0, "max_rss_bytes": 1, "peak_gpu_bytes": 0, "host": "test", "job_id": "",
               "val_patch_intersection": [1.0, 2.0], "val_patch_union": [2.0, 3.0]}
    write_shard(study, summary, history)
    return attempt_id


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` with (is_dir, size, mtime_ns): equal snapshots mean nothing was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (path.is_dir(), 0 if path.is_dir() else st.st_size, st.st_mtime_ns)
    return out


SMALL = ("grid.learning_rate=[1e-3]", "grid.batch_size=[8]", "grid.architecture=['UNet']", "train.epochs=2")


def one_error_line(capsys, *needles: str) -> str:
    """The one stderr line a refused command printed, containing every needle."""
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hpc-unet "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]
