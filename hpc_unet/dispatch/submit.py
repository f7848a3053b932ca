"""Choose what to run and dispatch it: a Slurm job array, local subprocesses, or in-process (debug).

Resubmitting a study runs only experiments without a result (and, with ``retry_failed``, the failed
ones); experiments whose job is still queued or running are left alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpc_unet.dispatch.records import SubmissionRecord, load_records, next_attempt
from hpc_unet.errors import UserError
from hpc_unet.manifest import read_manifest
from hpc_unet.results.shards import completed_experiments, shard_index
from hpc_unet.status.precedence import should_submit
from hpc_unet.study import Study

EXECUTORS = ("slurm", "local", "debug")


@dataclass
class Planned:
    exp_id: str
    attempt: int
    fresh: bool
    reason: str


def plan(study: Study, retry_failed: bool = False, only: list[str] | None = None,
         states: list[dict[str, Any]] | None = None) -> list[Planned]:
    """Experiments to run now, in manifest order, by the shared precedence rule (status/precedence.py):
    ``pending`` and ``lost`` ones (plus failures with ``retry_failed``); never ``running``, ``queued``
    (a live job or a live lease) or ``unknown``. ``states`` are experiment_states rows; without them
    (--dry-run) the scheduler is not asked and experiments whose job state is unknown are listed too."""
    from hpc_unet.status.state import experiment_states

    frame = read_manifest(study)
    if only:
        unknown = sorted(set(only) - set(frame["exp_id"]))
        if unknown:
            from hpc_unet.spec import did_you_mean

            raise UserError(f"--only names unknown experiment '{unknown[0]}'{did_you_mean(unknown[0], frame['exp_id'])}")
    offline = states is None
    rows = experiment_states(study, frame, query_slurm=False) if states is None else states
    state_of = {r["exp_id"]: r["state"] for r in rows}
    statuses = completed_experiments(study)
    records = load_records(study)
    shard_attempts = {exp: max(a for a, _, _ in items) for exp, items in shard_index(study).items()}
    out = []
    for exp_id in frame["exp_id"]:
        if only and exp_id not in only:
            continue
        state = state_of.get(exp_id, "pending")
        if not (should_submit(state, retry_failed) or (offline and state == "unknown")):
            continue
        status = statuses.get(exp_id)
        attempt = max(next_attempt(study, exp_id, records), shard_attempts.get(exp_id, 0) + 1)
        reason = {"pending": "no result yet", "lost": "lost: its job ended without a result",
                  "unknown": "job state not asked (dry run)"}.get(state, f"retry of {state}")
        out.append(Planned(exp_id, attempt, fresh=status in ("oom", "diverged"), reason=reason))
    return out


def left_alone(states: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of the states submit never touches (running, queued, unknown), for its message."""
    counts: dict[str, int] = {}
    for r in states:
        if r["state"] in ("running", "queued", "unknown"):
            counts[r["state"]] = counts.get(r["state"], 0) + 1
    return counts


def local_gpus(environ: dict[str, str] | None = None, nvidia_smi: str | None = "nvidia-smi") -> list[str] | None:
    """The GPUs this shell can use, without importing TensorFlow: CUDA_VISIBLE_DEVICES when set (ids or
    UUIDs; "" or "-1": none), else the GPUs ``nvidia-smi -L`` lists, else None (unknown)."""
    import shutil
    import subprocess

    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        value = env["CUDA_VISIBLE_DEVICES"].strip()
        return [] if value in ("", "-1", "NoDevFiles") else [d.strip() for d in value.split(",") if d.strip()]
    if nvidia_smi is None or shutil.which(nvidia_smi) is None:
        return None
    try:
        out = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def slot_env(gpus: list[str] | None, slot: int, slots: int) -> dict[str, str | None]:
    """CUDA_VISIBLE_DEVICES of a local task in parallel slot ``slot`` of ``slots``: all the user's GPUs for
    one slot, one GPU per slot (round robin) for several; unset when the GPUs are unknown (as in the
    user's shell). submitit's LocalExecutor would otherwise give every task CUDA_VISIBLE_DEVICES=""."""
    if gpus is None:
        return {"CUDA_VISIBLE_DEVICES": None}
    if not gpus:
        return {"CUDA_VISIBLE_DEVICES": ""}
    if slots <= 1:
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]}


def run_local(study: Study, planned: list[Planned], executor: str = "local", max_parallel: int = 1,
              on_update: Callable[[], None] | None = None, timeout_min: int = 24 * 60,
              per_process: int = 1) -> SubmissionRecord:
    """Run tasks through submitit's LocalExecutor (subprocesses, at most ``max_parallel`` at once)
    or DebugExecutor (in this process, one after another), waiting for all of them.

    ``per_process`` > 1 packs that many experiments into each local task (interleaved, so every task
    gets a similar mix), saving a Python + TensorFlow start per experiment.
    """
    import math

    import submitit

    from hpc_unet.dispatch.task import TrainChunk, TrainTask

    record = SubmissionRecord(executor=executor, options={"max_parallel": max_parallel})
    record.save(study)
    folder = study.jobs_dir / executor
    if executor == "debug":
        ex = submitit.DebugExecutor(folder=folder)
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=timeout_min)
        os.environ.setdefault("HPC_UNET_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, max_parallel))))
    capacity = 1 if executor == "debug" else max(1, max_parallel)
    n_tasks = len(planned) if executor == "debug" or per_process <= 1 else math.ceil(len(planned) / per_process)
    queue = [planned[i::n_tasks] for i in range(n_tasks)]
    # what this process will start, in order: status counts it in the ETA while this process lives
    from hpc_unet import runinfo

    record.options.update(planned=[p.exp_id for items in queue for p in items], pid=os.getpid(), host=runinfo.host())
    running: list[tuple[Any, list[Planned]]] = []
    gpus = local_gpus() if executor != "debug" else None
    slot_of: dict[int, int] = {}  # id(job) -> parallel slot
    try:
        while queue or running:
            while queue and len(running) < capacity:
                items = queue.pop(0)
                slot = min(set(range(capacity)) - {slot_of[id(j)] for j, _ in running})
                env = slot_env(gpus, slot, capacity) if executor != "debug" else None
                if len(items) == 1:
                    task: Any = TrainTask(str(study.root), items[0].exp_id, items[0].attempt, items[0].fresh, env)
                else:
                    task = TrainChunk(str(study.root), [(p.exp_id, p.attempt, p.fresh) for p in items], env)
                job = ex.submit(task)
                slot_of[id(job)] = slot
                for item in items:
                    record.tasks.append({"exp_id": item.exp_id, "attempt": item.attempt, "job_id": str(job.job_id),
                                         "array_index": n_tasks - len(queue) - 1})
                record.save(study)
                running.append((job, items))
            for job, item in list(running):
                if executor == "debug":
                    try:
                        job.result()
                    except Exception:
                        pass  # the failure is in the experiment's shard
                    running.remove((job, item))
                elif job.done():
                    running.remove((job, item))
            if on_update is not None:
                on_update()
            if running and executor != "debug":
                time.sleep(0.5)
    except KeyboardInterrupt:
        # leave no orphan trainers behind; their checkpoints stay, so `submit` again resumes them
        for job, _items in running:
            if executor != "debug":
                job.cancel(check=False)
        raise
    finally:
        if record.options.get("planned"):
            record.options["planned"] = []  # this process starts nothing more (status stops counting them)
            record.save(study)
    return record


def submit_slurm(study: Study, planned: list[Planned], options: dict[str, Any], dry_run: bool = False) -> tuple[SubmissionRecord | None, str]:
    """Submit one array (split at the cluster's MaxArraySize); with dry_run, return the sbatch script.

    An sbatch failure raises one UserError line with Slurm's message; what submitit wrote for the failed
    array (pickles, scripts, folders) is removed, so a failure before the first array leaves the study as
    it was (arrays already submitted stay recorded)."""
    from hpc_unet.dispatch import slurm

    folder = study.jobs_dir / "slurm"
    script = slurm.render_sbatch(folder, options, len(planned))
    if dry_run:
        return None, script
    from hpc_unet.dispatch.task import TrainTask

    limit = options.get("max_array_size") or slurm.cluster_max_array_size() or 1000
    before = slurm.snapshot(study.jobs_dir)
    record = SubmissionRecord(executor="slurm", options=options)
    try:
        executor = slurm.make_executor(folder, options)
        for lo, hi in slurm.split_chunks(len(planned), int(limit)):
            chunk = planned[lo:hi]
            job_ids = slurm.submit_array_or_fail(
                executor, [TrainTask(str(study.root), p.exp_id, p.attempt, p.fresh) for p in chunk])
            for p, job_id in zip(chunk, job_ids, strict=True):
                record.tasks.append({"exp_id": p.exp_id, "attempt": p.attempt, "job_id": job_id,
                                     "array_index": len(record.tasks)})
            record.save(study)
            before = slurm.snapshot(study.jobs_dir)
    except UserError as exc:
        slurm.remove_new(study.jobs_dir, before)
        if record.tasks:
            raise UserError(f"{exc}; {len(record.tasks)} of {len(planned)} experiments were submitted before "
                            "(recorded; `hpc-unet submit` again submits the rest)") from exc
        raise UserError(f"{exc}; nothing was submitted and the study is unchanged") from exc
    if options.get("then_analyze"):
        from hpc_unet.dispatch import analyze_job

        arrays = list(dict.fromkeys(t["job_id"].split("_")[0] for t in record.tasks))
        record.analyze_job = analyze_job.submit(study, options, arrays)
        record.save(study)
    return record, script


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        from hpc_unet.spec import did_you_mean

        raise UserError(f"--executor {name!r} is unknown{did_you_mean(name, EXECUTORS)}; use one of {', '.join(EXECUTORS)}")
    return name


def prune_checkpoints(study: Study) -> int:
    """Delete checkpoint bundles of completed experiments (a task killed right after writing its shard
    leaves them: up to ~1 GB each at base 64), never of one that a live task holds (a live lease or a
    fresh heartbeat: status/precedence.py, may_prune). Returns the bytes freed."""
    import time

    from hpc_unet.lease import read_lease
    from hpc_unet.status.precedence import may_prune
    from hpc_unet.status.state import _read_progress, evidence
    from hpc_unet.train.checkpoint import clear

    freed = 0
    for exp_id, items in shard_index(study).items():
        ckpt = study.run_dir(exp_id) / "checkpoint"
        if not ckpt.exists():
            continue
        ev = evidence(items, {}, None, _read_progress(study, exp_id), read_lease(study.run_dir(exp_id)), time.time())
        if may_prune(ev):
            freed += sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
            clear(ckpt)
    return freed
