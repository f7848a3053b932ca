"""`hpc-unet predict` and `hpc-unet evaluate` through the CLI on a tiny trained study (real TensorFlow on CPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO, cli
from PIL import Image

from hpc_unet.data.tiling import split_indices, tile
from hpc_unet.predict import tiles

EXP = "unet-lr5e-03-bs8-s0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One UNet trained for 4 epochs on the smoke spec's synthetic data; its study and summary row."""
    from hpc_unet.study import Study

    root = tmp_path_factory.mktemp("predict") / "study"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "grid.learning_rate=[5e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", "train.epochs=4") == 0
    assert cli("train", "--study", root, "--experiment", EXP) == 0
    study = Study.at(root)
    shard = next(study.shards_dir.glob("*.completed.summary.parquet"))
    return study, pd.read_parquet(shard).iloc[0]


def _synthetic(study) -> tuple[np.ndarray, np.ndarray]:
    folder = next(study.data_dir.glob("synthetic-*"))
    return tifffile.imread(folder / "training.tif"), tifffile.imread(folder / "training_groundtruth.tif")


def _model(study) -> Path:
    return study.run_dir(EXP) / "model" / "best.keras"


# --------------------------------------------------------------------------------------------- geometry


def test_window_geometry_covers_and_blends_without_seams():
    assert tiles.starts(32, 32) == [0]
    assert tiles.starts(70, 32) == [0, 13, 25, 38]  # steps of at most 16 (50 % overlap), last flush right
    w = tiles.gaussian_weights(32)
    assert w.max() == 1.0 and w.min() > 0 and np.allclose(w, w.T)
    blender = tiles.Blender(45, 70, w)
    for y, x in tiles.windows(45, 70, 32):
        blender.add(y, x, np.full((32, 32), 0.3))
    assert np.allclose(blender.result((45, 70)), 0.3)  # constant tiles blend to the same constant: no seams
    padded, size = tiles.pad_to_tile(np.ones((20, 40, 1)), 32)
    assert padded.shape == (32, 40, 1) and size == (20, 40)


# ------------------------------------------------------------------------------------------------ predict


def test_predict_reproduces_the_validation_scores_of_its_run(trained, tmp_path):
    study, summary = trained
    raw, gt = _synthetic(study)
    patches, masks = tile(raw, 32), tile(gt, 32)
    _, val_idx = split_indices(len(patches), 0.2, 0)
    tifffile.imwrite(tmp_path / "val.tif", patches[val_idx], photometric="minisblack")
    tifffile.imwrite(tmp_path / "val_gt.tif", masks[val_idx], photometric="minisblack")
    out = tmp_path / "out"
    assert cli("predict", "--study", study.root, "--best", "--images", tmp_path / "val.tif", "--masks",
               tmp_path / "val_gt.tif", "--out", out, "--probabilities", "--quiet") == 0
    prob = tifffile.imread(out / "probabilities" / "val.tif").astype(np.float64)
    truth = (masks[val_idx] > 0).astype(np.float64)
    inter = (truth * prob).sum(axis=(1, 2))
    union = truth.sum(axis=(1, 2)) + prob.sum(axis=(1, 2)) - inter
    np.testing.assert_allclose(inter, summary["val_patch_intersection"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(union, summary["val_patch_union"], rtol=1e-5, atol=1e-3)
    record = json.loads((out / "predict.json").read_text())
    o = record["overall"]
    smoothed = (o["intersection"] + 1) / (o["sum_true"] + o["sum_pred"] - o["intersection"] + 1)
    assert smoothed == pytest.approx(summary["best_val_iou"], abs=1e-3)  # the run's val IoU (smooth 1)
    assert record["slices"] == len(val_idx) and o["images"] == len(val_idx) and o["interval_unit"] == "image"
    mask = tifffile.imread(out / "val.tif")
    assert mask.dtype == np.uint8 and mask.shape == (len(val_idx), 32, 32) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, prob > 0.5)
    # the record's pooled scores, recomputed with NumPy set operations on the written masks
    t, p = masks[val_idx] > 0, mask > 0
    assert o["iou"] == pytest.approx((t & p).sum() / (t | p).sum(), abs=1e-12)
    assert o["dice"] == pytest.approx(2 * (t & p).sum() / (t.sum() + p.sum()), abs=1e-12)
    assert o["iou_ci"][0] <= o["iou"] <= o["iou_ci"][1] and o["dice_ci"][0] <= o["dice"] <= o["dice_ci"][1]


def test_predict_any_size_and_8bit_16bit_float_inputs(trained, tmp_path):
    study, _ = trained
    raw, gt = _synthetic(study)
    crop = raw[0, 5:50, 3:73]  # 45x70: not a multiple of the 32-pixel patch
    small = raw[1, :20, :20]  # smaller than one patch: padded
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(crop).save(folder / "a8.png")
    tifffile.imwrite(folder / "b16.tif", crop.astype(np.uint16) * 257)  # the same pixels in 16 bits
    tifffile.imwrite(folder / "cf.tif", crop.astype(np.float32) / 255)  # and as float in [0, 1]
    tifffile.imwrite(folder / "d.tif", small)
    masks = tmp_path / "gt"
    masks.mkdir()
    for name, m in (("a8", gt[0, 5:50, 3:73]), ("b16", gt[0, 5:50, 3:73]), ("cf", gt[0, 5:50, 3:73]),
                    ("d", gt[1, :20, :20])):
        tifffile.imwrite(masks / f"{name}.tif", m)
    out, overlays = tmp_path / "out", tmp_path / "overlays"
    assert cli("predict", "--model", _model(study), "--images", folder, "--masks", masks, "--out", out,
               "--probabilities", "--overlay", overlays, "--quiet") == 0
    assert np.array(Image.open(out / "a8.png")).shape == (45, 70)  # PNG in, PNG out
    assert tifffile.imread(out / "b16.tif").shape == (45, 70) and tifffile.imread(out / "d.tif").shape == (20, 20)
    probs = {n: tifffile.imread(out / "probabilities" / f"{n}.tif") for n in ("a8", "b16", "cf")}
    np.testing.assert_allclose(probs["b16"], probs["a8"], atol=1e-6)  # each dtype scaled by its own range
    np.testing.assert_allclose(probs["cf"], probs["a8"], atol=1e-6)
    # the 45x70 image predicted alone equals its region of the whole slice predicted at once only approximately
    # (other tiles), but every pixel got a probability and the mask matches it
    assert ((probs["a8"] >= 0) & (probs["a8"] <= 1)).all()
    record = json.loads((out / "predict.json").read_text())
    assert [r["image"] for r in record["per_image"]] == ["a8", "b16", "cf", "d"]
    assert Image.open(overlays / "a8.png").mode == "RGB" and Image.open(overlays / "a8.png").size == (70, 45)


def test_predict_stack_in_stack_out_and_rgb_refused(trained, tmp_path, capsys):
    study, _ = trained
    raw, _ = _synthetic(study)
    tifffile.imwrite(tmp_path / "stack.tif", raw[:3], photometric="minisblack")
    assert cli("predict", "--model", _model(study), "--images", tmp_path / "stack.tif", "--out", tmp_path / "o",
               "--quiet") == 0
    assert tifffile.imread(tmp_path / "o" / "stack.tif").shape == (3, 128, 128)
    rgb = np.repeat(raw[0][..., None], 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    capsys.readouterr()
    assert cli("predict", "--model", _model(study), "--images", tmp_path / "rgb.png", "--out", tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "3 channel(s)" in err and "grayscale" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()  # nothing written
    Image.fromarray(raw[0]).save(tmp_path / "o" / "gray.png")
    mixed = tmp_path / "o"  # gray.png first, then rgb... : the error comes after one image was predicted
    shutil.copy(tmp_path / "rgb.png", mixed / "zz_rgb.png")
    before = sorted(p.name for p in mixed.rglob("*"))
    assert cli("predict", "--model", _model(study), "--images", mixed, "--out", tmp_path / "o3", "--quiet") == 2
    assert not (tmp_path / "o3").exists() and sorted(p.name for p in mixed.rglob("*")) == before
    assert cli("predict", "--model", _model(study), "--images", mixed, "--out", mixed, "--quiet") == 2
    assert "would overwrite the input" in capsys.readouterr().err


def test_predict_needs_one_model(trained, tmp_path, capsys):
    study, _ = trained
    assert cli("predict", "--study", study.root, "--images", tmp_path, "--out", tmp_path / "o") == 2
    assert "--experiment" in capsys.readouterr().err
    assert cli("predict", "--study", study.root, "--experiment", "unet-lr5e-03-bs16-s0", "--images", tmp_path,
               "--out", tmp_path / "o") == 2
    assert "did you mean" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- evaluate


def test_evaluate_plans_best_per_architecture_and_a_top_k_ensemble():
    from hpc_unet.predict.evaluate import plan_entries

    runs = pd.DataFrame({"exp_id": ["a1", "u1", "a2", "u2"], "best_val_jaccard": [0.9, 0.8, 0.7, 0.6],
                         "architecture": ["Attention_UNet", "UNet", "Attention_UNet", "UNet"]})
    entries = plan_entries(runs, 3)
    assert [(e.name, e.kind, e.members) for e in entries] == [
        ("a1", "single", [0]), ("u1", "single", [1]), ("ensemble-top3", "ensemble", [0, 1, 2])]
    assert entries[2].architecture == "Attention_UNet+UNet"
    assert [e.kind for e in plan_entries(runs, 1)] == ["single", "single"]


def test_evaluate_ensemble_of_copies_equals_the_model(trained, tmp_path):
    study, _ = trained
    raw, gt = _synthetic(study)
    tifffile.imwrite(tmp_path / "img.tif", raw[:3], photometric="minisblack")
    tifffile.imwrite(tmp_path / "gt.tif", gt[:3], photometric="minisblack")
    copies = [shutil.copy(_model(study), tmp_path / f"copy{i}.keras") for i in range(2)]
    out = tmp_path / "ev"
    assert cli("evaluate", "--model", _model(study), "--model", copies[0], "--model", copies[1],
               "--images", tmp_path / "img.tif", "--masks", tmp_path / "gt.tif", "--out", out, "--quiet") == 0
    table = pd.read_csv(out / "img.csv")
    assert list(table["kind"]) == ["single"] * 3 + ["ensemble"]
    single, ensemble = table.iloc[0], table.iloc[3]
    for col in ("iou", "iou_lo", "iou_hi", "dice", "dice_lo", "dice_hi"):
        assert ensemble[col] == single[col], col
    assert ensemble["iou_vs_best_member"] == 0 and ensemble["iou_vs_best_member_lo"] == 0
    assert ensemble["iou_vs_best_member_hi"] == 0 and pd.isna(single["iou_vs_best_member"])
    detail = json.loads((out / "img.json").read_text())["entries"]
    assert detail["ensemble-3"]["per_image"] == detail[EXP]["per_image"]
    assert (out / "img.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_a_study(trained):
    study, summary = trained
    assert cli("evaluate", "--study", study.root, "--quiet") == 0
    out = study.analysis_dir / "evaluate"
    table = pd.read_csv(out / "synthetic-seed1000.csv")  # no test set: a held-out synthetic stack (seed + 1000)
    assert list(table["entry"]) == [EXP] and table["best_val_jaccard"].iloc[0] == pytest.approx(
        summary["best_val_jaccard"])
    assert 0 <= table["iou_lo"].iloc[0] <= table["iou"].iloc[0] <= table["iou_hi"].iloc[0] <= 1
    assert cli("collect", "--study", study.root) == 0
    assert cli("analyze", "--study", study.root, "--quiet", "--bootstrap", "200") == 0
    md = (study.analysis_dir / "report.md").read_text()
    assert "## Evaluation on held-out and other data" in md and "figures/../evaluate/synthetic-seed1000.png" in md
    assert (study.analysis_dir / "figures" / "../evaluate/synthetic-seed1000.png").exists()
    page = (study.analysis_dir / "report.html").read_text()
    assert "alt='../evaluate/synthetic-seed1000' src='data:image/png;base64," in page


def test_evaluate_transfer_to_another_dataset_spec(trained, tmp_path):
    study, _ = trained
    assert cli("data", "synth", "--out", tmp_path / "other", "--slices", "2", "--height", "96", "--width", "80",
               "--seed", "5") == 0
    spec = tmp_path / "other.toml"
    spec.write_text('[study]\nname = "other lab"\n[data]\nkind = "tiff"\nimages = "other/training.tif"\n'
                    'masks = "other/training_groundtruth.tif"\npatch_size = 32\n')
    out = tmp_path / "ev"
    assert cli("evaluate", "--study", study.root, "--data", spec, "--out", out, "--quiet") == 0
    table = pd.read_csv(out / "other-lab-training.csv")
    record = json.loads((out / "other-lab-training.json").read_text())
    assert record["dataset"]["pairs"] == [[str(tmp_path / "other" / "training.tif"),
                                          str(tmp_path / "other" / "training_groundtruth.tif")]]
    assert table["images"].iloc[0] == 2 and table["interval_unit"].iloc[0] == "block"


def test_evaluate_slurm_job_is_built_without_slurm(trained):
    study, _ = trained
    # a subprocess: submitit sets up logging on first use, which must not grab pytest's captured stderr
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", "evaluate", "--study", str(study.root), "--slurm",
                           "--dry-run", "--partition", "gpu", "--time", "30"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --time=30" in script and "gpu:" in script
    assert f"hpc-unet evaluate --study {study.root.resolve()} --top-k 3" in script
    assert "--slurm" not in script.split("the job runs:")[1]
