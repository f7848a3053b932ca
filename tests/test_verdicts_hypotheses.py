"""The hypothesis rules (H1-H3, ``analysis.verdicts.hypotheses``) on small constructed tables, each verdict
compared whole: verdict, evidence string and deciding p.

The ANOVAs are built by hand (their p-values, F and eta^2 are written out), so every gate is pinned where
we put it; contrasts with an ANOVA error term are recomputed with scipy's t distribution, Spearman with
scipy, standard deviations with ``statistics``. Expected strings are written out, never produced by the
module under test (issue 21: mutation survivors of this module).
"""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from scipy import stats as sps

from hpc_unet.analysis import stats
from hpc_unet.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Context,
    Verdict,
    h1_architecture,
    h1_range,
    h2,
    h2_unet,
    h3_batch_gain,
    h3_robust,
    h3_sensitive,
    not_applicable,
)
from hpc_unet.analysis.verdicts.hypotheses import per_arch_batch_change

MSE, DF = 0.00025, 20.0  # the hand-made Jaccard ANOVA's error term: contrasts of two means of 2 use se = sqrt(MSE)


def _anova(rows: dict[str, dict[str, float]] | None = None, mse: float = math.nan, df_resid: float = 0.0
           ) -> stats.Anova:
    """An ANOVA whose terms (label -> F, p, partial_eta_sq) are written out; no rows: no table at all."""
    if rows is None:
        return stats.Anova("y")
    return stats.Anova("y", table=pd.DataFrame(rows).T, mse=mse, df_resid=df_resid)


def _ctx(completed: pd.DataFrame, archs: list[str], anova_j: stats.Anova | None = None,
         anova_s: stats.Anova | None = None, anova_o: stats.Anova | None = None,
         levels: dict | None = None, steps_note: str = "") -> Context:
    return Context(completed=completed, architectures=archs, anova_j=anova_j or _anova(),
                   anova_s=anova_s or _anova(), cells_j=pd.DataFrame(), recommendations=pd.DataFrame(),
                   anova_o=anova_o, levels=levels or {}, steps_note=steps_note)


def _same(got: Verdict, want: Verdict) -> None:
    """Whole-verdict comparison; p equal up to rounding, NaN equal to NaN."""
    assert (got.id, got.claim, got.verdict) == (want.id, want.claim, want.verdict), got
    assert got.evidence == want.evidence
    if math.isnan(want.p):
        assert math.isnan(got.p), got.p
    else:
        assert got.p == pytest.approx(want.p, rel=1e-9, abs=0)


def _t_p(diff: float, n: int, mse: float = MSE, df: float = DF) -> float:
    """Two-sided p of a contrast of two means of n runs with the ANOVA's error term (scipy's t)."""
    return float(2 * sps.t.sf(abs(diff) / math.sqrt(mse * 2 / n), df))


# ----------------------------------------------------------------------------------------- not applicable
GRID = {"architecture": ["UNet", "Attention_UNet"], "learning_rate": [1e-4, 5e-4, 1e-3], "batch_size": [8, 16]}


def _na(h: dict, **levels) -> str:
    return not_applicable(_ctx(pd.DataFrame(), [], levels={**GRID, **levels}), h)


@pytest.mark.parametrize(("h", "why"), [
    ({"rule": "best_lr", "architecture": "ResUNet", "learning_rate": 2e-3}, "the grid has no architecture ResUNet"),
    ({"rule": "best_lr", "architecture": "UNet", "learning_rate": 2e-3}, "the grid has no lr 2e-03"),
    ({"rule": "best_lr", "architecture": "UNet", "learning_rate": [2.5e-4]}, "the grid has no lr 2.5e-04"),
    ({"rule": "lr_range_best", "learning_rate": [1e-4, 2.5e-4]}, "the grid has no lr 2.5e-04"),
    ({"rule": "std_falls_with_batch", "batch_size": [8, 16, 64]}, "the grid has no batch size 64"),
    ({"rule": "std_falls_with_batch", "batch_size": [8.0, 32.0]}, "the grid has no batch size 32"),
    ({"rule": "std_falls_with_batch", "batch_size": 64, "learning_rate": 2e-3}, "the grid has no lr 2e-03"),
    # a level within rounding of the grid's is the grid's
    ({"rule": "best_lr", "architecture": "UNet", "learning_rate": 5e-4 * (1 + 1e-12)}, ""),
    ({"rule": "best_lr", "architecture": "UNet", "learning_rate": 5e-4}, ""),
    ({"rule": "std_falls_with_batch", "batch_size": [16.0, 8.0]}, ""),
    ({"rule": "lr_range_best", "learning_rate": [5e-4, 1e-3]}, ""),
    ({"rule": "lr_range_best", "learning_rate": [1e-4, 5e-4]}, ""),
    ({"rule": "consistency"}, ""),
])
def test_a_level_the_grid_lacks_is_named(h, why):
    assert _na(h) == why


COMPARES = ["stability_gain_strongest", "most_sensitive", "batch_gain_largest", "most_robust"]
NEEDS_BATCHES = ["std_falls_with_batch", "stability_gain_strongest", "batch_gain_largest"]


@pytest.mark.parametrize("rule", COMPARES + ["best_lr", "lr_range_best", "std_falls_with_batch", "consistency"])
def test_comparing_architectures_needs_two_of_them(rule):
    h = {"rule": rule, "architecture": "UNet", "learning_rate": [1e-4, 5e-4], "batch_size": [8, 16]}
    one = _na(h, architecture=["UNet"])
    assert one == ("the grid has one architecture; this claim compares architectures" if rule in COMPARES else "")
    assert _na(h) == ""  # two architectures


@pytest.mark.parametrize("rule", NEEDS_BATCHES + ["most_sensitive", "best_lr", "lr_range_best", "consistency"])
def test_batch_claims_need_two_batch_sizes(rule):
    h = {"rule": rule, "architecture": "UNet", "learning_rate": [1e-4, 5e-4], "batch_size": [8]}
    assert _na(h, batch_size=[8]) == ("the grid has one batch size" if rule in NEEDS_BATCHES else "")
    assert _na(h) == ""  # two batch sizes


def test_one_architecture_is_said_before_one_batch_size():
    h = {"rule": "stability_gain_strongest", "architecture": "UNet"}
    assert _na(h, architecture=["UNet"], batch_size=[8]) == (
        "the grid has one architecture; this claim compares architectures")


@pytest.mark.parametrize(("grid_lrs", "why"), [
    ([5e-4, 1e-3], "the grid has no lr outside 5e-04 to 1e-03"),  # every lr is one of the range's ends
    ([1e-4, 5e-4, 1e-3], ""),
    ([5e-4, 1e-3, 5e-3], ""),
])
def test_a_range_claim_needs_an_lr_outside_the_range(grid_lrs, why):
    h = {"rule": "lr_range_best", "learning_rate": [1e-3, 5e-4]}  # the ends in either order
    assert _na(h, learning_rate=grid_lrs) == why


@pytest.mark.parametrize(("grid_lrs", "why"), [([5e-4], "the grid has one learning rate"), ([5e-4, 1e-3], "")])
def test_best_lr_needs_two_learning_rates(grid_lrs, why):
    h = {"rule": "best_lr", "architecture": "UNet", "learning_rate": 5e-4}
    assert _na(h, learning_rate=grid_lrs) == why
    other = {"rule": "most_sensitive", "architecture": "UNet"}  # claims not about lrs do not care
    assert _na(other, learning_rate=grid_lrs) == ""


def test_levels_default_to_the_data():
    runs = pd.DataFrame([{"architecture": "UNet", "learning_rate": 1e-3, "batch_size": 8}])
    h = {"rule": "best_lr", "architecture": "UNet", "learning_rate": 1e-3}
    assert not_applicable(_ctx(runs, ["UNet"]), h) == "the grid has one learning rate"


# --------------------------------------------------------------------------------------------------- H1
LR4 = (1e-4, 5e-4, 1e-3, 5e-3)


def _lr_runs(arch: str, means: dict[float, float], missing: tuple = ()) -> list[dict]:
    """One seed at batch 8 (mean + 0.01) and 16 (mean - 0.01) per lr: each lr's mean is as given."""
    return [{"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": 0, "best_val_jaccard": m + d}
            for lr, m in means.items() for bs, d in ((8, 0.01), (16, -0.01)) if (lr, bs) not in missing]


# A: inside best 5e-4 (not the largest lr inside), outside best 1e-4 (not the largest outside): +0.15
A = dict(zip(LR4, (0.65, 0.80, 0.70, 0.60), strict=True))
B = dict(zip(LR4, (0.72, 0.74, 0.76, 0.70), strict=True))  # inside 1e-3 vs outside 1e-4: +0.04, p 0.020
D = dict(zip(LR4, (0.74, 0.70, 0.68, 0.60), strict=True))  # inside 5e-4 vs outside 1e-4: -0.04, p 0.020
E = dict(zip(LR4, (0.65, 0.60, 0.66, 0.72), strict=True))  # inside 1e-3 vs outside 5e-3: -0.06, p 0.001
F = dict(zip(LR4, (0.70, 0.715, 0.72, 0.71), strict=True))  # inside 1e-3 vs outside 5e-3: +0.01, p 0.534
RANGE = {"id": "H1", "claim": "best lr in 5e-4..1e-3", "rule": "lr_range_best", "learning_rate": [1e-3, 5e-4]}


def _h1_ctx(archs: dict[str, dict[float, float]], missing: dict[str, tuple] | None = None) -> Context:
    rows = [r for a, m in archs.items() for r in _lr_runs(a, m, (missing or {}).get(a, ()))]
    return _ctx(pd.DataFrame(rows), list(archs), anova_j=_anova({"x": {"p": 0.5}}, mse=MSE, df_resid=DF))


def test_worked_t_values():
    """The p-values the H1 texts below quote, from scipy."""
    assert _t_p(0.15, 2) < 0.001 and _t_p(0.10, 2) < 0.001 and _t_p(0.15, 1) < 0.001
    assert f"{_t_p(0.04, 2):.3f}" == "0.020" and f"{_t_p(0.06, 2):.3f}" == "0.001"
    assert f"{_t_p(0.01, 2):.3f}" == "0.534" and f"{_t_p(0.02, 2):.3f}" == "0.220"


A_TEXT = ("A: best lr 5e-04 (J=0.800); best inside 5e-04 vs best outside 1e-04: +0.150, p<0.001 "
          "(over 2 matched batch/seed settings)")


def test_h1_range_supported_for_every_architecture_keeps_the_largest_p():
    got = h1_range(_h1_ctx({"A": A, "B": B}), RANGE)
    b = ("B: best lr 1e-03 (J=0.760); best inside 1e-03 vs best outside 1e-04: +0.040, p=0.020 "
         "(over 2 matched batch/seed settings)")
    _same(got, Verdict("H1", RANGE["claim"], SUPPORTED, f"{A_TEXT}; {b}", _t_p(0.04, 2)))


def test_h1_range_not_supported_keeps_the_smallest_p_of_the_contrary_architectures():
    got = h1_range(_h1_ctx({"A": A, "D": D, "E": E}), RANGE)
    d = ("D: best lr 1e-04 (J=0.740); best inside 5e-04 vs best outside 1e-04: -0.040, p=0.020 "
         "(over 2 matched batch/seed settings)")
    e = ("E: best lr 5e-03 (J=0.720); best inside 1e-03 vs best outside 5e-03: -0.060, p=0.001 "
         "(over 2 matched batch/seed settings)")
    _same(got, Verdict("H1", RANGE["claim"], NOT_SUPPORTED, f"{A_TEXT}; {d}; {e}", _t_p(0.06, 2)))


def test_h1_range_inconclusive_names_the_untestable_and_the_noisy_architectures():
    inside_only = {5e-4: 0.7, 1e-3: 0.8}
    # A misses (5e-3, batch 16): every lr of A is then compared at batch 8 only (means + 0.01, n 1)
    got = h1_range(_h1_ctx({"C": inside_only, "F": F, "A": A}, missing={"A": ((5e-3, 16),)}), RANGE)
    evidence = ("C: no matched runs both inside and outside the range; "
                "F: best lr 1e-03 (J=0.720); best inside 1e-03 vs best outside 5e-03: +0.010, p=0.534 "
                "(over 2 matched batch/seed settings); "
                "A: best lr 5e-04 (J=0.810); best inside 5e-04 vs best outside 1e-04: +0.150, p<0.001 "
                "(over 1 matched batch/seed settings); "
                "some differences are within noise or untestable")
    _same(got, Verdict("H1", RANGE["claim"], INCONCLUSIVE, evidence, math.nan))


def test_h1_range_with_only_outside_levels_is_inconclusive():
    got = h1_range(_h1_ctx({"C": {1e-4: 0.7, 5e-3: 0.8}}), RANGE)
    _same(got, Verdict("H1", RANGE["claim"], INCONCLUSIVE, "C: no matched runs both inside and outside the range; "
                       "some differences are within noise or untestable", math.nan))


def test_h1_range_contrast_uses_the_anova_error_term_not_welch():
    """Welch on the two 2-run groups {0.81, 0.79} vs {0.66, 0.64} gives another p than the ANOVA's MSE."""
    welch = sps.ttest_ind([0.81, 0.79], [0.66, 0.64], equal_var=False).pvalue
    assert welch != pytest.approx(_t_p(0.15, 2), rel=1e-3)
    got = h1_range(_h1_ctx({"A": A}), RANGE)
    assert got.p == pytest.approx(_t_p(0.15, 2), rel=1e-9)


def _best(lr: float | list) -> dict:
    return {"id": "H1-A", "claim": "A is best at the lr", "rule": "best_lr", "architecture": "A", "learning_rate": lr}


def test_h1_architecture_against_the_best_other_lr():
    ctx = _h1_ctx({"A": A, "B": B})
    # A at 5e-4 (0.80) vs its best other lr 1e-3 (0.70), not the largest or smallest other lr
    _same(h1_architecture(ctx, _best([5e-4])), Verdict(
        "H1-A", "A is best at the lr", SUPPORTED, "J at 5e-04 = 0.800 vs best other lr 1e-03 = 0.700 "
        "(diff +0.100, p<0.001, over 2 matched batch/seed settings)", _t_p(0.10, 2)))
    _same(h1_architecture(ctx, _best(1e-3)), Verdict(
        "H1-A", "A is best at the lr", NOT_SUPPORTED, "J at 1e-03 = 0.700 vs best other lr 5e-04 = 0.800 "
        "(diff -0.100, p<0.001, over 2 matched batch/seed settings)", _t_p(0.10, 2)))
    b = {**_best(5e-4), "architecture": "B"}  # B at 5e-4 (0.74) vs 1e-3 (0.76): within noise, p kept
    _same(h1_architecture(ctx, b), Verdict(
        "H1-A", "A is best at the lr", INCONCLUSIVE, "J at 5e-04 = 0.740 vs best other lr 1e-03 = 0.760 "
        "(diff -0.020, p=0.220, over 2 matched batch/seed settings); the difference is within noise",
        _t_p(0.02, 2)))


def test_h1_architecture_without_the_lr_or_without_another_lr():
    ctx = _h1_ctx({"A": A})
    _same(h1_architecture(ctx, _best(2e-3)),
          Verdict("H1-A", "A is best at the lr", INCONCLUSIVE, "no matched A runs at lr 2e-03", math.nan))
    only = _h1_ctx({"A": {5e-4: 0.8}})
    _same(h1_architecture(only, _best([5e-4])), Verdict(
        "H1-A", "A is best at the lr", INCONCLUSIVE, "no other learning rate completed to compare with", math.nan))


# --------------------------------------------------------------------------------------------------- H2
OFFSETS = (0.001, -0.001, 0.002, -0.002)  # per (architecture, lr) setting: they cancel in every batch mean


def _std_runs(std: dict[int, float], osc: dict[int, float] | None = None, learned: bool | None = None,
              skip: tuple = ()) -> list[dict]:
    """Two architectures x two lrs, one seed, at each batch size of ``std``; ``skip``: (setting index, batch)."""
    rows = []
    settings = [(a, lr) for a in ("A", "B") for lr in (1e-3, 5e-4)]
    for k, (arch, lr) in enumerate(settings):
        for bs, s in std.items():
            if (k, bs) in skip:
                continue
            row = {"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": 0,
                   "val_loss_std": s + OFFSETS[k]}
            # the loader always has the column (NaN where a run did not record it)
            row["val_loss_std_detrended"] = osc[bs] + OFFSETS[k] if osc is not None else math.nan
            if learned is not None:
                row["learned"] = learned
            rows.append(row)
    return rows


def _batch_anova(f: float, p: float, eta: float) -> stats.Anova:
    return _anova({"batch size": {"F": f, "p": p, "partial_eta_sq": eta},
                   "architecture x batch size": {"F": 1.0, "p": 0.9, "partial_eta_sq": 0.01}})


H2 = {"id": "H2", "claim": "std falls with batch", "rule": "std_falls_with_batch", "batch_size": [8, 16, 32, 64]}
DISAGREE = (" | the two measures disagree: the raw std also counts the descent of the loss, the detrended std "
            "only its oscillation (docs/analysis.md)")


def test_h2_supported_with_both_measures_excluded_runs_missing_sizes_and_steps():
    rows = _std_runs({8: 0.03, 16: 0.02, 32: 0.01}, osc={8: 0.01, 16: 0.02, 32: 0.03}, learned=True)
    rows += [{"architecture": "A", "learning_rate": lr, "batch_size": 64, "seed": 0, "val_loss_std": 0.5,
              "val_loss_std_detrended": 0.5, "learned": False} for lr in (1e-3, 5e-4)]
    ctx = _ctx(pd.DataFrame(rows), ["A", "B"], anova_s=_batch_anova(12.3456, 0.0021, 0.4567),
               anova_o=_batch_anova(5.0, 0.01, 0.2), steps_note="optimizer steps per run: BS8 1200, BS16 600")
    evidence = ("val-loss std (the seed's measure) BS8: 0.0300, BS16: 0.0200, BS32: 0.0100 (means over 4 matched "
                "settings); ANOVA batch effect F=12.35, p=0.002, partial eta^2=0.46"
                " | detrended std (oscillation) BS8: 0.0100, BS16: 0.0200, BS32: 0.0300 (means over 4 matched "
                "settings); ANOVA batch effect F=5.00, p=0.010, partial eta^2=0.20; the order is not the "
                f"predicted one{DISAGREE} (batch sizes [64] have no runs that learned); 2 run(s) that did not learn"
                " or are marginal are excluded; optimizer steps per run: BS8 1200, BS16 600")
    _same(h2(ctx, H2), Verdict("H2", "std falls with batch", SUPPORTED, evidence, 0.0021))


def test_h2_oscillation_within_noise_does_not_disagree():
    rows = _std_runs({8: 0.03, 16: 0.02, 32: 0.01}, osc={8: 0.01, 16: 0.02, 32: 0.03})
    ctx = _ctx(pd.DataFrame(rows), ["A", "B"], anova_s=_batch_anova(12.3456, 0.0021, 0.4567),
               anova_o=_batch_anova(1.5, 0.2, 0.05))
    h = {**H2, "batch_size": [8, 16, 32]}
    evidence = ("val-loss std (the seed's measure) BS8: 0.0300, BS16: 0.0200, BS32: 0.0100 (means over 4 matched "
                "settings); ANOVA batch effect F=12.35, p=0.002, partial eta^2=0.46"
                " | detrended std (oscillation) BS8: 0.0100, BS16: 0.0200, BS32: 0.0300 (means over 4 matched "
                "settings); ANOVA batch effect F=1.50, p=0.200, partial eta^2=0.05; the order is not the "
                "predicted one but within noise")
    _same(h2(ctx, h), Verdict("H2", "std falls with batch", SUPPORTED, evidence, 0.0021))


def test_h2_not_supported_with_oscillation_falling_says_they_disagree():
    rows = _std_runs({8: 0.01, 16: 0.02, 32: 0.03}, osc={8: 0.03, 16: 0.02, 32: 0.01})
    ctx = _ctx(pd.DataFrame(rows), ["A", "B"], anova_s=_batch_anova(9.0, 0.003, 0.4),
               anova_o=_batch_anova(8.0, 0.004, 0.3))
    h = {**H2, "batch_size": [8, 16, 32]}
    evidence = ("val-loss std (the seed's measure) BS8: 0.0100, BS16: 0.0200, BS32: 0.0300 (means over 4 matched "
                "settings); ANOVA batch effect F=9.00, p=0.003, partial eta^2=0.40; the order is not the predicted "
                "one | detrended std (oscillation) BS8: 0.0300, BS16: 0.0200, BS32: 0.0100 (means over 4 matched "
                f"settings); ANOVA batch effect F=8.00, p=0.004, partial eta^2=0.30{DISAGREE}")
    _same(h2(ctx, h), Verdict("H2", "std falls with batch", NOT_SUPPORTED, evidence, 0.003))


def test_h2_without_an_anova_uses_spearman_over_the_matched_listed_sizes():
    """Order [8, 32] of a grid with 16 too: setting 2 lacks batch 16, which must not drop it (only 8 and
    32 are compared); Spearman runs over every run that learned. The oscillation column is all NaN."""
    rows = _std_runs({8: 0.03, 16: 0.02, 32: 0.01}, osc={8: math.nan, 16: math.nan, 32: math.nan},
                     skip=((2, 16),))
    frame = pd.DataFrame(rows)
    rho, p = sps.spearmanr(frame["batch_size"], frame["val_loss_std"])
    assert p < 0.05
    h = {**H2, "batch_size": [8, 32]}
    evidence = ("val-loss std (the seed's measure) BS8: 0.0300, BS32: 0.0100 (means over 4 matched settings); "
                f"Spearman rho(batch, std)={rho:.2f}, p<0.001 (ANOVA unavailable)")
    assert f"{rho:.2f}" == "-0.94" and p < 0.001
    _same(h2(_ctx(frame, ["A", "B"]), h), Verdict("H2", "std falls with batch", SUPPORTED, evidence, p))


def test_h2_spearman_text_gives_its_p():
    """Few runs: a Spearman p above 0.001 is written out (p=0.xxx)."""
    rows = [{"architecture": "A", "learning_rate": 1e-3, "batch_size": bs, "seed": s, "val_loss_std": v,
             "val_loss_std_detrended": math.nan} for bs, s, v in ((8, 0, 0.03), (8, 1, 0.05), (32, 0, 0.02), (32, 1, 0.04))]
    frame = pd.DataFrame(rows)
    rho, p = sps.spearmanr(frame["batch_size"], frame["val_loss_std"])
    assert f"{rho:.2f}, p={p:.3f}" == "-0.45, p=0.553"
    evidence = ("val-loss std (the seed's measure) BS8: 0.0400, BS32: 0.0300 (means over 2 matched settings); "
                "Spearman rho(batch, std)=-0.45, p=0.553 (ANOVA unavailable); the order is as predicted but "
                "within noise")
    _same(h2(_ctx(frame, ["A"]), {**H2, "batch_size": [8, 32]}),
          Verdict("H2", "std falls with batch", INCONCLUSIVE, evidence, math.nan))


def test_h2_oscillation_without_its_anova_uses_spearman():
    rows = _std_runs({8: 0.03, 16: 0.02, 32: 0.01}, osc={8: 0.01, 16: 0.02, 32: 0.03})
    frame = pd.DataFrame(rows)
    rho, p = sps.spearmanr(frame["batch_size"], frame["val_loss_std_detrended"])
    assert f"{rho:.2f}" == "0.95" and p < 0.001  # sqrt(128 / 143) by hand: tied ranks
    ctx = _ctx(frame, ["A", "B"], anova_s=_batch_anova(12.3456, 0.0021, 0.4567), anova_o=None)
    evidence = ("val-loss std (the seed's measure) BS8: 0.0300, BS16: 0.0200, BS32: 0.0100 (means over 4 matched "
                "settings); ANOVA batch effect F=12.35, p=0.002, partial eta^2=0.46"
                " | detrended std (oscillation) BS8: 0.0100, BS16: 0.0200, BS32: 0.0300 (means over 4 matched "
                f"settings); Spearman rho(batch, std)=0.95, p<0.001 (ANOVA unavailable); the order is not the "
                f"predicted one{DISAGREE}")
    _same(h2(ctx, {**H2, "batch_size": [8, 16, 32]}),
          Verdict("H2", "std falls with batch", SUPPORTED, evidence, 0.0021))


@pytest.mark.parametrize(("p", "verdict"), [(0.0499, SUPPORTED), (0.05, INCONCLUSIVE), (0.0501, INCONCLUSIVE)])
def test_h2_alpha_005_on_the_batch_effect(p, verdict):
    ctx = _ctx(pd.DataFrame(_std_runs({8: 0.03, 16: 0.02})), ["A", "B"], anova_s=_batch_anova(4.0, p, 0.1))
    text = (f"val-loss std (the seed's measure) BS8: 0.0300, BS16: 0.0200 (means over 4 matched settings); "
            f"ANOVA batch effect F=4.00, p={p:.3f}, partial eta^2=0.10")
    evidence = text if verdict == SUPPORTED else text + "; the order is as predicted but within noise"
    _same(h2(ctx, {**H2, "batch_size": [8, 16]}),
          Verdict("H2", "std falls with batch", verdict, evidence, p if verdict == SUPPORTED else math.nan))


@pytest.mark.parametrize("std", [{8: 0.02, 16: 0.02, 32: 0.01}, {8: 0.03, 16: 0.01, 32: 0.02}])
def test_h2_falling_means_strictly_falling_at_every_step(std):
    """Equal means, or a rise between two neighbours, is not the predicted order."""
    ctx = _ctx(pd.DataFrame(_std_runs(std)), ["A", "B"], anova_s=_batch_anova(7.0, 0.01, 0.3))
    means = ", ".join(f"BS{b}: {s:.4f}" for b, s in std.items())
    evidence = (f"val-loss std (the seed's measure) {means} (means over 4 matched settings); ANOVA batch effect "
                "F=7.00, p=0.010, partial eta^2=0.30; the order is not the predicted one")
    _same(h2(ctx, {**H2, "batch_size": [8, 16, 32]}),
          Verdict("H2", "std falls with batch", NOT_SUPPORTED, evidence, 0.01))


def test_h2_with_one_listed_size_learned_is_inconclusive():
    ctx = _ctx(pd.DataFrame(_std_runs({8: 0.03, 16: 0.02})), ["A", "B"], anova_s=_batch_anova(7.0, 0.01, 0.3))
    evidence = ("val-loss std (the seed's measure) 1 listed batch size(s) with matched runs that learned "
                "(batch sizes [64] have no runs that learned)")
    _same(h2(ctx, {**H2, "batch_size": [8, 64]}),
          Verdict("H2", "std falls with batch", INCONCLUSIVE, evidence, math.nan))


# ---------------------------------------------------------------------------------------- H2-UNet, H3-batch
def test_per_arch_batch_change_over_the_settings_at_both_ends():
    rows = [("A", 1e-3, 8, 0.04), ("A", 1e-3, 32, 0.01), ("A", 5e-4, 8, 0.06), ("A", 5e-4, 16, 0.05),
            ("B", 1e-3, 8, 0.02), ("B", 5e-4, 8, 0.03),  # one batch size: no change
            ("C", 1e-3, 8, 0.02), ("C", 1e-3, 16, 0.01), ("C", 1e-3, 32, math.nan),  # 32 unmeasured: 8 -> 16
            ("D", 1e-3, 8, 0.02), ("D", 5e-4, 32, 0.01)]  # no setting at both ends
    frame = pd.DataFrame([{"architecture": a, "learning_rate": lr, "batch_size": bs, "seed": 0, "m": v}
                          for a, lr, bs, v in rows])
    got = per_arch_batch_change(frame, ["A", "B", "C", "D"], "m")
    assert got == {"A": (pytest.approx(0.04), pytest.approx(0.01), 1), "C": (pytest.approx(0.02),
                                                                             pytest.approx(0.01), 1)}
    assert per_arch_batch_change(frame, ["C"], "m") == {"C": (pytest.approx(0.02), pytest.approx(0.01), 1)}


def _unet_runs() -> pd.DataFrame:
    """C's std is 0 at batch 8 (reduction undefined), A falls 75 %, B 25 %; A's run that did not learn
    would make A's fall 1 - 0.01 / 0.36 if it counted."""
    std = {"A": (0.04, 0.03, 0.01), "B": (0.02, 0.02, 0.015), "C": (0.0, 0.01, 0.02)}
    osc = {"A": (0.02, 0.015, 0.01), "B": (0.01, 0.01, 0.01), "C": (0.0, 0.01, 0.01)}
    rows = [{"architecture": a, "learning_rate": lr, "batch_size": bs, "seed": 0, "val_loss_std": std[a][i],
             "val_loss_std_detrended": osc[a][i], "learned": True}
            for a in std for lr in (1e-3, 5e-4) for i, bs in enumerate((8, 16, 32))]
    rows += [{"architecture": "A", "learning_rate": 1e-2, "batch_size": bs, "seed": 0, "val_loss_std": v,
              "val_loss_std_detrended": v, "learned": False} for bs, v in ((8, 1.0), (32, 0.01))]
    return pd.DataFrame(rows)


UNET_ANOVA = {"architecture x batch size": {"p": 0.01}, "batch size": {"p": 0.5}, "architecture": {"p": 0.6}}


@pytest.mark.parametrize(("arch", "verdict"), [("A", SUPPORTED), ("B", NOT_SUPPORTED), ("C", NOT_SUPPORTED)])
def test_h2_unet_largest_relative_reduction_gated_by_the_interaction(arch, verdict):
    ctx = _ctx(_unet_runs(), ["C", "A", "B"], anova_s=_anova(UNET_ANOVA))
    h = {"id": "H2-U", "claim": "largest gain", "rule": "stability_gain_strongest", "architecture": arch}
    evidence = ("std reduction smallest->largest batch: C nan% (over 2 matched lr/seed settings), A 75% (over 2 "
                "matched lr/seed settings), B 25% (over 2 matched lr/seed settings); detrended: A 50%, B 0%; "
                "architecture x batch interaction on std p=0.010")
    _same(h2_unet(ctx, h), Verdict("H2-U", "largest gain", verdict, evidence, 0.01))


def test_h2_unet_without_oscillation_and_without_a_gate():
    frame = _unet_runs().drop(columns=["val_loss_std_detrended"])
    h = {"id": "H2-U", "claim": "largest gain", "rule": "stability_gain_strongest", "architecture": "A"}
    evidence = ("std reduction smallest->largest batch: A 75% (over 2 matched lr/seed settings), B 25% (over 2 "
                "matched lr/seed settings); architecture x batch interaction on std untestable (no ANOVA term)")
    frame["val_loss_std_detrended"] = math.nan
    _same(h2_unet(_ctx(frame, ["A", "B"]), h), Verdict("H2-U", "largest gain", INCONCLUSIVE, evidence, math.nan))


def test_h2_unet_needs_the_architecture_and_another_at_two_batch_sizes():
    h = {"id": "H2-U", "claim": "largest gain", "rule": "stability_gain_strongest", "architecture": "Z"}
    msg = "Z and another architecture need matched runs that learned at 2+ batch sizes"
    _same(h2_unet(_ctx(_unet_runs(), ["A", "B"]), h), Verdict("H2-U", "largest gain", INCONCLUSIVE, msg, math.nan))
    frame = _unet_runs()
    frame = frame[(frame["architecture"] == "A") | (frame["batch_size"] == 8)]  # only A has two sizes
    h = {**h, "architecture": "A"}
    _same(h2_unet(_ctx(frame, ["A", "B"]), h), Verdict(
        "H2-U", "largest gain", INCONCLUSIVE,
        "A and another architecture need matched runs that learned at 2+ batch sizes", math.nan))


def _gain_runs() -> pd.DataFrame:
    """A gains +0.05 over its two learned settings, B loses 0.01; A's run that did not learn (0.1 -> 0.9)
    counts: the Jaccard gain is judged on every completed run."""
    jac = {"A": (0.60, 0.65), "B": (0.70, 0.69)}
    rows = [{"architecture": a, "learning_rate": lr, "batch_size": bs, "seed": 0, "best_val_jaccard": jac[a][i],
             "learned": True} for a in jac for lr in (1e-3, 5e-4) for i, bs in enumerate((8, 32))]
    rows += [{"architecture": "A", "learning_rate": 1e-2, "batch_size": bs, "seed": 0, "best_val_jaccard": v,
              "learned": False} for bs, v in ((8, 0.1), (32, 0.9))]
    return pd.DataFrame(rows)


GAIN_TEXT = ("Jaccard gain smallest->largest batch: A +0.300 (over 3 matched lr/seed settings), B -0.010 (over 2 "
             "matched lr/seed settings)")
GAIN_ANOVA = {"architecture x batch size": {"p": 0.03}, "batch size": {"p": 0.5}, "architecture": {"p": 0.4}}


def test_worked_gain():
    assert (0.9 + 0.65 + 0.65) / 3 - (0.1 + 0.6 + 0.6) / 3 == pytest.approx(0.3)


@pytest.mark.parametrize(("arch", "verdict"), [("A", SUPPORTED), ("B", NOT_SUPPORTED)])
def test_h3_batch_gain_largest_gated_by_the_interaction(arch, verdict):
    ctx = _ctx(_gain_runs(), ["A", "B"], anova_j=_anova(GAIN_ANOVA), steps_note="steps: BS8 100, BS32 25")
    h = {"id": "H3-b", "claim": "gains most", "rule": "batch_gain_largest", "architecture": arch}
    evidence = f"{GAIN_TEXT}; steps: BS8 100, BS32 25; architecture x batch interaction p=0.030"
    _same(h3_batch_gain(ctx, h), Verdict("H3-b", "gains most", verdict, evidence, 0.03))


@pytest.mark.parametrize(("p", "verdict", "tail"), [
    (0.0499, SUPPORTED, "; architecture x batch interaction p=0.050"),
    (0.05, INCONCLUSIVE, "; architecture x batch interaction not significant (p=0.050): the differences are "
                         "within noise"),
    (math.nan, INCONCLUSIVE, "; architecture x batch interaction untestable (no ANOVA term)"),
])
def test_h3_batch_gain_gate_at_alpha_and_without_the_term(p, verdict, tail):
    anova = _anova({"architecture x batch size": {"p": p}})
    h = {"id": "H3-b", "claim": "gains most", "rule": "batch_gain_largest", "architecture": "A"}
    _same(h3_batch_gain(_ctx(_gain_runs(), ["A", "B"], anova_j=anova), h),
          Verdict("H3-b", "gains most", verdict, GAIN_TEXT + tail, p if verdict == SUPPORTED else math.nan))


def test_h3_batch_gain_needs_the_architecture_and_another():
    frame = _gain_runs()
    h = {"id": "H3-b", "claim": "gains most", "rule": "batch_gain_largest", "architecture": "Z"}
    _same(h3_batch_gain(_ctx(frame, ["A", "B"]), h), Verdict(
        "H3-b", "gains most", INCONCLUSIVE, "Z and another architecture need 2+ batch sizes", math.nan))
    one = frame[(frame["architecture"] == "A") | (frame["batch_size"] == 8)]
    _same(h3_batch_gain(_ctx(one, ["A", "B"]), {**h, "architecture": "A"}), Verdict(
        "H3-b", "gains most", INCONCLUSIVE, "A and another architecture need 2+ batch sizes", math.nan))


# ------------------------------------------------------------------------------------- H3 sensitive/robust
CELLS = [(1e-4, 8), (1e-4, 16), (1e-3, 8), (1e-3, 16)]
SENS = {"A": (0.5, 0.7, 0.6, 0.9), "B": (0.6, 0.65, 0.62, 0.7), "C": (0.70, 0.71, 0.70, 0.72)}


def _sens_runs() -> pd.DataFrame:
    """Two seeds a cell (cell mean -+ 0.005); B lacks (1e-3, 16), so the three other cells are compared; D
    (not among the context's architectures) has one cell and must not shrink the comparison."""
    rows = [{"architecture": a, "learning_rate": lr, "batch_size": bs, "seed": s, "best_val_jaccard": v + d}
            for a, vals in SENS.items() for (lr, bs), v in zip(CELLS, vals, strict=True)
            for s, d in ((0, -0.005), (1, 0.005)) if not (a == "B" and (lr, bs) == (1e-3, 16))]
    rows += [{"architecture": "D", "learning_rate": 1e-4, "batch_size": 8, "seed": 0, "best_val_jaccard": 0.5}]
    return pd.DataFrame(rows)


def _sens_text() -> str:
    spread = {a: statistics.stdev(v[:3]) for a, v in SENS.items()}  # the three shared cells, n - 1
    assert [f"{s:.3f}" for s in spread.values()] == ["0.100", "0.025", "0.006"]
    return ("std of cell-mean Jaccard over the 3 (lr, batch) cells every architecture completed: A 0.100, "
            "B 0.025, C 0.006")


SENS_ANOVA = {"architecture x learning rate": {"p": 0.01}, "architecture x batch size": {"p": 0.2},
              "architecture": {"p": 0.001}, "learning rate": {"p": 0.0001}, "batch size": {"p": 0.0002}}
GATE = "architecture x setting interactions (Bonferroni)"


@pytest.mark.parametrize(("rule", "arch", "verdict"), [
    (h3_sensitive, "A", SUPPORTED), (h3_sensitive, "C", NOT_SUPPORTED), (h3_sensitive, "B", NOT_SUPPORTED),
    (h3_robust, "C", SUPPORTED), (h3_robust, "A", NOT_SUPPORTED), (h3_robust, "B", NOT_SUPPORTED)])
def test_h3_spread_of_cell_means_gated_by_bonferroni(rule, arch, verdict):
    ctx = _ctx(_sens_runs(), ["A", "B", "C"], anova_j=_anova(SENS_ANOVA))
    h = {"id": "H3-s", "claim": "c", "rule": "most_sensitive", "architecture": arch}
    _same(rule(ctx, h), Verdict("H3-s", "c", verdict, f"{_sens_text()}; {GATE} p=0.020", 0.02))


@pytest.mark.parametrize(("terms", "verdict", "tail", "p"), [
    ({"architecture x batch size": {"p": 0.03}}, SUPPORTED, " p=0.030", 0.03),  # one term: no factor 2
    ({"architecture x learning rate": {"p": 0.026}, "architecture x batch size": {"p": 0.9}}, INCONCLUSIVE,
     " not significant (p=0.052): the differences are within noise", math.nan),
    ({"architecture x learning rate": {"p": 0.6}, "architecture x batch size": {"p": 0.9}}, INCONCLUSIVE,
     " not significant (p=1.000): the differences are within noise", math.nan),  # 2 x 0.6 capped at 1
    ({"architecture": {"p": 0.001}}, INCONCLUSIVE, " untestable (no ANOVA term)", math.nan),
])
def test_h3_spread_gate_with_one_two_or_no_interaction_terms(terms, verdict, tail, p):
    ctx = _ctx(_sens_runs(), ["A", "B", "C"], anova_j=_anova(terms))
    h = {"id": "H3-s", "claim": "c", "rule": "most_sensitive", "architecture": "A"}
    _same(h3_sensitive(ctx, h), Verdict("H3-s", "c", verdict, f"{_sens_text()}; {GATE}{tail}", p))


def test_h3_spread_compares_two_architectures():
    frame = _sens_runs()
    ctx = _ctx(frame[frame["architecture"] != "B"], ["A", "C"], anova_j=_anova(SENS_ANOVA))
    h = {"id": "H3-s", "claim": "c", "rule": "most_robust", "architecture": "C"}
    spread = {a: statistics.stdev(SENS[a]) for a in ("A", "C")}  # all four cells are shared now
    text = "std of cell-mean Jaccard over the 4 (lr, batch) cells every architecture completed: " + ", ".join(
        f"{a} {s:.3f}" for a, s in spread.items())
    assert text.endswith("A 0.171, C 0.010")
    _same(h3_robust(ctx, h), Verdict("H3-s", "c", SUPPORTED, f"{text}; {GATE} p=0.020", 0.02))


def test_h3_spread_needs_two_shared_cells_and_the_architecture():
    frame = _sens_runs()
    two = frame[frame["learning_rate"] == 1e-4]  # two shared cells: spreads over 2 cells, n - 1
    h = {"id": "H3-s", "claim": "c", "rule": "most_sensitive", "architecture": "A"}
    spread = {a: statistics.stdev(v[:2]) for a, v in SENS.items()}
    text = "std of cell-mean Jaccard over the 2 (lr, batch) cells every architecture completed: " + ", ".join(
        f"{a} {s:.3f}" for a, s in spread.items())
    assert text.endswith("A 0.141, B 0.035, C 0.007")
    _same(h3_sensitive(_ctx(two, ["A", "B", "C"], anova_j=_anova(SENS_ANOVA)), h),
          Verdict("H3-s", "c", SUPPORTED, f"{text}; {GATE} p=0.020", 0.02))
    one = frame[(frame["learning_rate"] == 1e-4) & (frame["batch_size"] == 8)]
    msg = "A and another architecture need 2+ cells completed by every architecture"
    _same(h3_sensitive(_ctx(one, ["A", "B", "C"]), h), Verdict("H3-s", "c", INCONCLUSIVE, msg, math.nan))
    z = {**h, "architecture": "Z"}
    _same(h3_robust(_ctx(frame, ["A", "B", "C"]), z), Verdict(
        "H3-s", "c", INCONCLUSIVE, "Z and another architecture need 2+ cells completed by every architecture",
        math.nan))
    only_a = frame[frame["architecture"] == "A"]
    _same(h3_sensitive(_ctx(only_a, ["A"]), h), Verdict("H3-s", "c", INCONCLUSIVE, msg, math.nan))
