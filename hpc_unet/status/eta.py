"""When will the submitted experiments finish? An estimate from what the progress files already hold.

Counting only warm epochs under-estimates badly on short runs: on the demo the first epoch (graph
tracing) and the start-up before it (TensorFlow import, data, model build) are about half of each run,
and an experiment waiting in the queue has not even begun them. So each experiment's expected run time is

    overhead + expected epochs x warm epoch seconds

where ``overhead`` is what finished experiments took beyond their warm epochs (start-up, tracing, the
final evaluation, and for Slurm any requeue wait: ``started_at`` is the attempt's first start), and
``expected epochs`` scales the configured epochs by the fraction finished experiments ran before early
stopping. Running experiments finish their remaining time; queued ones then start, in array order, on
the slots the running ones free: the parallelism is the number of experiments actually running now
(a throttled array, a busy partition or a local ``--max-parallel`` all show up there). Experiments never
submitted are not in the estimate, except those a live local ``submit`` process is still to start (its
submission record lists its plan; ``local_plan``): they wait in its queue. Before any experiment finishes, the overhead is what running ones
have spent so far beyond their epochs, a lower bound; ``basis`` says which was used.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

WAITING = ("queued", "unknown")
SAMPLE = 200  # finished experiments the overhead is estimated from (the most recent ones)


@dataclass(frozen=True)
class Eta:
    seconds: float | None  # until every submitted experiment has ended; None when unknown
    parallel: int  # experiments running now
    basis: str  # what the estimate rests on, for the reader


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a float or the ISO form progress files hold (2026-01-01T00:00:00+0000)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            return None
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def local_plan(submissions_dir: Any) -> tuple[list[str], int]:
    """(experiment ids the newest local submission's process will still start, in its order; how many it
    runs at once). ([], 0) when that process is gone (or on another host) or the newest is not local."""
    try:
        newest = max(e.path for e in os.scandir(submissions_dir) if e.name.endswith(".json"))
        with open(newest, "rb") as fh:
            record = json.loads(fh.read())
        options = record.get("options", {})
        if record.get("executor") != "local" or options.get("host") != socket.gethostname():
            return [], 0
        os.kill(int(options["pid"]), 0)
        planned = [str(e) for e in options.get("planned", [])]
        return planned, int(options.get("max_parallel") or 0) if planned else 0
    except (OSError, ValueError, KeyError, TypeError):
        return [], 0


def estimate(rows: list[dict[str, Any]], now: float, planned: list[str] | None = None, capacity: int = 0) -> Eta:
    """The study's ETA; sets ``row["eta"]`` on running and waiting rows: {"left": seconds} or
    {"queue": position, "starts_in": seconds, "left": seconds} (None values when unknown). Rows not
    submitted but in ``planned`` (a live local submit's plan) wait after the queued ones, in plan order.
    ``capacity``: slots known to exist (a local submit's --max-parallel) even while fewer run, e.g. between
    two of its processes."""
    warm_by_arch: dict[str, list[float]] = {}
    for r in rows:
        if r.get("last_epoch_seconds"):
            warm_by_arch.setdefault(r["architecture"], []).append(float(r["last_epoch_seconds"]))
    warm_all = _median([v for vs in warm_by_arch.values() for v in vs])
    running = [r for r in rows if r["state"] == "running"]
    waiting = [r for r in rows if r["state"] in WAITING]
    if planned:
        order = {e: i for i, e in enumerate(planned)}
        waiting += sorted((r for r in rows if r["state"] == "pending" and r["exp_id"] in order),
                          key=lambda r: order[r["exp_id"]])
    if not running and not waiting:
        return Eta(None, 0, "nothing submitted is left")
    if warm_all is None:
        return Eta(None, len(running), "no epoch has finished yet")

    def warm(r: dict[str, Any]) -> float:
        own = r.get("last_epoch_seconds")
        return float(own) if own else _median(warm_by_arch.get(r["architecture"], [])) or warm_all

    overhead, fraction, basis = _overheads(rows, running, warm, now)
    arch_warm = {a: _median(v) or warm_all for a, v in warm_by_arch.items()}

    def overhead_of(r: dict[str, Any]) -> float:
        """This architecture's own overhead; else the others' scaled by its epoch time (tracing and the
        final evaluation grow with the model as its epochs do), at most 4x either way."""
        arch = r["architecture"]
        if arch in overhead:
            return overhead[arch]
        known = [a for a in overhead if a != "*"]
        if not known:
            return overhead.get("*", 0.0)
        ref = _median([overhead[a] for a in known]) or 0.0
        ratio = arch_warm.get(arch, warm_all) / (_median([arch_warm.get(a, warm_all) for a in known]) or warm_all)
        return ref * min(4.0, max(0.25, ratio))

    def expected_epochs(r: dict[str, Any]) -> int:
        return max(1, min(int(r["epochs"]), round(int(r["epochs"]) * fraction)))

    slots = []
    for r in running:
        done = int(r.get("epoch") or 0)
        total = max(expected_epochs(r), done + 1)
        start = _timestamp(r.get("started_at"))
        epochs_left = (total - done) * warm(r)
        left = epochs_left if start is None else max(epochs_left, overhead_of(r) + total * warm(r) - (now - start))
        r["eta"] = {"left": left}
        slots.append(left)
    slots += [0.0] * max(0, min(capacity, len(running) + len(waiting)) - len(slots))  # idle slots of a live submit
    if not slots:
        for position, r in enumerate(waiting, 1):
            r["eta"] = {"queue": position, "starts_in": None, "left": None, "local": r["state"] == "pending"}
        return Eta(None, 0, "nothing is running yet")
    heapq.heapify(slots)
    end = max(slots)
    for position, r in enumerate(waiting, 1):  # array order: Slurm starts array tasks by index
        start_in = heapq.heappop(slots)
        finish = start_in + overhead_of(r) + expected_epochs(r) * warm(r)
        r["eta"] = {"queue": position, "starts_in": start_in, "left": finish, "local": r["state"] == "pending"}
        heapq.heappush(slots, finish)
        end = max(end, finish)
    return Eta(end, max(len(running), min(capacity, len(running) + len(waiting))), basis)


def _overheads(rows: list[dict[str, Any]], running: list[dict[str, Any]], warm: Any,
               now: float) -> tuple[dict[str, float], float, str]:
    """(architecture -> median overhead, "*" for all; median fraction of epochs run; basis) from the
    finished runs, or (a lower bound) from the running ones when none has finished."""
    finished = [r for r in rows if r["state"] == "completed" and r.get("epoch")][-SAMPLE:]
    by_arch: dict[str, list[float]] = {}
    fractions = []
    for r in finished:
        start, end = _timestamp(r.get("started_at")), _timestamp(r.get("finished_at"))
        fractions.append(min(1.0, r["epoch"] / max(1, int(r["epochs"]))))
        if start is not None and end is not None and end > start:
            by_arch.setdefault(r["architecture"], []).append(max(0.0, end - start - r["epoch"] * warm(r)))
    basis = f"{sum(map(len, by_arch.values()))} finished runs"
    if not by_arch:
        for r in running:
            start = _timestamp(r.get("started_at"))
            if start is not None:
                by_arch.setdefault("*", []).append(max(0.0, now - start - (r.get("epoch") or 0) * warm(r)))
        basis = "running ones so far, a lower bound until one finishes"
        return {k: _median(v) or 0.0 for k, v in by_arch.items()}, 1.0, basis
    out = {k: _median(v) or 0.0 for k, v in by_arch.items()}
    out["*"] = _median([x for v in by_arch.values() for x in v]) or 0.0
    return out, _median(fractions) or 1.0, basis
