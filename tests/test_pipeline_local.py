"""The whole local pipeline through the CLI, as a user runs it: manifest -> submit (submitit
LocalExecutor, real TensorFlow training on tiny synthetic data) -> status -> collect -> analyze,
then resubmission of only what is missing, and --retry-failed."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import REPO, cli

from hpc_unet.dispatch.records import load_records
from hpc_unet.study import Study

pytestmark = pytest.mark.slow


def status_json(study, capsys) -> dict:
    capsys.readouterr()
    assert cli("status", "--study", study, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_local_pipeline_end_to_end(tmp_path, capsys):
    study = tmp_path / "study"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8, 32]",
               "--set", "grid.architecture=['UNet', 'Attention_UNet']", "--set", "train.epochs=2") == 0
    before = status_json(study, capsys)
    assert before["summary"]["pending"] == 4 and before["summary"]["done"] == 0

    assert cli("submit", "--study", study, "--executor", "local", "--max-parallel", "2", "--per-process", "2") == 0
    after = status_json(study, capsys)
    assert after["summary"]["done"] == 4
    first = load_records(Study.at(study))[0]["tasks"]
    assert len({t["job_id"] for t in first}) == 2  # 4 experiments packed 2 per task process
    assert {e["state"] for e in after["experiments"]} == {"completed"}
    assert all(e["epoch"] == 2 and e["best_val_jaccard"] > 0 for e in after["experiments"])

    assert cli("collect", "--study", study) == 0
    results = pd.read_parquet(study / "results" / "results.parquet")
    history = pd.read_parquet(study / "results" / "history.parquet")
    assert len(results) == 4 and set(results["status"]) == {"completed"}
    assert (results["attempts"] == 1).all() and len(history) == 8
    assert results["data_provenance"].str.contains("sha256").all()
    assert (results["param_count"] > 0).all() and (results["model_bytes"] > 0).all()

    capsys.readouterr()
    assert cli("submit", "--study", study, "--executor", "local") == 0
    assert "nothing to submit" in capsys.readouterr().out

    # one result lost (e.g. deleted by hand): only that experiment runs again
    victim = results["exp_id"].iloc[1]
    for shard in (study / "shards").glob(f"{victim}.*"):
        shard.unlink()
    assert cli("submit", "--study", study, "--executor", "local") == 0
    last = load_records(Study.at(study))[-1]
    assert [t["exp_id"] for t in last["tasks"]] == [victim] and last["tasks"][0]["attempt"] == 2
    assert cli("collect", "--study", study) == 0
    results = pd.read_parquet(study / "results" / "results.parquet")
    assert len(results) == 4 and set(results["status"]) == {"completed"}

    assert cli("analyze", "--study", study, "--quiet", "--bootstrap", "200") == 0
    assert (study / "analysis" / "report.html").stat().st_size > 10_000


def test_failed_experiment_is_a_result_and_retried_on_request(tmp_path, capsys, monkeypatch):
    study = tmp_path / "study"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=2") == 0
    monkeypatch.setenv("HPC_UNET_FAULT", "epoch-end@1:raise:1")
    monkeypatch.setenv("HPC_UNET_FAULT_STATE", str(tmp_path / "fault"))
    assert cli("submit", "--study", study, "--executor", "debug") == 1
    state = status_json(study, capsys)["experiments"][0]
    assert state["state"] == "failed" and "injected fault" in state["error"]
    assert cli("collect", "--study", study) == 0
    row = pd.read_parquet(study / "results" / "results.parquet").iloc[0]
    assert row["status"] == "failed" and row["error_type"] == "RuntimeError" and "run.py" in row["error_traceback"]

    capsys.readouterr()
    assert cli("submit", "--study", study, "--executor", "debug") == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert cli("submit", "--study", study, "--executor", "debug", "--retry-failed") == 0
    assert cli("collect", "--study", study) == 0
    row = pd.read_parquet(study / "results" / "results.parquet").iloc[0]
    assert row["status"] == "completed" and row["attempts"] == 2
    assert row["resumed_from_epoch"] == 1  # a failed (not diverged/oom) run resumes from its checkpoint
