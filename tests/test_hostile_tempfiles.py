"""Temporary files that a killed writer leaves (issue 20): removed once no live writer can own them,
kept while one can. The leftovers are real: a subprocess is SIGKILLed inside an atomic write. No TensorFlow."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from test_reliability_helpers import fake_shard, make_study

from hpc_unet.manifest import read_manifest

SMALL = ("grid.learning_rate=[1e-3]", "grid.batch_size=[8,16,32]", "grid.architecture=['UNet']", "train.epochs=2")

KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from hpc_unet.study import atomic_write
def writer(tmp):
    tmp.write_bytes(b"PAR1 half a shard")
    os.kill(os.getpid(), signal.SIGKILL)
atomic_write(Path(sys.argv[1]), writer)
"""


def killed_write(target: Path, age_s: float = 0.0) -> Path:
    """Run an atomic write of ``target`` in a process killed mid-write; return the temporary it left."""
    before = set(os.listdir(target.parent)) if target.parent.exists() else set()
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], capture_output=True)
    assert proc.returncode == -9, proc.stderr
    (left,) = set(os.listdir(target.parent)) - before
    path = target.parent / left
    assert left.startswith(f".{target.name}.") and left.endswith(".tmp") and not target.exists()
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def test_collect_removes_dead_writers_shard_and_results_temps_and_keeps_a_live_holders(tmp_path):
    from hpc_unet.lease import take
    from hpc_unet.results.collect import collect

    study = make_study(tmp_path / "s", *SMALL)
    e0, e1, e2 = read_manifest(study)["exp_id"]
    fake_shard(study, e0, 1)
    study.results_dir.mkdir(parents=True, exist_ok=True)
    lease = take(study, e1, 1)  # a live holder (this process) of e1, taken now
    try:
        dead_e1 = killed_write(study.shards_dir / f"{e1}.a001.1111aaaa.history.parquet", age_s=600)
        live_e1 = killed_write(study.shards_dir / f"{e1}.a001.2222bbbb.history.parquet")  # after taken_at
        dead_e2 = killed_write(study.shards_dir / f"{e2}.a001.3333cccc.failed.summary.parquet")  # no lease
        dead_results = killed_write(study.results_dir / "results.parquet")
        other = study.shards_dir / "notes.txt"
        other.write_text("mine")
        from hpc_unet.cli import main

        assert main(["collect", "--study", str(study.root)]) == 0
        assert not dead_e1.exists() and not dead_e2.exists() and not dead_results.exists()
        assert live_e1.exists() and other.exists()
        assert (study.results_dir / ".collect.lock").exists()
        collect(study)  # the unchanged fast path leaves the live one too
        assert live_e1.exists()
    finally:
        lease.end()
    take(study, e1, 2).end()  # the next holder of e1: the previous holder's temporaries are dead
    assert not live_e1.exists()


def test_taking_a_lease_removes_the_run_folders_temporaries(tmp_path):
    from hpc_unet.lease import take

    study = make_study(tmp_path / "s", *SMALL)
    exp = read_manifest(study)["exp_id"][0]
    run = study.run_dir(exp)
    run.mkdir(parents=True)
    progress_tmp = killed_write(run / "progress.json")
    (run / "checkpoint").mkdir()
    bundle_tmp = run / "checkpoint" / ".e0003.ab12_x9z"  # a checkpoint bundle killed while being written
    bundle_tmp.mkdir()
    (bundle_tmp / "model.npz").write_bytes(b"partial")
    model_tmp = run / "model" / ".model.k2j4h5g6"
    model_tmp.mkdir(parents=True)
    keep = [run / "checkpoint" / "e0002", run / "notes.tmp"]
    keep[0].mkdir()
    keep[1].write_text("a user's file")
    take(study, exp, 1).end()
    assert not progress_tmp.exists() and not bundle_tmp.exists() and not model_tmp.exists()
    assert all(p.exists() for p in keep) and (run / ".lease.lock").exists()


def test_predict_removes_stages_of_killed_predicts_and_keeps_a_live_one(tmp_path):
    from hpc_unet.predict.runner import staged
    from hpc_unet.tempfiles import OWNER

    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".predict.dead1234"  # its owner's lock file is there but nobody holds it
    dead.mkdir()
    (dead / OWNER).write_text("")
    (dead / "a.png").write_bytes(b"half")
    ownerless = out / ".predict.old12345"  # killed before it could lock: old
    ownerless.mkdir()
    t = time.time() - 3600
    os.utime(ownerless, (t, t))
    young = out / ".predict.new12345"  # being created right now by another predict
    young.mkdir()
    live = out / ".predict.live1234"
    live.mkdir()
    with open(live / OWNER, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a live predict (another open file: flock locks conflict)
        with staged(out) as stage:
            (stage / "x.tif").write_bytes(b"mask")
        fcntl.flock(fh, fcntl.LOCK_UN)
    assert not dead.exists() and not ownerless.exists()
    assert live.exists() and young.exists()
    assert (out / "x.tif").read_bytes() == b"mask" and not (out / OWNER).exists()
    assert sorted(p.name for p in out.iterdir()) == [".predict.live1234", ".predict.new12345", "x.tif"]
