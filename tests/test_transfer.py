"""Transfer learning: runs that start from a trained model (init_from), frozen encoders, the data budget.

Real TensorFlow training of tiny models in subprocesses (test_resume's helper), real .keras files.
A tiny source (UNet, depth 2, base 4, 32x32 synthetic patches) is trained once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli
from test_resume import METRICS, outcome, train

SOURCE_EXP = "unet-lr1e-03-bs8-s0"


def tiny_manifest(root: Path, *extra: str, epochs: int = 2, slices: int = 4) -> int:
    return cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", f"train.epochs={epochs}",
               "--set", "train.base_filters=4", "--set", f"data.synth_slices={slices}", *extra)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("source") / "study"
    assert tiny_manifest(root) == 0
    proc = train(root, exp=SOURCE_EXP)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def _weights_by_layer(path: Path) -> dict[str, list[np.ndarray]]:
    import keras

    model = keras.models.load_model(path, compile=False, safe_mode=True)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def test_mismatched_source_is_refused_at_manifest_in_one_line(source, tmp_path):
    for setting, value in (("depth", 3), ("base_filters", 8)):
        code = ("import sys\nfrom hpc_unet.cli import main\n"
                f"rc = main(['manifest', '--grid', {str(REPO / 'manifests' / 'smoke.toml')!r}, '--study', "
                f"{str(tmp_path / setting)!r}, '--quiet', '--set', 'grid.architecture=[\"UNet\"]', "
                f"'--set', 'grid.learning_rate=[1e-3]', '--set', 'grid.batch_size=[8]', '--set', "
                f"'train.base_filters=4', '--set', 'train.{setting}={value}', '--set', "
                f"'train.init_from=\"{source}:best\"'])\n"
                "print('TF', [m for m in ('tensorflow', 'keras') if m in sys.modules])\nsys.exit(rc)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"has {setting} = " in lines[0] and f"{setting} = {value}" in lines[0], lines[0]
        assert "TF []" in proc.stdout  # the check is a zip read on the login node
        assert not (tmp_path / setting / "manifest.parquet").exists()


def test_source_resolution_records_path_and_hash(source, tmp_path, capsys):
    import hashlib

    model = source / "runs" / SOURCE_EXP / "model" / "best.keras"
    root = tmp_path / "target"
    assert tiny_manifest(root, "--set", "grid.init_from=['none', '" + str(source) + ":best:UNet', '"
                         + str(model) + "']", "--set", "grid.train_fraction=[0.5, 1.0]") == 0
    frame = pd.read_parquet(root / "manifest.parquet")
    assert len(frame) == 6
    tuned = frame[frame["init_from"] != "none"]
    assert set(tuned["init_path"]) == {str(model)}
    assert set(tuned["init_sha256"]) == {hashlib.sha256(model.read_bytes()).hexdigest()}
    assert set(frame.loc[frame["init_from"] == "none", "init_sha256"]) == {""}
    assert any("initscratch" in e for e in frame["exp_id"]) and any("initbest-unet" in e for e in frame["exp_id"])
    assert all("/" not in e for e in frame["exp_id"])
    # a bare selector, a missing experiment and a missing file: one line each, nothing written
    for bad, words in (("best:UNet", "names no study"), (f"{source}:unet-nope-s0", "not a completed"),
                       (str(tmp_path / "no.keras"), "does not exist")):
        capsys.readouterr()
        assert tiny_manifest(tmp_path / "bad", "--set", f"train.init_from='{bad}'") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
        assert not (tmp_path / "bad" / "manifest.parquet").exists()


def test_budget_keeps_validation_and_test_identical(tmp_path):
    """Budgets are nested prefixes of the training patches; validation and test arrays do not change."""
    from hpc_unet.data import prepare
    from hpc_unet.data.budget import apply_budget, budget_count

    assert [budget_count(1780, f) for f in (0.05, 0.1, 0.25, 1.0)] == [89, 178, 445, 1780]
    assert budget_count(3, 0.05) == 1
    data = prepare({"kind": "synthetic", "patch_size": 32, "synth_slices": 4, "synth_height": 64,
                    "synth_width": 64, "val_fraction": 0.25, "test_images": "", "test_masks": ""},
                   tmp_path / "cache", tmp_path / "synth")
    cut = {f: apply_budget(data, f) for f in (0.25, 0.5, 1.0)}
    assert [len(c.train_x) for c in cut.values()] == [3, 6, 12]  # 16 patches, 4 to validation
    assert len({c.provenance["val_sha256"] for c in cut.values()}) == 1
    np.testing.assert_array_equal(cut[0.25].train_x, data.train_x[:3])
    np.testing.assert_array_equal(cut[0.5].train_x[:3], cut[0.25].train_x)
    assert cut[0.5].provenance["patches_train"] == 6 and cut[0.5].provenance["patches_train_total"] == 12


def test_frozen_encoder_does_not_move_and_decoder_does(source, tmp_path):
    root = tmp_path / "tuned"
    assert tiny_manifest(root, "--set", f"train.init_from='{source}:best'", "--set", "train.freeze='encoder'",
                         "--set", "data.synth_seed=7") == 0
    exp = pd.read_parquet(root / "manifest.parquet")["exp_id"].iloc[0]
    proc = train(root, exp=exp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = _weights_by_layer(source / "runs" / SOURCE_EXP / "model" / "best.keras")
    after = _weights_by_layer(root / "runs" / exp / "model" / "best.keras")
    encoder = [n for n in before if n.startswith(("enc", "bottleneck"))]
    decoder = [n for n in before if n.startswith(("dec", "head"))]
    assert len(encoder) == 6 and len(decoder) == 5  # depth 2: 2 convs per block, 3 blocks each side + head
    for name in encoder:
        for a, b in zip(before[name], after[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in decoder:
        assert any(not np.array_equal(a, b) for a, b in zip(before[name], after[name], strict=True)), name
    summary = pd.read_parquet(next((root / "shards").glob("*.completed.summary.parquet"))).iloc[0]
    record = json.loads(summary["init_source"])
    assert record["sha256"] == summary["init_sha256"] and record["exp_id"] == SOURCE_EXP
    assert record["source_scaling"] is not None  # recorded, while the run's own scaling is the target's
    provenance = json.loads(summary["data_provenance"])
    assert provenance["source_model"]["sha256"] == summary["init_sha256"]


@pytest.mark.slow
def test_fine_tuned_run_resumes_exactly_across_the_unfreeze(source, tmp_path):
    """encoder_then_all, unfreezing after epoch 1: killed right after epoch 1's checkpoint (the frozen
    phase's optimizer) and mid-epoch 2, it ends bit-identical to the uninterrupted run."""
    extra = ("--set", f"train.init_from='{source}:best'", "--set", "train.freeze='encoder_then_all'",
             "--set", "train.unfreeze_epoch=1", "--set", "data.synth_seed=7")
    ref = tmp_path / "ref"
    assert tiny_manifest(ref, *extra, epochs=3) == 0
    exp = pd.read_parquet(ref / "manifest.parquet")["exp_id"].iloc[0]
    assert train(ref, exp=exp).returncode == 0
    ref_history, _, ref_weights = outcome(ref, exp)
    root = tmp_path / "study"
    assert tiny_manifest(root, *extra, epochs=3) == 0
    for fault in ("epoch-end@1:kill:1", "mid-epoch@3:kill:1"):
        killed = train(root, fault, tmp_path / f"state-{fault[:5]}", exp=exp)
        assert killed.returncode == -9, (fault, killed.stderr[-2000:])
    resumed = train(root, exp=exp)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history, summary, weights = outcome(root, exp)
    assert summary["restarts"] == 2 and summary["resumed_from_epoch"] == 1
    pd.testing.assert_frame_equal(history[METRICS], ref_history[METRICS])
    for a, b in zip(weights, ref_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_followup_transfer_spec_makes_a_manifest_against_the_source(source, tmp_path):
    assert cli("collect", "--study", source) == 0
    target = tmp_path / "target.toml"
    target.write_text('[data]\nkind = "synthetic"\npatch_size = 32\nsynth_seed = 7\nsynth_slices = 4\n'
                      'synth_height = 128\nsynth_width = 128\n')
    assert cli("followup", "--study", source, "--transfer", target, "--out", tmp_path / "next.toml") == 0
    spec = tmp_path / "next-transfer-UNet.toml"
    assert cli("manifest", "--grid", spec, "--study", tmp_path / "t", "--quiet") == 0
    frame = pd.read_parquet(tmp_path / "t" / "manifest.parquet")
    assert len(frame) == 4 * 2 * 3 and sorted(frame["train_fraction"].unique()) == [0.05, 0.1, 0.25, 1.0]
    tuned = frame[frame["init_from"] != "none"]
    assert set(tuned["init_path"]) == {str(source / "runs" / SOURCE_EXP / "model" / "best.keras")}
    assert set(frame["base_filters"]) == {4} and set(frame["data_synth_seed"]) == {7}


def test_data_nuclei_splits_the_wheel_image_into_train_and_test(tmp_path):
    """A stand-in wheel with the same member names (the real one: docs/transfer.md): top half -> train,
    bottom half -> test, labels kept, licence copied."""
    import zipfile

    import tifffile

    image = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    mask = np.zeros_like(image)
    mask[5:10, 5:10], mask[40:50, 20:30] = 1, 2
    wheel = tmp_path / "stardist-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, array in (("img2d", image), ("mask2d", mask)):
            path = tmp_path / f"{name}.tif"
            tifffile.imwrite(path, array)
            zf.write(path, f"stardist/data/images/{name}.tif")
        zf.writestr("stardist-0.0.dist-info/licenses/LICENSE.txt", "BSD 3-Clause License\n")
    out = tmp_path / "nuclei"
    assert cli("data", "nuclei", "--wheel", wheel, "--out", out) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "train.tif"), image[:32])
    np.testing.assert_array_equal(tifffile.imread(out / "test_masks.tif"), mask[32:])
    note = json.loads((out / "SOURCE.json").read_text())
    assert (note["nuclei_train"], note["nuclei_test"]) == (1, 1)
    assert (out / "LICENSE-stardist.txt").read_text().startswith("BSD 3-Clause")
    assert cli("data", "nuclei", "--wheel", tmp_path / "img2d.tif", "--out", tmp_path / "bad") == 2


def test_a_source_changed_after_manifest_is_refused_by_the_task(source, tmp_path):
    from hpc_unet.errors import UserError
    from hpc_unet.train.finetune import load_source_weights
    from hpc_unet.transfer.source import sha256_file

    model = source / "runs" / SOURCE_EXP / "model" / "best.keras"
    with pytest.raises(UserError, match="changed since `hpc-unet manifest`"):
        load_source_weights(None, {"init_path": str(model), "init_sha256": "0" * 64, "init_from": "x"})
    with pytest.raises(UserError, match="is gone"):
        load_source_weights(None, {"init_path": str(tmp_path / "no.keras"), "init_sha256": sha256_file(model)})
