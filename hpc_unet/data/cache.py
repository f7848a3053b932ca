"""The per-study patch cache: one directory per cache key, arrays as ``.npy``, ``index.json`` written last.

Layout under ``<study>/cache``::

    .lock                    fcntl lock: one task builds, the others wait and then load
    data-<key>/              train_x.npy train_y.npy val_x.npy val_y.npy [test_x.npy test_y.npy] index.json
    lookup/<stat key>.json   {"key": ...}: maps the inputs' file stats to a key, so a warm start reads no source

Every file is written with ``atomic_write`` and the index (sizes, shapes, dtypes) last, so an entry without
a valid index is partial or damaged and gets rebuilt. Correctness does not depend on the lock (entries are
deterministic and written atomically); the lock only keeps 36 tasks from doing the same work at once.
Arrays load with ``mmap_mode="r"``, so concurrent tasks on one node share the page cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.errors import UserError
from hpc_unet.study import atomic_write, atomic_write_json, fault_point

CACHE_FORMAT = 1
ARRAY_NAMES = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
INDEX_NAME = "index.json"
LOCK_NAME = ".lock"


def make_key(payload: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able payload (always including the cache format version)."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def entry_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"data-{key}"


@contextlib.contextmanager
def file_lock(path: Path, what: str = "the data cache") -> Iterator[None]:
    """Exclusive fcntl lock on ``path`` for the duration of the block (released if the process dies).

    On file systems without locking (Lustre mounted without ``flock``) it warns and goes on unlocked:
    atomic writes keep the cache consistent; only duplicate work is possible then.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"cannot create {path} for {what} ({exc.strerror}); check that the study directory "
                        "is writable") from exc
    try:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"hpc-unet: waiting for another task that is preparing {what} ({path})", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            print(f"hpc-unet: warning: cannot lock {path} ({exc.strerror}); going on without the lock",
                  file=sys.stderr)
        yield
    finally:
        os.close(fd)


def _save_npy(path: Path, array: np.ndarray) -> str:
    """Atomically write one array; returns the SHA-256 of the file (recorded in the index)."""
    digest: list[str] = []

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a bare temp name
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        digest.append(_hash_file(tmp))

    atomic_write(path, writer)
    return digest[0]


def _hash_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_entry(cache_dir: Path, key: str, arrays: dict[str, np.ndarray | None], provenance: dict[str, Any]
                ) -> Path:
    """Write a complete entry (call under the lock). A partial entry left by a killed task is removed first."""
    entry = entry_dir(cache_dir, key)
    if entry.exists():
        shutil.rmtree(entry)
    entry.mkdir(parents=True)
    files: dict[str, Any] = {}
    for name in ARRAY_NAMES:
        arr = arrays.get(name)
        if arr is None:
            continue
        path = entry / f"{name}.npy"
        sha = _save_npy(path, arr)
        files[name] = {"file": path.name, "shape": list(arr.shape), "dtype": str(arr.dtype),
                       "bytes": path.stat().st_size, "sha256": sha}
    fault_point("data.cache_before_index")
    index = {"cache_format": CACHE_FORMAT, "key": key, "arrays": files, "provenance": provenance,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(entry / INDEX_NAME, index)
    return entry


def read_entry(cache_dir: Path, key: str) -> tuple[dict[str, np.ndarray | None], dict[str, Any]] | None:
    """Memory-map a complete entry; None when it is missing, partial or damaged (the caller rebuilds)."""
    entry = entry_dir(cache_dir, key)
    try:
        index = json.loads((entry / INDEX_NAME).read_text())
        if index.get("cache_format") != CACHE_FORMAT or index.get("key") != key:
            return None
        arrays: dict[str, np.ndarray | None] = dict.fromkeys(ARRAY_NAMES)
        for name, meta in index["arrays"].items():
            path = entry / meta["file"]
            if path.stat().st_size != meta["bytes"]:
                return None
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
                return None
            arrays[name] = arr
        if any(arrays[n] is None for n in ARRAY_NAMES[:4]):
            return None
        return arrays, index["provenance"]
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError, AttributeError):
        # Definitely missing or damaged. Other I/O errors (EIO, ESTALE, EACCES) propagate instead: a
        # transient file-system error must not make a task delete an entry that others have mapped.
        return None


def verify_entry(cache_dir: Path, key: str) -> list[str]:
    """Full check (re-hash every array file against the index); returns the names that do not match."""
    entry = entry_dir(cache_dir, key)
    index = json.loads((entry / INDEX_NAME).read_text())
    return [name for name, meta in index["arrays"].items() if _hash_file(entry / meta["file"]) != meta["sha256"]]


def lookup(cache_dir: Path, stat_key: str) -> str | None:
    try:
        return str(json.loads((Path(cache_dir) / "lookup" / f"{stat_key}.json").read_text())["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(cache_dir: Path, stat_key: str, key: str) -> None:
    atomic_write_json(Path(cache_dir) / "lookup" / f"{stat_key}.json", {"key": key})


def entries(cache_dir: Path) -> list[Path]:
    """Entry directories (complete or not) in a cache dir."""
    cache_dir = Path(cache_dir)
    return sorted(p for p in cache_dir.glob("data-*") if p.is_dir()) if cache_dir.is_dir() else []
