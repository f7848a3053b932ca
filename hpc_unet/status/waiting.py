"""Why queued tasks wait, in words a user can act on: Slurm's pending reasons (squeue's ``%R``) grouped,
the routine ones left out.

A task that waits for its turn (Priority, Resources, its array's ``%N`` limit, the delay after a requeue)
needs nothing. One that waits on a down or drained node, a hold, or a limit waits until somebody acts, and
status would otherwise show it only as "queued". The reasons are Slurm's job reason names; with a drained
node, slurm-wlm 22.05 gives "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher
priority partitions" (measured on the local cluster: tests/test_slurm_status_waiting.py).
"""

from __future__ import annotations

from typing import Any

# Reasons that resolve on their own as other jobs end or time passes.
ROUTINE = frozenset({"", "None", "Priority", "Resources", "JobArrayTaskLimit", "BeginTime", "Dependency",
                     "Licenses"})

# (test, advice): the first whose test matches the reason gives the advice.
ADVICE: tuple[tuple[Any, str], ...] = (
    # Slurm gives this one reason for nodes that are down or drained and for nodes a higher-priority
    # partition holds (a preemption), so the advice covers both
    (lambda r: "DOWN, DRAINED" in r,
     "their nodes are down, drained, or held by a higher-priority partition: `sinfo -R` lists down and "
     "drained nodes with why (they start once an administrator returns one to service); if none is listed, "
     "they start when the higher-priority jobs end"),
    (lambda r: r.startswith(("ReqNodeNotAvail", "NodeDown")),
     "a node they need is down or drained: `sinfo -R` says why; they start once an administrator returns it "
     "to service"),
    (lambda r: r == "launch failed requeued held",
     "Slurm held them after a failed launch: check the node (`sinfo -R`), then `scontrol release {jobs}`"),
    (lambda r: r == "JobHeldUser", "held: `scontrol release {jobs}` lets them start"),
    (lambda r: r == "JobHeldAdmin", "held by an administrator: only they can release them"),
    (lambda r: r == "DependencyNeverSatisfied", "a dependency can never be met: `scancel {jobs}`, then "
     "`hpc-unet submit` again"),
    (lambda r: r == "BadConstraints",
     "no node has what they ask for: check --constraint and --gpu-type, then `scancel {jobs}` and submit again"),
    (lambda r: r.startswith(("InvalidAccount", "InvalidQOS")),
     "the account or QOS is not valid for you: `scancel {jobs}`, then submit with a valid --account / --qos"),
    (lambda r: r.startswith("Partition"), "the partition's state or limits hold them: `scontrol show partition` "
     "says which"),
    (lambda r: r.startswith(("QOS", "Assoc")) and "PerJob" in r,
     "they ask for more than one job may have under the account or QOS, so they never start: `scancel {jobs}`, "
     "then submit within the limit (--time, --mem, GPUs)"),
    (lambda r: r.startswith(("QOS", "Assoc")) or r == "AccountingPolicy" or (r.startswith("Max")
                                                                           and r.endswith("PerAccount")),
     "an account or QOS limit: they start as your other jobs end"),
)
OTHER = "`scontrol show job {jobs}` says more"
JOBS_NAMED = 3


def advice(reason: str, jobs: list[str]) -> str:
    """What to do about tasks waiting for ``reason``; ``{jobs}`` names up to JOBS_NAMED of them."""
    named = " ".join(jobs[:JOBS_NAMED]) + (" ..." if len(jobs) > JOBS_NAMED else "")
    for test, text in ADVICE:
        if test(reason):
            return text.format(jobs=named)
    return OTHER.format(jobs=named)


def waiting(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Queued tasks grouped by a pending reason that is not routine, most tasks first (then by name):
    [{"reason", "count", "jobs", "advice"}]."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        reason = str(r.get("slurm_reason") or "")
        if r.get("state") == "queued" and reason not in ROUTINE:
            groups.setdefault(reason, []).append(str(r.get("job_id") or r["exp_id"]))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [{"reason": reason, "count": len(jobs), "jobs": jobs, "advice": advice(reason, jobs)}
            for reason, jobs in ordered]


def waiting_lines(items: list[dict[str, Any]]) -> list[str]:
    """One line per reason: 'N queued wait on Slurm: <reason> -- <advice>'."""
    return [f"{w['count']} queued wait on Slurm: {w['reason']} -- {w['advice']}" for w in items]
