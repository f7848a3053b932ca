"""One rule for an experiment's state, used by ``status``, ``submit`` and ``collect`` alike.

The evidence about one experiment, strongest first (the first that applies decides):

1. a ``completed`` (or ``skipped``) result shard: done, whatever else says otherwise: a later attempt
   that returned at once ("already completed"), a scheduler state of FAILED or CANCELLED (a preemption
   signal arriving just after the result was written), a live lease (a duplicate task about to notice);
2. a live lease (a task holds it with a fresh heartbeat): ``running``;
3. a result shard of the latest submitted attempt (or of a newer one): its status (failed, oom, diverged);
   without one, a progress file of that attempt (or a newer one) that records a failure (the task could
   not write its shard, e.g. on a full disk): that failure;
4. the latest task is alive in the scheduler (or, locally, its process): ``running`` or ``queued``;
5. the scheduler did not answer, or answered something that could not be parsed: ``unknown``, never lost;
6. the latest task is known to have ended, no live task holds the lease, no fresh heartbeat: ``lost``;
7. a failure shard of an older attempt and nothing submitted since: its status;
8. nothing submitted, no shard: ``pending``.

``submit`` submits ``pending`` and ``lost`` (and with --retry-failed the failure states); it never submits
``unknown``, ``running`` or ``queued``. ``collect`` removes leftover checkpoints only where
``may_prune`` holds: completed, and no live lease or fresh progress heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE = ("completed", "skipped")
FAILURES = ("failed", "oom", "diverged")
# What the scheduler (or the local process table) says about the latest task.
SCHED_RUNNING, SCHED_QUEUED, SCHED_ENDED, SCHED_UNKNOWN, SCHED_NONE = "running", "queued", "ended", "unknown", ""
SUBMITTABLE = ("pending", "lost")


@dataclass(frozen=True)
class Evidence:
    """What is known about one experiment. ``shard``: the status of the shard that counts (completed
    wins over newer attempts, see results/shards.py); ``shard_attempt``: the newest attempt with a shard;
    ``task_attempt``: the attempt of the latest submitted task (0: never submitted)."""

    shard: str | None = None
    shard_attempt: int = 0
    task_attempt: int = 0
    lease_live: bool = False
    scheduler: str = SCHED_NONE
    heartbeat_fresh: bool = False
    progress_failure: str = ""  # a failure progress.json records for an attempt without a shard


def decide(ev: Evidence) -> str:
    """The experiment's state under the rule in this module's docstring."""
    if ev.shard in DONE:
        return ev.shard
    if ev.lease_live:
        return "running"
    if ev.task_attempt and ev.shard and ev.shard_attempt >= ev.task_attempt:
        return ev.shard
    if ev.progress_failure:
        return ev.progress_failure
    if ev.task_attempt:
        if ev.scheduler in (SCHED_RUNNING, SCHED_QUEUED):
            return ev.scheduler
        if ev.scheduler == SCHED_UNKNOWN or ev.heartbeat_fresh:
            return "unknown"
        return "lost"
    if ev.shard:
        return ev.shard
    return "pending"


def should_submit(state: str, retry_failed: bool = False) -> bool:
    return state in SUBMITTABLE or (retry_failed and state in FAILURES)


def may_prune(ev: Evidence) -> bool:
    """Checkpoints may be deleted only for a completed experiment that nothing is training."""
    return ev.shard == "completed" and not ev.lease_live and not ev.heartbeat_fresh
