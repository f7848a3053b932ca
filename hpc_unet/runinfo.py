"""Facts about where and with what code a task runs (no TensorFlow)."""

from __future__ import annotations

import functools
import os
import resource
import socket
import subprocess
from pathlib import Path

from hpc_unet import __version__


@functools.cache
def git_commit() -> str:
    """Commit of the hpc-unet checkout, with a '+dirty' mark; '' when not a git checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return ""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("+dirty" if dirty else "")


def package_version() -> str:
    return __version__


def host() -> str:
    return socket.gethostname()


def max_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def job_id() -> str:
    """Slurm array task id (e.g. 1234_5), the submitit job id locally, or ''."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_JOB_ID", "")


_STOPPING: list[str] = []


def mark_stopping(why: str) -> None:
    """Record that this process is being stopped (a preemption's USR2 handler is ending it)."""
    _STOPPING.append(why)


def stopping() -> str:
    """Why this process is being stopped ('' when it is not): what a failure that follows really is."""
    return _STOPPING[-1] if _STOPPING else ""
