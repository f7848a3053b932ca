"""Shard names, the footer check and the choice of the attempt that counts, on hand-made files (mutmut
survivors of ``results.shards``; the damaged-shard and collect tests cover them end to end)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from hpc_unet.results import shards
from hpc_unet.study import Study

NAME = "unet-lr1e-03-bs8-s0.a001.0000abcd"


def test_attempt_ids_round_trip():
    a = shards.new_attempt_id("unet-lr1e-03-bs8-s0", 7)
    assert re.fullmatch(r"unet-lr1e-03-bs8-s0\.a007\.[0-9a-f]{8}", a)
    assert shards.parse_attempt_id(a) == ("unet-lr1e-03-bs8-s0", 7)
    assert shards.new_attempt_id("x", 1234).startswith("x.a1234.")
    assert shards.new_attempt_id("x", 1) != shards.new_attempt_id("x", 1)  # a random tag per attempt
    assert shards.parse_attempt_id("a.b.a012.deadbeef") == ("a.b", 12)  # dots in the experiment id


@pytest.mark.parametrize("bad", ["x.a01.0000abcd", "x.a001.0000abc", "x.a001.0000ABCD", "x.a001.0000abcd0",
                                 "x.b001.0000abcd", ".a001.0000abcd", "x.a001.0000abcd.completed"])
def test_other_names_are_not_attempt_ids(bad):
    with pytest.raises(ValueError, match=re.escape(f"not an attempt id: {bad}")):
        shards.parse_attempt_id(bad)


def test_now_is_iso_with_a_utc_offset():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", shards.now_iso())


def test_summary_names():
    assert shards.parse_summary_name(f"{NAME}.completed.summary.parquet") == (
        "unet-lr1e-03-bs8-s0", 1, NAME, "completed")
    assert shards.parse_summary_name(f"{NAME}.failed.summary.parquet")[3] == "failed"
    for other in (f"{NAME}.Completed.summary.parquet", f"{NAME}.completed.summary.parquet.tmp",
                  f"{NAME}.history.parquet", f"x{NAME}.completed.summary.arrow", f"{NAME}..summary.parquet",
                  f"{NAME}.oom2.summary.parquet"):
        assert shards.parse_summary_name(other) is None, other
    path = shards.history_file_for(Path("/s/shards") / f"{NAME}.oom.summary.parquet")
    assert str(path) == f"/s/shards/{NAME}.history.parquet"
    with pytest.raises(ValueError, match=re.escape(f"not a summary shard: /s/{NAME}.history.parquet")):
        shards.history_file_for(Path("/s") / f"{NAME}.history.parquet")
    assert shards.copy_name(f"{NAME}.history.parquet") == f"{NAME}.history.arrow"


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("data", "whole"), [
    (b"PAR1" + (0).to_bytes(4, "little") + b"PAR1", True),            # 12 bytes, empty footer: the smallest
    (b"PAR1" + b"x" * 4 + (4).to_bytes(4, "little") + b"PAR1", True),  # footer length = size - 12 exactly
    (b"PAR1" + b"x" * 4 + (5).to_bytes(4, "little") + b"PAR1", False),  # a footer longer than the file
    (b"PAR1" + (0).to_bytes(3, "little") + b"PAR1", False),            # 11 bytes
    (b"PAR0" + (0).to_bytes(4, "little") + b"PAR1", False),            # wrong head
    (b"PAR1" + (0).to_bytes(4, "little") + b"PAR2", False),            # wrong tail (a truncated copy)
    (b"", False),
])
def test_footer_check(tmp_path, data, whole):
    assert shards.is_whole_parquet(_file(tmp_path / "f.parquet", data)) is whole
    assert shards.is_whole_parquet(str(tmp_path / "f.parquet")) is whole


def test_footer_check_of_what_cannot_be_read(tmp_path):
    assert shards.is_whole_parquet(tmp_path / "missing.parquet") is False
    assert shards.is_whole_parquet(tmp_path) is False  # a directory


WHOLE = b"PAR1" + (0).to_bytes(4, "little") + b"PAR1"


def test_scan_indexes_whole_shards_and_lists_damaged_ones(tmp_path):
    study = Study.at(tmp_path)
    assert shards.shard_scan(study) == ({}, []) and shards.summary_files(study) == []
    study.shards_dir.mkdir()
    _file(study.shards_dir / "b.a002.0000abcd.failed.summary.parquet", WHOLE)
    _file(study.shards_dir / "b.a001.0000abcd.completed.summary.parquet", WHOLE)
    _file(study.shards_dir / "a.a001.0000abcd.oom.summary.parquet", WHOLE)
    _file(study.shards_dir / "a.a002.0000abcd.failed.summary.parquet", b"PAR1 cut")  # damaged
    _file(study.shards_dir / "a.a001.0000abcd.history.parquet", WHOLE)
    _file(study.shards_dir / "junk.summary.parquet", WHOLE)  # not an attempt's name
    _file(study.shards_dir / "a.a001.0000abcd.oom.summary.arrow", WHOLE)
    index, damaged = shards.shard_scan(study)
    assert index == {"a": [(1, "a.a001.0000abcd", "oom")],
                     "b": [(1, "b.a001.0000abcd", "completed"), (2, "b.a002.0000abcd", "failed")]}
    assert damaged == ["a.a002.0000abcd.failed.summary.parquet"]
    assert shards.shard_index(study) == index
    assert [p.name for p in shards.summary_files(study)] == [
        "a.a001.0000abcd.oom.summary.parquet", "a.a002.0000abcd.failed.summary.parquet",
        "b.a001.0000abcd.completed.summary.parquet", "b.a002.0000abcd.failed.summary.parquet",
        "junk.summary.parquet"]
    # a completed attempt counts over a newer failure; otherwise the newest attempt
    assert shards.completed_experiments(study) == {"a": "oom", "b": "completed"}


def test_the_attempt_that_counts():
    items = [(3, "e.a003.00000001", "failed"), (1, "e.a001.00000009", "completed"), (2, "e.a002.00000002", "oom")]
    assert max(items, key=shards.attempt_rank) == items[1]
    failures = [(3, "e.a003.00000001", "failed"), (2, "e.a002.00000002", "oom")]
    assert max(failures, key=shards.attempt_rank) == failures[0]
    twins = [(2, "e.a002.0000000b", "completed"), (2, "e.a002.0000000a", "completed")]  # same attempt: by id
    assert max(twins, key=shards.attempt_rank) == twins[0] and max(twins[::-1], key=shards.attempt_rank) == twins[0]
    assert shards.attempt_rank((4, "x", "completed")) == (1, 4, "x")
    assert shards.attempt_rank((4, "x", "failed")) == (0, 4, "x")


def test_a_written_shard_reads_back_with_its_columns_filled(tmp_path):
    study = Study.at(tmp_path)
    summary = {"exp_id": "e", "attempt_id": "e.a001.0000abcd", "status": "completed", "best_val_jaccard": 0.5,
               "val_patch_intersection": [1, 2], "val_patch_union": (3, 4),
               "phase_seconds": {"train": 2.0, "data": 1.0}, "data_provenance": {"dir": Path("/data/x")},
               "init_source": {"from": "scratch"}}
    history = [{"epoch": 1, "loss": 0.5, "val_loss": 0.6}, {"epoch": 2, "loss": 0.4, "val_loss": 0.5}]
    path = shards.write_shard(study, summary, history)
    assert path == study.shards_dir / "e.a001.0000abcd.completed.summary.parquet"
    row = pd.read_parquet(path).iloc[0]
    assert row["schema_version"] == shards.SHARD_SCHEMA_VERSION and row["best_val_jaccard"] == 0.5
    for key, values in (("val_patch_intersection", [1.0, 2.0]), ("val_patch_union", [3.0, 4.0])):
        assert list(row[key]) == values and row[key].dtype == "float64", key  # ints became floats
    assert list(row["test_patch_intersection"]) == [] and list(row["test_patch_union"]) == []
    assert json.loads(row["phase_seconds"]) == {"data": 1.0, "train": 2.0}
    assert row["phase_seconds"] == '{"data": 1.0, "train": 2.0}'  # sorted keys: the same bytes every time
    assert row["data_provenance"] == '{"dir": "/data/x"}'  # a value JSON cannot encode: its str()
    assert row["init_source"] == '{"from": "scratch"}'

    assert all(c in row.index for c in shards.SUMMARY_COLUMNS)
    assert row["host"] is None or (isinstance(row["host"], float) and math.isnan(row["host"]))
    hist = pd.read_parquet(study.shards_dir / "e.a001.0000abcd.history.parquet")
    assert list(hist["epoch"]) == [1, 2] and hist["epoch"].dtype == "int64"
    assert set(hist["exp_id"]) == {"e"} and set(hist["attempt_id"]) == {"e.a001.0000abcd"}
    assert list(hist.columns[: len(shards.HISTORY_COLUMNS)]) == list(shards.HISTORY_COLUMNS)
    for p in (path, study.shards_dir / "e.a001.0000abcd.history.parquet"):
        copy = shards.read_copy(p)
        assert copy is not None and copy.schema.metadata is None
        assert copy.to_pandas().equals(pd.read_parquet(p))


def test_a_copy_with_another_mtime_is_stale(tmp_path):
    study = Study.at(tmp_path)
    path = shards.write_shard(study, {"exp_id": "e", "attempt_id": "e.a001.0000abcd", "status": "failed"}, [])
    assert shards.read_copy(path) is not None
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same size, touched: not the copy's file
    assert shards.read_copy(path) is None
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert shards.read_copy(path) is not None
    os.remove(path.with_name(shards.copy_name(path.name)))
    assert shards.read_copy(path) is None


def test_the_history_shard_is_written_before_the_summary(tmp_path, monkeypatch):
    """Killed between the two (the fault point's name is the one the reliability tests use): a history
    shard without a summary, which nothing counts as a result."""
    study = Study.at(tmp_path)
    monkeypatch.setenv("HPC_UNET_FAULT", "shard-between:raise")
    with pytest.raises(RuntimeError, match="injected fault at shard-between"):
        shards.write_shard(study, {"exp_id": "e", "attempt_id": "e.a001.0000abcd", "status": "failed"}, [])
    assert sorted(p.name for p in study.shards_dir.iterdir()) == ["e.a001.0000abcd.history.parquet"]
