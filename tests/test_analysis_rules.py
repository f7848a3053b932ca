"""Issue 18's rules for conclusions that hold, each on constructed tables with hand-worked or
independently computed expectations: symmetric verdicts, Holm's correction, matched comparisons, the
training budget and the grid's edges, ties and the primary metric, S6 on held-out patches, efficiency
within timing noise, resources, and verdicts that depend on one run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from test_analysis_verdicts import ARCHS, H, context, runs_for

from hpc_unet.analysis import budget, robustness, stats, verdicts
from hpc_unet.analysis.load import IOU, PERFORMANCE
from hpc_unet.analysis.pipeline import _anova_frame, _summary, resources
from hpc_unet.analysis.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from hpc_unet.errors import UserError


def _cell(frame: pd.DataFrame, arch: str, lr: float, bs: int) -> pd.Series:
    return (frame["architecture"] == arch) & np.isclose(frame["learning_rate"], lr) & (frame["batch_size"] == bs)


# ------------------------------------------------------------------------------------------- symmetric
def test_a_wrong_order_within_noise_is_inconclusive_not_unsupported():
    """Issue 18: H2 was 'not supported' at p 0.112 because the order was wrong, 'inconclusive' had it been right."""
    runs, _ = runs_for()
    runs = runs.copy()
    lr_i = runs["learning_rate"].rank(method="dense").astype(int)
    bs_i = runs["batch_size"].rank(method="dense").astype(int)
    arch_i = runs["architecture"].map({a: i for i, a in enumerate(ARCHS)})
    # a tiny RISING trend (the wrong order) under a large three-way pattern that cancels in every batch mean
    runs["val_loss_std"] = 0.05 + 1e-5 * runs["batch_size"] + 0.02 * (-1.0) ** (lr_i + bs_i + arch_i)
    v = verdicts.h2(context(runs), H["H2"])
    assert v.verdict == INCONCLUSIVE and "not the predicted one but within noise" in v.evidence
    # the same wrong order beyond noise is not supported
    runs["val_loss_std"] = 0.02 + 0.001 * runs["batch_size"]
    assert verdicts.h2(context(runs), H["H2"]).verdict == NOT_SUPPORTED


def test_an_interval_that_includes_zero_is_inconclusive_on_either_side():
    from hpc_unet.analysis.verdicts.common import interval_verdict

    for low, high in ((-0.01, 0.03), (-0.03, 0.01), (0.0, 0.02), (-0.02, 0.0)):
        assert interval_verdict(stats.Difference((low + high) / 2, low, high), good_above=0.0) is None
    assert interval_verdict(stats.Difference(0.02, 0.001, 0.03), good_above=0.0) is True
    assert interval_verdict(stats.Difference(-0.02, -0.03, -0.001), good_above=0.0) is False


# ------------------------------------------------------------------------------------------ Holm
def test_holm_matches_statsmodels():
    p = np.array([0.01, 0.04, 0.03, math.nan, 0.005, 0.2])
    got = verdicts.holm(p)
    ok = np.isfinite(p)
    assert np.isnan(got[~ok]).all()
    assert got[ok] == pytest.approx(multipletests(p[ok], method="holm")[1], rel=1e-12)


def test_verdicts_significant_only_before_correction_become_inconclusive(monkeypatch):
    # hand-worked Holm over p = 0.01, 0.03, 0.04: 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    ps = {"A": 0.01, "B": 0.03, "C": 0.04}
    monkeypatch.setattr(verdicts, "judge", lambda ctx, h: verdicts.Verdict(h["id"], "c", SUPPORTED, "e", ps[h["id"]]))
    table = verdicts.judge_all(None, [{"id": k} for k in ps]).set_index("id")
    assert table["p_holm"].tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert table.loc["A", "verdict"] == SUPPORTED
    assert table.loc["B", "verdict"] == INCONCLUSIVE and table.loc["C", "verdict"] == INCONCLUSIVE
    assert "Holm-adjusted over 3 verdict tests: p=0.060" in table.loc["B", "evidence"]


def _anova(ps: list[float]) -> stats.Anova:
    terms = ["learning rate", "batch size", "architecture", "learning rate x batch size"]
    rows = [{"term": t, "sum_sq": 1.0, "df": 1.0, "mean_sq": 1.0, "F": 5.0, "p": p, "partial_eta_sq": 0.5 - i / 10}
            for i, (t, p) in enumerate(zip(terms, ps, strict=True))]
    rows.append({"term": "residual", "sum_sq": 1.0, "df": 10.0, "mean_sq": 0.1, "F": math.nan, "p": math.nan,
                 "partial_eta_sq": math.nan})
    return stats.Anova(response="y", table=pd.DataFrame(rows).set_index("term"), df_resid=10.0, mse=0.1)


def test_anova_terms_are_holm_corrected_and_the_summary_uses_the_adjusted_p():
    anova = _anova([0.001, 0.02, 0.03, 0.2])  # Holm: 0.004, 0.06, 0.06, 0.2
    frame = _anova_frame(anova).set_index("term")
    assert frame["p_holm"].iloc[:4].tolist() == pytest.approx([0.004, 0.06, 0.06, 0.2])
    assert math.isnan(frame.loc["residual", "p_holm"])
    data = SimpleNamespace(runs=pd.DataFrame({"status": ["completed"]}))
    learning = {"learned": 1, "completed": 1, "marginal": 0, "not_learned": 0, "unknown": 0, "rule": "r"}
    lines = _summary(data, pd.DataFrame({"verdict": []}), pd.DataFrame(), anova, anova, {}, learning)
    jaccard = next(line for line in lines if line.startswith("ANOVA of Jaccard"))
    assert "learning rate (partial eta^2 0.50, Holm p=0.004)" in jaccard
    assert "batch size" not in jaccard and "over 4 terms" in jaccard


# ------------------------------------------------------------------------------------------ matched
def test_batch_comparisons_use_only_settings_present_at_both_batch_sizes():
    """Issue 18: H2-UNet compared a batch-8 mean over 4 lrs with a batch-32 mean over 3."""
    runs, _ = runs_for()
    runs = runs[~_cell(runs, "UNet", 5e-3, 32)].copy()
    runs.loc[_cell(runs, "UNet", 5e-3, 8), "val_loss_std"] = 5.0  # would dominate an unmatched batch-8 mean
    v = verdicts.h2_unet(context(runs), H["H2-UNet"])
    unet = runs[runs["architecture"] == "UNet"]
    lo = unet[(unet["batch_size"] == 8) & (unet["learning_rate"] != 5e-3)]["val_loss_std"].mean()
    hi = unet[unet["batch_size"] == 32]["val_loss_std"].mean()
    assert f"UNet {1 - hi / lo:.0%} (over 3 matched lr/seed settings)" in v.evidence
    assert "(over 4 matched lr/seed settings)" in v.evidence  # the other architectures keep all 4


def test_h1_compares_learning_rates_over_the_batch_sizes_every_lr_completed():
    runs, _ = runs_for()
    runs = runs[~_cell(runs, "UNet", 5e-4, 8)]
    v = verdicts.h1_architecture(context(runs), H["H1-UNet"])
    assert "over 2 matched batch/seed settings" in v.evidence


# -------------------------------------------------------------------------------- budget and edges
def _learned(best_epochs: list[int], epochs_run: list[int] | None = None) -> pd.DataFrame:
    n = len(best_epochs)
    prov = '{"patches_train": 128}'
    return pd.DataFrame({"best_epoch": best_epochs, "epochs_run": epochs_run or [12] * n, "data_provenance": [prov] * n})


def test_most_runs_peaking_in_their_last_two_epochs_is_said_at_n_epochs():
    manifest = pd.DataFrame({"epochs": [12] * 3, "batch_size": [8, 16, 32]})
    facts = budget.budget_facts(manifest, _learned([11, 12, 12, 12, 11, 12, 3, 5, 6, 7]))  # 6 of 10
    assert facts["note"].startswith("at 12 epochs, still improving (6 of 10 runs that learned peaked in their last 2")
    assert budget.budget_facts(manifest, _learned([11, 12, 12, 12, 11, 3, 5, 6, 7, 8]))["note"] == ""  # 5 of 10
    assert budget.budget_facts(manifest, _learned([10] * 10))["note"] == ""  # epoch 10 of 12 is not the last two
    assert budget.budget_facts(manifest, _learned([8] * 10, [8] * 10))["note"] == ""  # stopped early: done
    # optimizer steps: ceil(128 / bs) * 12 epochs, by hand
    assert facts["steps"] == {8: 192, 16: 96, 32: 48}
    assert "BS8 192, BS16 96, BS32 48" in facts["steps_note"]


def test_the_budget_note_goes_with_every_verdict_that_depends_on_training_length():
    runs, _ = runs_for(replicates=2, seed_sd=0.003)
    ctx = context(runs)
    ctx.budget_note = "at 12 epochs, still improving"
    table = verdicts.judge_all(ctx, list(H.values())).set_index("id")
    for vid in ("H1", "H1-UNet", "H2", "H2-UNet", "H3-sensitive", "S1", "S6"):
        assert table.loc[vid, "evidence"].endswith("at 12 epochs, still improving"), vid
    assert "still improving" not in table.loc["S3", "evidence"]  # seed-to-seed consistency is not about length


def test_grid_edges_and_the_next_level_beyond():
    levels = {"learning_rate": [1e-4, 5e-4, 1e-3, 5e-3], "batch_size": [8, 16, 32]}
    edges = budget.grid_edges({"learning_rate": 5e-3, "batch_size": 8}, levels)
    assert [(e["factor"], e["edge"]) for e in edges] == [("learning_rate", "highest"), ("batch_size", "lowest")]
    assert edges[0]["next"] == pytest.approx(2.5e-2)  # 5e-3 * (5e-3 / 1e-3)
    assert edges[1]["next"] == 4  # 8 * (8 / 16)
    assert budget.grid_edges({"learning_rate": 1e-3, "batch_size": 16}, levels) == []
    assert budget.grid_edges({"learning_rate": 1e-4, "batch_size": 32}, levels)[0]["next"] == pytest.approx(2e-5)


def test_followup_proposes_the_level_beyond_the_edge_and_more_epochs(tmp_path):
    from hpc_unet.analysis.followup import plan_followups
    from hpc_unet.analysis.synthetic import make_study

    rising = {1e-4: 0.5, 5e-4: 0.6, 1e-3: 0.7, 5e-3: 0.8}  # the best lr is the grid's highest
    study = make_study(tmp_path / "edge", jaccard=lambda a, lr, bs: rising[lr] + (0.05 if a == "UNet" else 0), seed=2)
    path = study.results_dir / "results.parquet"
    frame = pd.read_parquet(path)
    frame["best_epoch"] = frame["epochs_run"]  # every run peaks at its last epoch
    frame.to_parquet(path, index=False)
    specs, notes = plan_followups(study.root, tmp_path / "next.toml", epochs=20)
    beyond = [s for s in specs if "-beyond-" in s.path.name]
    assert [s.path.name for s in beyond] == ["next-beyond-lr2.5e-02-bs" + beyond[0].path.name.split("-bs")[1]]
    assert "UNet lr 2.5e-02" in beyond[0].configurations[0]
    assert any("still improving" in n and "pass --epochs above 30" in n for n in notes)


# ------------------------------------------------------------------------------- ties, primary metric
def _two_cell_runs(gap: float, iou_flip: bool = False) -> pd.DataFrame:
    runs, _ = runs_for(patch_sd=0.02, jaccard=lambda a, lr, bs: 0.6 + (0.2 if (lr, bs) == (1e-3, 16) else 0)
                       + (0.2 - gap if (lr, bs) == (5e-4, 16) else 0))
    runs = runs.copy()
    if iou_flip:  # by IoU the runner-up is first
        runs.loc[_cell(runs, "UNet", 5e-4, 16), IOU] = 0.99
    return runs


def test_best_names_the_runners_up_within_noise():
    tied = _two_cell_runs(gap=0.0)
    recs = verdicts.recommendations(tied, stats.cell_intervals(tied, PERFORMANCE, n_boot=300), n_boot=300)
    best = verdicts.kinds_of(recs[recs["architecture"] == "UNet"], "best").iloc[0]
    assert best["tied_with"] in ("UNet lr 5e-04 bs 16", "UNet lr 1e-03 bs 16")
    apart = _two_cell_runs(gap=0.1)
    recs = verdicts.recommendations(apart, stats.cell_intervals(apart, PERFORMANCE, n_boot=300), n_boot=300)
    assert verdicts.kinds_of(recs[recs["architecture"] == "UNet"], "best").iloc[0]["tied_with"] == ""


def test_the_primary_metric_ranks_and_the_other_metric_is_reported_when_it_disagrees():
    runs = _two_cell_runs(gap=0.1, iou_flip=True)
    cells = stats.cell_intervals(runs, PERFORMANCE, n_boot=100)
    by_j = verdicts.kinds_of(verdicts.recommendations(runs, cells, n_boot=100), "best").set_index("architecture")
    assert (by_j.loc["UNet", "learning_rate"], by_j.loc["UNet", "other_metric_best"]) == (1e-3, "UNet lr 5e-04 bs 16")
    by_iou = verdicts.kinds_of(verdicts.recommendations(runs, cells, primary=IOU, n_boot=100), "best")
    by_iou = by_iou.set_index("architecture")
    assert (by_iou.loc["UNet", "learning_rate"], by_iou.loc["UNet", "other_metric_best"]) == (5e-4, "UNet lr 1e-03 bs 16")


def test_primary_metric_is_a_validated_spec_key():
    import tomllib
    from pathlib import Path

    from hpc_unet.analysis.pipeline import primary_metric
    from hpc_unet.analysis.synthetic import spec_text
    from hpc_unet.spec import validate_spec

    assert primary_metric(spec_text()) == PERFORMANCE
    assert primary_metric(spec_text() + '\n[analysis]\nprimary_metric = "iou"\n') == IOU
    for bad, words in (('primary_metric = "IoU"', "did you mean 'iou'"), ('primary_metrik = "iou"', "did you mean 'primary_metric'")):
        with pytest.raises(UserError, match=words):
            validate_spec(tomllib.loads(spec_text(hypotheses="") + f"\n[analysis]\n{bad}\n"), Path("."))


# ------------------------------------------------------------------------------------------------- S6
def _s6_runs(lucky_b: float) -> pd.DataFrame:
    """Every cell scores 0.7 on every patch; UNet lr 5e-4 bs 16 scores 0.95 on the selection half and
    ``lucky_b`` on the held-out half."""
    runs, _ = runs_for()
    runs = runs.copy()
    n = len(runs["val_patch_union"].iloc[0])
    select = np.sort(np.random.default_rng(0).permutation(n)[: n // 2])  # the documented split, seed 0
    union = np.full(n, 500.0)
    ratio = np.full(n, 0.7)
    special = ratio.copy()
    special[select] = 0.95
    special[np.setdiff1d(np.arange(n), select)] = lucky_b
    for i in runs.index:
        r = special if _cell(runs.loc[[i]], "UNet", 5e-4, 16).iloc[0] else ratio
        runs.at[i, "val_patch_intersection"] = list(r * union)
        runs.at[i, "val_patch_union"] = list(union)
    return runs


def test_s6_selects_on_one_half_of_the_patches_and_estimates_on_the_other():
    lucky = verdicts.s6_recommendations(context(_s6_runs(lucky_b=0.7)), H["S6"])
    assert lucky.verdict == INCONCLUSIVE  # best on its selection half, typical on the other: no claim
    assert "UNet: lr 5e-04 bs 16 chosen on 30 patches; on the other 30 its J 0.700 vs the median" in lucky.evidence
    assert "spread between training runs is unknown" in lucky.evidence
    real = verdicts.s6_recommendations(context(_s6_runs(lucky_b=0.95)), H["S6"])
    assert "UNet: lr 5e-04 bs 16" in real.evidence and "+0.250 [+0.250, +0.250]" in real.evidence


# ---------------------------------------------------------------------------------------- efficiency
def test_efficiency_is_ranked_only_beyond_the_timing_noise():
    runs, _ = runs_for()
    runs = runs.copy()
    unet = runs["architecture"] == "UNet"
    runs.loc[unet, "jaccard_per_gpu_hour"] = 50.0
    runs.loc[_cell(runs, "UNet", 1e-3, 8), "jaccard_per_gpu_hour"] = 100.0
    runs.loc[_cell(runs, "UNet", 1e-3, 16), "jaccard_per_gpu_hour"] = 91.0
    cells = stats.cell_intervals(runs, PERFORMANCE, n_boot=50)

    def eff(noise: float) -> pd.Series:
        recs = verdicts.recommendations(runs, cells, n_boot=50, noise=noise)
        return verdicts.kinds_of(recs[recs["architecture"] == "UNet"], "most efficient").iloc[0]

    # tied when within 2 x noise of the top: 91 >= 100 * (1 - 2 * 0.05) = 90, not at noise 0.04 (92)
    top = eff(0.05)
    assert (top["learning_rate"], top["batch_size"], top["jaccard_per_gpu_hour"]) == (1e-3, 8, 100.0)
    assert top["efficiency_tied_with"] == "UNet lr 1e-03 bs 16"
    assert eff(0.04)["efficiency_tied_with"] == ""


def test_timing_noise_is_the_median_relative_spread_of_steady_epochs():
    hist = pd.DataFrame({"exp_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 4, "epoch": [1, 2, 3, 4] * 3,
                         "epoch_seconds": [99, 10, 12, 14, 99, 10, 10, 10, 99, 20, 22, 24]})
    cv = sorted([np.std([10, 12, 14], ddof=1) / 12, 0.0, np.std([20, 22, 24], ddof=1) / 22])
    assert verdicts.timing_noise(hist, ["a", "b", "c"]) == pytest.approx(cv[1])


def test_resources_per_architecture():
    done = pd.DataFrame({"architecture": ["UNet", "UNet", "Attention_UNet"], "param_count": [100, 100, 300],
                         "model_bytes": [2**20 * 1.234, 2**20 * 1.234, 2**21], "peak_gpu_bytes": [0, 0, 3 * 2**20],
                         "max_rss_bytes": [2**30, 3 * 2**30, 0], "total_train_seconds": [600, 720, 61]})
    out = resources(done).set_index("architecture")
    assert out.loc["UNet", "parameters"] == 100 and out.loc["UNet", "model_MB"] == 1.2
    assert (out.loc["UNet", "peak_memory_MB"], out.loc["UNet", "memory_kind"]) == (2000.0, "peak RSS")  # median 2048 MiB, 2 significant figures
    assert (out.loc["Attention_UNet", "peak_memory_MB"], out.loc["Attention_UNet", "memory_kind"]) == (3.0, "peak GPU")
    assert out.loc["UNet", "train_minutes"] == 11.0 and out.loc["Attention_UNet", "train_minutes"] == 1.0


# ---------------------------------------------------------------------------------------- robustness
def test_a_verdict_that_one_run_decides_is_fragile_and_names_the_run():
    runs, _ = runs_for(patch_sd=0.01, jaccard=lambda a, lr, bs: 0.7)
    runs = runs.copy()
    spike = _cell(runs, "UNet", 5e-4, 16)
    runs.loc[spike, PERFORMANCE] = 0.99
    exp = runs.loc[spike, "exp_id"].iloc[0]
    setup = robustness.Setup(architectures=ARCHS, levels={}, hypotheses=[H["H1-UNet"]])
    assert robustness.conclude(runs, setup, 100).verdicts.iloc[0]["verdict"] == SUPPORTED
    assert exp in robustness.candidates(runs, pd.DataFrame())
    flips = robustness.leave_one_out(runs, setup, [exp])
    assert flips["verdict H1-UNet"] == (exp, SUPPORTED, INCONCLUSIVE)
    table = robustness.mark_fragile(robustness.conclude(runs, setup, 100).verdicts, flips)
    assert table.iloc[0]["verdict"] == f"fragile: depends on {exp}"
    assert f"with every run 'supported', without {exp} 'inconclusive'" in table.iloc[0]["evidence"]
    # a run that changes nothing is not blamed
    other = runs.loc[_cell(runs, "Attention_UNet", 1e-3, 8), "exp_id"].iloc[0]
    assert "verdict H1-UNet" not in robustness.leave_one_out(runs, setup, [other])


def test_s6_selects_by_the_pooled_ratio_not_by_size():
    runs = _s6_runs(lucky_b=0.95)
    small = _cell(runs, "UNet", 5e-4, 16)
    for i in runs.index[~small]:  # the other cells: larger patches, the same 0.7 ratio
        runs.at[i, "val_patch_intersection"] = list(np.asarray(runs.at[i, "val_patch_intersection"]) * 1.6)
        runs.at[i, "val_patch_union"] = list(np.asarray(runs.at[i, "val_patch_union"]) * 1.6)
    v = verdicts.s6_recommendations(context(runs), H["S6"])
    assert "UNet: lr 5e-04 bs 16 chosen on 30 patches" in v.evidence


def test_s6_interval_is_the_95_percent_paired_bootstrap_on_the_held_out_half():
    runs, _ = runs_for(patch_sd=0.05)
    unet = runs[runs["architecture"] == "UNet"].sort_values(["learning_rate", "batch_size"])
    inter = np.stack([np.asarray(v, dtype=float) for v in unet["val_patch_intersection"]])
    union = np.stack([np.asarray(v, dtype=float) for v in unet["val_patch_union"]])
    n = inter.shape[1]
    perm = np.random.default_rng(0).permutation(n)  # the documented split (seed 0), by hand
    sel, est = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    top = int(np.argmax((inter[:, sel].sum(1) + 1) / (union[:, sel].sum(1) + 1)))
    held = (inter[:, est].sum(1) + 1) / (union[:, est].sum(1) + 1)
    idx = est[np.random.default_rng(1).integers(0, est.size, size=(300, est.size))]
    boots = (inter[:, idx].sum(2) + 1) / (union[:, idx].sum(2) + 1)
    lo, hi = np.quantile(boots[top] - np.median(boots, axis=0), [0.025, 0.975])
    ctx = context(runs)
    ctx.n_boot = 300
    v = verdicts.s6_recommendations(ctx, H["S6"])
    unet_text = v.evidence.split("; Attention_UNet")[0]
    assert f"{held[top] - np.median(held):+.3f} [{lo:+.3f}, {hi:+.3f}]" in unet_text


def test_timing_noise_is_unknown_without_epoch_times():
    assert math.isnan(verdicts.timing_noise(None, ["a"]))
    assert math.isnan(verdicts.timing_noise(pd.DataFrame({"exp_id": ["a"], "epoch": [2]}), ["a"]))
