"""The array task: train one experiment; on requeue, continue from its newest on-disk checkpoint.

submitit calls ``checkpoint()`` on USR2 (preemption, time limit) and requeues a pickled copy of the
task. The copy holds only the study path and experiment id: all training state is read back from the
checkpoint bundle on disk, so a plain ``scontrol requeue`` (no signal, no pickle) resumes the same way.
A task that finds the experiment's lease held by another live task (hpc_unet/lease.py) says so on stderr
(the job's log) and ends without training and without a shard.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import submitit

from hpc_unet import runinfo
from hpc_unet.dispatch import jobscript
from hpc_unet.study import Study


def _guard_preemption_handler() -> None:
    """Make a failure inside submitit's USR2 handler an interruption, never a training failure.

    On preemption Slurm signals the whole job (USR2 and SIGTERM): the SIGTERM can kill the ``scontrol
    requeue`` that submitit's handler runs, whose CalledProcessError then surfaced inside ``model.fit`` and
    was recorded as a ``failed`` shard (seen in the storm test). The job is requeued by Slurm anyway
    (PreemptMode=REQUEUE); if it is not, the task ends without a result, shows as lost and a plain
    ``submit`` resumes it from its checkpoint. submitit's own "timed out too many times" stays a failure.

    The handler's SystemExit is raised wherever the main thread was, possibly inside a TensorFlow scope whose
    exit then raises its own error in place of it (the storm test saw "RuntimeError: Variable creator scope
    nesting error" recorded as a failed shard of a preempted task). So the stop is also recorded in
    ``runinfo``, and training reads any failure after it as the interruption it is (train/run.py).
    """
    import signal

    from submitit.core.utils import UncompletedJobError

    original = signal.getsignal(signal.SIGUSR2)
    if not callable(original) or getattr(original, "hpc_unet_guard", False):
        return

    def handler(signum: int, frame: Any) -> None:
        try:
            original(signum, frame)
        except UncompletedJobError:
            raise
        except (SystemExit, KeyboardInterrupt):
            runinfo.mark_stopping("USR2: checkpointed and requeued")
            raise
        except BaseException as exc:
            print(f"hpc-unet: requeue on USR2 failed ({type(exc).__name__}: {exc}); the task stops as interrupted",
                  file=sys.stderr, flush=True)
            runinfo.mark_stopping("USR2: requeue failed")
            raise SystemExit(-1) from exc

    handler.hpc_unet_guard = True  # type: ignore[attr-defined]
    try:
        signal.signal(signal.SIGUSR2, handler)
    except ValueError:  # not the main thread: leave submitit's handler alone
        pass


def replay_early_usr2() -> bool:
    """Re-send a USR2 that the step wrapper (dispatch/jobscript.py) recorded before submitit's handler
    was installed; the handler then checkpoints and requeues the task. True when one was replayed."""
    import signal

    flag = os.environ.get(jobscript.ENV_EARLY_SIGNAL)
    if not flag or not os.path.exists(flag):
        return False
    try:
        os.unlink(flag)
    except OSError:
        pass
    print("hpc-unet: USR2 arrived before Python could handle it; handing it to submitit now", file=sys.stderr,
          flush=True)
    signal.raise_signal(signal.SIGUSR2)
    return True


def apply_env(env: dict[str, str | None] | None) -> None:
    """Set (or, for None, remove) environment variables before TensorFlow starts: the local executor's
    GPU per slot (submitit's LocalExecutor sets CUDA_VISIBLE_DEVICES="" for its subprocesses)."""
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class TrainTask(submitit.helpers.Checkpointable):
    def __init__(self, study_root: str, exp_id: str, attempt: int = 1, fresh: bool = False,
                 env: dict[str, str | None] | None = None) -> None:
        self.study_root = str(study_root)
        self.exp_id = exp_id
        self.attempt = attempt
        self.fresh = fresh
        self.env = env

    def __call__(self) -> dict[str, Any]:
        _guard_preemption_handler()
        replay_early_usr2()
        apply_env(getattr(self, "env", None))  # before TensorFlow starts; old pickles have no env
        from hpc_unet.lease import LeaseHeld
        from hpc_unet.manifest import get_row
        from hpc_unet.train.run import run_experiment

        study = Study.at(self.study_root)
        try:
            summary = run_experiment(get_row(study, self.exp_id), study, attempt=self.attempt, fresh=self.fresh)
        except LeaseHeld as exc:
            print(f"hpc-unet: {exc}", file=sys.stderr, flush=True)
            return {"exp_id": self.exp_id, "status": "not run (lease held)", "best_val_jaccard": None,
                    "epochs_run": 0}
        return {k: summary.get(k) for k in ("exp_id", "status", "best_val_jaccard", "epochs_run")}

    def __repr__(self) -> str:
        return f"TrainTask({self.exp_id!r}, attempt={self.attempt})"


class TrainChunk(submitit.helpers.Checkpointable):
    """Several experiments trained one after another in one process (local executor): each start of a
    Python process with TensorFlow costs seconds, which dominates tiny studies. A failure is recorded in
    its experiment's shard and the chunk goes on; a rerun skips what already has a result."""

    def __init__(self, study_root: str, items: list[tuple[str, int, bool]],
                 env: dict[str, str | None] | None = None) -> None:
        self.study_root = str(study_root)
        self.items = list(items)
        self.env = env

    def __call__(self) -> list[dict[str, Any]]:
        apply_env(getattr(self, "env", None))
        import keras

        out, errors = [], []
        for exp_id, attempt, fresh in self.items:
            try:
                out.append(TrainTask(self.study_root, exp_id, attempt, fresh)())
            except Exception as exc:  # already written to the experiment's shard
                errors.append(exc)
            keras.backend.clear_session()
        if errors and len(errors) == len(self.items):
            raise errors[0]
        return out

    def __repr__(self) -> str:
        return f"TrainChunk({[e for e, _, _ in self.items]})"
