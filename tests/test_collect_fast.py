"""The fast paths of collect and status: a summary's Arrow copy (used only while current), an unchanged
collect that reads and writes nothing, and verbs that import only what they need."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import REPO, cli
from test_reliability_helpers import fake_shard, make_study

from hpc_unet.results.collect import read_collected
from hpc_unet.results.shards import copy_name, read_copy

GRID = ("grid.learning_rate=[1e-3]", "grid.batch_size=[8, 16]", "grid.architecture=['UNet']")


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path / "s", *GRID)


def collect_json(study, capsys) -> dict:
    capsys.readouterr()
    assert cli("collect", "--study", study.root, "--json") == 0
    return json.loads(capsys.readouterr().out)


def results_files(study) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in study.results_dir.iterdir()}


def test_the_arrow_copies_hold_the_parquet_rows(study):
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1, best=0.625)
    fake_shard(study, e1, 1, "failed")
    shards = [p for p in study.shards_dir.iterdir() if p.suffix == ".parquet"]
    assert len(shards) == 4
    for path in shards:
        copy = read_copy(path)
        assert copy is not None
        assert copy.equals(pq.ParquetFile(path).read().replace_schema_metadata(None))


def test_a_stale_or_damaged_copy_is_never_used(study, capsys):
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1, best=0.625)
    fake_shard(study, e1, 1, best=0.5)
    p0, p1 = (study.shards_dir / f"{e}.a001.0000abcd.completed.summary.parquet" for e in (e0, e1))
    # p0 is edited after its copy was written (a repair by hand, an old shard rewritten): the Parquet counts
    table = pq.read_table(p0)
    pq.write_table(table.set_column(table.column_names.index("best_val_jaccard"), "best_val_jaccard", [[0.9]]), p0)
    assert read_copy(p0) is None
    (p1.with_name(copy_name(p1.name))).write_bytes(b"ARROW1 garbage")
    assert read_copy(p1) is None
    assert collect_json(study, capsys)["completed"] == 2
    results, _ = read_collected(study)
    assert dict(zip(results["exp_id"], results["best_val_jaccard"], strict=True)) == {e0: 0.9, e1: 0.5}


def test_an_unchanged_collect_reads_and_writes_nothing(study, capsys):
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1)
    first = collect_json(study, capsys)
    before = results_files(study)
    again = collect_json(study, capsys)
    assert again == {**first, "shards_read": 0} and results_files(study) == before
    fake_shard(study, e1, 1, "failed")  # a new shard: a real collect
    assert collect_json(study, capsys)["failed"] == {e1: "failed"}
    (study.results_dir / "results.parquet").unlink()  # an output gone: written again
    assert collect_json(study, capsys)["completed"] == 1
    assert (study.results_dir / "results.parquet").exists()
    gone = f"{e1}.a001.0000abcd.history.parquet"
    (study.shards_dir / gone).unlink()  # any shard file gone counts: collected again, and reported
    assert collect_json(study, capsys)["unreadable"] == [gone]
    fresh = study.manifest_file.read_bytes()  # the manifest replaced (same content): checked again
    study.manifest_file.write_bytes(b"PAR1 not parquet")
    capsys.readouterr()
    assert cli("collect", "--study", study.root) == 2
    assert "manifest.parquet is unreadable" in capsys.readouterr().err
    study.manifest_file.write_bytes(fresh)
    assert collect_json(study, capsys)["completed"] == 1


def imported_by(*argv: str) -> set[str]:
    """Heavy modules a verb imported, run in a fresh interpreter as a user would."""
    code = ("import sys; from hpc_unet.cli import main; rc = main(sys.argv[1:]); "
            "print('\\nIMPORTED', *[m for m in ('pandas', 'pyarrow', 'rich', 'tensorflow') if m in sys.modules]);"
            " sys.exit(rc)")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no sacct/squeue: no Slurm query
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env,
                          cwd=REPO, check=True)
    return set(proc.stdout.rsplit("IMPORTED", 1)[1].split())


def test_status_and_unchanged_collect_import_only_what_they_need(study):
    fake_shard(study, "unet-lr1e-03-bs8-s0", 1)
    root = str(study.root)
    assert imported_by("status", "--study", root, "--summary") == {"pyarrow"}
    assert imported_by("status", "--study", root) == {"pyarrow", "rich"}
    assert "pandas" in imported_by("collect", "--study", root)  # the first collect merges with pandas
    assert imported_by("collect", "--study", root) == set()  # unchanged: nothing to merge


def test_a_collect_reads_only_new_shards_and_rewrites_an_edited_output(study, capsys):
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1)
    assert collect_json(study, capsys)["shards_read"] == 1
    fake_shard(study, e1, 1, "failed")
    assert collect_json(study, capsys)["shards_read"] == 1  # the first shard's row came from the cache
    fake_shard(study, e1, 2)
    report = collect_json(study, capsys)
    assert report["shards_read"] == 1 and report["completed"] == 2
    results = study.results_dir / "results.parquet"
    results.write_bytes(b"edited by hand")  # an output changed, not gone: written again
    again = collect_json(study, capsys)
    assert again["completed"] == 2 and again["shards_read"] == 0
    assert pq.read_table(results).num_rows == 2


def test_results_and_history_carry_one_collect_s_tag(study, capsys):
    from hpc_unet.results.collect import COLLECT_KEY

    fake_shard(study, "unet-lr1e-03-bs8-s0", 1)
    collect_json(study, capsys)
    results, history = (pq.read_schema(study.results_dir / n).metadata for n in ("results.parquet", "history.parquet"))
    assert len(results[COLLECT_KEY]) == 16 and results[COLLECT_KEY] == history[COLLECT_KEY]
    assert b"pandas" in results  # the frame's own metadata is kept beside the tag
    table = pq.read_table(study.results_dir / "history.parquet")
    pq.write_table(table.replace_schema_metadata({COLLECT_KEY: b"another collect"}),
                   study.results_dir / "history.parquet")  # as if a second collect replaced only this one
    with pytest.raises(RuntimeError, match=r"results and history kept changing; is collect running in a loop\?"):
        read_collected(study, attempts=2)


def _hand_shard(study, name: str, frame) -> None:
    """A summary shard written by hand (no Arrow copy), with exactly the columns of ``frame``."""
    import pandas as pd
    import pyarrow as pa

    pq.write_table(pa.Table.from_pandas(pd.DataFrame(frame), preserve_index=False), study.shards_dir / name)


def test_hand_made_summaries_key_columns_first_old_names_and_extra_rows(study, capsys):
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1)  # its history, and a whole shard beside the hand-made ones
    fake_shard(study, e1, 1)
    # exp_id as column 0 and an old (version 1) name as column 0: both found wherever they sit
    _hand_shard(study, f"{e0}.a002.0000abcd.completed.summary.parquet",
                {"exp_id": [e0], "attempt_id": [f"{e0}.a002.0000abcd"], "attempt": [2], "status": ["completed"]})
    (study.shards_dir / f"{e0}.a002.0000abcd.history.parquet").write_bytes(
        (study.shards_dir / f"{e0}.a001.0000abcd.history.parquet").read_bytes())
    _hand_shard(study, f"{e1}.a002.0000abcd.completed.summary.parquet",
                {"best_val_jacard": [0.75], "exp_id": [e1], "attempt_id": [f"{e1}.a002.0000abcd"], "attempt": [2],
                 "status": ["completed"]})
    (study.shards_dir / f"{e1}.a002.0000abcd.history.parquet").write_bytes(
        (study.shards_dir / f"{e1}.a001.0000abcd.history.parquet").read_bytes())
    # two rows under one name: not a summary
    _hand_shard(study, f"{e1}.a003.0000abcd.failed.summary.parquet",
                {"exp_id": [e1, e1], "attempt_id": [f"{e1}.a003.0000abcd"] * 2, "attempt": [3, 3],
                 "status": ["failed"] * 2})
    report = collect_json(study, capsys)
    assert report["unreadable"] == [f"{e1}.a003.0000abcd.failed.summary.parquet"]
    assert report["chosen"] == {e0: f"{e0}.a002.0000abcd", e1: f"{e1}.a002.0000abcd"}
    results, _ = read_collected(study)
    assert dict(zip(results["exp_id"], results["best_val_jaccard"], strict=True))[e1] == 0.75
    assert "__index_level_0__" not in pq.read_schema(study.results_dir / "results.parquet").names


def test_a_current_copy_is_read_instead_of_its_parquet_file(study, capsys):
    """The copy is used while the Parquet file keeps its size and mtime (here: same size, garbage, mtime
    restored), so the row still comes back; a copy is an accelerator that collect really takes."""
    e0 = "unet-lr1e-03-bs8-s0"
    fake_shard(study, e0, 1, best=0.625)
    path = study.shards_dir / f"{e0}.a001.0000abcd.completed.summary.parquet"
    st = os.stat(path)
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = collect_json(study, capsys)
    assert report["completed"] == 1 and report["unreadable"] == []
    results, _ = read_collected(study)
    assert list(results["best_val_jaccard"]) == [0.625]


@pytest.mark.parametrize(("cache", "drop", "summaries_read"), [
    (".summary-cache.parquet", "_file", 2), (".summary-cache.parquet", "_stamp", 2),  # every summary again
    (".history-cache.parquet", "attempt_id", 1), (".history-cache.parquet", "_stamp", 1)])  # only the new one
def test_a_cache_of_an_older_format_is_read_again(study, capsys, cache, drop, summaries_read):
    """A cache without a column today's code keys on is ignored and rebuilt from the shards."""
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1)
    collect_json(study, capsys)
    path = study.results_dir / cache
    pq.write_table(pq.read_table(path).drop_columns([drop]), path)
    fake_shard(study, e1, 1)
    report = collect_json(study, capsys)
    assert report["shards_read"] == summaries_read and report["completed"] == 2 and report["unreadable"] == []
    _, history = read_collected(study)
    assert list(history["exp_id"]) == [e0] * 3 + [e1] * 3
    assert drop in pq.read_schema(path).names  # rebuilt in today's format


def test_cached_histories_are_not_read_again_while_their_file_is_unchanged(study, capsys):
    """A chosen attempt's history comes from the cache while its shard keeps its size and mtime: here the
    file is garbage of the same size with its mtime restored (and no Arrow copy), so a reread would report
    it unreadable."""
    e0, e1 = "unet-lr1e-03-bs8-s0", "unet-lr1e-03-bs16-s0"
    fake_shard(study, e0, 1)
    collect_json(study, capsys)
    path = study.shards_dir / f"{e0}.a001.0000abcd.history.parquet"
    path.with_name(copy_name(path.name)).unlink()
    st = os.stat(path)
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    fake_shard(study, e1, 1)  # a new shard: a real collect
    report = collect_json(study, capsys)
    assert report["unreadable"] == [] and report["completed"] == 2
    _, history = read_collected(study)
    assert sorted(set(history["exp_id"])) == sorted([e0, e1]) and len(history) == 6


def test_tables_arrow_cannot_unify_are_concatenated_by_pandas():
    """An int column in one shard and a bool one in another (Arrow refuses to promote them): pandas'
    concat unifies them (True -> 1), with no index column and no schema metadata."""
    import pyarrow as pa

    from hpc_unet.results.collect import _concat

    a = pa.table({"n": [7], "x": [0.5]}).replace_schema_metadata({b"k": b"v"})
    b = pa.table({"n": [True], "x": [1.5]})
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        pa.concat_tables([a, b], promote_options="permissive")
    out = _concat([a, b])
    assert out.column_names == ["n", "x"] and out.schema.metadata is None
    assert out.column("n").to_pylist() == [7, 1] and out.column("x").to_pylist() == [0.5, 1.5]
    assert str(out.schema.field("n").type) == "int64"


def test_results_hold_no_bookkeeping_columns_and_an_edited_summary_is_collected_again(study, capsys):
    e0 = "unet-lr1e-03-bs8-s0"
    fake_shard(study, e0, 1, best=0.5)
    fake_shard(study, e0, 2, "failed")
    collect_json(study, capsys)
    names = pq.read_schema(study.results_dir / "results.parquet").names
    assert not {"_file", "_stamp", "_done", "__index_level_0__"} & set(names)
    results, _ = read_collected(study)
    assert list(results["attempts"]) == [2] and list(results["attempt"]) == [1]
    path = study.shards_dir / f"{e0}.a001.0000abcd.completed.summary.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.column_names.index("best_val_jaccard"), "best_val_jaccard", [[0.875]]),
                   path)  # only the summary changed in place (its copy is now stale)
    assert collect_json(study, capsys)["shards_read"] == 1
    results, _ = read_collected(study)
    assert list(results["best_val_jaccard"]) == [0.875]
