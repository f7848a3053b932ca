"""Verdicts on the hypotheses and success criteria a spec declares, and per-architecture recommendations.

The claims are data: ``[[hypothesis]]`` tables in the spec (id, claim, rule, the levels it names; see
``spec.HYPOTHESIS_RULES``). ``hypotheses`` judges claims about settings (H1-H3), ``criteria`` the success
criteria (S1-S6), ``recommend`` picks the recommended cells; ``common`` holds what they share. A hypothesis
whose levels the grid lacks is *not applicable*; otherwise it is *supported* when the data point its way
and the test or interval excludes noise, *not supported* when they point the other way beyond noise, and
*inconclusive* when the difference is within noise (whichever way it points) or the data are missing.
The p-values that decide verdicts are Holm-corrected over the verdicts of one report (``judge_all``).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.stats import ALPHA
from hpc_unet.analysis.verdicts.common import (
    ICC_GOOD,
    ICC_POOR,
    INCONCLUSIVE,
    NONINFERIORITY,
    NOT_APPLICABLE,
    NOT_SUPPORTED,
    SUPPORTED,
    Context,
    Verdict,
)
from hpc_unet.analysis.verdicts.criteria import (
    s1_stability,
    s2_performance,
    s3_consistency,
    s4_convergence,
    s5_efficiency,
    s6_recommendations,
)
from hpc_unet.analysis.verdicts.hypotheses import (
    h1_architecture,
    h1_range,
    h2,
    h2_unet,
    h3_batch_gain,
    h3_robust,
    h3_sensitive,
    not_applicable,
)
from hpc_unet.analysis.verdicts.recommend import kinds_of, recommendations, timing_noise
from hpc_unet.errors import UserError

__all__ = ["ICC_GOOD", "ICC_POOR", "INCONCLUSIVE", "NONINFERIORITY", "NOT_APPLICABLE", "NOT_SUPPORTED", "SUPPORTED",
           "Context", "Verdict", "RULES", "hypotheses_from_spec", "judge", "judge_all", "kinds_of", "recommendations",
           "timing_noise", "h1_architecture", "h1_range", "h2", "h2_unet", "h3_batch_gain", "h3_robust",
           "h3_sensitive", "s1_stability", "s2_performance", "s3_consistency", "s4_convergence", "s5_efficiency",
           "s6_recommendations"]

RULES: dict[str, Callable[[Context, dict[str, Any]], Verdict]] = {
    "lr_range_best": h1_range,
    "best_lr": h1_architecture,
    "std_falls_with_batch": h2,
    "stability_gain_strongest": h2_unet,
    "most_sensitive": h3_sensitive,
    "batch_gain_largest": h3_batch_gain,
    "most_robust": h3_robust,
    "baseline_stability": s1_stability,
    "baseline_performance": s2_performance,
    "consistency": s3_consistency,
    "baseline_convergence": s4_convergence,
    "baseline_efficiency": s5_efficiency,
    "recommended_beats_median": s6_recommendations,
}
# rules whose outcome depends on how long the runs trained (all but the seed-to-seed consistency)
BUDGET_BOUND = set(RULES) - {"consistency"}
COLUMNS = ["id", "claim", "verdict", "evidence", "p", "p_holm"]


def hypotheses_from_spec(spec_text: str) -> tuple[list[dict[str, Any]], str]:
    """(the spec's validated [[hypothesis]] tables, a note when there are none or they are invalid)."""
    from hpc_unet.spec import validate_hypotheses

    try:
        raw = tomllib.loads(spec_text).get("hypothesis", []) if spec_text else []
        found = validate_hypotheses(raw)
    except (tomllib.TOMLDecodeError, UserError) as exc:
        return [], f"the study's spec.toml has invalid [[hypothesis]] tables ({exc}); no verdicts"
    if not found:
        return [], ("the study's spec declares no [[hypothesis]] tables, so no claims are judged (see "
                    "manifests/seed-grid.toml for the seed's)")
    return found, ""


def judge(ctx: Context, h: dict[str, Any]) -> Verdict:
    """One hypothesis: 'not applicable' when the grid lacks its levels, else its rule's verdict."""
    why = not_applicable(ctx, h)
    if why:
        return Verdict(h["id"], h["claim"], NOT_APPLICABLE, why)
    verdict = RULES[h["rule"]](ctx, h)
    if ctx.budget_note and h["rule"] in BUDGET_BOUND:
        verdict.evidence += f"; {ctx.budget_note}"
    return verdict


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN): p_(i) * (m - i + 1), running max, capped at 1."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def judge_all(ctx: Context, hypotheses: list[dict[str, Any]]) -> pd.DataFrame:
    """All verdicts as a table (id, claim, verdict, evidence, p, p_holm). A verdict decided by a p-value
    that is no longer below alpha after Holm's correction over this report's verdicts is inconclusive."""
    table = pd.DataFrame([asdict(judge(ctx, h)) for h in hypotheses], columns=COLUMNS[:-1])
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float)) if len(table) else []
    m = int(table["p"].notna().sum())
    for i in table.index[table["verdict"].isin([SUPPORTED, NOT_SUPPORTED]) & (table["p_holm"] >= ALPHA)]:
        table.at[i, "evidence"] += (f"; Holm-adjusted over {m} verdict tests: p={table.at[i, 'p_holm']:.3f}, "
                                    f"within noise (would be '{table.at[i, 'verdict']}' uncorrected)")
        table.at[i, "verdict"] = INCONCLUSIVE
    return table[COLUMNS]
