"""A preemption storm on the project's own Slurm cluster (issue 10): the smoke study as one array with
``--array-parallelism 2`` while a script preempts it (urgent jobs taking all GPUs), requeues tasks
(``scontrol requeue``), cancels pending tasks (so that squeue's pending range has holes and runs past the
30 characters ``%i`` prints), and SIGKILLs trainers; ``status``, ``submit`` and ``collect`` run during it.

It asserts: exactly one completed shard per experiment (nothing trained twice), no task ever refused by a
lease (submit never resubmitted a live experiment), no checkpoint removed under a live task, every
interruption counted in ``restarts``, ``lost`` only where the storm removed the task (cancelled or killed),
and interrupted histories equal to uninterrupted runs. Also: ``submit`` with the controller stopped is one
line and leaves the study unchanged.

Figures (events, restarts, shards, wall time, status lines) are printed, and written as JSON to
$HPC_UNET_STORM_REPORT when set.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_reliability_helpers import snapshot
from test_slurm_integration import (
    SLURM_DIR,
    _sh,
    hpc,
    make_study,
    ok,
    shard_history,
    slurm_cluster,  # noqa: F401 (the fixture; requested by name below)
    stop_controller,
)

from hpc_unet.dispatch.records import load_records
from hpc_unet.lease import judge, read_lease
from hpc_unet.results.shards import parse_summary_name
from hpc_unet.study import Study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

EPOCHS = 4
# The smoke grid (36 experiments) on a small stack: ~10-20 s per task on 2 shared cores, most of it
# Python + TensorFlow start; epochs of ~0.5-1 s leave time to interrupt a task between epochs.
STORM = [f"train.epochs={EPOCHS}", "train.run_eagerly=true", "train.base_filters=4", "data.synth_slices=2",
         "data.synth_height=128", "data.synth_width=128"]
PARALLELISM = 2
HISTORY_VALUES = ["epoch", "loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou", "dice",
                  "val_dice", "lr"]
LIVE = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING", "SUSPENDED", "REQUEUE_HOLD")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Storm:
    """The study under attack, and what the test saw."""

    def __init__(self, root: Path, report: Path) -> None:
        self.root = root
        self.study = Study.at(root)
        self.report = report
        self.t0 = time.monotonic()
        self.events: list[str] = []
        self.status_lines: list[str] = []
        self.may_be_lost: set[str] = set()  # their task was cancelled or killed: lost with evidence
        self.collateral: dict[str, str] = {}  # lost, but not by the storm's hand: exp -> Slurm's word
        self.lost_seen: set[str] = set()
        self.interrupted: dict[str, int] = {}
        self.kinds: dict[str, set[str]] = {}
        self.cut_ranges: list[str] = []
        self.prune_removed: list[str] = []
        self.submits: list[list[str]] = []
        self.touched: dict[str, float] = {}  # exp -> when the storm last hit it

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] {text}"
        self.events.append(line)
        print(line, flush=True)

    def progress(self, exp: str) -> dict[str, Any]:
        try:
            return json.loads(self.study.progress_file(exp).read_text())
        except (OSError, ValueError):
            return {}

    def holders(self) -> dict[str, dict[str, Any]]:
        """exp -> live lease of a Slurm task."""
        out = {}
        if self.study.runs_dir.exists():
            for run_dir in self.study.runs_dir.iterdir():
                view = judge(read_lease(run_dir))
                if view.live and view.holder and view.holder.get("job_id"):
                    out[run_dir.name] = view.holder
        return out

    def mid_training(self, min_epoch: int, max_epoch: int = EPOCHS - 2) -> list[tuple[str, dict[str, Any]]]:
        """Held experiments far enough from their end that a signal now interrupts them, whose job is
        RUNNING and that the storm has not hit in the last 60 s (a requeued task trains on for KillWait)."""
        rows = _sh("squeue", "-h", "-r", "-t", "RUNNING", "-o", "%F|%K").stdout.split()
        running = {f"{a}_{t}" if t.isdigit() else a for a, _, t in (r.partition("|") for r in rows)}
        now = time.monotonic()
        out = []
        for exp, holder in self.holders().items():
            if holder["job_id"] not in running or now - self.touched.get(exp, -1e9) < 60:
                continue
            prog = self.progress(exp)
            epoch = prog.get("epoch") or 0
            if prog.get("state") in ("starting", "running") and min_epoch <= epoch <= max_epoch:
                out.append((exp, holder))
        return out

    def wait_target(self, min_epoch: int, max_epoch: int = EPOCHS - 2,
                    timeout: float = 300) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.mid_training(min_epoch, max_epoch)
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(f"no task in training (epoch >= {min_epoch}) within {timeout} s")

    def hit(self, targets: list[tuple[str, dict[str, Any]]], kind: str) -> None:
        """Once each target's trainer process has gone, count an interruption where it left no result
        (a requeued task trains on until KillWait ends it, and may finish first)."""
        for exp, _ in targets:
            self.touched[exp] = time.monotonic()
        for exp, holder in targets:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _alive(int(holder["pid"])):
                time.sleep(0.1)
            assert not _alive(int(holder["pid"])), f"{kind}: trainer of {exp} still alive after 60 s"
            if exp in self.completed():
                self.log(f"{kind}: {exp} finished before its trainer stopped: not an interruption")
                continue
            self.interrupted[exp] = self.interrupted.get(exp, 0) + 1
            self.kinds.setdefault(kind, set()).add(exp)

    def status(self, label: str) -> dict[str, dict[str, Any]]:
        """`hpc-unet status --json` during the storm; lost only with evidence."""
        out = json.loads(ok(hpc("status", "--study", self.root, "--json")))
        rows = {r["exp_id"]: r for r in out["experiments"]}
        s = out["summary"]
        lost = {e for e, r in rows.items() if r["state"] == "lost"}
        line = (f"{label}: {s['done']}/{s['total']} done, {s['running']} running, {s['queued']} queued, "
                f"{s.get('unknown', 0)} unknown, {s['failed']} failed/lost ({len(lost)} lost), "
                f"{s.get('restarts', 0)} restarts")
        self.status_lines.append(f"[{time.monotonic() - self.t0:6.1f} s] {line}")
        print(self.status_lines[-1], flush=True)
        for exp in sorted(lost - self.may_be_lost):
            # not lost by the storm's hand (e.g. a task preempted before Python installed its USR2 handler
            # dies of the signal: FAILED, exit 12, not requeued): Slurm itself must say it ended
            ended = self.slurm_end(exp)
            assert ended and not judge(read_lease(self.study.run_dir(exp))).live, \
                f"status showed {exp} lost without evidence (Slurm: {ended or 'not ended'})"
            self.collateral[exp] = ended
        self.lost_seen |= lost
        return rows

    def slurm_end(self, exp: str) -> str:
        """Slurm's own record of the latest task of ``exp``, read independently of hpc-unet's parser:
        its terminal state (with exit code), or '' while it is not known to have ended."""
        job = self.job_of(exp)
        base, _, index = job.partition("_")
        for row in _sh("squeue", "-h", "-r", "-t", "all", "-j", base, "-o", "%F|%K|%T").stdout.split():
            f, k, state = row.split("|")
            if (f, k if index else "") == (base, index) or (not index and f == base):
                return state if state in TERMINAL else ""
        out = _sh("sacct", "-n", "-P", "-X", "-j", job, "--format=State,ExitCode").stdout.split()
        last = out[-1] if out else ""
        return last if last.split("|")[0].split(" ")[0] in TERMINAL else ""

    def submit(self, expect: set[str]) -> list[str]:
        """`hpc-unet submit` during the storm: it must submit the experiments the storm made lost, and
        nothing whose task Slurm does not know to have ended."""
        self.status("before submit")
        out = ok(hpc("submit", "--study", self.root, "--partition", "a40", "--array-parallelism", str(PARALLELISM)))
        if "nothing to submit" in out:
            sent: list[str] = []
        else:
            records = load_records(self.study)
            sent = [t["exp_id"] for t in records[-1]["tasks"]]
        self.log(f"submit during the storm: {len(sent)} experiments {sorted(sent)} -> {out.strip().splitlines()[-1]}")
        assert expect <= set(sent), f"submit sent {sorted(sent)}, expected at least {sorted(expect)}"
        for exp in set(sent) - expect:
            assert self.slurm_end(exp), f"submit resubmitted {exp}, whose task Slurm does not know to have ended"
            self.collateral.setdefault(exp, self.slurm_end(exp))
        self.submits.append(sent)
        return sent

    def collect_checking_prune(self) -> None:
        """`hpc-unet collect` during the storm must not remove the checkpoint of a task still training."""
        before = {e: (self.study.run_dir(e) / "checkpoint").exists() for e in self.all_exps()}
        live_before = self.holders()
        ok(hpc("collect", "--study", self.root))
        live_after = self.holders()
        completed = self.completed()
        for exp, had in before.items():
            if had and not (self.study.run_dir(exp) / "checkpoint").exists():
                self.prune_removed.append(exp)
                same_holder = (exp in live_before and exp in live_after
                               and live_before[exp]["token"] == live_after[exp]["token"])
                assert exp in completed, f"collect removed {exp}'s checkpoint without a completed result"
                assert not (same_holder and self.progress(exp).get("state") != "completed"), \
                    f"collect removed {exp}'s checkpoint under its live task"

    def completed(self) -> set[str]:
        names = (parse_summary_name(p.name) for p in self.study.shards_dir.glob("*.completed.summary.parquet"))
        return {n[0] for n in names if n}

    def all_exps(self) -> list[str]:
        return list(pd.read_parquet(self.root / "manifest.parquet")["exp_id"])

    def job_of(self, exp: str) -> str:
        tasks = {t["exp_id"]: t for r in load_records(self.study) for t in r["tasks"]}
        return tasks[exp]["job_id"]

    def urgent(self, label: str) -> None:
        self.wait_target(min_epoch=1)
        targets = self.mid_training(0)  # every held task far from its end: all of them get preempted
        out = _sh("sbatch", "--parsable", "-p", "urgent", "--gres=gpu:a40:4", "-c", "1", "--mem=100M",
                  "-o", "/dev/null", "--wrap", "sleep 2")
        assert out.returncode == 0, out.stderr
        self.log(f"{label}: urgent job {out.stdout.strip()} takes all 4 GPUs, preempting "
                 f"{sorted(e for e, _ in targets)}")
        self.hit(targets, "urgent")

    def requeue(self, label: str, max_epoch: int = 0) -> None:
        # submitit ignores the SIGTERM of `scontrol requeue`: the task trains on until SIGKILL after
        # KillWait (5 s); a task in its first epoch is likely to be cut (hit() checks whether it was)
        (exp, holder), *_ = self.wait_target(min_epoch=0, max_epoch=max_epoch)
        assert _sh("scontrol", "requeue", holder["job_id"]).returncode == 0
        self.log(f"{label}: scontrol requeue {holder['job_id']} ({exp}, epoch {self.progress(exp).get('epoch')})")
        self.hit([(exp, holder)], "requeue")

    def kill(self, label: str) -> str:
        (exp, holder), *_ = self.wait_target(min_epoch=1)
        self.may_be_lost.add(exp)
        os.kill(int(holder["pid"]), signal.SIGKILL)
        self.log(f"{label}: kill -9 trainer pid {holder['pid']} of {holder['job_id']} ({exp}, epoch "
                 f"{self.progress(exp).get('epoch')})")
        self.hit([(exp, holder)], "kill -9")
        return exp

    def cancel_pending(self, array: str, label: str, n: int = 7) -> list[str]:
        """Cancel every third never-started task: the pending range gets holes (and runs past 30 characters)."""
        rows = _sh("squeue", "-h", "-r", "-j", array, "-t", "PENDING", "-o", "%K|%r").stdout.split()
        pending = sorted(int(k) for k, _, reason in (r.partition("|") for r in rows)
                         if k.isdigit() and "BeginTime" not in reason)
        fresh = [t for t in pending if not self.progress(self.exp_of_index(array, t))]
        victims = fresh[1:-1:3][:n]
        assert len(victims) >= 4, f"too few pending tasks to cut holes in: {pending}"
        assert _sh("scancel", *[f"{array}_{t}" for t in victims]).returncode == 0
        exps = [self.exp_of_index(array, t) for t in victims]
        self.may_be_lost |= set(exps)
        self.log(f"{label}: scancel {len(victims)} pending tasks {array}_{victims}")
        time.sleep(1)
        raw = _sh("squeue", "-h", "-j", array, "-o", "%i").stdout.split()
        wide = _sh("squeue", "-h", "-j", array, "-O", "JobArrayID:100").stdout.split()
        self.cut_ranges += [r for r in raw + wide if "[" in r and (len(r) >= 30 or not r.endswith("]"))]
        self.log(f"squeue %i now prints {[r for r in raw if '[' in r]}; -O JobArrayID:100 prints "
                 f"{[r for r in wide if '[' in r]}")
        return exps

    def exp_of_index(self, array: str, index: int) -> str:
        for r in load_records(self.study):
            for t in r["tasks"]:
                if t["job_id"] == f"{array}_{index}":
                    return t["exp_id"]
        raise KeyError(f"{array}_{index}")

    def wait_lost(self, exps: set[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.status("waiting for the killed task's job to end")
            if all(rows[e]["state"] == "lost" for e in exps):
                return
            time.sleep(2)
        raise AssertionError(f"{sorted(exps)} never shown as lost")

    def wait_done(self, timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last = 0.0
        while time.monotonic() < deadline:
            completed = self.completed()
            queue = _sh("squeue", "-h", "-r", "-t", "all", "-o", "%F|%K|%T").stdout.split()
            mine = {r.split("|")[0] for r in queue} & self.arrays()
            live = [r for r in queue if r.split("|")[0] in mine and r.split("|")[2] in LIVE]
            if len(completed) == len(self.all_exps()) and not live:
                return self.status("after the storm")
            if time.monotonic() - last > 20:
                self.status("storm winding down")
                last = time.monotonic()
            time.sleep(1)
        raise AssertionError(f"the study did not finish within {timeout} s")

    def arrays(self) -> set[str]:
        return {t["job_id"].split("_")[0] for r in load_records(self.study) for t in r["tasks"]}


@pytest.fixture
def storm(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Storm:
    request.getfixturevalue("slurm_cluster")
    monkeypatch.setenv("HPC_UNET_THREADS", "1")  # the same numerics for the Slurm tasks and the reference
    root = make_study(tmp_path / "storm", STORM)
    return Storm(root, tmp_path / "storm-report.json")


def test_preemption_storm(storm: Storm, tmp_path: Path) -> None:
    s = storm
    out = ok(hpc("submit", "--study", s.root, "--partition", "a40", "--array-parallelism", str(PARALLELISM)))
    first = next(iter(s.arrays()))
    s.log(f"submitted 36 experiments as array {first} (%{PARALLELISM}): {out.strip().splitlines()[-1]}")
    s.urgent("event 1")
    s.status("after event 1")
    cancelled = s.cancel_pending(first, "event 2")
    rows = s.status("after event 2 (holes in the pending range)")
    assert all(rows[e]["state"] == "lost" for e in cancelled), {e: rows[e]["state"] for e in cancelled}
    shown = ok(hpc("status", "--study", s.root, "--summary")).strip().splitlines()
    s.status_lines += [f"rendered `status --summary`: {line.strip()}" for line in shown[1:] if line.strip()]
    s.submit(set(cancelled))
    s.requeue("event 3")
    killed = {s.kill("event 4")}
    s.status("after event 4")
    s.collect_checking_prune()
    s.urgent("event 5")
    s.wait_lost(killed)
    s.submit(killed)
    s.requeue("event 6")
    killed2 = {s.kill("event 7")}
    s.urgent("event 8")
    s.wait_lost(killed2)
    s.submit(killed2)
    s.collect_checking_prune()
    final = s.wait_done(timeout=900)
    storm_seconds = time.monotonic() - s.t0

    # nothing trained twice: one completed summary per experiment, and nothing else
    summaries = sorted(p.name for p in s.study.shards_dir.glob("*.summary.parquet"))
    per_exp: dict[str, int] = {}
    for name in summaries:
        exp = parse_summary_name(name)[0]
        per_exp[exp] = per_exp.get(exp, 0) + 1
    assert len(summaries) == 36 and all(n.endswith(".completed.summary.parquet") for n in summaries), summaries
    assert set(per_exp) == set(s.all_exps()) and set(per_exp.values()) == {1}
    logs = "".join(p.read_text(errors="replace") for p in (s.root / "jobs" / "slurm").glob("*_log.err"))
    refused = logs.count("is being trained by")
    assert refused == 0, "a task found its experiment held by another: submit resubmitted a live one"
    assert "this job is preempted" in logs

    # restarts: every interruption counted, in the result and in status
    results = pd.concat([pd.read_parquet(p) for p in s.study.shards_dir.glob("*.summary.parquet")]).set_index("exp_id")
    for exp, n in s.interrupted.items():
        assert results.loc[exp, "restarts"] >= n, (exp, n, results.loc[exp, "restarts"])
        assert final[exp]["restarts"] == results.loc[exp, "restarts"]
    assert {r["state"] for r in final.values()} == {"completed"}
    assert len(s.kinds.get("urgent", ())) >= 1 and len(s.kinds.get("kill -9", ())) == 2, s.kinds
    resumed = results[results["resumed_from_epoch"] > 0]
    assert len(resumed) and (resumed["resumed_from_attempt"] != "").all()
    assert s.lost_seen and s.lost_seen <= s.may_be_lost | set(s.collateral)
    # that holds by construction (status() files each unexplained loss under collateral once Slurm says its
    # task ended); what must not hold: a task Slurm records as COMPLETED whose experiment is lost (it exited
    # 0 without a result shard: work lost by hpc-unet, not by the storm)
    completed_but_lost = {e: w for e, w in s.collateral.items() if w.split("|")[0] == "COMPLETED"}
    assert not completed_but_lost, completed_but_lost
    assert s.cut_ranges, "no pending range longer than squeue's 30 characters was seen"
    report = ok(hpc("collect", "--study", s.root))
    assert "36 completed of 36" in report
    assert "nothing to submit" in ok(hpc("submit", "--study", s.root, "--partition", "a40"))

    # interrupted histories equal uninterrupted ones (local executor, same settings)
    picks = []
    for kind in ("kill -9", "requeue", "urgent"):
        cands = sorted(e for e in s.kinds.get(kind, ()) if results.loc[e, "resumed_from_epoch"] > 0 and e not in picks)
        picks += cands[:1]
    picks = picks or sorted(s.interrupted)[:2]
    reference = make_study(tmp_path / "reference", STORM)
    t_ref = time.monotonic()
    ok(hpc("submit", "--study", reference, "--executor", "local", *[a for e in picks for a in ("--only", e)],
           timeout=600))
    for exp in picks:
        pd.testing.assert_frame_equal(shard_history(s.root, exp)[HISTORY_VALUES],
                                      shard_history(reference, exp)[HISTORY_VALUES], check_exact=True)
    figures = {
        "storm_seconds": round(storm_seconds, 1), "reference_seconds": round(time.monotonic() - t_ref, 1),
        "events": s.events, "status_lines": s.status_lines,
        "interrupted": s.interrupted, "kinds": {k: sorted(v) for k, v in s.kinds.items()},
        "restarts_recorded": int(results["restarts"].sum()),
        "experiments_with_restarts": int((results["restarts"] > 0).sum()),
        "resumed_from_epoch": {e: int(v) for e, v in resumed["resumed_from_epoch"].items()},
        "completed_shards": len(summaries), "arrays": sorted(s.arrays(), key=int),
        "submits_during_storm": s.submits, "lost_seen": sorted(s.lost_seen), "cut_ranges": s.cut_ranges,
        "collect_removed_checkpoints_of": s.prune_removed, "compared_to_uninterrupted": picks,
        "lost_not_by_the_storm": s.collateral,
    }
    print(json.dumps(figures, indent=2))
    if os.environ.get("HPC_UNET_STORM_REPORT"):
        Path(os.environ["HPC_UNET_STORM_REPORT"]).write_text(json.dumps(figures, indent=2))


@pytest.mark.usefixtures("slurm_cluster")
def test_submit_with_the_controller_stopped(tmp_path: Path) -> None:
    """One line naming Slurm's message, exit 2, and the study exactly as it was (no data cache, no
    submitit pickles in jobs/slurm/, no submission record)."""
    root = make_study(tmp_path / "s", ["grid.learning_rate=[1e-3]", "grid.batch_size=[8]", *STORM])
    before = snapshot(root)
    stop_controller()
    try:
        proc = hpc("submit", "--study", root, "--partition", "a40")
        status = hpc("status", "--study", root)
    finally:
        assert _sh("bash", str(SLURM_DIR / "start.sh")).returncode == 0
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "controller does not answer" in lines[0] and "DOWN" in lines[0], lines[0]
    assert snapshot(root) == before
    assert status.returncode == 0 and "3 not submitted" in status.stdout
    # a partition that does not exist, or a GPU type it lacks: refused before anything is written
    for flags, words in ((["--partition", "nope"], "partition 'nope' does not exist"),
                         (["--partition", "a40", "--gpu-type", "h100"], "no GPUs of type 'h100'"),
                         (["--partition", "a40", "--qos", "bogus"], "qos 'bogus' is not one that")):
        proc = hpc("submit", "--study", root, *flags)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert snapshot(root) == before
