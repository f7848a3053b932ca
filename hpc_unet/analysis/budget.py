"""Is a conclusion about the settings, or about the training budget and the grid's range?

``budget_facts``: when most runs that learned peaked in their last epochs, their curves were still rising
and every comparison is "at N epochs"; batch sizes compared at equal epochs made different numbers of
optimizer steps. ``grid_edges``: when the best cell sits on the edge of a numeric axis, the optimum may lie
beyond the grid, and the next level out is worth a run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import parse_json
from hpc_unet.manifest import format_number

LAST_EPOCHS = 2  # a best epoch within the last 2 epochs of a full-length run counts as "still improving"
MOST = 0.5  # "most" runs: more than half of the runs that learned


def still_improving(learned: pd.DataFrame, epochs: int) -> pd.Series:
    """Runs that trained all ``epochs`` and reached their best within the last LAST_EPOCHS of them."""
    run = learned["epochs_run"].astype(float)
    best = learned["best_epoch"].astype(float)
    return (run >= epochs) & (best > run - LAST_EPOCHS)


def train_patches(runs: pd.DataFrame) -> int | None:
    """Training patches per epoch, from the runs' data provenance (None when not recorded)."""
    if "data_provenance" not in runs.columns:
        return None
    for value in runs["data_provenance"]:
        prov = parse_json(value)
        if isinstance(prov, dict) and prov.get("patches_train"):
            return int(prov["patches_train"])
    return None


def budget_facts(manifest: pd.DataFrame, learned: pd.DataFrame) -> dict[str, Any]:
    """epochs, how many runs that learned were still improving, the note verdicts carry, and optimizer
    steps per batch size."""
    epochs = int(manifest["epochs"].max()) if "epochs" in manifest.columns and len(manifest) else 0
    improving = still_improving(learned, epochs) if len(learned) and epochs else pd.Series(dtype=bool)
    k, n = int(improving.sum()), len(learned)
    note = (f"at {epochs} epochs, still improving ({k} of {n} runs that learned peaked in their last "
            f"{LAST_EPOCHS} epochs: train longer before trusting this)") if n and k / n > MOST else ""
    n_train = train_patches(learned)
    steps = {int(b): math.ceil(n_train / int(b)) * epochs for b in sorted(manifest["batch_size"].unique())} \
        if n_train and epochs and "batch_size" in manifest.columns else {}
    steps_note = ("optimizer steps per run at equal epochs: " + ", ".join(f"BS{b} {s}" for b, s in steps.items())
                  + " (larger batches took fewer steps)") if len(steps) > 1 else ""
    return {"epochs": epochs, "still_improving": k, "learned": n, "note": note, "steps": steps,
            "steps_note": steps_note}


def next_level(levels: list[float], high: bool) -> float:
    """The next level beyond a numeric axis, one more step of the axis's own ratio (geometric grids)."""
    lv = sorted(float(x) for x in levels)
    edge, inner = (lv[-1], lv[-2]) if high else (lv[0], lv[1])
    return edge * edge / inner if inner > 0 and edge > 0 else 2 * edge - inner


def grid_edges(cell: dict[str, Any], levels: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """For each numeric axis (lr, batch size) with 2+ levels on whose edge ``cell`` lies: the factor, which
    edge, and the next level beyond it."""
    out = []
    for factor in ("learning_rate", "batch_size"):
        lv = sorted(float(x) for x in levels.get(factor, []))
        if len(lv) < 2 or factor not in cell:
            continue
        value = float(cell[factor])
        for high, edge in ((True, lv[-1]), (False, lv[0])):
            if np.isclose(value, edge):
                nxt = next_level(lv, high)
                if factor == "batch_size":
                    nxt = float(max(1, round(nxt)))
                out.append({"factor": factor, "edge": "highest" if high else "lowest", "value": value,
                            "next": nxt})
    return out


def edge_text(edges: list[dict[str, Any]]) -> str:
    words = {"learning_rate": "learning rate", "batch_size": "batch size"}
    parts = [f"the {e['edge']} {words[e['factor']]} of the grid ({_num(e['factor'], e['value'])}; next level out: "
             f"{_num(e['factor'], e['next'])})" for e in edges]
    return ("it lies on " + " and ".join(parts) + ", so the optimum may lie outside the grid") if parts else ""


def _num(factor: str, value: float) -> str:
    return str(int(value)) if factor == "batch_size" else format_number(value)
