"""The transfer section of the analysis and the transfer/ensemble follow-ups. No TensorFlow: results are
constructed, expected intervals come from scipy (not from the code under test)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hpc_unet.analysis import transfer as tr
from hpc_unet.analysis.load import StudyData
from hpc_unet.study import Study

SOURCE = "/src/study:best"
TEST_IMAGE = "/data/test.tif"


def _runs(values: dict[tuple[float, str], list[float]], epochs: dict[tuple[float, str], list[int]] | None = None
          ) -> pd.DataFrame:
    rows = []
    for (budget, init), scores in values.items():
        for seed, score in enumerate(scores):
            rows.append({"exp_id": f"b{budget}-{init.split(':')[-1]}-s{seed}", "status": "completed",
                         "best_val_jaccard": 0.5, "test_iou": score, "train_fraction": budget, "init_from": init,
                         "init_path": "" if init == "none" else "/src/study/runs/unet-s0/model/best.keras",
                         "init_source": None if init == "none" else json.dumps({"exp_id": "unet-s0"}),
                         "best_epoch": (epochs or {}).get((budget, init), [5] * len(scores))[seed],
                         "data_provenance": json.dumps({"patches_train": int(100 * budget),
                                                        "test_images": TEST_IMAGE}),
                         "architecture": "UNet", "learning_rate": 1e-3, "batch_size": 8, "seed": seed})
    return pd.DataFrame(rows)


def _data(root: Path, frame: pd.DataFrame, spec_text: str = "") -> StudyData:
    return StudyData(study=Study.at(root), meta={}, manifest=frame, runs=frame, history=None, spec_text=spec_text)


def test_verdict_threshold_is_zero_on_both_sides():
    assert tr.verdict(1e-9, 0.2) == "helps"
    assert tr.verdict(0.0, 0.2) == "no difference shown"
    assert tr.verdict(-0.2, -1e-9) == "hurts"
    assert tr.verdict(-0.2, 0.0) == "no difference shown"
    assert tr.verdict(math.nan, math.nan) == "no difference shown"


@pytest.mark.parametrize(("verdicts", "expected"), [
    (["helps", "helps", "no difference shown", "hurts"], 0.25),
    (["helps", "no difference shown", "helps", "no difference shown"], 1.0),  # helps again at 0.25
    (["helps"] * 4, None),
    (["no difference shown"] * 4, 0.05),
])
def test_stops_helping_is_the_start_of_the_last_run_of_non_helping_budgets(verdicts, expected):
    frame = pd.DataFrame({"train_fraction": [1.0, 0.25, 0.1, 0.05], "verdict": verdicts[::-1]})
    assert tr.stops_helping(frame) == expected


def test_section_intervals_differences_and_zero_shot(tmp_path):
    values = {(0.1, "none"): [0.30, 0.32, 0.35], (0.1, SOURCE): [0.60, 0.62, 0.66],
              (1.0, "none"): [0.70, 0.74, 0.71], (1.0, SOURCE): [0.71, 0.72, 0.74]}
    epochs = {(0.1, "none"): [12, 14, 16], (0.1, SOURCE): [3, 4, 5], (1.0, "none"): [8, 9, 10],
              (1.0, SOURCE): [4, 4, 4]}
    root = tmp_path / "study"
    (root / "analysis" / "evaluate").mkdir(parents=True)
    (root / "analysis" / "evaluate" / "test.json").write_text(json.dumps({
        "dataset": {"pairs": [[TEST_IMAGE, "/data/test_masks.tif"]]},
        "table": [{"entry": "unet-s0", "kind": "single", "iou": 0.21, "iou_lo": 0.15, "iou_hi": 0.27,
                   "interval_unit": "blocks"}, {"entry": "other", "kind": "single", "iou": 0.9}]}))
    result = tr.analyze_transfer(_data(root, _runs(values, epochs)), n_boot=200)
    assert result is not None and result.facts["metric"] == "test_iou"
    t = result.table
    cell = t[(t["train_fraction"] == 0.1) & (t["start"] == "fine-tuned")].iloc[0]
    x = np.array(values[(0.1, SOURCE)])
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert cell["test_iou"] == pytest.approx(x.mean())
    assert (cell["low"], cell["high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert cell["epochs_to_best"] == pytest.approx(4.0) and cell["train_patches"] == 10
    zero = t[t["train_fraction"] == 0].iloc[0]
    assert zero["start"].startswith(tr.ZERO_SHOT) and (zero["test_iou"], zero["low"]) == (0.21, 0.15)
    d = result.differences.set_index("train_fraction")
    expected = stats.ttest_ind(values[(0.1, SOURCE)], values[(0.1, "none")], equal_var=False).confidence_interval()
    assert (d.loc[0.1, "low"], d.loc[0.1, "high"]) == pytest.approx((expected.low, expected.high))
    assert d.loc[0.1, "verdict"] == "helps" and d.loc[1.0, "verdict"] == "no difference shown"
    assert result.facts["sources"]["fine-tuned"]["stops_helping_at"] == 1.0


def test_single_runs_get_intervals_over_test_patches(tmp_path):
    """One run per cell: a bootstrap over test patches. Patches with the same I/U ratio give a zero-width
    interval at that ratio; identical patch lists give a difference of exactly 0."""
    frame = _runs({(0.5, "none"): [0.4], (0.5, SOURCE): [0.4]})
    inter, union = [2.0, 4.0, 6.0, 8.0], [5.0, 10.0, 15.0, 20.0]  # every patch 0.4
    frame["test_patch_intersection"] = [inter, inter]
    frame["test_patch_union"] = [union, union]
    result = tr.analyze_transfer(_data(tmp_path / "s", frame), n_boot=300)
    row = result.table.iloc[0]
    assert (row["low"], row["high"]) == pytest.approx((0.4, 0.4)) and "4 test patches" in row["interval"]
    diff = result.differences.iloc[0]
    assert (diff["low"], diff["high"]) == (0.0, 0.0) and diff["verdict"] == "no difference shown"
    varied = frame.assign(test_patch_intersection=[[1.0, 9.0, 2.0, 8.0]] * 2)
    wide = tr.analyze_transfer(_data(tmp_path / "s", varied), n_boot=300).table.iloc[0]
    assert wide["low"] < 20 / 50 < wide["high"]


def test_no_section_without_an_init_from_axis(tmp_path):
    frame = _runs({(1.0, "none"): [0.5, 0.6]})
    assert tr.analyze_transfer(_data(tmp_path / "s", frame)) is None


def test_primary_metric_from_the_spec_when_set(tmp_path):
    frame = _runs({(1.0, "none"): [0.5], (1.0, SOURCE): [0.6]})
    assert tr.primary_metric(_data(tmp_path, frame)) == "test_iou"
    assert tr.primary_metric(_data(tmp_path, frame, "[analysis]\nprimary_metric = 'best_val_jaccard'\n")) == \
        "best_val_jaccard"
    assert tr.primary_metric(_data(tmp_path, frame.assign(test_iou=math.nan))) == "best_val_jaccard"


def test_followup_ensemble_writes_top_k_configurations_by_seeds(tmp_path):
    from hpc_unet.analysis.followup_transfer import plan_ensemble
    from hpc_unet.analysis.synthetic import make_study

    study = make_study(tmp_path / "grid", seed=1)
    specs, command = plan_ensemble(study.root, tmp_path / "next.toml", k=3, replicates=2)
    configs = [c for s in specs for c in s.configurations]
    assert len(configs) == 3 and sum(s.experiments for s in specs) == 6
    assert command.count("--model ") == 6 and "--data" in command
    for spec in specs:
        grid = tomllib.loads(spec.text)["grid"]
        assert grid["replicates"] == 2 and len(grid["learning_rate"]) == 1 and len(grid["batch_size"]) == 1


def test_two_sources_with_the_same_id_part_are_refused(tmp_path):
    from hpc_unet.errors import UserError
    from hpc_unet.spec import validate_spec
    from hpc_unet.transfer.source import label

    assert [label(v) for v in ("none", "/a/s:best", "/a/s:best:UNet", "/a/s:unet-lr1e-03-bs8-s0",
                               "/a/s/runs/unet-x-s1/model/best.keras", "/m/My Model.keras")] == \
        ["scratch", "best", "best-unet", "unet-lr1e-03-bs8-s0", "unet-x-s1", "my-model"]
    raw = {"data": {"kind": "synthetic", "patch_size": 32}, "train": {"depth": 2},
           "grid": {"init_from": ["none", "a:best", "b:best"]}}
    with pytest.raises(UserError, match="both name their experiments 'initbest'"):
        validate_spec(raw, base=tmp_path)
    raw["grid"]["init_from"] = ["none", "a:best", "b:best:UNet"]
    assert validate_spec(raw, base=tmp_path).axes["init_from"][1] == f"{tmp_path / 'a'}:best"
