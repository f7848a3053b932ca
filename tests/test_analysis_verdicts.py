"""Verdict rules and recommendations on constructed cases."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpc_unet.analysis import stats, verdicts
from hpc_unet.analysis.load import derive
from hpc_unet.analysis.synthetic import LR_EFFECT, SEED_HYPOTHESES, make_results, spec_text
from hpc_unet.analysis.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from hpc_unet.manifest import build_rows
from hpc_unet.spec import validate_spec

ARCHS = ["UNet", "Attention_UNet", "Attention_ResUNet"]
HYPS = verdicts.hypotheses_from_spec(SEED_HYPOTHESES)[0]
H = {h["id"]: h for h in HYPS}


def runs_for(replicates: int = 1, seed: int = 11, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifest = build_rows(validate_spec(tomllib.loads(spec_text(replicates=replicates)), Path(".")))
    frame, hist = make_results(manifest, seed=seed, **kw)
    frame = derive(frame)
    return frame[frame["status"] == "completed"], hist


def context(runs: pd.DataFrame, baseline: pd.DataFrame | None = None, history: pd.DataFrame | None = None,
            architectures: list[str] = ARCHS) -> verdicts.Context:
    cells_j = stats.cell_intervals(runs, "best_val_jaccard", n_boot=200)
    return verdicts.Context(completed=runs, architectures=architectures,
                            anova_j=stats.factorial_anova(runs, "best_val_jaccard"),
                            anova_s=stats.factorial_anova(runs, "val_loss_std"), cells_j=cells_j,
                            recommendations=verdicts.recommendations(runs, cells_j), baseline=baseline,
                            history=history)


def verdict(table: pd.DataFrame, vid: str) -> str:
    return table.set_index("id").loc[vid, "verdict"]


def test_h2_supported_when_std_falls_with_batch():
    runs, _ = runs_for()  # default_stability falls with batch size
    v = verdicts.h2(context(runs), H["H2"])
    assert v.verdict == SUPPORTED, v.evidence
    assert "BS8" in v.evidence and "p<0.001" in v.evidence


def test_h2_not_supported_when_std_rises_with_batch():
    runs, _ = runs_for(stability=lambda a, lr, bs: 0.02 + 0.001 * bs)
    v = verdicts.h2(context(runs), H["H2"])
    assert v.verdict == NOT_SUPPORTED and "not the predicted one" in v.evidence


def test_h2_inconclusive_when_the_order_is_right_but_within_noise():
    runs, _ = runs_for()
    runs = runs.copy()
    lr_i = runs["learning_rate"].rank(method="dense").astype(int)
    bs_i = runs["batch_size"].rank(method="dense").astype(int)
    arch_i = runs["architecture"].map({a: i for i, a in enumerate(ARCHS)})
    # a tiny decreasing trend plus a large pure three-way "noise" that cancels in every batch mean
    runs["val_loss_std"] = 0.05 - 1e-5 * runs["batch_size"] + 0.02 * (-1.0) ** (lr_i + bs_i + arch_i)
    v = verdicts.h2(context(runs), H["H2"])
    assert v.verdict == INCONCLUSIVE and "as predicted but within noise" in v.evidence


def test_h2_unet_strongest_is_judged_on_the_interaction():
    runs, _ = runs_for()  # UNet has the steepest slope by construction
    assert verdicts.h2_unet(context(runs), H["H2-UNet"]).verdict == SUPPORTED
    flat_unet, _ = runs_for(stability=lambda a, lr, bs: 0.03 if a == "UNet" else 0.02 + 0.001 * (32 - bs))
    assert verdicts.h2_unet(context(flat_unet), H["H2-UNet"]).verdict == NOT_SUPPORTED


def test_h1_supported_when_the_optimum_is_inside_the_range():
    runs, _ = runs_for()
    v = verdicts.h1_range(context(runs), H["H1"])
    assert v.verdict == SUPPORTED, v.evidence


def test_h1_not_supported_when_the_smallest_lr_is_best():
    effect = {1e-4: 0.1, 5e-4: 0.0, 1e-3: -0.02, 5e-3: -0.1}
    runs, _ = runs_for(jaccard=lambda a, lr, bs: 0.7 + effect[lr])
    v = verdicts.h1_range(context(runs), H["H1"])
    assert v.verdict == NOT_SUPPORTED, v.evidence
    assert "best lr 1e-04" in v.evidence


def test_h1_per_architecture_optimum():
    def jac(arch, lr, bs):  # UNet peaks at 5e-4 as predicted; Attention_UNet peaks at 5e-4 against the 1e-3 prediction
        return 0.7 + {1e-4: -0.1, 5e-4: 0.08, 1e-3: 0.0, 5e-3: -0.1}[lr] * (1 if arch != "Attention_ResUNet" else 0)

    ctx = context(runs_for(jaccard=jac)[0])
    assert verdicts.h1_architecture(ctx, H["H1-UNet"]).verdict == SUPPORTED
    assert verdicts.h1_architecture(ctx, H["H1-Attention_UNet"]).verdict == NOT_SUPPORTED
    flat = verdicts.h1_architecture(ctx, H["H1-Attention_ResUNet"])
    assert flat.verdict == INCONCLUSIVE and "within noise" in flat.evidence


def test_h3_sensitivity_and_robustness():
    scale = {"UNet": 2.0, "Attention_UNet": 1.0, "Attention_ResUNet": 0.3}
    runs, _ = runs_for(jaccard=lambda a, lr, bs: 0.7 + scale[a] * LR_EFFECT[lr])
    ctx = context(runs)
    assert verdicts.h3_sensitive(ctx, H["H3-sensitive"]).verdict == SUPPORTED
    assert verdicts.h3_robust(ctx, H["H3-robust"]).verdict == SUPPORTED
    # with equal sensitivity, the interaction is not significant: no claim either way
    same, _ = runs_for()
    assert verdicts.h3_sensitive(context(same), H["H3-sensitive"]).verdict == INCONCLUSIVE


def test_h3_batch_gain():
    gain = {"UNet": 0.0, "Attention_UNet": 0.004, "Attention_ResUNet": 0.0}
    runs, _ = runs_for(jaccard=lambda a, lr, bs: 0.7 + LR_EFFECT[lr] + gain[a] * (bs - 8))
    assert verdicts.h3_batch_gain(context(runs), H["H3-batch"]).verdict == SUPPORTED
    gain["UNet"], gain["Attention_UNet"] = 0.004, 0.0
    runs, _ = runs_for(jaccard=lambda a, lr, bs: 0.7 + LR_EFFECT[lr] + gain[a] * (bs - 8))
    assert verdicts.h3_batch_gain(context(runs), H["H3-batch"]).verdict == NOT_SUPPORTED


def baseline_frame(std: float, jaccard: float = 0.5, best_epoch: float = 25.0, hours: float = 2.0) -> pd.DataFrame:
    """Two seeds per architecture, a little seed-to-seed spread, so the differences get intervals."""
    rows = [{"architecture": a, "learning_rate": 1e-2, "batch_size": 8, "seed": s, "status": "completed",
             "best_val_jaccard": jaccard + 0.01 * s, "val_loss_std": std * (1 + 0.02 * s),
             "val_loss_std_detrended": std * 0.6, "best_epoch": best_epoch + s,
             "total_train_seconds": hours * 3600 * (1 + 0.05 * s)} for a in ARCHS for s in (0, 1)]
    return derive(pd.DataFrame(rows))


def test_success_criteria_against_a_baseline():
    runs, hist = runs_for(replicates=2, seed_sd=0.005)
    table = verdicts.judge_all(context(runs, baseline=baseline_frame(std=0.2), history=hist), HYPS)
    for vid in ("S1", "S2", "S4", "S5"):
        assert verdict(table, vid) == SUPPORTED, table.set_index("id").loc[vid, "evidence"]
        assert "Welch t over seeds" in table.set_index("id").loc[vid, "evidence"]
    worse = verdicts.judge_all(context(runs, baseline=baseline_frame(std=0.04, jaccard=0.95, best_epoch=3,
                                                                     hours=0.1), history=hist), HYPS)
    for vid in ("S1", "S2", "S4", "S5"):
        assert verdict(worse, vid) == NOT_SUPPORTED, worse.set_index("id").loc[vid, "evidence"]
    assert "never reached" in worse.set_index("id").loc["S4", "evidence"]


def test_one_run_per_side_gives_no_interval_for_the_std_and_no_verdict():
    runs, hist = runs_for()
    base = baseline_frame(std=0.2)
    base = base[base["seed"] == 0]
    v = verdicts.s1_stability(context(runs, baseline=base, history=hist), H["S1"])
    assert v.verdict == INCONCLUSIVE and "no interval" in v.evidence


def test_success_criteria_without_baseline_are_inconclusive():
    runs, _ = runs_for()
    table = verdicts.judge_all(context(runs), HYPS).set_index("id")
    for vid in ("S1", "S2", "S4", "S5"):
        assert table.loc[vid, "verdict"] == INCONCLUSIVE
        assert "no baseline given" in table.loc[vid, "evidence"]
    assert table.loc["S3", "verdict"] == INCONCLUSIVE and "replicates" in table.loc["S3", "evidence"]
    assert table.loc["S6", "verdict"] == SUPPORTED


def test_consistency_needs_and_uses_replicates():
    runs, _ = runs_for(replicates=2, seed_sd=0.003)
    assert verdicts.s3_consistency(context(runs), H["S3"]).verdict == SUPPORTED
    noisy, _ = runs_for(replicates=2, seed_sd=0.3, jaccard=lambda a, lr, bs: 0.5)
    assert verdicts.s3_consistency(context(noisy), H["S3"]).verdict == NOT_SUPPORTED


def test_recommendations_best_vs_most_robust():
    def jac(arch, lr, bs):  # an isolated spike at (5e-3, 32) and a broad plateau around lr 5e-4..1e-3
        if lr == 5e-3 and bs == 32:
            return 0.9
        return 0.85 if lr in (5e-4, 1e-3) else 0.6

    runs, _ = runs_for(jaccard=jac, patch_sd=0.01)
    recs = verdicts.recommendations(runs, stats.cell_intervals(runs, "best_val_jaccard", n_boot=100))
    unet = recs[recs["architecture"] == "UNet"]
    best = verdicts.kinds_of(unet, "best").iloc[0]
    robust = verdicts.kinds_of(unet, "most robust").iloc[0]
    assert (best["learning_rate"], best["batch_size"]) == (5e-3, 32)
    assert robust["learning_rate"] in (5e-4, 1e-3)  # the plateau, not the isolated spike in the corner
    assert best["neighbours"] == 2 and robust["neighbours"] == 4  # a corner is never "most robust" on 2 neighbours
    assert np.isfinite(best["ci_low"]) and best["ci_method"].startswith("bootstrap")
    assert not unet.duplicated(["learning_rate", "batch_size"]).any()  # a cell that wins two kinds is one row
    assert list(recs["architecture"].unique()) == ARCHS


def test_missing_architecture_makes_recommendations_inconclusive():
    runs, _ = runs_for()
    runs = runs[runs["architecture"] != "Attention_UNet"]
    v = verdicts.s6_recommendations(context(runs), H["S6"])
    assert v.verdict == INCONCLUSIVE and "Attention_UNet" in v.evidence


# ------------------------------------------------------------------- thresholds, pinned on both sides
# Every expected value below is written out or computed with scipy here, never imported from the code.
def _ctx(completed: pd.DataFrame, baseline: pd.DataFrame | None = None) -> verdicts.Context:
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best", "learning_rate": 1e-3, "batch_size": 8}])
    return verdicts.Context(completed=completed, architectures=["UNet"], anova_j=stats.Anova("y"),
                            anova_s=stats.Anova("y"), cells_j=pd.DataFrame(), recommendations=recs,
                            baseline=baseline)


def _icc_frame(target: float) -> pd.DataFrame:
    """Two cells of two seeds, values m -+ 1: MSW = 2, MSB = 4 a^2, ICC(1) = (4a^2 - 2) / (4a^2 + 2) by hand,
    so a^2 = (1 + t) / (2 (1 - t)) gives ICC t."""
    a = math.sqrt((1 + target) / (2 * (1 - target)))
    rows = [{"architecture": "UNet", "learning_rate": 1e-3, "batch_size": bs, "seed": s,
             "best_val_jaccard": 10 + sign * a + d}
            for bs, sign in ((8, -1), (16, 1)) for s, d in ((0, -1.0), (1, 1.0))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("icc", "expected"), [(0.751, SUPPORTED), (0.749, INCONCLUSIVE), (0.501, INCONCLUSIVE),
                                               (0.499, NOT_SUPPORTED)])
def test_consistency_bands_at_075_and_05(icc, expected):
    frame = _icc_frame(icc)
    assert stats.icc_oneway(frame, "best_val_jaccard")["icc"] == pytest.approx(icc, abs=1e-9)
    assert verdicts.s3_consistency(_ctx(frame), H["S3"]).verdict == expected


def _two_seeds(center: float, spread: float, metric: str, arch: str = "UNet", lr: float = 1e-3) -> pd.DataFrame:
    return pd.DataFrame([{"architecture": arch, "learning_rate": lr, "batch_size": 8, "seed": s, "status": "completed",
                          metric: center + d, "exp_id": f"{arch}-{lr}-{s}"} for s, d in ((0, -spread), (1, spread))])


def _welch_half(spread: float) -> float:
    """Half-width of Welch's 95% interval for two samples {c - s, c + s}: se = sqrt(2) s, df = 2 (scipy's t)."""
    from scipy import stats as sps

    return float(sps.t.ppf(0.975, 2) * math.sqrt(2) * spread)


@pytest.mark.parametrize(("low", "expected"), [(-0.0099, SUPPORTED), (-0.0101, INCONCLUSIVE)])
def test_noninferiority_margin_001_at_the_lower_bound(low, expected):
    half = _welch_half(0.002)
    grid = _two_seeds(0.70 + low + half, 0.002, "best_val_jaccard")
    base = _two_seeds(0.70, 0.002, "best_val_jaccard")
    v = verdicts.s2_performance(_ctx(grid, base), H["S2"])
    assert v.verdict == expected, v.evidence


@pytest.mark.parametrize(("high", "expected"), [(-0.0101, NOT_SUPPORTED), (-0.0099, INCONCLUSIVE)])
def test_noninferiority_margin_001_at_the_upper_bound(high, expected):
    half = _welch_half(0.002)
    grid = _two_seeds(0.70 + high - half, 0.002, "best_val_jaccard")
    base = _two_seeds(0.70, 0.002, "best_val_jaccard")
    assert verdicts.s2_performance(_ctx(grid, base), H["S2"]).verdict == expected


@pytest.mark.parametrize(("high", "expected"), [(-0.0501, SUPPORTED), (-0.0499, INCONCLUSIVE)])
def test_stability_reduction_of_half_the_baseline_std(high, expected):
    """S1 (reduction 0.5): supported when the whole interval of (grid - baseline) std lies below -0.5 x 0.1."""
    half = _welch_half(0.001)
    grid = _two_seeds(0.1 + high - half, 0.001, "val_loss_std")
    base = _two_seeds(0.1, 0.001, "val_loss_std")
    v = verdicts.s1_stability(_ctx(grid, base), H["S1"])
    assert v.verdict == expected and "needs < -0.0500" in v.evidence


@pytest.mark.parametrize(("p", "expected"), [(0.0499, SUPPORTED), (0.05, INCONCLUSIVE), (0.0501, INCONCLUSIVE)])
def test_alpha_005_gates_the_architecture_claims(p, expected):
    from hpc_unet.analysis.verdicts.hypotheses import _gated

    assert _gated(p, True, "e", "gate")[0] == expected
    assert _gated(p, False, "e", "gate")[0] == (NOT_SUPPORTED if expected == SUPPORTED else INCONCLUSIVE)
    from hpc_unet.analysis.verdicts.common import direction

    assert direction(0.1, p) == ("+" if expected == SUPPORTED else "=")
    assert direction(-0.1, p) == ("-" if expected == SUPPORTED else "=")


def test_reduction_is_one_minus_the_ratio():
    from hpc_unet.analysis.verdicts.hypotheses import reduction

    assert reduction(0.04, 0.01) == pytest.approx(0.75) and reduction(0.02, 0.03) == pytest.approx(-0.5)
    assert math.isnan(reduction(0.0, 0.01))


# ------------------------------------------------------------- killing the sampled mutation survivors
def test_h2_says_when_the_two_stability_measures_disagree_and_keeps_its_p():
    runs, _ = runs_for()
    runs = runs.copy()
    runs["val_loss_std_detrended"] = 0.01 + 0.001 * runs["batch_size"]  # oscillation RISES with batch size
    ctx = context(runs)
    v = verdicts.h2(ctx, H["H2"])
    assert v.verdict == SUPPORTED and "the two measures disagree" in v.evidence
    assert v.p == ctx.anova_s.p("batch_size")  # the deciding p is kept for Holm's correction


def test_batch_changes_need_two_batch_sizes_and_two_architectures():
    runs, _ = runs_for()
    two_sizes = runs[runs["batch_size"] != 16]  # 8 and 32 only
    v = verdicts.h2_unet(context(two_sizes), H["H2-UNet"])
    assert all(f"{a} " in v.evidence.split(";")[0] for a in ARCHS)
    two_archs = runs[runs["architecture"] != "Attention_UNet"]
    v = verdicts.h3_sensitive(context(two_archs, architectures=["UNet", "Attention_ResUNet"]), H["H3-sensitive"])
    assert v.evidence.startswith("std of cell-mean Jaccard over the 12 (lr, batch) cells")
    claim = {"id": "x", "claim": "c", "rule": "batch_gain_largest", "architecture": "UNet"}
    v = verdicts.h3_batch_gain(context(two_archs, architectures=["UNet", "Attention_ResUNet"]), claim)
    assert v.evidence.startswith("Jaccard gain smallest->largest batch: UNet")


def test_sensitivity_needs_two_cells_per_architecture():
    runs, _ = runs_for()
    two_cells = runs[(runs["learning_rate"] == 1e-3) & (runs["batch_size"] != 32)]
    v = verdicts.h3_sensitive(context(two_cells), H["H3-sensitive"])
    assert "over the 2 (lr, batch) cells" in v.evidence and all(a in v.evidence for a in ARCHS)


def test_the_interaction_gate_is_bonferroni_over_two_terms_capped_at_one():
    from hpc_unet.analysis.verdicts.hypotheses import _interaction_gate

    def gate(p_lr: float, p_bs: float) -> float:
        table = pd.DataFrame({"p": [p_lr, p_bs]}, index=["architecture x learning rate", "architecture x batch size"])
        ctx = _ctx(pd.DataFrame())
        ctx.anova_j = stats.Anova("y", table=table)
        return _interaction_gate(ctx)

    assert gate(0.01, 0.2) == pytest.approx(0.02)  # 2 x the smaller p
    assert gate(0.8, 0.9) == 1.0


def test_p_text_threshold():
    from hpc_unet.analysis.verdicts.common import p_text

    assert (p_text(0.00099), p_text(0.001), p_text(0.0015), p_text(math.nan)) == ("p<0.001", "p=0.001", "p=0.002",
                                                                                   "p=n/a")


def test_a_grid_neighbour_without_a_learned_run_counts_as_zero_for_robustness():
    runs, _ = runs_for(jaccard=lambda a, lr, bs: 0.8)
    runs = runs[~((runs["architecture"] == "UNet") & (runs["learning_rate"] == 5e-4) & (runs["batch_size"] == 16))]
    recs = verdicts.recommendations(runs, stats.cell_intervals(runs, "best_val_jaccard", n_boot=50), n_boot=50,
                                    ties=False)
    from hpc_unet.analysis.verdicts.recommend import _robust_scores

    unet = recs[recs["architecture"] == "UNet"]
    cells = stats.cell_intervals(runs[runs["architecture"] == "UNet"], "best_val_jaccard", n_boot=0)
    lrs, bss = [1e-4, 5e-4, 1e-3, 5e-3], [8, 16, 32]
    value = {(lrs.index(r["learning_rate"]), bss.index(r["batch_size"])): r["mean"] for r in cells.to_dict("records")}
    grp = cells.set_index(["learning_rate", "batch_size"]).loc[[(1e-3, 16)]].reset_index()
    assert _robust_scores(grp, value, lrs, bss)[0] == [0.0]  # its neighbour (5e-4, 16) has no run
    assert verdicts.kinds_of(unet, "most robust").empty  # UNet's only inner cell: no robust setting to name
    assert len(verdicts.kinds_of(recs[recs["architecture"] == "Attention_UNet"], "most robust")) == 1
