"""Real-microscopy inputs through the CLI: 16-bit images using a few hundred counts, float copies, label masks,
RGB folders, and the `data info` warning for a scaling that uses a tiny part of [0, 1]. Real TensorFlow on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO, cli
from PIL import Image

from hpc_unet.data import normalize
from hpc_unet.study import Study

EXP = "unet-lr5e-03-bs8-s0"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    out = tmp_path_factory.mktemp("synth")
    assert cli("data", "synth", "--out", out, "--slices", "8", "--height", "128", "--width", "128", "--seed", "0") == 0
    return tifffile.imread(out / "training.tif"), tifffile.imread(out / "training_groundtruth.tif")


def _train(root: Path, images: Path, masks: Path, *extra: str, kind: str = "tiff", epochs: int = 12) -> pd.Series:
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", f"data.kind='{kind}'", "--set", f"data.images='{images}'", "--set", f"data.masks='{masks}'",
               "--set", "grid.learning_rate=[5e-3]", "--set", "grid.batch_size=[8]",
               "--set", "grid.architecture=['UNet']", "--set", f"train.epochs={epochs}", *extra) == 0
    assert cli("train", "--study", root, "--experiment", EXP) == 0
    shard = next(Study.at(root).shards_dir.glob("*.completed.summary.parquet"))
    return pd.read_parquet(shard).iloc[0]


def test_normalisation_is_one_function_for_patches_and_images():
    rng = np.random.default_rng(0)
    stack = (1000 + rng.integers(0, 300, (3, 64, 64, 1))).astype(np.uint16)
    for cfg in ({"normalize": "percentile"}, {"normalize": "minmax"}, {"normalize": "percentile",
                                                                        "normalize_per": "dataset"}):
        scaling = normalize.plan([stack], cfg)
        whole = normalize.normalize_stack(stack, scaling)
        lo, hi = normalize.image_ranges(stack, scaling)
        patch = normalize.apply(stack[:, 16:48, 8:40], lo, hi)
        assert np.array_equal(patch, whole[:, 16:48, 8:40])  # bit-identical: training patches == predict
        assert whole.min() == 0.0 and whole.max() == 1.0
    assert normalize.resolve_method("auto", np.uint8) == "dtype"
    assert normalize.resolve_method("auto", np.uint16) == "percentile"
    assert normalize.resolve_method("auto", np.float32) == "minmax"


def test_16bit_few_hundred_counts_trains_like_its_float_copy(synth, tmp_path, capsys):
    raw, gt = synth
    img16 = (1000 + raw.astype(np.uint16) * 3 // 2).astype(np.uint16)  # ~380 of 65535 counts, like a 12-bit camera
    f32 = ((img16 - img16.min()) / float(img16.max() - img16.min())).astype(np.float32)
    tifffile.imwrite(tmp_path / "img16.tif", img16, photometric="minisblack")
    tifffile.imwrite(tmp_path / "imgf.tif", f32, photometric="minisblack")
    tifffile.imwrite(tmp_path / "gt.tif", gt, photometric="minisblack")

    capsys.readouterr()
    assert cli("data", "info", "--images", tmp_path / "img16.tif", "--masks", tmp_path / "gt.tif",
               "--normalize", "dtype") == 0
    out = capsys.readouterr().out
    used = re.search(r"warning: +the images use only ([0-9.]+) % of the \[0, 1\] range", out)
    assert used and float(used.group(1)) < 1 and "normalize = 'percentile'" in out, out
    assert cli("data", "info", "--images", tmp_path / "img16.tif", "--masks", tmp_path / "gt.tif", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["scaling"]["method"] == "percentile" and info["warnings"] == [] and info["range_used"] > 0.5

    s16 = _train(tmp_path / "s16", tmp_path / "img16.tif", tmp_path / "gt.tif")
    sf = _train(tmp_path / "sf", tmp_path / "imgf.tif", tmp_path / "gt.tif")
    prov = json.loads(s16["data_provenance"])
    assert prov["scaling"]["method"] == "percentile" and prov["scaling"]["per"] == "image"
    assert prov["range_used"] > 0.5
    assert s16["best_val_iou"] > 0.3, "the 16-bit run learned nothing"
    assert s16["best_val_iou"] >= sf["best_val_iou"] - 0.1, (s16["best_val_iou"], sf["best_val_iou"])


def test_label_masks_train_from_an_rgb_folder(synth, tmp_path, capsys):
    raw, gt = synth
    images, masks = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    masks.mkdir()
    yy, xx = np.mgrid[:128, :128]
    objects = 0
    for i in range(4):
        rgb = np.stack([raw[i], raw[i] // 2 + 60, 255 - raw[i]], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(images / f"cell{i}.png")
        labels = ((gt[i] > 0) * (1 + xx // 32 + 4 * (yy // 32))).astype(np.uint16)  # one id per region
        objects += len(np.unique(labels[labels > 0]))
        tifffile.imwrite(masks / f"cell{i}.tif", labels)

    root = tmp_path / "binary"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", root, "--quiet",
               "--set", "data.kind='folders'", "--set", f"data.images='{images}'", "--set", f"data.masks='{masks}'") == 0
    capsys.readouterr()
    assert cli("data", "prepare", "--study", root) == 2
    err = capsys.readouterr().err
    assert "distinct values" in err and "mask = 'labels'" in err and len(err.strip().splitlines()) == 1

    summary = _train(tmp_path / "labels-study", images, masks, "--set", "data.mask='labels'", kind="folders",
                     epochs=2)
    prov = json.loads(summary["data_provenance"])
    assert prov["mask"] == "labels" and prov["mask_objects"] == objects and prov["channels"] == 3
    assert prov["mask_fraction_source"] == pytest.approx((gt[:4] > 0).mean(), abs=1e-6)

    model = tmp_path / "labels-study" / "runs" / EXP / "model" / "best.keras"
    assert cli("predict", "--model", model, "--images", images, "--masks", masks, "--out", tmp_path / "pred",
               "--quiet") == 0
    record = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert len(record["per_image"]) == 4 and record["channels"] == 3  # labels scored as foreground > 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == [f"cell{i}.png" for i in range(4)]
