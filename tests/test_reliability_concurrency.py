"""Many processes write shards and progress files while others run status and collect over and over:
no crash, no partial read, and the final collect is complete. Fabricated results (no TensorFlow)."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing as mp
import time
import traceback

import pandas as pd
from conftest import cli
from test_reliability_helpers import fake_shard, make_study

from hpc_unet.manifest import read_manifest
from hpc_unet.results.collect import collect, read_collected
from hpc_unet.status.state import experiment_states
from hpc_unet.study import Study

WRITERS = 4
READERS = 2
STATES = {"completed", "pending", "failed"}


def writer(root: str, exp_ids: list[str], tag: int, errors) -> None:
    from hpc_unet.train.progress import Progress

    try:
        study = Study.at(root)
        for exp_id in exp_ids:
            progress = Progress(study, exp_id, attempt=1, attempt_id="", epochs=3, state="starting")
            for epoch in range(1, 4):
                progress.update(state="running", epoch=epoch, best_val_jaccard=0.1 * epoch)
            if exp_id.endswith("bs32-s0"):
                fake_shard(study, exp_id, 1, "failed", tag=f"{tag:08x}")  # then a retry that completes
                fake_shard(study, exp_id, 2, tag=f"{tag:08x}")
            else:
                fake_shard(study, exp_id, 1, tag=f"{tag:08x}")
            progress.update(state="completed")
    except BaseException:
        errors.put(f"writer {tag}: {traceback.format_exc()}")


def reader(root: str, stop, errors, stats) -> None:
    try:
        study = Study.at(root)
        frame = read_manifest(study)
        last_completed, seen = 0, []
        while True:
            done = stop.is_set()  # read before the pass, so one full pass runs after the writers end
            # status: the library call and the CLI, plus every progress file read directly (a partial
            # JSON file would be swallowed by status, so check it here)
            states = experiment_states(study, frame, query_slurm=False)
            assert len(states) == len(frame) and {s["state"] for s in states} <= STATES, states
            for exp_id in frame["exp_id"]:
                path = study.progress_file(exp_id)
                with contextlib.suppress(FileNotFoundError):
                    json.loads(path.read_text())
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert cli("status", "--study", root, "--json") == 0
            json.loads(out.getvalue())
            # collect: never an unreadable shard, never two rows for one experiment, never fewer results
            report = collect(study)
            assert report.unreadable == [], report.unreadable
            results, history = read_collected(study)  # the pair of one collect, whoever ran it
            assert results["exp_id"].is_unique
            assert report.completed >= last_completed, (report.completed, last_completed)
            last_completed = report.completed
            seen.append(report.completed)
            assert set(history["attempt_id"]) <= set(results["attempt_id"])
            if done:
                break
        stats.put(seen)
    except BaseException:
        errors.put(f"reader: {traceback.format_exc()}")


def test_writers_and_readers_at_once(tmp_path):
    study = make_study(tmp_path / "s")  # the smoke grid: 36 experiments
    exp_ids = list(read_manifest(study)["exp_id"])
    plan = {w: [e for i, e in enumerate(exp_ids) if i % WRITERS == w] for w in range(WRITERS)}
    raced = exp_ids[::6]  # a requeue race: a second writer also completes these (same attempt number)
    for i, exp_id in enumerate(raced):
        plan[(exp_ids.index(exp_id) + 1 + i % (WRITERS - 1)) % WRITERS].append(exp_id)

    ctx = mp.get_context("spawn")
    errors, stats, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    readers = [ctx.Process(target=reader, args=(str(study.root), stop, errors, stats)) for _ in range(READERS)]
    writers = [ctx.Process(target=writer, args=(str(study.root), plan[w], w + 1, errors)) for w in range(WRITERS)]
    for p in readers + writers:
        p.start()
    deadline = time.monotonic() + 240
    for p in writers:
        p.join(max(1, deadline - time.monotonic()))
    stop.set()
    for p in readers:
        p.join(max(1, deadline - time.monotonic()))
    alive = [p for p in readers + writers if p.is_alive()]
    for p in alive:
        p.kill()
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, "\n".join(problems)
    assert not alive, "processes still running after the time limit"
    assert all(p.exitcode == 0 for p in readers + writers)
    seen = [stats.get(timeout=5) for _ in readers]
    assert any(0 < n < 36 for counts in seen for n in counts), seen  # the readers overlapped the writers

    report = collect(study)
    assert report.completed == 36 and report.missing == [] and report.failed == {} and report.unreadable == []
    twice = {e for e in exp_ids if e.endswith("bs32-s0")} | set(raced)
    assert set(report.duplicates) == twice
    results = pd.read_parquet(study.results_dir / "results.parquet")
    assert len(results) == 36 and results["exp_id"].is_unique and (results["status"] == "completed").all()
    for exp_id in raced:  # same attempt, same finish time: the larger attempt_id counts, every time
        assert report.chosen[exp_id] == max(report.duplicates[exp_id])
    history = pd.read_parquet(study.results_dir / "history.parquet")
    assert len(history) == 36 * 3 and history.groupby("exp_id")["attempt_id"].nunique().eq(1).all()
    states = experiment_states(study, query_slurm=False)
    assert {s["state"] for s in states} == {"completed"} and {s["epoch"] for s in states} == {3}
