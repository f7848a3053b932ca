"""The analysis reads what the real collector writes (shards -> collect -> load_study)."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_unet.analysis import stats
from hpc_unet.analysis.load import load_study
from hpc_unet.analysis.synthetic import make_results, make_study, spec_text
from hpc_unet.cli import main
from hpc_unet.errors import UserError
from hpc_unet.manifest import read_manifest
from hpc_unet.results.collect import collect
from hpc_unet.results.shards import write_shard


def test_collected_shards_feed_the_analysis(tmp_path):
    spec = spec_text(learning_rates=(5e-4, 1e-3), batch_sizes=(8, 16))
    study = make_study(tmp_path / "s", spec=spec, results=False)
    manifest = read_manifest(study)
    frame, hist = make_results(manifest, statuses={("UNet", 1e-3, 16): "oom"}, seed=2)
    frame = frame[frame["exp_id"] != manifest["exp_id"].iloc[-1]]  # one experiment not run yet
    frame = frame.drop(columns=["attempts"])  # added by collect, not part of a shard
    first = frame.iloc[0].to_dict()
    failed = {**first, "attempt_id": first["exp_id"] + ".a001.deadbeef", "status": "failed",
              "error_type": "RuntimeError", "error_message": "node died", "best_val_jaccard": float("nan")}
    write_shard(study, failed, [])
    for row in frame.to_dict("records"):
        row["attempt"] = 2 if row["exp_id"] == first["exp_id"] else 1
        row["attempt_id"] = row["exp_id"] + (".a002.0000abcd" if row["attempt"] == 2 else ".a001.0000abcd")
        write_shard(study, row, hist[hist["exp_id"] == row["exp_id"]].to_dict("records"))
    collect(study)

    data = load_study(study.root)
    assert len(data.runs) == len(manifest)
    counts = data.runs["status"].value_counts().to_dict()
    assert counts == {"completed": len(manifest) - 2, "oom": 1, "missing": 1}
    assert data.runs.set_index("exp_id").loc[first["exp_id"], "attempts"] == 2
    cells = stats.cell_intervals(data.completed, "best_val_jaccard", n_boot=100)
    assert cells["ci_method"].str.startswith("bootstrap over 60 val patches").all()
    assert np.isfinite(cells["ci_low"]).all()
    assert set(data.history["exp_id"]) == set(data.completed["exp_id"])


def test_a_collect_without_any_result_is_a_user_error(tmp_path, capsys):
    study = make_study(tmp_path / "s", results=False)
    collect(study)
    with pytest.raises(UserError, match="hpc-unet collect"):
        load_study(study.root)
    assert main(["analyze", "--study", str(study.root)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_analysis_never_pairs_results_with_another_collects_history(tmp_path):
    import threading

    import pyarrow.parquet as pq

    from hpc_unet.results.collect import COLLECT_KEY

    study = make_study(tmp_path / "s", results=False)
    frame, hist = make_results(read_manifest(study), seed=3)
    for row in frame.drop(columns=["attempts"]).to_dict("records"):
        row["attempt"], row["attempt_id"] = 1, row["exp_id"] + ".a001.0000abcd"
        write_shard(study, row, hist[hist["exp_id"] == row["exp_id"]].to_dict("records"))
    collect(study)
    path = study.results_dir / "history.parquet"
    real = path.read_bytes()
    # another collect has replaced history.parquet but not yet results.parquet
    other = pq.read_table(path).slice(0, 0)
    pq.write_table(other.replace_schema_metadata({COLLECT_KEY: b"another collect"}), path)
    timer = threading.Timer(0.3, path.write_bytes, args=(real,))
    timer.start()
    try:
        data = load_study(study.root)
    finally:
        timer.join()
    assert set(data.history["exp_id"]) == set(data.completed["exp_id"])
