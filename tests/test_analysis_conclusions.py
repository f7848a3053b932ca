"""What the report concludes, on constructed result tables: runs that did not learn, hypotheses as data,
S6 that can fail, the held-out headline; every number checked against an independent computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import cli

from hpc_unet.analysis import stats, verdicts
from hpc_unet.analysis.load import load_study
from hpc_unet.analysis.pipeline import analyze
from hpc_unet.analysis.synthetic import MASK_FRACTION, SEED_HYPOTHESES, make_study, spec_text
from hpc_unet.errors import UserError
from hpc_unet.spec import validate_hypotheses
from hpc_unet.train.summary import learning_evidence, trivial_scores

FLAT = [("UNet", 1e-4, 8), ("UNet", 1e-4, 16), ("Attention_UNet", 1e-4, 8), ("Attention_ResUNet", 5e-3, 32)]


@pytest.fixture(scope="module")
def flat_study(tmp_path_factory):
    """A grid where four cells never learned (Jaccard ~ mask fraction, best epoch 1, tiny std)."""
    root = tmp_path_factory.mktemp("flat") / "grid"
    study = make_study(root, not_learning=FLAT, seed=5, device="CPU")
    assert cli("analyze", "--study", study.root, "--bootstrap", "200", "--quiet") == 0
    return study


def _cell(frame: pd.DataFrame, cell: tuple[str, float, int]) -> pd.DataFrame:
    arch, lr, bs = cell
    return frame[(frame["architecture"] == arch) & np.isclose(frame["learning_rate"], lr) & (frame["batch_size"] == bs)]


# ------------------------------------------------------------------------------------------ did it learn
def test_trivial_scores_match_the_three_predictors_computed_directly():
    rng = np.random.default_rng(0)
    masks = (rng.random((20, 16, 16, 1)) < 0.13).astype(np.float32)

    def pooled(pred: np.ndarray, hard: bool) -> float:  # the Keras metrics' formula, written out
        t = masks > 0.5 if hard else masks
        p = (pred > 0.5) if hard else pred
        inter = float((t * p).sum())
        return (inter + 1) / (float(t.sum()) + float(p.sum()) - inter + 1)

    frac = float(masks.mean())
    preds = [np.zeros_like(masks), np.ones_like(masks), np.full_like(masks, frac)]
    got = trivial_scores(masks)
    assert got["val_mask_fraction"] == pytest.approx(frac)
    assert got["trivial_val_jaccard"] == pytest.approx(max(pooled(p, False) for p in preds), rel=1e-12)
    assert got["trivial_val_iou"] == pytest.approx(max(pooled(p, True) for p in preds), rel=1e-12)
    # a run at the mask fraction did not learn (the margin itself is pinned in test_analysis_learning.py)
    assert learning_evidence(frac, 0.0, frac, frac)["learned"] is False
    assert learning_evidence(math.nan, math.nan, frac, frac)["learned"] is None


def test_non_learning_runs_are_flagged_and_never_most_stable_or_fastest(flat_study):
    d = flat_study.analysis_dir
    runs = pd.read_csv(d / "tables" / "runs.csv")
    results = pd.read_parquet(flat_study.results_dir / "results.parquet")
    # independent: skill = (score - trivial) / (1 - trivial), learned when >= 0.10 on both metrics
    done = results[results["status"] == "completed"]
    skill = np.minimum((done["best_val_jaccard"] - done["trivial_val_jaccard"]) / (1 - done["trivial_val_jaccard"]),
                       (done["best_val_iou"] - done["trivial_val_iou"]) / (1 - done["trivial_val_iou"]))
    expected_flat = set(done.loc[skill < 0.10, "exp_id"])
    assert len(expected_flat) == len(FLAT)
    assert set(runs.loc[runs["learned"].astype(str) == "False", "exp_id"]) == expected_flat

    cells = pd.read_csv(d / "tables" / "cells.csv")
    for cell in FLAT:
        row = _cell(cells, cell)
        assert row["jaccard"].iloc[0] == pytest.approx(MASK_FRACTION, abs=0.01)  # kept, real and low
        assert pd.isna(row["val_loss_std"].iloc[0]) and pd.isna(row["best_epoch"].iloc[0])  # undefined
        assert row["n_not_learned"].iloc[0] == 1
    # the most stable / fastest cells are cells that learned
    stable = cells.loc[cells["val_loss_std"].idxmin()]
    fastest = cells.loc[cells["best_epoch"].idxmin()]
    for pick in (stable, fastest):
        assert (pick["architecture"], pick["learning_rate"], pick["batch_size"]) not in FLAT
    recs = pd.read_csv(d / "tables" / "recommendations.csv")
    for r in recs.to_dict("records"):
        assert (r["architecture"], r["learning_rate"], r["batch_size"]) not in FLAT
    # the stability ANOVA and the correlation use only runs that learned, and the report says so
    info = json.loads((d / "summary.json").read_text())
    assert info["anova"]["stability"]["n"] == len(done) - len(FLAT)
    assert pd.read_csv(d / "tables" / "correlation.csv")["n"].iloc[0] == len(done) - len(FLAT)
    assert info["learning"]["not_learned"] == len(FLAT)
    assert f"{len(FLAT)} did not" in info["headline"]
    svg = (d / "figures" / "heatmap_stability.svg").read_text()
    assert svg.count("did not") >= len(FLAT) and "undefined: the runs did not learn" in svg
    assert "runs that did not learn" in (d / "figures" / "heatmap_jaccard.svg").read_text()


def test_units_follow_the_device(flat_study):
    md = (flat_study.analysis_dir / "report.md").read_text()
    assert "J per CPU-hour" in md and "jaccard per CPU-hour" in md and "GPU-hour" not in md.replace("per GPU-hour than", "")


def test_older_shards_derive_learned_from_provenance_or_say_unknown(tmp_path):
    study = make_study(tmp_path / "old", not_learning=FLAT[:1], seed=6)
    path = study.results_dir / "results.parquet"
    frame = pd.read_parquet(path).drop(columns=["learned", "learned_skill", "trivial_val_jaccard",
                                                "trivial_val_iou", "val_mask_fraction"])
    prov = json.dumps({"kind": "synthetic", "mask_fraction_val": MASK_FRACTION})
    frame.assign(data_provenance=prov).to_parquet(path, index=False)
    data = load_study(study.root)
    flat = data.completed[data.completed["learned"].map(lambda v: v is False)]
    assert list(flat["exp_id"]) == list(_cell(data.completed, FLAT[0])["exp_id"])
    assert set(data.completed["learned_source"]) == {"derived from the validation mask fraction in data_provenance"}

    frame.assign(data_provenance="{}").to_parquet(path, index=False)
    bundle = analyze(study.root, n_boot=50)
    assert bundle.info["learning"]["unknown"] == len(data.completed)
    assert "unknown" in bundle.info["summary"][1]


# ------------------------------------------------------------------------------------ hypotheses as data
def test_a_grid_without_the_levels_gets_not_applicable(tmp_path):
    spec = spec_text(learning_rates=(1e-4, 1e-3, 5e-3), architectures=("UNet",))
    study = make_study(tmp_path / "g", spec=spec, seed=7)
    table = analyze(study.root, n_boot=50).tables["verdicts"].set_index("id")
    assert table.loc["H1", "verdict"] == verdicts.NOT_APPLICABLE
    assert table.loc["H1", "evidence"] == "the grid has no lr 5e-04"
    assert table.loc["H1-UNet", "evidence"] == "the grid has no lr 5e-04"
    assert table.loc["H1-Attention_UNet", "evidence"] == "the grid has no architecture Attention_UNet"
    assert table.loc["H3-sensitive", "verdict"] == verdicts.NOT_APPLICABLE
    assert table.loc["H2", "verdict"] != verdicts.NOT_APPLICABLE  # batch sizes 8, 16, 32 are there


def test_a_spec_without_hypotheses_judges_nothing_and_says_so(tmp_path):
    study = make_study(tmp_path / "g", spec=spec_text(hypotheses=""), seed=8)
    bundle = analyze(study.root, n_boot=50)
    assert bundle.tables["verdicts"].empty
    assert any("declares no [[hypothesis]]" in n for n in bundle.info["notes"])


def test_hypothesis_tables_are_validated():
    good = validate_hypotheses([{"id": "X", "claim": "c", "rule": "best_lr", "architecture": "UNet",
                                 "learning_rate": 1e-3}])
    assert good[0]["rule"] == "best_lr"
    for bad, words in [
        ({"id": "X", "claim": "c", "rule": "best_lrr", "architecture": "UNet", "learning_rate": 1e-3}, "did you mean"),
        ({"id": "X", "claim": "c", "rule": "best_lr", "architecture": "UNet"}, "lacks 'learning_rate'"),
        ({"id": "X", "claim": "c", "rule": "best_lr", "architecture": "Unett", "learning_rate": 1e-3}, "UNet"),
        ({"id": "X", "claim": "c", "rule": "consistency", "levels": 3}, "unknown key 'levels'"),
    ]:
        with pytest.raises(UserError, match=words):
            validate_hypotheses([bad])


def test_user_claims_with_other_levels_are_judged(tmp_path):
    own = ('\n[[hypothesis]]\nid = "mine"\nclaim = "UNet is best at lr 5e-3"\nrule = "best_lr"\n'
           'architecture = "UNet"\nlearning_rate = 5e-3\n')
    study = make_study(tmp_path / "g", spec=spec_text(hypotheses=own), seed=9)
    table = analyze(study.root, n_boot=50).tables["verdicts"].set_index("id")
    assert list(table.index) == ["mine"]
    assert table.loc["mine", "verdict"] == verdicts.NOT_SUPPORTED  # 5e-3 is the constructed worst lr


# ------------------------------------------------------------------------------------------------- S6
def _s6(tmp_path, jaccard) -> verdicts.Verdict:
    spec = spec_text(replicates=2)  # two seeds per cell: leaving one run out cannot remove a cell
    study = make_study(tmp_path / "s6", spec=spec, jaccard=jaccard, patch_sd=0.05, seed=10)
    table = analyze(study.root, n_boot=400).tables["verdicts"].set_index("id")
    return table.loc["S6"]


def test_s6_supported_when_the_recommended_cell_clearly_beats_the_median(tmp_path):
    row = _s6(tmp_path, lambda a, lr, bs: 0.85 if (lr, bs) == (1e-3, 16) else 0.6)
    assert row["verdict"] == verdicts.SUPPORTED, row["evidence"]
    assert "spread between training runs is unknown" not in row["evidence"]  # replicates: it is known


def test_patch_bootstrap_difference_is_paired_and_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    union = rng.uniform(300, 700, 40)
    a = (union * 0.7, union, 1.0)
    b = (union * np.clip(0.7 + rng.normal(0, 0.05, 40), 0, 1), union, 1.0)
    d = stats.patch_bootstrap_difference([a], [b], n_boot=500, seed=3)
    direct = (a[0].sum() + 1) / (a[1].sum() + 1) - (b[0].sum() + 1) / (b[1].sum() + 1)
    assert d.diff == pytest.approx(direct, rel=1e-12)
    idx = np.random.default_rng(3).integers(0, 40, size=(500, 40))  # the same resamples, by hand
    boots = ((a[0][idx].sum(1) + 1) / (a[1][idx].sum(1) + 1)) - ((b[0][idx].sum(1) + 1) / (b[1][idx].sum(1) + 1))
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), rel=1e-12)
    assert d.method.startswith("paired")


def test_welch_interval_matches_scipy():
    from scipy import stats as sps

    a, b = np.array([0.71, 0.74, 0.69, 0.73]), np.array([0.60, 0.66, 0.62])
    d = stats.welch_interval(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


# --------------------------------------------------------------------------------------------- headline
def test_headline_uses_test_scores_when_present(tmp_path):
    study = make_study(tmp_path / "t", test=True, seed=12)
    info = analyze(study.root, n_boot=50).info
    results = pd.read_parquet(study.results_dir / "results.parquet")
    top = results.loc[results["best_val_jaccard"].idxmax()]  # one run per cell: the best cell is the best run
    dice = 2 * top["test_iou"] / (1 + top["test_iou"])  # thresholded Dice of the same pooled counts
    assert f"IoU {top['test_iou']:.3f} and Dice {dice:.3f}" in info["headline"]
    assert "held-out test patches" in info["headline"] and "optimistic" not in info["headline"]
    assert f"test IoU {top['test_iou']:.3f}" in " ".join(info["summary"])


def test_headline_says_validation_is_optimistic_without_a_test_set(flat_study):
    info = json.loads((flat_study.analysis_dir / "summary.json").read_text())
    results = pd.read_parquet(flat_study.results_dir / "results.parquet")
    top = results.loc[results["best_val_jaccard"].idxmax()]
    assert info["headline"].startswith("This study trained 36 U-Net models")
    assert f"soft Jaccard {top['best_val_jaccard']:.3f}" in info["headline"]
    assert "optimistic" in info["headline"] and "no held-out test set" in info["headline"]
    assert "patches split at random" in info["headline"]


def test_the_seed_hypotheses_load():
    found, note = verdicts.hypotheses_from_spec(SEED_HYPOTHESES)
    assert note == "" and [h["id"] for h in found][:2] == ["H1", "H1-UNet"] and len(found) == 15
