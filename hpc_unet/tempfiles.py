"""Temporary files a killed writer leaves behind, and when they may go.

Atomic writes (study.atomic_write) leave ``.NAME.XXXXXXXX.tmp`` beside their target when the process is
killed between creating and renaming it; checkpoint bundles and models leave ``.eNNNN.XXXXXXXX`` and
``.model.XXXXXXXX`` folders; predict leaves ``.predict.XXXXXXXX`` stages. Each is removed only when no live
writer can own it:

- in ``runs/<exp>/`` (and its ``checkpoint/`` and ``model/``), and the experiment's shard temps: when a
  task takes the experiment's lease (one live holder at a time, so older ones are dead); ``collect``
  removes shard temps older than the live lease holder's start, or all of them with no live holder;
- in ``results/``: by ``collect`` while it holds the collect lock (collects take turns);
- predict stages: a live predict holds an fcntl lock on ``.owner`` inside its stage; a stage whose lock
  can be taken (or that has none and is older than OWNERLESS_S) is its dead owner's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ATOMIC_TMP = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's 8 random characters
TMP_DIR = re.compile(r"^\.(?:model|e\d{4,}|predict)\.[A-Za-z0-9_]{8}$")
OWNER = ".owner"
OWNERLESS_S = 60.0  # a stage without a lock file is older than this only if its owner died creating it


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return False  # another user's file or a read-only folder: not ours to clean


def is_temp(name: str) -> bool:
    return bool(ATOMIC_TMP.match(name) or TMP_DIR.match(name))


def sweep(folder: Path, keep: Callable[[Path], bool] = lambda _: False) -> list[str]:
    """Remove the temporary files and folders directly in ``folder`` unless ``keep(path)``; return names."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if is_temp(entry.name) and not keep(path) and _remove(path):
            removed.append(entry.name)
    return removed


def sweep_run_dir(run_dir: Path) -> list[str]:
    """Every temporary left in an experiment's run folder: call only while holding its lease."""
    return [*sweep(run_dir), *sweep(run_dir / "checkpoint"), *sweep(run_dir / "model")]


def shard_temp_owner(name: str) -> str | None:
    """The experiment a temporary shard file belongs to (its target's attempt id), else None."""
    from hpc_unet.results.shards import parse_attempt_id

    match = ATOMIC_TMP.match(name)
    if not match:
        return None
    found = re.match(r"^(?P<attempt_id>.+\.a\d{3,}\.[0-9a-f]{8})\.", match["target"])
    if not found:
        return None
    try:
        return parse_attempt_id(found["attempt_id"])[0]
    except ValueError:
        return None


@contextlib.contextmanager
def owned_stage(folder: Path, prefix: str) -> Iterator[Path]:
    """A new ``prefix.XXXXXXXX`` folder in ``folder``, locked as this process's while the block runs;
    stale stages of the same prefix (dead owners) are removed first."""
    import tempfile

    sweep(folder, keep=lambda p: not p.name.startswith(prefix + ".") or _owner_alive(p))
    stage = Path(tempfile.mkdtemp(prefix=prefix + ".", dir=folder))
    with open(stage / OWNER, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield stage
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _owner_alive(stage: Path) -> bool:
    """Does a live process hold the stage's owner lock? (Ownerless stages count as live while young.)"""
    try:
        fh = open(stage / OWNER)
    except FileNotFoundError:
        try:
            return time.time() - stage.stat().st_mtime < OWNERLESS_S
        except OSError:
            return False
    except OSError:
        return True
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def sweep_shard_temps(study: object, exp_id: str | None = None) -> list[str]:
    """Temporary shard files whose writer is gone: with ``exp_id`` (its lease just taken by this process)
    all of that experiment's; else each one older than its experiment's live lease holder, or with none."""
    from hpc_unet.lease import judge, read_lease

    holders: dict[str, float | None] = {}

    def keep(path: Path) -> bool:
        owner = shard_temp_owner(path.name)
        if owner is None:
            return True  # not a shard's temporary: leave it
        if exp_id is not None:
            return owner != exp_id
        if owner not in holders:
            lease = read_lease(study.run_dir(owner))  # type: ignore[attr-defined]
            holders[owner] = float(lease.get("taken_at", 0)) if lease and judge(lease).live else None
        started = holders[owner]
        try:
            return started is not None and path.stat().st_mtime >= started
        except OSError:
            return False

    return sweep(study.shards_dir, keep)  # type: ignore[attr-defined]
