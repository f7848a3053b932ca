"""Result files under damage: truncated or garbage shards, stray temp files, duplicate attempts, a full disk
and a failing rename. No TensorFlow: shards are fabricated with the real writer."""

from __future__ import annotations

import errno
import json
import os
import random

import pandas as pd
import pytest
from conftest import cli
from test_reliability_helpers import fake_shard, make_study

from hpc_unet.dispatch.submit import plan
from hpc_unet.results import collect as collect_mod
from hpc_unet.results.collect import collect
from hpc_unet.results.shards import completed_experiments, shard_index, summary_files
from hpc_unet.status.state import experiment_states
from hpc_unet.study import atomic_write_json, read_json

GRID = ("grid.learning_rate=[1e-3]", "grid.batch_size=[8, 16]", "grid.architecture=['UNet', 'Attention_UNet']")


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path / "s", *GRID)


def ids(study):
    from hpc_unet.manifest import read_manifest

    return list(read_manifest(study)["exp_id"])


def collect_json(study, capsys):
    capsys.readouterr()
    assert cli("collect", "--study", study.root, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_damaged_shards_are_never_taken_as_results(study, capsys):
    e0, e1, e2, e3 = ids(study)
    good = fake_shard(study, e0, 1)
    good_file = study.shards_dir / f"{good}.completed.summary.parquet"
    data = good_file.read_bytes()
    planted = {
        f"{e1}.a001.00000001.completed.summary.parquet": data[: len(data) // 2],  # truncated copy
        f"{e1}.a002.00000002.completed.summary.parquet": b"",  # empty
        f"{e2}.a001.00000003.completed.summary.parquet": os.urandom(4000),  # garbage
        f"{e2}.a002.00000004.completed.summary.parquet": b"PAR1" + os.urandom(100) + b"PAR1",  # magic, bad footer
        f"{e3}.a001.00000005.completed.summary.parquet": data,  # whole Parquet, but another experiment's row
    }
    for name, blob in planted.items():
        (study.shards_dir / name).write_bytes(blob)
    stray = {  # what a killed writer leaves behind: temp files never count
        f".{e1}.a003.00000006.completed.summary.parquet.x1y2z3.tmp": data,
        f".{e1}.a003.00000006.history.parquet.abcdef.tmp": data[:10],
        "notes.txt": b"hello",
    }
    for name, blob in stray.items():
        (study.shards_dir / name).write_bytes(blob)

    # status and submit go by file names plus a footer check (no decoding): truncated, empty and garbage
    # files do not count, so e1 and e2 are still to run. (e3's file is whole Parquet: only collect, which
    # reads contents, can tell it holds another experiment's row.)
    assert completed_experiments(study).get(e0) == "completed"
    assert e1 not in completed_experiments(study) and e2 not in completed_experiments(study)
    states = {s["exp_id"]: s["state"] for s in experiment_states(study, query_slurm=False)}
    assert states[e0] == "completed" and states[e1] == states[e2] == "pending"
    capsys.readouterr()
    assert cli("status", "--study", study.root, "--json") == 0
    assert json.loads(capsys.readouterr().out)["summary"]["total"] == 4
    assert {e1, e2} <= {p.exp_id for p in plan(study)}

    # collect reads contents: e3's file holds e0's row, so it is rejected too; nothing crashes
    report = collect_json(study, capsys)
    assert report["completed"] == 1
    assert report["missing"] == [e1, e2, e3]
    assert sorted(report["unreadable"]) == sorted(planted)
    results = pd.read_parquet(study.results_dir / "results.parquet")
    assert list(results["exp_id"]) == [e0] and results["attempt_id"].tolist() == [good]
    history = pd.read_parquet(study.results_dir / "history.parquet")
    assert set(history["attempt_id"]) == {good} and len(history) == 3

    # the damage is reported again on the next collect (never cached as good), and a real result repairs it
    for exp in (e1, e2, e3):
        fake_shard(study, exp, 3)
    report = collect_json(study, capsys)
    assert report["completed"] == 4 and report["missing"] == []
    assert sorted(report["unreadable"]) == sorted(planted)
    capsys.readouterr()
    assert cli("collect", "--study", study.root) == 0
    assert "unreadable shards skipped" in capsys.readouterr().out


def test_damaged_history_shard_is_reported(study, capsys):
    e0 = ids(study)[0]
    attempt_id = fake_shard(study, e0, 1)
    hist = study.shards_dir / f"{attempt_id}.history.parquet"
    hist.write_bytes(hist.read_bytes()[:20])
    report = collect_json(study, capsys)
    assert report["completed"] == 1 and report["unreadable"] == [hist.name]
    assert pd.read_parquet(study.results_dir / "history.parquet").empty


def test_duplicate_attempts_count_once_and_the_choice_is_deterministic(study, capsys, monkeypatch):
    e0, e1, e2, e3 = ids(study)
    # e0: a lost job (history only, no summary), then a resubmission that completed
    lost = f"{e0}.a001.0000dead"
    fake_shard(study, e0, 1, tag="0000dead")
    (study.shards_dir / f"{lost}.completed.summary.parquet").unlink()
    fake_shard(study, e0, 2, tag="0000beef", best=0.7)
    # e1: a requeue race: two completed shards of attempt 2 finished in the same second, an older completed
    # attempt 1 and a newer failed attempt 3 -> the completed attempt 2 with the larger attempt_id counts
    fake_shard(study, e1, 1, tag="11111111", best=0.61)
    fake_shard(study, e1, 2, tag="22222222", best=0.62, finished_at="2025-01-02T00:00:00+0000")
    fake_shard(study, e1, 2, tag="33333333", best=0.63, finished_at="2025-01-02T00:00:00+0000")
    fake_shard(study, e1, 3, "failed", tag="44444444")
    # e2: failed then oom -> the newest (oom) counts; e3: completed twice at different times -> the later
    fake_shard(study, e2, 1, "failed", tag="55555555")
    fake_shard(study, e2, 2, "oom", tag="66666666")
    fake_shard(study, e3, 1, tag="77777777", best=0.9, finished_at="2025-01-03T00:00:00+0000")
    fake_shard(study, e3, 1, tag="88888888", best=0.8, finished_at="2025-01-02T00:00:00+0000")
    expected = {e0: f"{e0}.a002.0000beef", e1: f"{e1}.a002.33333333", e2: f"{e2}.a002.66666666",
                e3: f"{e3}.a001.77777777"}

    first = collect_json(study, capsys)
    results = pd.read_parquet(study.results_dir / "results.parquet")
    assert results["exp_id"].is_unique and len(results) == 4
    assert dict(zip(results["exp_id"], results["attempt_id"], strict=True)) == expected
    assert dict(zip(results["exp_id"], results["attempts"], strict=True)) == {e0: 1, e1: 3, e2: 2, e3: 1}
    history = pd.read_parquet(study.results_dir / "history.parquet")
    assert set(history["attempt_id"]) == set(expected.values())  # one attempt's epochs per experiment
    assert history.groupby("exp_id")["epoch"].apply(lambda s: s.is_unique).all()
    assert first["completed"] == 3 and first["failed"] == {e2: "oom"}
    assert set(first["duplicates"]) == {e1, e2, e3}  # e0's lost attempt left no summary: not a duplicate
    assert first["chosen"] == {e: expected[e] for e in (e1, e2, e3)}
    assert len(first["duplicates"][e1]) == 4
    # status and submit agree with collect about what counts
    assert completed_experiments(study) == {e0: "completed", e1: "completed", e2: "oom", e3: "completed"}
    assert plan(study) == [] and [p.exp_id for p in plan(study, retry_failed=True)] == [e2]

    # the same choice whatever order the files are listed in and whatever the summary cache holds
    files = summary_files(study)
    for seed in range(4):
        shuffled = files[:]
        random.Random(seed).shuffle(shuffled)
        monkeypatch.setattr(collect_mod, "summary_files", lambda _s, f=shuffled: f)
        if seed % 2:
            (study.results_dir / collect_mod.CACHE_NAME).unlink(missing_ok=True)
        again = collect_json(study, capsys)
        again.pop("shards_read")
        assert again == {k: v for k, v in first.items() if k != "shards_read"}
        pd.testing.assert_frame_equal(pd.read_parquet(study.results_dir / "results.parquet"), results)


def test_completed_is_never_rerun_and_failures_only_on_request(study):
    e0, e1, e2, e3 = ids(study)
    fake_shard(study, e0, 1)
    fake_shard(study, e1, 1, "failed")
    fake_shard(study, e2, 1, "diverged")
    fake_shard(study, e3, 1, "skipped")
    assert plan(study) == []
    retry = plan(study, retry_failed=True)
    assert [(p.exp_id, p.attempt, p.fresh) for p in retry] == [(e1, 2, False), (e2, 2, True)]
    assert plan(study, retry_failed=True, only=[e0, e3]) == []  # not even when named
    fake_shard(study, e0, 2, "failed")  # a failed attempt after a completed one changes nothing
    assert completed_experiments(study)[e0] == "completed" and plan(study, retry_failed=True, only=[e0]) == []


def test_oom_policy_skips_only_larger_batches_of_the_same_configuration(tmp_path):
    from hpc_unet.manifest import read_manifest, row_dict
    from hpc_unet.train.run import _oom_skip_reason

    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-3, 5e-3]", "grid.batch_size=[8, 16, 32]",
                       "grid.architecture=['UNet', 'Attention_UNet']", "grid.base_filters=[8, 16]",
                       'policy.on_oom="skip-larger-batches"')
    rows = {r["exp_id"]: row_dict(r) for r in read_manifest(study).to_dict("records")}
    oom = "unet-lr1e-03-bs16-basefilters16-s0"
    fake_shard(study, oom, 1, "oom", row=rows[oom])
    skipped = {e for e, r in rows.items() if _oom_skip_reason(study, r)}
    assert skipped == {"unet-lr1e-03-bs32-basefilters16-s0"}
    assert oom in _oom_skip_reason(study, rows["unet-lr1e-03-bs32-basefilters16-s0"])
    meta = read_json(study.meta_file)
    meta["policy"] = {"on_oom": "record"}
    atomic_write_json(study.meta_file, meta)
    assert not any(_oom_skip_reason(study, r) for r in rows.values())


# --- a full disk, a failing rename, an unwritable target: the previous files stay intact ----------------


def no_temp_files(directory):
    return not [p for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".e")]


def enospc_after_partial_write(monkeypatch):
    """A Parquet write (pandas or pyarrow) writes half a file, then the disk is full."""
    import pyarrow.parquet as pq

    real, real_pq = pd.DataFrame.to_parquet, pq.write_table

    def half_then_full(path):
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def full(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        half_then_full(path)

    def full_pq(table, path, *args, **kwargs):
        real_pq(table, path, *args, **kwargs)
        if isinstance(path, str | os.PathLike):  # pandas calls it with an open file: its own patch handles that
            half_then_full(path)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    monkeypatch.setattr(pq, "write_table", full_pq)


def test_full_disk_during_collect_keeps_previous_results(study, monkeypatch):
    e0, e1, *_ = ids(study)
    fake_shard(study, e0, 1)
    collect(study)
    before = {p.name: p.read_bytes() for p in study.results_dir.iterdir()}
    fake_shard(study, e1, 1)
    with monkeypatch.context() as m:
        enospc_after_partial_write(m)
        with pytest.raises(OSError) as info:
            collect(study)
        assert info.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in study.results_dir.iterdir()} == before
    assert no_temp_files(study.root)
    assert collect(study).completed == 2  # space again: the next collect completes


def test_full_disk_during_shard_write_leaves_no_result(study, monkeypatch):
    e0 = ids(study)[0]
    with monkeypatch.context() as m:
        enospc_after_partial_write(m)
        with pytest.raises(OSError):
            fake_shard(study, e0, 1)
    assert shard_index(study) == {} and list(study.shards_dir.iterdir()) == []
    real = pd.DataFrame.to_parquet
    calls = []

    def second_fails(self, path, *args, **kwargs):  # history written, then the summary hits a full disk
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", second_fails)
    with pytest.raises(OSError):
        fake_shard(study, e0, 1)
    assert [p.name.split(".")[-2] for p in study.shards_dir.iterdir()] == ["history"]
    assert completed_experiments(study) == {} and no_temp_files(study.root)


def test_failing_rename_keeps_previous_manifest_progress_and_meta(study, monkeypatch, smoke_spec, capsys):
    from hpc_unet.train.progress import Progress

    e0 = ids(study)[0]
    progress = Progress(study, e0, attempt=1, epochs=3, state="running")
    progress.update(epoch=1)
    saved = {p: p.read_bytes() for p in (study.manifest_file, study.meta_file, study.progress_file(e0))}

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        progress.update(epoch=2)
    capsys.readouterr()
    # a new spec forced over the study: one line on stderr, and nothing of it lands
    assert cli("manifest", "--grid", smoke_spec, "--study", study.root, "--quiet", "--force") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Permission denied" in err
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in saved} == saved
    assert no_temp_files(study.root)
    assert len(ids(study)) == 4


def test_full_disk_during_checkpoint_keeps_previous_bundle(tmp_path, monkeypatch):
    import numpy as np

    from hpc_unet.train import checkpoint
    from hpc_unet.train.checkpoint import Bundle, bundles, load_latest, save_bundle

    def bundle(epoch):
        return Bundle(epoch=epoch, model=[np.full((64, 64), float(epoch))], optimizer=[np.array(epoch)],
                      best=None, state={"history": [], "finished": False})

    save_bundle(tmp_path, bundle(1))
    real = checkpoint._save_arrays

    def half_then_full(path, arrays):
        real(path, arrays)
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_save_arrays", half_then_full)
    with pytest.raises(OSError):
        save_bundle(tmp_path, bundle(2))
    monkeypatch.undo()
    assert [p.name for p in bundles(tmp_path)] == ["e0001"] and no_temp_files(tmp_path)
    assert load_latest(tmp_path).epoch == 1


def test_unwritable_results_target_leaves_the_study_intact(study, capsys):
    e0 = ids(study)[0]
    fake_shard(study, e0, 1)
    study.results_dir.write_text("not a directory")  # e.g. a file (or a dead mount) where results/ should be
    shards = {p.name: p.read_bytes() for p in study.shards_dir.iterdir()}
    with pytest.raises(OSError):
        collect(study)
    assert {p.name: p.read_bytes() for p in study.shards_dir.iterdir()} == shards
    assert study.results_dir.read_text() == "not a directory"


def test_damaged_progress_and_records_do_not_break_status(study, capsys):
    from hpc_unet.dispatch.records import SubmissionRecord

    e0, e1, *_ = ids(study)
    record = SubmissionRecord(executor="local", tasks=[{"exp_id": e0, "attempt": 1, "job_id": "999999999"}])
    path = record.save(study)
    path.with_name("zz-truncated.json").write_text(path.read_text()[:40])  # half a record
    for exp in (e0, e1):
        study.progress_file(exp).parent.mkdir(parents=True)
    study.progress_file(e0).write_text('{"exp_id": "')  # half a progress file
    study.progress_file(e1).write_bytes(os.urandom(64))
    capsys.readouterr()
    assert cli("status", "--study", study.root, "--json") == 0
    rows = {r["exp_id"]: r for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert rows[e0]["state"] == "lost" and rows[e1]["state"] == "pending"  # its job is gone, no result
    assert [p.exp_id for p in plan(study)][:2] == [e0, e1]
