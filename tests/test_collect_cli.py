"""`hpc-unet collect` on fabricated shards (no TensorFlow): leftovers of killed tasks are cleaned up."""

from __future__ import annotations

from conftest import cli
from test_reliability_helpers import fake_shard, make_study


def test_collect_prunes_checkpoints_of_completed_experiments(tmp_path, capsys):
    study = make_study(tmp_path / "s", "grid.batch_size=[8]", "grid.learning_rate=[1e-3]")
    done, running = study.run_dir("unet-lr1e-03-bs8-s0"), study.run_dir("attunet-lr1e-03-bs8-s0")
    for run in (done, running):
        (run / "checkpoint" / "e0003").mkdir(parents=True)
        (run / "checkpoint" / "e0003" / "model.npz").write_bytes(b"x" * 4096)
    fake_shard(study, "unet-lr1e-03-bs8-s0", 1)
    assert cli("collect", "--study", study.root) == 0
    assert "removed leftover checkpoints" in capsys.readouterr().out
    assert not (done / "checkpoint").exists()
    assert (running / "checkpoint" / "e0003" / "model.npz").exists()  # no result yet: its checkpoint stays


def test_status_of_a_large_study_lists_only_what_needs_attention(tmp_path, capsys):
    study = make_study(tmp_path / "s", "grid.replicates=6")  # 216 experiments
    from hpc_unet.manifest import read_manifest

    ids = list(read_manifest(study)["exp_id"])
    for exp_id in ids[:-3]:
        fake_shard(study, exp_id, 1)
    capsys.readouterr()
    assert cli("status", "--study", study.root) == 0
    out = capsys.readouterr().out
    assert "213/216 done" in out and "completed, not listed" in out
    assert all(e in out for e in ids[-3:]) and ids[0] not in out
    assert cli("status", "--study", study.root, "--all") == 0
    assert ids[0] in capsys.readouterr().out


def test_collect_reads_version_1_shards_with_the_old_spelling(tmp_path):
    """Shards written before the spelling rule (schema 1: best_val_jacard, test_jacard) still collect."""
    import pandas as pd
    import pyarrow.parquet as pq

    from hpc_unet.results.collect import read_collected
    from hpc_unet.results.shards import summary_files

    study = make_study(tmp_path / "s", "grid.batch_size=[8]", "grid.learning_rate=[1e-3]")
    fake_shard(study, "unet-lr1e-03-bs8-s0", 1, best=0.625)
    (path,) = summary_files(study)
    old = pq.read_table(path)
    old = old.rename_columns([{"best_val_jaccard": "best_val_jacard", "test_jaccard": "test_jacard"}.get(n, n)
                              for n in old.column_names])
    pq.write_table(old.set_column(old.column_names.index("schema_version"), "schema_version",
                                  [[1]]), path)
    assert cli("collect", "--study", study.root) == 0
    results, _ = read_collected(study)
    assert "best_val_jacard" not in results.columns and "test_jacard" not in results.columns
    assert results.loc[0, "best_val_jaccard"] == 0.625 and pd.isna(results.loc[0, "test_jaccard"])
