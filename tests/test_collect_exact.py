"""Collect's outputs compared whole: collect.json and its state file, the empty study's tables and their
columns, the history cache's content and row order, and the shard stamps a cached row is checked against.
Expected values are written out here (column names, report fields, manifest order), never imported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_reliability_helpers import fake_shard, make_study

from hpc_unet.manifest import get_row
from hpc_unet.results.collect import _shard_stamps, collect, read_collected
from hpc_unet.results.shards import copy_name

HISTORY = ["exp_id", "attempt_id", "epoch", "loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou",
           "dice", "val_dice", "lr", "epoch_seconds"]
UNET = ("grid.learning_rate=[1e-3]", "grid.batch_size=[8, 16]", "grid.architecture=['UNet']")
E0, E1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"  # manifest order


def _state(study) -> dict:
    return json.loads((study.results_dir / ".collect-state.json").read_text())


def _stamp(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def test_an_empty_study_writes_empty_tables_with_their_columns_and_its_whole_report(tmp_path):
    """No task has run (no shards/ folder yet): every experiment is missing, the tables are empty but keep
    the columns readers select, and collect.json and the state file hold the whole report."""
    study = make_study(tmp_path / "s", *UNET)
    report = collect(study)
    expected = {"experiments": 2, "completed": 0, "failed": {}, "missing": [E0, E1], "duplicates": {},
                "chosen": {}, "unreadable": [], "shards_read": 0, "not_learned": [], "marginal": []}
    assert report.as_dict() == expected
    assert json.loads((study.results_dir / "collect.json").read_text()) == expected
    results = pq.read_table(study.results_dir / "results.parquet")
    history = pq.read_table(study.results_dir / "history.parquet")
    assert results.column_names == ["exp_id", "attempt_id", "status", "attempts"] and results.num_rows == 0
    assert history.column_names == HISTORY and history.num_rows == 0
    state = _state(study)
    assert state["report"] == expected
    assert state["outputs"] == {name: _stamp(study.results_dir / name)
                                for name in ("results.parquet", "history.parquet", "collect.json")}
    assert sorted(state["inputs"]) == ["manifest", "shard_schema", "shards", "version"]
    assert state["inputs"]["manifest"] == _stamp(study.manifest_file)
    assert collect(study).as_dict() == expected  # unchanged: the same report from the state file


def test_collect_json_holds_every_list_of_a_mixed_study(tmp_path):
    """Six experiments: a retried one (failed, then learned), a marginal one, one that did not learn, a
    failed one, a missing one and one whose only summary is damaged; the report names each in manifest
    order. Trivial score 0.2: a run learned when both metrics beat it by 10 % of the headroom (0.28)."""
    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8, 16]")
    u8, u16, a8, a16, r8, r16 = ("unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0", "attunet-lr1e-03-bs8-s0",
                                 "attunet-lr1e-03-bs16-s0", "attresunet-lr1e-03-bs8-s0", "attresunet-lr1e-03-bs16-s0")

    def scored(exp_id: str, attempt: int, jaccard: float, iou: float) -> str:
        row = {**get_row(study, exp_id), "best_val_iou": iou, "trivial_val_jaccard": 0.2, "trivial_val_iou": 0.2}
        return fake_shard(study, exp_id, attempt, best=jaccard, row=row)

    first = fake_shard(study, u8, 1, "failed")
    second = scored(u8, 2, 0.9, 0.9)
    scored(a8, 1, 0.27, 0.9)  # the soft Jaccard short of 0.28: marginal
    scored(r8, 1, 0.27, 0.27)  # both short: did not learn
    fake_shard(study, u16, 1, "failed")
    damaged = f"{r16}.a001.0000abcd.completed.summary.parquet"
    study.shards_dir.joinpath(damaged).write_bytes(b"PAR1 damaged PAR1")
    expected = {"experiments": 6, "completed": 3, "failed": {u16: "failed"}, "missing": [a16, r16],
                "duplicates": {u8: sorted([first, second])}, "chosen": {u8: second}, "unreadable": [damaged],
                "shards_read": 6, "not_learned": [r8], "marginal": [a8]}
    assert collect(study).as_dict() == expected
    assert json.loads((study.results_dir / "collect.json").read_text()) == expected
    assert _state(study)["report"] == expected
    results, history = read_collected(study)
    assert list(results["exp_id"]) == [u8, u16, a8, r8]
    assert list(results["attempt_id"]) == [second, f"{u16}.a001.0000abcd", f"{a8}.a001.0000abcd",
                                           f"{r8}.a001.0000abcd"]
    assert list(results["attempts"]) == [2, 1, 1, 1]
    shard = pq.read_schema(study.shards_dir / f"{second}.completed.summary.parquet").names
    assert list(results.columns) == ["exp_id", *[c for c in shard if c != "exp_id"], "attempts"]  # no index
    assert list(history["exp_id"]) == [u8] * 3 + [u16] + [a8] * 3 + [r8] * 3


def test_the_history_cache_drops_histories_no_longer_chosen(tmp_path):
    """An experiment whose shards are removed leaves the history cache at the next collect, though no
    history had to be read (a cache that only grows would be read whole by every collect)."""
    study = make_study(tmp_path / "s", *UNET)
    a0, a1 = fake_shard(study, E0, 1), fake_shard(study, E1, 1)
    collect(study)
    cache = study.results_dir / ".history-cache.parquet"
    assert sorted(set(pq.read_table(cache).column("attempt_id").to_pylist())) == sorted([a0, a1])
    for name in os.listdir(study.shards_dir):
        if name.startswith(E1):
            (study.shards_dir / name).unlink()
    report = collect(study)
    assert report.missing == [E1] and report.unreadable == [] and report.shards_read == 0
    assert pq.read_table(cache).column("attempt_id").to_pylist() == [a0] * 3
    _, history = read_collected(study)
    assert list(history["attempt_id"]) == [a0] * 3


def test_cached_and_new_histories_come_out_in_manifest_then_epoch_order(tmp_path):
    """The second experiment's history is cached first, the first one's is read new: the merged table is
    put in manifest order, each attempt's epochs staying in order (a sort that is not stable shuffles them)."""
    study = make_study(tmp_path / "s", *UNET)
    a1 = fake_shard(study, E1, 1, epochs=6)
    collect(study)
    a0 = fake_shard(study, E0, 1, epochs=6)
    assert collect(study).shards_read == 1
    _, history = read_collected(study)
    assert list(history["attempt_id"]) == [a0] * 6 + [a1] * 6
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6] * 2
    assert list(history["loss"]) == [1.0 / e for e in range(1, 7)] * 2


def test_a_summary_s_own_attempts_column_gives_way_to_the_count(tmp_path):
    """A summary carrying an ``attempts`` column (a results row written back as a shard) is collected with
    the number of attempts counted from the shards, not with its own value."""
    study = make_study(tmp_path / "s", *UNET)
    fake_shard(study, E0, 1, row={**get_row(study, E0), "attempts": 7})
    fake_shard(study, E0, 2, "failed", row={**get_row(study, E0), "attempts": 7})
    assert collect(study).completed == 1
    results, _ = read_collected(study)
    assert list(results["attempts"]) == [2] and list(results["attempt"]) == [1]
    assert list(results.columns).count("attempts") == 1


def test_collect_sweeps_dead_temporaries_in_results_and_recreates_a_removed_lock(tmp_path):
    """A killed collect's temporary (``.NAME.XXXXXXXX.tmp``) in results/ goes at the next collect, a full
    one or an unchanged one; a lock file removed by hand is created again, not an error."""
    study = make_study(tmp_path / "s", *UNET)
    fake_shard(study, E0, 1)
    study.results_dir.mkdir()
    dead = study.results_dir / ".results.parquet.abcd1234.tmp"
    dead.write_bytes(b"half written")
    first = collect(study)
    assert not dead.exists() and first.shards_read == 1
    dead.write_bytes(b"half written")
    (study.results_dir / ".collect.lock").unlink()
    assert collect(study).as_dict() == {**first.as_dict(), "shards_read": 0}  # unchanged
    assert not dead.exists() and (study.results_dir / ".collect.lock").exists()


class _Gone:
    """A directory entry whose file went away between listing and stat."""

    name = "gone.summary.parquet"

    def stat(self) -> os.stat_result:
        raise FileNotFoundError(self.name)


def test_shard_stamps_skip_temporaries_and_vanished_files_wherever_they_are_listed(tmp_path, monkeypatch):
    """Size and mtime of every shard file; a dot file (a temporary) or a file gone before its stat is skipped,
    never the end of the listing: here both are listed first."""
    study = make_study(tmp_path / "s", *UNET)
    assert _shard_stamps(study) == {}  # no shards/ yet
    fake_shard(study, E0, 1)
    study.shards_dir.joinpath(".tmp-writing.parquet").write_bytes(b"partial")
    names = sorted(n for n in os.listdir(study.shards_dir) if not n.startswith("."))
    assert len(names) == 4  # summary, history and their Arrow copies
    expected = {n: f"{os.stat(study.shards_dir / n).st_size}:{os.stat(study.shards_dir / n).st_mtime_ns}"
                for n in names}
    real = os.scandir

    def dot_files_first(path):  # noqa: ANN001, ANN202
        entries = sorted(real(path), key=lambda e: (not e.name.startswith("."), e.name))
        return [_Gone(), *entries] if path == study.shards_dir else entries

    monkeypatch.setattr(os, "scandir", dot_files_first)
    assert _shard_stamps(study) == expected


@pytest.mark.parametrize("first", ["damaged", "moved"])
def test_a_history_changed_in_place_or_gone_is_not_served_from_the_cache(tmp_path, first):
    """A cached history is used only while its file keeps its stamp: rewritten, it is read again; gone, it is
    reported unreadable and the experiment keeps its results row with no history."""
    study = make_study(tmp_path / "s", *UNET)
    a0 = fake_shard(study, E0, 1, epochs=3)
    collect(study)
    path = study.shards_dir / f"{a0}.history.parquet"
    if first == "damaged":
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 2), path)  # two epochs now: a new stamp, a new content
        path.with_name(copy_name(path.name)).unlink(missing_ok=True)  # its Arrow copy is stale anyway
    else:
        path.unlink()
    report = collect(study)
    _, history = read_collected(study)
    if first == "damaged":
        assert report.unreadable == [] and list(history["epoch"]) == [1, 2]
    else:
        assert report.unreadable == [path.name] and report.completed == 1
        assert list(history.columns) == HISTORY and len(history) == 0
