"""The epoch-end checkpoint bundle: everything needed to continue a run exactly.

A bundle is a directory ``checkpoint/eNNNN`` (NNNN = epochs completed) holding ``model.npz`` (all model
weights), ``optimizer.npz`` (all optimizer variables: iterations, learning rate, Adam moments),
``best.npz`` (the best weights so far) and ``state.json`` (history, callback state, data order seed),
written last with the size of every file. It is built in a temporary directory and renamed into place,
so a bundle either exists whole or not at all. The newest bundle and the one before it are kept: if the
newest cannot be read (truncated, corrupted), loading falls back to the previous one with a warning.
Arrays are stored in npz (zip) members whose CRC32 is checked on read. No TensorFlow here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.study import _fsync_dir, fault_point

BUNDLE_VERSION = 1
KEEP = 2


@dataclass
class Bundle:
    epoch: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    best: list[np.ndarray] | None
    state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, *arrays)
        fh.flush()
        os.fsync(fh.fileno())


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [np.array(data[f"arr_{i}"]) for i in range(len(data.files))]


def save_bundle(directory: Path, bundle: Bundle) -> Path:
    """Write a bundle atomically and prune all but the newest KEEP bundles."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"e{bundle.epoch:04d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".e{bundle.epoch:04d}.", dir=directory))
    try:
        _save_arrays(tmp / "model.npz", bundle.model)
        fault_point("checkpoint-write")
        _save_arrays(tmp / "optimizer.npz", bundle.optimizer)
        files = ["model.npz", "optimizer.npz"]
        if bundle.best is not None:
            _save_arrays(tmp / "best.npz", bundle.best)
            files.append("best.npz")
        state = {
            "bundle_version": BUNDLE_VERSION,
            "epoch": bundle.epoch,
            "files": {name: (tmp / name).stat().st_size for name in files},
            **bundle.state,
        }
        with open(tmp / "state.json", "w") as fh:
            json.dump(state, fh, default=float)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in bundles(directory)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def bundles(directory: Path) -> list[Path]:
    """Bundle directories, newest first (temporary ones excluded)."""
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith("e") and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]), reverse=True)


def read_bundle(path: Path) -> Bundle:
    state = json.loads((path / "state.json").read_text())
    if state.get("bundle_version") != BUNDLE_VERSION:
        raise ValueError(f"bundle version {state.get('bundle_version')} is not {BUNDLE_VERSION}")
    for name, size in state["files"].items():
        actual = (path / name).stat().st_size
        if actual != size:
            raise ValueError(f"{name} has {actual} bytes, expected {size}")
    model = _load_arrays(path / "model.npz")
    optimizer = _load_arrays(path / "optimizer.npz")
    best = _load_arrays(path / "best.npz") if "best.npz" in state["files"] else None
    return Bundle(epoch=int(state["epoch"]), model=model, optimizer=optimizer, best=best, state=state, path=path)


def load_latest(directory: Path) -> Bundle | None:
    """The newest readable bundle; a broken newer one is skipped with a warning (and removed)."""
    for path in bundles(directory):
        try:
            return read_bundle(path)
        except Exception as exc:  # any damage: truncated zip, bad JSON, missing file
            warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                          "falling back to the previous one", stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
    return None


def clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
