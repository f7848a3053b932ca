"""What every verdict rule shares: the outcomes, the context they are judged on, the thresholds, matched
level sets and the way per-architecture outcomes combine into one verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import PERFORMANCE, learned_runs
from hpc_unet.analysis.stats import ALPHA, Anova, Difference
from hpc_unet.manifest import format_number

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_APPLICABLE = "supported", "not supported", "inconclusive", "not applicable"
ICC_GOOD, ICC_POOR = 0.75, 0.5  # Koo & Li (2016) reliability bands
NONINFERIORITY = 0.01  # S2: "maintained" = the interval of (grid - baseline) Jaccard lies above -0.01


@dataclass
class Verdict:
    id: str
    claim: str
    verdict: str
    evidence: str
    p: float = math.nan  # the p-value that decided it (NaN when an interval or a band decided)


@dataclass
class Context:
    """What the verdicts are judged on."""

    completed: pd.DataFrame
    architectures: list[str]
    anova_j: Anova
    anova_s: Anova
    cells_j: pd.DataFrame  # stats.cell_intervals of the Jaccard
    recommendations: pd.DataFrame
    baseline: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    anova_o: Anova | None = None  # ANOVA of the oscillation measure (detrended std)
    levels: dict[str, list[Any]] = field(default_factory=dict)  # the grid's levels (manifest); default: data's
    hour_unit: str = "GPU-hour"
    n_boot: int = 2000
    primary: str = PERFORMANCE  # the ranking metric ([analysis] primary_metric)
    budget_note: str = ""  # "at 12 epochs, still improving (...)" when most runs peaked at the end
    steps_note: str = ""  # optimizer steps per batch size

    @property
    def learned(self) -> pd.DataFrame:
        return learned_runs(self.completed)

    def grid_levels(self, factor: str) -> list[Any]:
        if factor in self.levels:
            return list(self.levels[factor])
        return sorted(self.completed[factor].unique()) if factor in self.completed.columns else []


def lr_text(lr: float) -> str:
    return format_number(float(lr))


def p_text(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def groups(frame: pd.DataFrame, by: str, metric: str) -> dict[float, np.ndarray]:
    """Finite values of ``metric`` per level of ``by`` (levels sorted)."""
    vals = frame[metric].to_numpy(dtype=float)
    keys = frame[by].to_numpy()
    ok = np.isfinite(vals)
    vals, keys = vals[ok], keys[ok]
    return {k: vals[keys == k] for k in sorted(set(keys.tolist()))}


def direction(diff: float, p: float) -> str:
    """'+' significantly higher, '-' significantly lower, '=' within noise or untestable (either sign)."""
    if not (np.isfinite(diff) and np.isfinite(p)) or p >= ALPHA:
        return "="
    return "+" if diff > 0 else "-"


def listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def matched(frame: pd.DataFrame, factor: str, metric: str, levels: list[Any] | None = None
            ) -> tuple[pd.DataFrame, int]:
    """The rows at ``levels`` of ``factor`` (default: all its levels in ``frame``) whose setting of the
    other factors and seed has a value at every one of those levels, and how many such settings there are:
    a comparison between levels then compares like with like (docs/analysis.md: matched comparisons)."""
    ok = np.isfinite(frame[metric].to_numpy(dtype=float))
    if levels is not None:
        ok &= frame[factor].isin(levels).to_numpy()
    data = frame[ok]
    keys = [k for k in ("architecture", "learning_rate", "batch_size", "seed") if k != factor and k in data.columns]
    if data.empty or not keys:
        return data, 0
    settings = list(zip(*(data[k].tolist() for k in keys), strict=True))
    seen: dict[tuple, set] = {}
    for key, level in zip(settings, data[factor].tolist(), strict=True):
        seen.setdefault(key, set()).add(level)
    n_levels = len(set(data[factor].tolist()))
    full = {k for k, v in seen.items() if len(v) == n_levels}
    return data[[k in full for k in settings]], len(full)


def combine(outcomes: list[bool | None]) -> str:
    """Per-architecture outcomes -> one verdict: all True supported, any False not supported, else inconclusive."""
    if outcomes and all(o is True for o in outcomes):
        return SUPPORTED
    if any(o is False for o in outcomes):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def interval_verdict(d: Difference, good_above: float | None = None, good_below: float | None = None
                     ) -> bool | None:
    """True when the whole interval is on the good side of the threshold, False when wholly on the bad side,
    None when it includes the threshold (whichever way the point estimate points) or there is no interval."""
    if not d.has_interval:
        return None
    if good_above is not None:
        return True if d.low > good_above else False if d.high < good_above else None
    assert good_below is not None
    return True if d.high < good_below else False if d.low > good_below else None


def with_note(ok: bool | None, text: str) -> tuple[bool | None, str]:
    """A judged difference; an interval that straddles zero is said to be inconclusive in words."""
    return ok, text + (" (no interval excluding 0: inconclusive)" if ok is None else "")


def cell_runs(frame: pd.DataFrame, arch: str, lr: float, bs: int) -> pd.DataFrame:
    return frame[(frame["architecture"] == arch) & np.isclose(frame["learning_rate"].astype(float), float(lr))
                 & (frame["batch_size"].astype(int) == int(bs))]


def best_cells(ctx: Context) -> dict[str, dict]:
    """arch -> its recommendation row whose kinds include 'best'."""
    rec = ctx.recommendations
    if rec.empty:
        return {}
    best = rec[rec["kind"].astype(str).str.split(", ").map(lambda kinds: "best" in kinds)]
    return {str(r["architecture"]): r for r in best.to_dict("records")}
