"""Orchestration at scale: manifest, status, collect and analyze on synthetic studies of 36 .. 36,000 runs.

A synthetic study is the real thing minus training: a manifest from the normal spec machinery (the
seed grid with ``replicates``), result shards written by ``hpc_unet.results.shards.write_shard`` with
realistic summary and history rows (``hpc_unet.analysis.synthetic.make_results``: 30 epochs, 60 val
patches), progress files and a Slurm submission record. The mix per 100 experiments: 85 completed
(3 of them after an earlier failed attempt), 4 failed, 2 oom, 1 diverged, 5 running (fresh progress
file, no shard yet), 3 never submitted. Shards are written by a process pool.

Timed as a user runs them first (``time_commands``): each command a new ``hpc-unet`` process, Python
start-up and imports included, Slurm left out (sacct/squeue kept off PATH), with a cold page cache
(dropped through /proc/sys/vm/drop_caches when running as root; else marked not cold) and a warm one:
status --summary, status, the first collect, an unchanged collect. Then inside one process (no
TensorFlow anywhere):
- manifest: spec -> rows -> manifest.parquet (``create_study``);
- status: ``read_manifest_rows`` + ``experiment_states`` (Slurm querying off) + ``summarize`` + rendering
  the full table to a null console (and the ``--summary`` line alone);
- collect: first (no cache), unchanged (cache hit), incremental (the running 5 % finish);
- analyze: ``run_analysis`` (statistics, figures, report), up to ``analyze_max`` experiments.
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.bench.common import machine, print_table

GRID_CELLS = 36
# per 100 experiments, in this order
MIX = (("completed", 82), ("retried", 3), ("failed", 4), ("oom", 2), ("diverged", 1), ("running", 5),
       ("pending", 3))
ERRORS = {"failed": ("FileNotFoundError", "training.tif: no such file"),
          "oom": ("ResourceExhaustedError", "OOM when allocating tensor with shape [32,64,256,256]"),
          "diverged": ("Diverged", "loss is not finite at epoch 4")}


def plan_kind(index: int) -> str:
    """What experiment ``index`` is in the synthetic study (deterministic, spread over the grid)."""
    slot = (index * 37) % 100
    for kind, count in MIX:
        if slot < count:
            return kind
        slot -= count
    return "completed"


def _fail(rec: dict[str, Any], status: str, attempt: int) -> dict[str, Any]:
    nan = float("nan")
    error_type, message = ERRORS.get(status, ERRORS["failed"])
    out = dict(rec)
    for key in ("best_val_jaccard", "best_val_iou", "best_val_dice", "val_loss_std", "val_loss_std_detrended",
                "overfit_gap_best", "overfit_gap_end", "final_loss", "final_val_loss", "mean_epoch_seconds"):
        out[key] = nan
    out.update(status=status, error_type=error_type, error_message=message, epochs_run=4,
               diverged_epoch=4 if status == "diverged" else 0, val_patch_intersection=[], val_patch_union=[],
               attempt=attempt, attempt_id=f"{rec['exp_id']}.a{attempt:03d}.{attempt:08x}")
    return out


def _write_chunk(root: str, lo: int, hi: int, kinds: tuple[str, ...], seed: int, finish: bool = False) -> int:
    """Worker: fabricate and write the shards and progress files of manifest rows [lo, hi) whose kind is
    in ``kinds``; ``finish`` writes the running ones as completed (their task ended)."""
    import pandas as pd

    from hpc_unet.analysis.synthetic import make_results
    from hpc_unet.results.shards import write_shard
    from hpc_unet.study import Study, atomic_write_json

    study = Study.at(root)
    manifest = pd.read_parquet(study.manifest_file).iloc[lo:hi]
    chosen = manifest[[plan_kind(i) in kinds for i in manifest["index"]]]
    if chosen.empty:
        return 0
    frame, hist = make_results(chosen, seed=seed + lo)
    frame = frame.drop(columns=["attempts"])
    hist_by = {k: g.drop(columns=["exp_id", "attempt_id"]).to_dict("records") for k, g in hist.groupby("exp_id")}
    now = time.time()
    written = 0
    for rec in frame.to_dict("records"):
        kind = plan_kind(int(rec["index"]))
        exp_id = rec["exp_id"]
        attempt = 1
        rec["attempt_id"] = f"{exp_id}.a001.00000001"
        if kind == "retried":
            write_shard(study, _fail(rec, "failed", 1), [])
            attempt = 2
            rec.update(attempt=2, attempt_id=f"{exp_id}.a002.00000002")
            written += 1
        if kind in ERRORS:
            rec = _fail(rec, kind, 1)
            write_shard(study, rec, [])
            state = kind
        elif kind == "running" and not finish:
            state = "running"
        else:
            write_shard(study, rec, hist_by.get(exp_id, []))
            state = "completed"
        written += kind != "running" or finish
        atomic_write_json(study.progress_file(exp_id), {
            "exp_id": exp_id, "host": "gpu01", "pid": 1, "job_id": f"1000_{rec['index']}", "attempt": attempt,
            "attempt_id": rec["attempt_id"], "epochs": int(rec["epochs"]), "restarts": 0, "state": state,
            "epoch": 12 if state == "running" else int(rec.get("epochs_run") or 0),
            "best_val_jaccard": None if state != "completed" else float(rec["best_val_jaccard"]),
            "last_epoch_seconds": 61.5, "updated_at": now, "started_at": "2026-01-01T00:00:00+0000"})
    return written


def _no_fsync(fd: int) -> None:
    """Fabricated shards need no durability: pool workers skip fsync (~15 % of the generator's time)."""


def _fast_writes() -> None:
    os.fsync = _no_fsync  # only in the generator's worker processes, never in the process that times


def _pool_write(root: Path, n: int, kinds: tuple[str, ...], workers: int, seed: int = 0,
                finish: bool = False) -> int:
    chunk = max(36, min(1000, n // max(1, workers * 4) or 36))
    ranges = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    if workers <= 1 or len(ranges) == 1:
        return sum(_write_chunk(str(root), lo, hi, kinds, seed, finish) for lo, hi in ranges)
    import multiprocessing

    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_fast_writes) as pool:
        futures = [pool.submit(_write_chunk, str(root), lo, hi, kinds, seed, finish) for lo, hi in ranges]
        return sum(f.result() for f in futures)


def make_synthetic_study(root: Path, n: int, workers: int = 0) -> dict[str, float]:
    """Create the study (manifest timed) and its shards, progress files and submission record."""
    from hpc_unet.analysis.synthetic import spec_text
    from hpc_unet.dispatch.records import SubmissionRecord
    from hpc_unet.manifest import create_study
    from hpc_unet.spec import load_spec
    from hpc_unet.study import Study

    if n % GRID_CELLS:
        raise ValueError(f"study size {n} must be a multiple of {GRID_CELLS} (the grid times replicates)")
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / "spec.toml"
    spec_file.write_text(spec_text(name=f"bench-{n}", replicates=n // GRID_CELLS))
    study = Study.at(root)
    t0 = time.perf_counter()
    spec = load_spec(spec_file)
    frame = create_study(study, spec)
    t_manifest = time.perf_counter() - t0
    workers = workers or (os.cpu_count() or 1)
    t0 = time.perf_counter()
    shards = _pool_write(root, n, ("completed", "retried", "failed", "oom", "diverged"), workers)
    record = SubmissionRecord(executor="slurm", options={"partition": "a40"}, name="bench-submission")
    record.tasks = [{"exp_id": e, "attempt": 2 if plan_kind(i) == "retried" else 1, "job_id": f"1000_{i}",
                     "array_index": i} for i, e in enumerate(frame["exp_id"]) if plan_kind(i) != "pending"]
    record.save(study)
    running = [i for i in range(n) if plan_kind(i) == "running"]
    for i in running:
        _progress_running(study, frame["exp_id"].iloc[i], i, int(frame["epochs"].iloc[i]))
    return {"manifest_s": t_manifest, "generate_s": time.perf_counter() - t0, "shards": shards,
            "running": len(running)}


def _progress_running(study: Any, exp_id: str, index: int, epochs: int) -> None:
    from hpc_unet.study import atomic_write_json

    atomic_write_json(study.progress_file(exp_id), {
        "exp_id": exp_id, "host": "gpu01", "pid": 1, "job_id": f"1000_{index}", "attempt": 1,
        "attempt_id": f"{exp_id}.a001.00000001", "epochs": epochs, "restarts": 0, "state": "running",
        "epoch": 12, "best_val_jaccard": 0.61, "last_epoch_seconds": 61.5, "updated_at": time.time(),
        "started_at": "2026-01-01T00:00:00+0000"})
    now = time.time()  # the live task's lease: status counts an experiment as running only with it
    atomic_write_json(study.run_dir(exp_id) / "lease.json", {
        "exp_id": exp_id, "state": "held", "job_id": f"1000_{index}", "host": "gpu01", "pid": 1,
        "pid_start": "", "attempt": 1, "token": "0" * 16, "taken_at": now, "heartbeat_at": now})


def time_status(study: Any) -> dict[str, Any]:
    """Seconds of what ``hpc-unet status`` does (Slurm querying off): read, states, render."""
    from rich.console import Console

    from hpc_unet.status.manifest_table import read_manifest_rows
    from hpc_unet.status.render import status_renderable
    from hpc_unet.status.state import experiment_states, summarize

    t0 = time.perf_counter()
    frame = read_manifest_rows(study)
    t1 = time.perf_counter()
    rows = experiment_states(study, frame, query_slurm=False)
    summary = summarize(rows, study)
    t2 = time.perf_counter()
    Console(file=io.StringIO(), width=160).print(status_renderable(rows, summary, detail=False))
    t3 = time.perf_counter()
    Console(file=io.StringIO(), width=160).print(status_renderable(rows, summary, detail=True))
    t4 = time.perf_counter()
    return {"read_manifest_s": t1 - t0, "states_s": t2 - t1, "render_summary_s": t3 - t2,
            "render_table_s": t4 - t3, "status_summary_s": t3 - t0, "status_table_s": (t2 - t0) + (t4 - t3),
            "counts": summary["counts"]}


def _drop_page_cache() -> bool:
    """Drop the kernel's page cache (needs root); False when this process may not."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    except OSError:
        return False
    return True


def _command_seconds(args: list[str], cold: bool = False) -> float:
    """Wall seconds of one ``hpc-unet ARGS`` process as a user starts it; Slurm tools kept off PATH."""
    import subprocess
    import sys

    bindir = os.path.dirname(sys.executable)
    script = os.path.join(bindir, "hpc-unet")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "hpc_unet.cli"]
    env = {**os.environ, "PATH": bindir}
    if cold:
        _drop_page_cache()
    t0 = time.perf_counter()
    subprocess.run([*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def time_commands(study: Any, repeats: int = 3) -> dict[str, Any]:
    """Each command as its own process: cold page cache once, then the median of ``repeats`` warm runs.
    The first collect runs on a study never collected (results/ removed), cold then warm."""
    import shutil
    import statistics

    root = str(study.root)
    cold_ok = _drop_page_cache()
    out: dict[str, Any] = {"page_cache_dropped": cold_ok, "load_before": os.getloadavg()[0]}
    for key, args in (("cmd_status_summary", ["status", "--study", root, "--summary"]),
                      ("cmd_status", ["status", "--study", root])):
        out[f"{key}_cold_s"] = _command_seconds(args, cold=cold_ok)
        out[f"{key}_s"] = statistics.median(_command_seconds(args) for _ in range(repeats))
    shutil.rmtree(study.results_dir, ignore_errors=True)
    out["cmd_collect_first_cold_s"] = _command_seconds(["collect", "--study", root], cold=cold_ok)
    shutil.rmtree(study.results_dir, ignore_errors=True)
    out["cmd_collect_first_s"] = _command_seconds(["collect", "--study", root])
    out["cmd_collect_unchanged_cold_s"] = _command_seconds(["collect", "--study", root], cold=cold_ok)
    out["cmd_collect_unchanged_s"] = statistics.median(_command_seconds(["collect", "--study", root])
                                                       for _ in range(repeats))
    out["load_after"] = os.getloadavg()[0]
    return out


def time_collect(study: Any, n: int, workers: int) -> dict[str, Any]:
    """First collect (no results, no cache), an unchanged one, and one after the running experiments finish."""
    import shutil

    from hpc_unet.results.collect import collect

    shutil.rmtree(study.results_dir, ignore_errors=True)
    t0 = time.perf_counter()
    first = collect(study)
    t1 = time.perf_counter()
    collect(study)
    t2 = time.perf_counter()
    added = _pool_write(study.root, n, ("running",), workers, seed=1, finish=True)
    t3 = time.perf_counter()
    again = collect(study)
    t4 = time.perf_counter()
    return {"collect_first_s": t1 - t0, "collect_unchanged_s": t2 - t1, "collect_incremental_s": t4 - t3,
            "incremental_new_shards": added, "first_shards_read": first.shards_read,
            "incremental_shards_read": again.shards_read, "completed": again.completed,
            "failed": len(again.failed), "missing": len(again.missing), "duplicates": len(again.duplicates)}


def time_analyze(study: Any, n_boot: int) -> dict[str, Any]:
    from hpc_unet.analysis.pipeline import run_analysis

    t0 = time.perf_counter()
    run_analysis(study.root, n_boot=n_boot)
    return {"analyze_s": time.perf_counter() - t0, "n_boot": n_boot}


def bench_orchestration(sizes: tuple[int, ...] = (36, 3600), workdir: str | os.PathLike | None = None,
                        workers: int = 0, analyze_max: int = 3600, n_boot: int = 2000,
                        keep: bool = False, commands: bool = True) -> dict[str, Any]:
    """Build each synthetic study and time the login-node commands on it; returns the JSON payload."""
    import shutil
    import tempfile

    from hpc_unet.study import Study

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hpc-unet-bench-orch-"))
    base.mkdir(parents=True, exist_ok=True)
    workers = workers or (os.cpu_count() or 1)
    rows = []
    try:
        for n in sizes:
            root = base / f"study-{n}"
            if root.exists():
                shutil.rmtree(root)
            made = make_synthetic_study(root, n, workers)
            study = Study.at(root)
            row: dict[str, Any] = {"experiments": n, **made}
            if commands:
                row.update(time_commands(study))
            row.update(time_status(study))
            row.update(time_collect(study, n, workers))
            after = time_status(study)
            row["status_after_collect_table_s"] = after["status_table_s"]
            if n <= analyze_max:
                row.update(time_analyze(study, n_boot))
            else:
                row["analyze_s"] = None
            row["shard_bytes"] = sum(p.stat().st_size for p in study.shards_dir.iterdir())
            rows.append(row)
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not keep and not workdir:
            shutil.rmtree(base, ignore_errors=True)
    growth = []
    for prev, cur in zip(rows, rows[1:], strict=False):
        k = cur["experiments"] / prev["experiments"]
        entry = {"from": prev["experiments"], "to": cur["experiments"], "size_factor": k}
        for key in ("manifest_s", "status_summary_s", "status_table_s", "collect_first_s",
                    "collect_incremental_s", "analyze_s"):
            if prev.get(key) and cur.get(key):
                entry[key] = cur[key] / prev[key]
                entry[f"{key}_exponent"] = float(np.log(cur[key] / prev[key]) / np.log(k))
        growth.append(entry)
    return {"bench": "orchestration", "machine": machine(), "workdir": str(base), "workers": workers,
            "targets": TARGETS, "rows": rows, "growth": growth}


# Issue 15's goals, as a user times the commands (new process each): experiments -> {column: seconds}
TARGETS = {3600: {"cmd_status_summary_s": 1.0, "cmd_status_s": 1.0, "cmd_collect_first_cold_s": 10.0,
                  "cmd_collect_unchanged_s": 1.0},
           36000: {"cmd_status_summary_s": 3.0, "cmd_collect_unchanged_s": 5.0}}


def print_orchestration(payload: dict[str, Any]) -> None:
    rows = [r for r in payload["rows"] if "cmd_status_s" in r]
    if rows:
        cols = ["cmd_status_summary_cold_s", "cmd_status_summary_s", "cmd_status_cold_s", "cmd_status_s",
                "cmd_collect_first_cold_s", "cmd_collect_first_s", "cmd_collect_unchanged_cold_s",
                "cmd_collect_unchanged_s"]

        def cell(r: dict[str, Any], col: str) -> str:
            goal = TARGETS.get(r["experiments"], {}).get(col)
            return f"{r[col]:.2f}" + (f" ({r[col] / goal:.2f} of goal)" if goal else "")

        print_table(
            "As a user runs them: one process per command (seconds; Slurm off PATH)",
            ["experiments", "status --summary cold", "warm", "status cold", "warm", "collect first cold", "warm",
             "collect unchanged cold", "warm", "load"],
            [[r["experiments"], *(cell(r, c) for c in cols), f"{r['load_before']:.1f}-{r['load_after']:.1f}"]
             for r in rows],
            caption="goals (issue 15): at 3,600 status --summary, status and unchanged collect < 1 s, first "
                    "collect < 10 s; at 36,000 status --summary < 3 s, unchanged collect < 5 s"
                    + ("" if all(r["page_cache_dropped"] for r in rows) else
                       "; page cache NOT dropped (not root): 'cold' columns are warm"),
        )
    print_table(
        "Orchestration at scale (seconds; Slurm querying off)",
        ["experiments", "generate", "manifest", "status --summary", "status table", "(render table)",
         "collect first", "collect unchanged", "collect +5%", "analyze"],
        [[r["experiments"], r["generate_s"], r["manifest_s"], r["status_summary_s"], r["status_table_s"],
          r["render_table_s"], r["collect_first_s"], r["collect_unchanged_s"], r["collect_incremental_s"],
          r.get("analyze_s")] for r in payload["rows"]],
        caption="targets at 3,600: status < 1 s, collect < 10 s",
    )
    if payload["growth"]:
        print_table(
            "Growth (time ratio; exponent b in t ~ n^b)",
            ["n", "manifest", "status table", "collect first", "collect +5%", "analyze"],
            [[f"{g['from']} -> {g['to']}",
              *(f"{g[k]:.1f}x (b={g[k + '_exponent']:.2f})" if k in g else "-"
                for k in ("manifest_s", "status_table_s", "collect_first_s", "collect_incremental_s",
                          "analyze_s"))] for g in payload["growth"]],
        )
