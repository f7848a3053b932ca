"""The study directory: its layout, its schema version and atomic file writes.

Everything a later command needs lives in the study directory, so any shell on the login node sees the
same state. Every file is written to a temporary name in the same directory, fsynced and renamed, so a
reader never sees a partial file and a kill never leaves one behind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError

SCHEMA_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; study files must be readable by colleagues as an ordinary write would be.
_FILE_MODE = 0o666 & ~_umask()


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> str | None:
    """Fault injection for the reliability tests (off unless HPC_UNET_FAULT names this point).

    ``HPC_UNET_FAULT=point[@n][:action[:count]]``: at the n-th time this process reaches ``point``
    (default: every time) do ``action``:

    - ``kill`` (the default): SIGKILL this process, like a node failure or the kernel's OOM killer;
    - ``raise``: RuntimeError;
    - ``oom``: TensorFlow's ResourceExhaustedError when TensorFlow is loaded (what a GPU out-of-memory
      raises), else MemoryError; both are recorded as ``oom``;
    - ``nan``: return ``"nan"`` and let the caller corrupt its numbers (``mid-epoch`` poisons the weights,
      so the loss really becomes NaN and the run is recorded as ``diverged``).

    ``count`` caps how often it fires across processes, counted in the file named by
    HPC_UNET_FAULT_STATE (under an fcntl lock, so parallel tasks count correctly).
    Points: ``mid-epoch`` (after a training batch), ``epoch-end`` (after the epoch's checkpoint),
    ``checkpoint-write`` (inside a checkpoint bundle write), ``shard-between`` (history shard written,
    summary not), ``after-shard`` (summary written, checkpoint not yet removed, process not exited),
    ``data.cache_before_index`` (data cache arrays written, index not).
    """
    spec = os.environ.get("HPC_UNET_FAULT")
    if not spec:
        return None
    parts = spec.split(":")
    point, _, nth = parts[0].partition("@")
    if point != name:
        return None
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if nth and _FAULT_HITS[name] != int(nth):
        return None
    action = parts[1] if len(parts) > 1 and parts[1] else "kill"
    if len(parts) > 2 and not _fault_budget(int(parts[2])):
        return None
    if action == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if action == "oom":
        message = f"injected out-of-memory at {name}"
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            raise tf.errors.ResourceExhaustedError(None, None, message)
        raise MemoryError(message)
    if action == "nan":
        return "nan"
    raise RuntimeError(f"injected fault at {name}")


def _fault_budget(count: int) -> bool:
    """Take one firing from the cross-process budget of ``count``; False when it is used up."""
    import fcntl

    state = Path(os.environ.get("HPC_UNET_FAULT_STATE", "/tmp/hpc-unet-fault-state"))
    with open(state, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read().strip()
        fired = int(text) if text else 0
        if fired >= count:
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(fired + 1))
        fh.flush()
        return True


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp)`` on a temporary path beside ``path``, fsync it, then rename it over ``path``.

    If the writer fails (full disk, permission, kill), the previous ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class Study:
    """Paths inside one study directory."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> Study:
        if not str(root).strip():  # Path("") is the current directory: a study would land in it
            raise UserError("--study is empty; pass the study's directory, e.g. --study studies/seed-grid")
        return cls(Path(root).expanduser().resolve())

    @property
    def meta_file(self) -> Path:
        return self.root / "study.json"

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.toml"

    @property
    def manifest_file(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    @property
    def jobs_dir(self) -> Path:
        """submitit's folder: pickled tasks and job logs."""
        return self.root / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def data_dir(self) -> Path:
        """Where synthetic data for the study is generated."""
        return self.root / "data"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    def run_dir(self, exp_id: str) -> Path:
        return self.runs_dir / exp_id

    def progress_file(self, exp_id: str) -> Path:
        return self.run_dir(exp_id) / "progress.json"

    def exists(self) -> bool:
        return self.meta_file.exists()

    def require(self) -> Study:
        """Fail with a clear message unless this is a study of our schema version."""
        if not self.meta_file.exists():
            if not self.root.exists():
                raise UserError(f"no such study: {self.root} does not exist; check the path (a new study is made by "
                                "`hpc-unet manifest --grid SPEC --study DIR`)")
            if not self.root.is_dir():
                raise UserError(f"{self.root} is a file, not a study directory; pass the study's directory")
            raise UserError(
                f"{self.root} is not a study directory (no study.json); create it with "
                f"`hpc-unet manifest --grid SPEC --study {self.root}`"
            )
        try:
            meta = read_json(self.meta_file)
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.meta_file} is unreadable ({exc}); recreate the study with --force") from exc
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{self.root} has study schema version {version}, this hpc-unet reads version "
                f"{SCHEMA_VERSION}; use the hpc-unet release that created it or start a new study"
            )
        return self

    def write_meta(self, **extra: Any) -> None:
        meta = {"schema_version": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.meta_file.exists():
            try:
                meta.update({k: v for k, v in read_json(self.meta_file).items() if k == "created"})
            except (OSError, ValueError):
                pass
        meta.update(extra)
        meta["schema_version"] = SCHEMA_VERSION
        atomic_write_json(self.meta_file, meta)
