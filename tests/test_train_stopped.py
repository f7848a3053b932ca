"""A task being stopped is an interruption, never a training failure, even when the code it interrupted
turns the stop into its own error.

Seen in the preemption storm (tests/test_storm.py): submitit's USR2 handler raised SystemExit while
Keras was inside a TensorFlow scope; the scope's exit raised "RuntimeError: Variable creator scope nesting
error" "from None" in its place, and the task wrote a ``failed`` shard. Slurm requeued it, it completed, and
the experiment had two results (failed and completed) for one attempt. Here ``_train`` is replaced by
functions raising exactly those exceptions (no TensorFlow needed); the real signal handler is exercised
with stand-ins for submitit's handler.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from submitit.core.utils import UncompletedJobError
from test_reliability_helpers import make_study

from hpc_unet import runinfo
from hpc_unet.dispatch import task
from hpc_unet.lease import read_lease
from hpc_unet.manifest import read_manifest
from hpc_unet.train import run


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runinfo, "_STOPPING", [])
    s = make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8]", 'grid.architecture=["UNet"]')
    return s, read_manifest(s).to_dict("records")[0]


def scope_exit_during_stop(*_a, **_k):
    """What TensorFlow did: a SystemExit propagating, and a scope's exit raising its own error from None."""
    try:
        raise SystemExit(-1)
    except SystemExit:
        raise RuntimeError("Variable creator scope nesting error: move call to tf.distribute.set_strategy() "
                           "out of `with` scope.") from None


def plain_failure(*_a, **_k):
    raise RuntimeError("a real bug in training")


def shards(study) -> list[str]:
    return sorted(p.name for p in study.shards_dir.glob("*.summary.parquet")) if study.shards_dir.exists() else []


def test_an_error_raised_while_the_stop_propagates_is_an_interruption(study, monkeypatch) -> None:
    s, row = study
    monkeypatch.setattr(run, "_train", scope_exit_during_stop)
    with pytest.raises(SystemExit) as stopped:
        run.run_experiment(row, s, attempt=1)
    assert isinstance(stopped.value.__cause__, RuntimeError)
    assert shards(s) == []  # no failed result
    assert read_lease(s.run_dir(row["exp_id"]))["state"] == "interrupted"  # the next task counts a restart


def test_any_error_after_the_process_was_told_to_stop_is_an_interruption(study, monkeypatch) -> None:
    s, row = study
    monkeypatch.setattr(run, "_train", plain_failure)
    runinfo.mark_stopping("USR2: checkpointed and requeued")
    with pytest.raises(SystemExit):
        run.run_experiment(row, s, attempt=1)
    assert shards(s) == [] and read_lease(s.run_dir(row["exp_id"]))["state"] == "interrupted"


def test_a_real_failure_is_still_a_failure(study, monkeypatch) -> None:
    """The other side: no stop in the chain and none requested -> a failed shard, the error re-raised, the
    lease released."""
    s, row = study
    monkeypatch.setattr(run, "_train", plain_failure)
    with pytest.raises(RuntimeError, match="a real bug"):
        run.run_experiment(row, s, attempt=1)
    (name,) = shards(s)
    assert name.startswith(f"{row['exp_id']}.a001.") and name.endswith(".failed.summary.parquet")
    assert read_lease(s.run_dir(row["exp_id"])) in (None, {})
    try:
        raise ValueError("inner")
    except ValueError as inner:
        chained = RuntimeError("outer")
        chained.__context__ = inner
    assert run._classify(chained) == "failed"  # a chain without a stop in it


@pytest.fixture
def usr2(monkeypatch: pytest.MonkeyPatch):
    """Install ``original`` as 'submitit's' USR2 handler, then the guard over it; restore afterwards."""
    saved = signal.getsignal(signal.SIGUSR2)
    monkeypatch.setattr(runinfo, "_STOPPING", [])

    def install(original):
        signal.signal(signal.SIGUSR2, original)
        task._guard_preemption_handler()

    yield install
    signal.signal(signal.SIGUSR2, saved)


def test_the_guard_records_the_stop_when_submitit_requeues(usr2) -> None:
    def submitit_requeued(signum, frame):
        raise SystemExit(-1)

    usr2(submitit_requeued)
    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGUSR2)
    assert runinfo.stopping() == "USR2: checkpointed and requeued"


def test_the_guard_records_the_stop_when_the_requeue_fails(usr2, capfd) -> None:
    def requeue_killed(signum, frame):
        raise subprocess.CalledProcessError(-15, ["scontrol", "requeue", "5_1"])

    usr2(requeue_killed)
    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGUSR2)
    assert runinfo.stopping() == "USR2: requeue failed"
    assert "requeue on USR2 failed (CalledProcessError" in capfd.readouterr().err


def test_submitits_own_give_up_stays_a_failure(usr2) -> None:
    """'timed out too many times' is submitit refusing to requeue: a failure, and no stop recorded."""
    def gave_up(signum, frame):
        raise UncompletedJobError("Job 5_1 (task: 0) timed out too many times")

    usr2(gave_up)
    with pytest.raises(UncompletedJobError):
        signal.raise_signal(signal.SIGUSR2)
    assert runinfo.stopping() == ""
