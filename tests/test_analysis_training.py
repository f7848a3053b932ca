"""The did-it-learn columns and example patches as real training writes them, and the slice split."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import cli
from test_reliability_helpers import make_study

from hpc_unet.data.prepare import _slice_groups, _split
from hpc_unet.errors import UserError
from hpc_unet.manifest import read_manifest
from hpc_unet.train.examples import read_examples
from hpc_unet.train.val_patches import VAL_PATCHES_FILE, read_val_patches


def test_training_writes_learned_evidence_and_examples(tmp_path, capsys):
    root = tmp_path / "study"
    study = make_study(root, "grid.learning_rate=[5e-3]", "grid.batch_size=[8]", "grid.architecture=['UNet']",
                       "train.epochs=2", 'data.split="slice"')
    exp_id = read_manifest(study)["exp_id"].iloc[0]
    assert cli("train", "--study", root, "--experiment", exp_id) == 0
    assert cli("collect", "--study", root) == 0
    row = pd.read_parquet(study.results_dir / "results.parquet").iloc[0]
    # independent: the image-blind optimum of both metrics is about the mask fraction (all foreground)
    assert row["trivial_val_jaccard"] == pytest.approx(row["val_mask_fraction"], abs=0.01)
    skills = ((row["best_val_jaccard"] - row["trivial_val_jaccard"]) / (1 - row["trivial_val_jaccard"]),
              (row["best_val_iou"] - row["trivial_val_iou"]) / (1 - row["trivial_val_iou"]))
    assert row["learned_skill"] == pytest.approx(min(skills), rel=1e-9)
    passed = sum(s >= 0.10 for s in skills)  # learned on both, marginal on one, not learned on neither
    state = {2: "learned", 1: "marginal", 0: "not learned"}[passed]
    assert bool(row["learned"]) == (state == "learned")
    assert "slice-level" in row["data_provenance"]
    examples = read_examples(root / row["examples"])
    assert examples is not None and examples["image"].dtype == np.uint8
    assert examples["image"].shape == examples["mask"].shape == examples["prediction"].shape
    assert str(examples["split"]) == "validation"  # the smoke spec has no test set
    # per-patch scores of the best weights: pooled with the metric's +1 smoothing they give the recorded
    # best val IoU (Keras' ThresholdedIoU at the best epoch, an independent computation of the same thing)
    scored = read_val_patches(root / "runs" / exp_id / VAL_PATCHES_FILE)
    assert scored is not None and len(scored["iou"]) == json.loads(row["data_provenance"])["patches_val"]
    pooled = (scored["tp"].sum() + 1) / ((scored["tp"] + scored["fp"] + scored["fn"]).sum() + 1)
    assert pooled == pytest.approx(row["best_val_iou"], abs=1e-3)
    assert len(scored["worst"]) == min(4, np.isfinite(scored["iou"]).sum())
    capsys.readouterr()
    assert cli("collect", "--study", root, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["not_learned"] == ([exp_id] if state == "not learned" else [])
    assert report["marginal"] == ([exp_id] if state == "marginal" else [])
    assert cli("status", "--study", root) == 0
    out = capsys.readouterr().out
    assert ("(did not learn)" in out) == (state == "not learned") and ("(marginal)" in out) == (state == "marginal")
    assert cli("analyze", "--study", root, "--bootstrap", "50", "--quiet") == 0
    md = (study.analysis_dir / "report.md").read_text()
    assert "Validation split: slice-level" in md


def test_slice_split_keeps_every_slice_on_one_side():
    pair = SimpleNamespace(images=[np.zeros((8, 64, 64, 1)), np.zeros((2, 96, 64, 1))], kind="tiff")
    groups = _slice_groups(pair, 32)
    assert len(groups) == 8 * 4 + 2 * 6 and list(groups[:5]) == [0, 0, 0, 0, 1]
    cfg = {"split": "slice", "val_fraction": 0.2, "split_seed": 3, "max_patches": 0}
    train, val, text = _split(cfg, pair, 32, len(groups))
    assert not set(groups[train]) & set(groups[val])
    assert sorted([*train, *val]) == list(range(len(groups)))
    assert len(val) >= round(0.2 * len(groups)) and text.startswith("slice-level: whole slices")
    with pytest.raises(UserError, match="at least 2 slices"):
        _split(cfg, SimpleNamespace(images=[np.zeros((1, 64, 64, 1))], kind="tiff"), 32, 4)
