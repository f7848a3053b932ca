"""The epoch-end checkpoint bundle: everything needed to continue a run exactly.

A bundle is a directory ``checkpoint/eNNNN`` (NNNN = epochs completed) holding ``model.npz`` (every
model variable, ``model.variables``: weights, batch-norm statistics and the Keras ``SeedGenerator`` states
that drive dropout, which ``get_weights()`` leaves out), ``optimizer.npz`` (all optimizer variables:
iterations, learning rate, Adam moments), ``best.npz`` (the best weights so far, as ``get_weights()``) and
``state.json`` (history, callback state, data order seed), written last with the size of every file. It is
built in a temporary directory and renamed into place, so a bundle either exists whole or not at all. The
newest bundle and the one before it are kept: if the newest cannot be read (truncated, corrupted), loading
falls back to the previous one with a warning. Arrays are stored in npz (zip) members whose CRC32 is
checked on read. Version-1 bundles (``model.npz`` = ``get_weights()``) are still read: ``Bundle.variables``
is False for them and the caller restores weights only.

``CheckpointWriter`` writes bundles on a background thread, so training goes on while ~0.5 GB are written
and fsynced: the caller hands over snapshots (tensors are immutable, so a snapshot taken at the epoch end
is unaffected by the next steps' updates), one write runs at a time, and ``close`` waits for the last.
Best weights that did not change since the previous bundle are hard-linked from it instead of rewritten.
No TensorFlow here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.study import _fsync_dir, fault_point

BUNDLE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: model.npz holds get_weights() only (no seed generator state)
KEEP = 2


@dataclass
class Bundle:
    epoch: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    best: list[np.ndarray] | None
    state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    best_changed: bool = True  # False: best equals the previous bundle's, which is linked, not rewritten
    variables: bool = True  # model holds every model variable (version 2), not get_weights() (version 1)


def _save_arrays(path: Path, arrays: list[Any]) -> None:
    """Arrays (or tensors: converted here, on the writing thread) to an fsynced npz."""
    with open(path, "wb") as fh:
        np.savez(fh, *(np.asarray(a) for a in arrays))
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
            _write_best(directory, tmp / "best.npz", bundle)
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


def _write_best(directory: Path, target: Path, bundle: Bundle) -> None:
    """Hard-link the previous bundle's best.npz when the best weights did not change, else write them."""
    previous = bundles(directory)
    if not bundle.best_changed and previous and (previous[0] / "best.npz").exists():
        try:
            os.link(previous[0] / "best.npz", target)
            return
        except OSError:  # file systems without hard links: write the arrays instead
            pass
    _save_arrays(target, bundle.best)


def bundles(directory: Path) -> list[Path]:
    """Bundle directories, newest first (temporary ones excluded)."""
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith("e") and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]), reverse=True)


def read_bundle(path: Path) -> Bundle:
    state = json.loads((path / "state.json").read_text())
    version = state.get("bundle_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"bundle version {version} is not one of {READABLE_VERSIONS}")
    for name, size in state["files"].items():
        actual = (path / name).stat().st_size
        if actual != size:
            raise ValueError(f"{name} has {actual} bytes, expected {size}")
    model = _load_arrays(path / "model.npz")
    optimizer = _load_arrays(path / "optimizer.npz")
    best = _load_arrays(path / "best.npz") if "best.npz" in state["files"] else None
    return Bundle(epoch=int(state["epoch"]), model=model, optimizer=optimizer, best=best, state=state, path=path,
                  variables=version >= 2)


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


class CheckpointWriter:
    """Writes bundles one at a time on a background thread (``background=False``: on the caller's).

    ``submit`` first waits for the previous write (and re-raises its error), so at most one bundle is in
    flight and bundles are published in epoch order; ``close`` waits for the last one. A process killed
    during a write leaves only a temporary directory: the previous bundle stays the newest.
    """

    def __init__(self, directory: Path, background: bool = True,
                 on_published: Callable[[int], None] | None = None) -> None:
        self.directory = directory
        self.background = background
        self.on_published = on_published  # called on the writing thread once a bundle is in place
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_write_seconds = 0.0

    def _write(self, bundle: Bundle) -> None:
        t0 = time.perf_counter()
        try:
            save_bundle(self.directory, bundle)
            if self.on_published is not None:
                self.on_published(bundle.epoch)
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc
        self.last_write_seconds = time.perf_counter() - t0

    def submit(self, bundle: Bundle) -> float:
        """Start writing ``bundle``; return the seconds the caller was blocked (waiting for the previous)."""
        t0 = time.perf_counter()
        self.wait()
        if not self.background:
            self._write(bundle)
            self.wait()
            return time.perf_counter() - t0
        self._thread = threading.Thread(target=self._write, args=(bundle,), name="checkpoint-writer")
        self._thread.start()
        return time.perf_counter() - t0

    def raise_if_failed(self) -> None:
        """Re-raise the error of a write that has already failed, without waiting for one in flight."""
        if self._error is not None:
            self.wait()

    def wait(self, raise_error: bool = True) -> None:
        """Wait for the write in flight; re-raise its error (``raise_error=False``: drop it)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error

    close = wait
