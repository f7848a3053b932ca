"""Bad input through the CLI: one clear line on stderr, exit code 2, and nothing written.

Covers grid spec errors (beyond tests/test_spec_manifest.py), hand-edited manifests, a study of another
schema version, missing or damaged data files, and invalid Slurm settings. No TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import cli
from test_reliability_helpers import SMALL, make_study, one_error_line, snapshot

BASE = '[data]\nkind = "synthetic"\npatch_size = 32\n'



@pytest.mark.parametrize("text,needle", [
    ('[grid]\narchitecture = ["Attention_Unet"]', "did you mean 'Attention_UNet'"),
    ('[grid]\narchitecture = ["ResUNet"]', "one of UNet, Attention_UNet, Attention_ResUNet"),
    ('[grid]\nloss = ["dice-bce"]', "did you mean 'dice_bce'"),
    ('[train]\nloss = "Focal"', "did you mean 'focal'"),
    ('[grid]\nlearning_rate = [1e-3, -1e-3]', "positive number"),
    ('[train]\nlearning_rate = "1e-3"', "positive number"),
    ('[grid]\nbatch_size = [0]', "positive integer"),
    ('[grid]\nbatch_size = [8.5]', "positive integer"),
    ('[train]\nbatch_size = true', "positive integer"),
    ('[grid]\nepochs = [10, 0]', "positive integer"),
    ('[train]\nepochs = -3', "positive integer"),
    ('[grid]\nlearnig_rate = [1e-3]', "did you mean 'learning_rate'"),
    ('[grid]\nbatchsize = [8]', "did you mean 'batch_size'"),
    ('[data]\nimage = "x.tif"', "did you mean 'images'"),
    ('[study]\nnmae = "x"', "did you mean 'name'"),
    ('[policy]\non_om = "record"', "did you mean 'on_oom'"),
    ('[trian]\nepochs = 3', "did you mean 'train'"),
    ('[grid]\nlearning_rate = [1e-3, 0.001]', "twice"),  # duplicate rows
    ('[grid]\narchitecture = ["UNet", "UNet"]', "twice"),
    ('[grid]\nseed = [0, 1]\nreplicates = 2', "either a seed axis or replicates"),
    ('[grid]\nreplicates = 0', "positive integer"),
    ('[grid]\nbatch_size = []', "empty list"),
    ('[grid\nbatch_size = [8]', "not valid TOML"),
    ('grid = 3', "must be a table"),
])
def test_grid_spec_errors(tmp_path, capsys, text, needle):
    spec = tmp_path / "g.toml"
    if text.startswith("[data]"):
        spec.write_text(text.replace("[data]\n", BASE))
    elif text.startswith("grid ="):  # a top-level key must come before the tables
        spec.write_text(text + "\n" + BASE)
    else:
        spec.write_text(BASE + text)
    assert cli("manifest", "--grid", spec, "--study", tmp_path / "s", "--quiet") == 2
    one_error_line(capsys, needle)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("override,needle", [
    ("grid.learning_rate=[0]", "positive number"),
    ("grid.batch_size=[-8]", "positive integer"),
    ("train.epochs=0", "positive integer"),
    ("grid.architecture=['unet']", "did you mean 'UNet'"),
    ("grid.batch_size", "must look like table.key=value"),
    ("train.learnign_rate=1e-3", "did you mean 'learning_rate'"),
])
def test_bad_overrides_on_an_existing_study_change_nothing(tmp_path, capsys, override, needle):
    study = make_study(tmp_path / "s", *SMALL)
    before = snapshot(study.root)
    assert cli("manifest", "--grid", study.spec_file, "--study", study.root, "--quiet", "--set", override) == 2
    one_error_line(capsys, needle)
    assert snapshot(study.root) == before


def edit_manifest(study, how: str) -> None:
    frame = pd.read_parquet(study.manifest_file)
    if how == "negative-lr":
        frame.loc[1, "learning_rate"] = -1.0
    elif how == "duplicate-id":
        frame.loc[1, "exp_id"] = frame.loc[0, "exp_id"]
    elif how == "dropped-column":
        frame = frame.drop(columns=["batch_size"])
    elif how == "reordered":
        frame = frame.iloc[::-1]
    elif how == "unknown-architecture":
        frame.loc[0, "architecture"] = "UNet3D"
    elif how == "garbage":
        study.manifest_file.write_bytes(b"PAR1 this is not parquet")
        return
    frame.to_parquet(study.manifest_file, index=False)


@pytest.mark.parametrize("how,needle", [
    ("negative-lr", "row 1"),
    ("duplicate-id", "twice"),
    ("dropped-column", "lacks columns ['batch_size']"),
    ("reordered", "task indices"),
    ("unknown-architecture", "did you mean 'UNet'"),
    ("garbage", "unreadable"),
])
@pytest.mark.parametrize("verb", ["submit", "status", "collect"])
def test_hand_edited_manifest(tmp_path, capsys, how, needle, verb):
    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8, 16]",
                       "grid.architecture=['UNet']", "train.epochs=2")
    edit_manifest(study, how)
    before = snapshot(study.root)
    args = [verb, "--study", study.root] + (["--executor", "local"] if verb == "submit" else [])
    assert cli(*args) == 2
    one_error_line(capsys, needle, "manifest.parquet" if how != "unknown-architecture" else "row 0")
    assert snapshot(study.root) == before


@pytest.mark.parametrize("meta", [{"schema_version": 99}, {"schema_version": None}, "{not json", None])
@pytest.mark.parametrize("verb", ["submit", "status", "collect", "manifest", "train"])
def test_study_of_another_schema_version(tmp_path, capsys, meta, verb):
    study = make_study(tmp_path / "s", *SMALL)
    if meta is None:
        study.meta_file.unlink()
    elif isinstance(meta, str):
        study.meta_file.write_text(meta)
    else:
        study.meta_file.write_text(json.dumps({**json.loads(study.meta_file.read_text()), **meta}))
    before = snapshot(study.root)
    args = {"submit": ["submit", "--study", study.root, "--executor", "local"],
            "status": ["status", "--study", study.root], "collect": ["collect", "--study", study.root],
            "manifest": ["manifest", "--grid", study.spec_file, "--study", study.root, "--quiet"],
            "train": ["train", "--study", study.root, "--experiment", "unet-lr1e-03-bs8-s0"]}[verb]
    code = cli(*args)
    if meta is None and verb == "manifest":
        assert code == 0  # no study.json: `manifest` creates the study, as documented
        return
    assert code == 2
    needle = {99: "schema version 99", None: "schema version None"}.get(
        meta.get("schema_version") if isinstance(meta, dict) else 0,
        "not a study directory" if meta is None else "unreadable")
    one_error_line(capsys, needle)
    assert snapshot(study.root) == before


def tiff_study(tmp_path, images, masks):
    return make_study(tmp_path / "s", 'data.kind="tiff"', f'data.images="{images}"', f'data.masks="{masks}"', *SMALL)


def write_stack(path, masks=False):
    import tifffile

    rng = np.random.default_rng(0)
    stack = (rng.random((2, 64, 64)) > 0.5).astype(np.uint8) * 255 if masks else \
        rng.integers(0, 255, (2, 64, 64), dtype=np.uint8)
    tifffile.imwrite(path, stack)


@pytest.mark.parametrize("damage,needle", [
    ("missing-images", "does not exist"),
    ("missing-masks", "does not exist"),
    ("garbage", "not a readable TIFF"),
    ("truncated", "images"),
    ("empty", "images"),
])
def test_missing_or_damaged_data_files(tmp_path, capsys, damage, needle):
    images, masks = tmp_path / "training.tif", tmp_path / "masks.tif"
    write_stack(images)
    write_stack(masks, masks=True)
    if damage == "missing-images":
        images.unlink()
    elif damage == "missing-masks":
        masks.unlink()
    elif damage == "garbage":
        images.write_bytes(np.random.default_rng(1).bytes(5000))
    elif damage == "truncated":
        images.write_bytes(images.read_bytes()[:3000])
    elif damage == "empty":
        images.write_bytes(b"")
    study = tiff_study(tmp_path, images, masks)
    before = snapshot(study.root)
    # a real process: libraries that log to stderr (tifffile does for damaged files) would show here
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", "submit", "--study", str(study.root),
                           "--executor", "local"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpc-unet submit: error: [data]") and needle in lines[0], proc.stderr
    assert snapshot(study.root) == before  # no cache directory, no lock file, no submission record
    capsys.readouterr()
    assert cli("data", "prepare", "--study", study.root) == 2
    one_error_line(capsys, needle)
    assert snapshot(study.root) == before


def test_good_data_after_a_bad_attempt_builds_the_cache(tmp_path, capsys):
    images, masks = tmp_path / "training.tif", tmp_path / "masks.tif"
    write_stack(masks, masks=True)
    images.write_bytes(b"garbage")
    study = tiff_study(tmp_path, images, masks)
    assert cli("data", "prepare", "--study", study.root) == 2
    write_stack(images)
    assert cli("data", "prepare", "--study", study.root) == 0
    assert list(study.cache_dir.glob("data-*/index.json"))


@pytest.mark.parametrize("flags,needle", [
    (["--partition", "a40;rm -rf /", "--dry-run"], "partition"),
    (["--partition", "a40;rm -rf /"], "partition"),
    (["--time", "-5", "--dry-run"], "time"),
    (["--time", "-5"], "time"),
    (["--mem", "lots", "--dry-run"], "mem"),
    (["--account", "$(id)", "--dry-run"], "account"),
    (["--cpus-per-task", "0", "--dry-run"], "cpus"),
    (["--executor", "lokal"], "did you mean 'local'"),
    (["--executor", "local", "--max-parallel", "0"], "--max-parallel"),
    (["--executor", "local", "--only", "unet-lr1e-03-bs9-s0"], "did you mean 'unet-lr1e-03-bs8-s0'"),
])
def test_invalid_submit_settings(tmp_path, capsys, flags, needle):
    study = make_study(tmp_path / "s", *SMALL)
    before = snapshot(study.root)
    assert cli("submit", "--study", study.root, *flags) == 2
    one_error_line(capsys, needle)
    assert snapshot(study.root) == before


def test_dry_run_writes_nothing(tmp_path, capsys):
    study = make_study(tmp_path / "s", *SMALL)
    before = snapshot(study.root)
    assert cli("submit", "--study", study.root, "--dry-run") == 0
    assert "#SBATCH" in capsys.readouterr().out
    assert snapshot(study.root) == before
