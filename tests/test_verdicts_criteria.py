"""The success criteria S1-S6 (verdicts/criteria.py) and what the rules share (verdicts/common.py), each
compared whole (verdict, evidence string, p) on small constructed tables. Expected values are written out
or computed here with scipy/numpy; thresholds are pinned just below and just above."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hpc_unet.analysis import stats
from hpc_unet.analysis.verdicts import common, criteria

SUP, NOT, INC = "supported", "not supported", "inconclusive"
H = {"id": "S", "claim": "a claim"}


# ----------------------------------------------------------------------------------------------- helpers
def ctx_of(completed: pd.DataFrame, baseline: pd.DataFrame | None = None, recs: pd.DataFrame | None = None,
           archs: tuple[str, ...] = ("UNet",), history: pd.DataFrame | None = None, **kw) -> common.Context:
    """A Context with only what the criteria read: completed runs, recommendations, a baseline, history."""
    if recs is None:
        recs = pd.DataFrame([{"architecture": a, "kind": "best", "learning_rate": 1e-3, "batch_size": 8}
                             for a in archs])
    return common.Context(completed=completed, architectures=list(archs), anova_j=stats.Anova("y"),
                          anova_s=stats.Anova("y"), cells_j=pd.DataFrame(), recommendations=recs,
                          baseline=baseline, history=history, **kw)


def runs(values: list[float], metric: str, arch: str = "UNet", lr: float = 1e-3, bs: int = 8,
         prefix: str = "g", **cols) -> pd.DataFrame:
    """One run per value at one cell, seeds 0.., exp ids '<prefix>0'.. ; cols: extra columns (lists)."""
    frame = pd.DataFrame({"architecture": arch, "learning_rate": lr, "batch_size": bs, "seed": range(len(values)),
                          "status": "completed", "exp_id": [f"{prefix}{i}" for i in range(len(values))],
                          metric: values})
    for k, v in cols.items():
        frame[k] = v
    return frame


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(diff, low, high): scipy's Welch t-test interval of mean(a) - mean(b)."""
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return float(np.mean(a) - np.mean(b)), float(ci.low), float(ci.high)


def welch_text(a: list[float], b: list[float], fmt: str = "{:+.3f}") -> str:
    d, lo, hi = welch(a, b)
    return f"{fmt.format(d)} [{fmt.format(lo)}, {fmt.format(hi)}] (Welch t over seeds ({len(a)} vs {len(b)} runs))"


# ======================================================================================== common.py
def test_p_text_every_branch():
    assert [common.p_text(p) for p in (None, math.nan, math.inf, -math.inf)] == ["p=n/a"] * 4
    assert [common.p_text(p) for p in (0.0, 0.000999, 0.001, 0.0125, 0.5, 1.0)] == [
        "p<0.001", "p<0.001", "p=0.001", "p=0.013", "p=0.500", "p=1.000"]


def test_same_is_equality_up_to_a_relative_1e9():
    assert common.same(1e-3, 0.001) and common.same(5, 5.0) and common.same(1.0, 1.0 + 5e-10)
    assert not common.same(1.0, 1.0 + 2e-9) and not common.same(1.0, 2.0) and not common.same(5e-4, 1e-3)


def test_lr_text_and_listed():
    assert [common.lr_text(x) for x in (1e-3, 5e-4, 0.01)] == ["1e-03", "5e-04", "1e-02"]
    assert common.listed([1, 2]) == [1, 2] and common.listed(3) == [3] and common.listed((1, 2)) == [(1, 2)]
    assert common.listed("ab") == ["ab"]


def test_groups_are_the_finite_values_per_sorted_level():
    frame = pd.DataFrame({"bs": [32, 8, 16, 8, 32, 16], "y": [1.0, 2.0, math.nan, 4.0, 5.0, math.inf]})
    got = common.groups(frame, "bs", "y")
    assert list(got) == [8, 32]  # 16 has no finite value: no group
    assert got[8].tolist() == [2.0, 4.0] and got[32].tolist() == [1.0, 5.0]


@pytest.mark.parametrize(("diff", "p", "expected"), [
    (0.1, 0.0499, "+"), (-0.1, 0.0499, "-"), (0.1, 0.05, "="), (-0.1, 0.05, "="), (0.1, 0.0501, "="),
    (0.0, 0.01, "-"), (math.nan, 0.01, "="), (0.1, math.nan, "="), (-math.inf, 0.01, "="), (0.1, 0.0, "+")])
def test_direction_at_alpha(diff, p, expected):
    assert common.direction(diff, p) == expected


def test_combine_all_true_any_false_else_inconclusive():
    assert common.combine([]) == INC
    assert common.combine([True]) == SUP and common.combine([True, True]) == SUP
    assert common.combine([True, None]) == INC and common.combine([None]) == INC
    assert common.combine([True, False]) == NOT and common.combine([None, False]) == NOT
    assert common.combine([False]) == NOT


@pytest.mark.parametrize(("low", "high", "above", "below"), [
    (0.011, 0.03, True, False), (0.01, 0.03, None, False), (0.009, 0.03, None, False),
    (-0.03, 0.009, False, None), (-0.03, 0.01, None, None), (-0.03, 0.011, None, None),
    (-0.03, -0.011, False, True), (0.0, 0.02, None, False)])
def test_interval_verdict_threshold_pinned_on_both_sides(low, high, above, below):
    """good_above 0.01: True only when low > 0.01, False only when high < 0.01; good_below -0.01 mirrored
    (an interval touching the threshold is undecided)."""
    d = stats.Difference((low + high) / 2, low, high)
    assert common.interval_verdict(d, good_above=0.01) is above
    assert common.interval_verdict(d, good_below=-0.01) is (None if below is None else below)


def test_interval_verdict_mirrored_and_without_an_interval():
    assert common.interval_verdict(stats.Difference(-0.05, -0.06, -0.011), good_below=-0.01) is True
    assert common.interval_verdict(stats.Difference(-0.05, -0.06, -0.01), good_below=-0.01) is None
    assert common.interval_verdict(stats.Difference(0.05, -0.009, 0.06), good_below=-0.01) is False
    assert common.interval_verdict(stats.Difference(0.05, -0.01, 0.06), good_below=-0.01) is None
    for d in (stats.Difference(0.5), stats.Difference(0.5, 0.4), stats.Difference(0.5, math.nan, 0.6)):
        assert common.interval_verdict(d, good_above=0.0) is None
        assert common.interval_verdict(d, good_below=1.0) is None
    with pytest.raises(AssertionError):
        common.interval_verdict(stats.Difference(0.5, 0.4, 0.6))


def test_with_note_says_inconclusive_in_words_only_when_undecided():
    assert common.with_note(None, "t") == (None, "t (no interval excluding 0: inconclusive)")
    assert common.with_note(True, "t") == (True, "t") and common.with_note(False, "t") == (False, "t")


def _grid() -> pd.DataFrame:
    rows = [{"architecture": a, "learning_rate": lr, "batch_size": bs, "seed": s, "y": 1.0}
            for a in ("UNet", "X") for lr in (1e-3, 5e-4) for bs in (8, 32) for s in (0, 1)]
    return pd.DataFrame(rows)


def test_matched_keeps_the_settings_present_at_every_level():
    frame = _grid()
    drop = (frame["architecture"] == "UNet") & (frame["learning_rate"] == 5e-4) & (frame["batch_size"] == 32)
    frame.loc[drop & (frame["seed"] == 0), "y"] = math.nan  # UNet lr 5e-4 seed 0 lacks batch 32
    got, n = common.matched(frame, "batch_size", "y")
    assert n == 7  # 2 archs x 2 lrs x 2 seeds = 8 settings, one incomplete
    assert len(got) == 14
    lost = (got["architecture"] == "UNet") & (got["learning_rate"] == 5e-4) & (got["seed"] == 0)
    assert not lost.any()
    assert list(got.index) == [i for i in frame.index if not (frame.loc[i, "architecture"] == "UNet"
                                                              and frame.loc[i, "learning_rate"] == 5e-4
                                                              and frame.loc[i, "seed"] == 0)]


def test_matched_on_chosen_levels_and_by_every_other_factor():
    frame = _grid()
    frame = frame[~((frame["architecture"] == "X") & (frame["batch_size"] == 32) & (frame["seed"] == 1))]
    got, n = common.matched(frame, "learning_rate", "y", levels=[1e-3])
    assert (n, len(got)) == (7, 7) and set(got["learning_rate"]) == {1e-3}
    got, n = common.matched(frame, "architecture", "y")  # matched by lr, batch and seed
    assert n == 6 and len(got) == 12 and set(got["architecture"]) == {"UNet", "X"}
    got, n = common.matched(frame, "seed", "y")  # seed is the factor: the other three are the key
    assert n == 6 and len(got) == 12  # X's two batch-32 cells have one seed left: out
    assert got[(got["architecture"] == "X") & (got["batch_size"] == 32)].empty


def test_matched_without_data_or_keys():
    frame = _grid()
    frame["y"] = math.nan
    got, n = common.matched(frame, "batch_size", "y")
    assert (len(got), n) == (0, 0)
    only = pd.DataFrame({"batch_size": [8, 32], "y": [1.0, 2.0]})
    got, n = common.matched(only, "batch_size", "y")
    assert n == 0 and got["y"].tolist() == [1.0, 2.0]


def test_cell_runs_matches_lr_as_a_float_and_batch_as_an_int():
    frame = pd.DataFrame({"architecture": ["UNet", "UNet", "UNet", "X"], "learning_rate": ["0.001", 1e-3, 5e-4, 1e-3],
                          "batch_size": ["8", 8, 8, 8]})
    assert common.cell_runs(frame, "UNet", 0.0010000000001, 8).index.tolist() == [0, 1]
    assert common.cell_runs(frame, "UNet", 1e-3, 16).empty and common.cell_runs(frame, "Y", 1e-3, 8).empty


def test_best_cells_reads_the_kinds_list():
    recs = pd.DataFrame([{"architecture": "UNet", "kind": "best, most robust", "learning_rate": 1e-3, "batch_size": 8},
                         {"architecture": "X", "kind": "most robust", "learning_rate": 1e-3, "batch_size": 8},
                         {"architecture": "Y", "kind": "most efficient, best", "learning_rate": 5e-4, "batch_size": 16},
                         {"architecture": "Z", "kind": "bestish", "learning_rate": 5e-4, "batch_size": 16}])
    got = common.best_cells(ctx_of(pd.DataFrame(), recs=recs))
    assert list(got) == ["UNet", "Y"]
    assert got["Y"] == {"architecture": "Y", "kind": "most efficient, best", "learning_rate": 5e-4, "batch_size": 16}
    assert common.best_cells(ctx_of(pd.DataFrame(), recs=pd.DataFrame())) == {}


def test_context_levels_and_learned_runs():
    frame = pd.DataFrame({"learning_rate": [5e-3, 1e-3, 1e-3], "learned": [True, False, None]})
    ctx = ctx_of(frame, levels={"batch_size": [32, 8]})
    assert ctx.grid_levels("batch_size") == [32, 8] and ctx.grid_levels("learning_rate") == [1e-3, 5e-3]
    assert ctx.grid_levels("seed") == [] and ctx.learned.index.tolist() == [0, 2]
    assert (ctx.hour_unit, ctx.n_boot, ctx.primary, ctx.budget_note, ctx.steps_note) == (
        "GPU-hour", 2000, "best_val_jaccard", "", "")
    assert ctx.history is None and ctx.anova_o is None and common.Verdict("i", "c", "v", "e").p != 0.0
    assert (common.ICC_GOOD, common.ICC_POOR, common.NONINFERIORITY, common.NOT_APPLICABLE) == (
        0.75, 0.5, 0.01, "not applicable")
