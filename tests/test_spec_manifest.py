"""Grid spec validation and manifest expansion."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import REPO, cli

from hpc_unet.errors import UserError
from hpc_unet.manifest import build_rows, format_number, read_manifest
from hpc_unet.spec import load_spec
from hpc_unet.study import Study


def write(tmp_path, text: str):
    p = tmp_path / "g.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["seed-grid", "baseline", "smoke"])
def test_shipped_specs_load(name, monkeypatch):
    monkeypatch.setenv("HPC_UNET_DATA", "/data/em")
    spec = load_spec(REPO / "manifests" / f"{name}.toml")
    rows = build_rows(spec)
    assert len(rows) == {"seed-grid": 36, "baseline": 3, "smoke": 36}[name]
    assert rows["exp_id"].is_unique


def test_seed_grid_is_the_study(monkeypatch):
    monkeypatch.setenv("HPC_UNET_DATA", "/data/em")
    rows = build_rows(load_spec(REPO / "manifests" / "seed-grid.toml"))
    assert sorted(rows["learning_rate"].unique()) == [1e-4, 5e-4, 1e-3, 5e-3]
    assert sorted(rows["batch_size"].unique()) == [8, 16, 32]
    assert set(rows["architecture"]) == {"UNet", "Attention_UNet", "Attention_ResUNet"}
    assert (rows["epochs"] == 30).all() and (rows["clipnorm"] == 1.0).all() and (rows["base_filters"] == 64).all()
    assert rows.loc[rows["exp_id"] == "unet-lr5e-04-bs16-s0", "index"].item() == 4
    assert rows["data_images"].iloc[0] == "/data/em/training.tif"


def test_baseline_is_the_original_setup(monkeypatch):
    monkeypatch.setenv("HPC_UNET_DATA", "/data/em")
    rows = build_rows(load_spec(REPO / "manifests" / "baseline.toml"))
    assert (rows["learning_rate"] == 1e-2).all() and (rows["batch_size"] == 8).all()
    assert (rows["clipnorm"] == 0).all() and (~rows["reduce_lr"]).all() and (rows["early_stopping_patience"] == 5).all()


def test_unset_data_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HPC_UNET_DATA", raising=False)
    with pytest.raises(UserError, match="environment variable"):
        load_spec(REPO / "manifests" / "seed-grid.toml")


def test_format_number_round_trips():
    assert format_number(5e-4) == "5e-04"
    assert format_number(2.5e-4) == "2.5e-04"
    assert format_number(1e-2) == "1e-02"


def test_replicates_and_extra_axes(tmp_path):
    spec = load_spec(write(tmp_path, """
[data]
kind = "synthetic"
patch_size = 32
[train]
depth = 2
[grid]
architecture = ["UNet"]
learning_rate = [1e-3]
dropout = [0.0, 0.1]
replicates = 3
"""))
    rows = build_rows(spec)
    assert len(rows) == 6
    assert list(rows["seed"][:3]) == [0, 1, 2] and list(rows["replicate"][:3]) == [0, 1, 2]
    assert rows["exp_id"].iloc[3] == "unet-lr1e-03-bs8-dropout1e-01-s0"


@pytest.mark.parametrize("text,match", [
    ('[grid]\narchitecture = ["Unet"]', "did you mean 'UNet'"),
    ('[train]\nloss = "focall"', "did you mean 'focal'"),
    ('[grid]\nlearning_rate = [0.0]', "positive number"),
    ('[grid]\nbatch_size = [-8]', "positive integer"),
    ('[train]\nepochs = 0', "positive integer"),
    ('[train]\nlearnig_rate = 1e-3', "did you mean 'learning_rate'"),
    ('[grid]\nbatch_size = [8, 8]', "twice"),
    ('[grids]\nbatch_size = [8]', "did you mean 'grid'"),
    ('[slurm]\npartion = "a40"', "did you mean 'partition'"),
    ('[data]\nkind = "synthetic"\npatch_size = 100', "divisible"),
    ('[policy]\non_oom = "skip-larger-batch"', "did you mean 'skip-larger-batches'"),
])
def test_spec_errors(tmp_path, text, match):
    base = '[data]\nkind = "synthetic"\npatch_size = 64\n' if not text.startswith("[data]") else ""
    with pytest.raises(UserError, match=match):
        load_spec(write(tmp_path, base + text))


def test_manifest_command_idempotent_and_guarded(tmp_path, smoke_spec, capsys):
    study = tmp_path / "s"
    assert cli("manifest", "--grid", smoke_spec, "--study", study, "--quiet") == 0
    first = pd.read_parquet(study / "manifest.parquet")
    assert cli("manifest", "--grid", smoke_spec, "--study", study, "--quiet") == 0
    pd.testing.assert_frame_equal(first, pd.read_parquet(study / "manifest.parquet"))
    smoke_spec.write_text(smoke_spec.read_text().replace("epochs = 12", "epochs = 4"))
    capsys.readouterr()
    assert cli("manifest", "--grid", smoke_spec, "--study", study, "--quiet") == 2
    assert "different spec" in capsys.readouterr().err
    pd.testing.assert_frame_equal(first, pd.read_parquet(study / "manifest.parquet"))
    assert cli("manifest", "--grid", smoke_spec, "--study", study, "--quiet", "--force") == 0
    assert (pd.read_parquet(study / "manifest.parquet")["epochs"] == 4).all()


def test_bad_spec_writes_nothing(tmp_path, capsys):
    bad = write(tmp_path, '[data]\nkind = "synthetic"\n[grid]\narchitecture = ["Unett"]')
    assert cli("manifest", "--grid", bad, "--study", tmp_path / "s") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Unett" in err
    assert not (tmp_path / "s").exists()


def test_hand_edited_manifest_is_checked(tmp_path, smoke_spec):
    study = tmp_path / "s"
    assert cli("manifest", "--grid", smoke_spec, "--study", study, "--quiet") == 0
    frame = pd.read_parquet(study / "manifest.parquet")
    frame.loc[3, "learning_rate"] = -1.0
    frame.to_parquet(study / "manifest.parquet")
    with pytest.raises(UserError, match="row 3"):
        read_manifest(Study.at(study))
    frame.loc[3, "learning_rate"] = 1e-3
    frame.loc[4, "exp_id"] = frame.loc[5, "exp_id"]
    frame.to_parquet(study / "manifest.parquet")
    with pytest.raises(UserError, match="twice"):
        read_manifest(Study.at(study))


def test_other_schema_version_refused(tmp_path, smoke_spec, capsys):
    import json

    study = tmp_path / "s"
    assert cli("manifest", "--grid", smoke_spec, "--study", study, "--quiet") == 0
    meta = json.loads((study / "study.json").read_text())
    meta["schema_version"] = 99
    (study / "study.json").write_text(json.dumps(meta))
    assert cli("status", "--study", study) == 2
    assert "schema version 99" in capsys.readouterr().err


def test_a_manifest_written_before_newer_settings_still_reads(tmp_path, capsys):
    """A study made by an older version lacks the columns of settings added since: they take the value
    that reproduces what it did (dtype scaling), and status, get_row and submit --dry-run still work."""
    import pandas as pd

    from hpc_unet.manifest import get_row
    from hpc_unet.study import Study

    root = tmp_path / "old"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet") == 0
    study = Study.at(root)
    frame = pd.read_parquet(study.manifest_file)
    dropped = [c for c in ("device", "augment", "tensorboard", "data_normalize", "data_mask", "data_split")
               if c in frame.columns]
    assert dropped
    frame.drop(columns=dropped).to_parquet(study.manifest_file, index=False)
    row = get_row(study, frame["exp_id"].iloc[0])
    assert row.get("data_normalize", "dtype") == "dtype"
    assert all(c in row for c in dropped)
    capsys.readouterr()
    assert cli("status", "--study", root) == 0
    assert "lacks columns" not in capsys.readouterr().err
