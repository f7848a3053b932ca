"""Grid specs for the next study, from this one's results.

The grid format is a cartesian product, and the configurations worth following up are not one, so
this writes several small specs instead of one that would also run unwanted combinations:

- ``<stem>-extended-lr<lr>-bs<bs>.toml``: the top-K configurations (by mean best Jaccard) at that
  (lr, batch), trained for ``epochs`` with ``replicates`` seeds: does longer training pay off?
- ``<stem>-beyond-lr<lr>-bs<bs>.toml``: when the best cell lies on the edge of the lr or batch axis, that
  architecture at the next level out (one more step of the axis's ratio).
- ``<stem>-comparison-lr<lr>-bs<bs>.toml``: for each architecture's optimal (lr, batch), *every*
  architecture at that setting with ``replicates`` seeds, so each architecture runs at its own optimum
  and the architecture comparison at that setting is paired by seed (the significance tests need it).

[data], [slurm] and [policy] are copied from the study's spec.toml as written (environment variables
stay unexpanded); [train] is copied with the epochs replaced.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.budget import budget_facts, grid_edges
from hpc_unet.analysis.load import FACTORS, PERFORMANCE, arch_order, learned_runs, load_study
from hpc_unet.errors import UserError
from hpc_unet.manifest import format_number
from hpc_unet.study import atomic_write_text

AXES = ("architecture", "learning_rate", "batch_size")


@dataclass
class FollowupSpec:
    path: Path
    purpose: str
    configurations: list[str]
    experiments: int
    text: str


def toml_value(value: Any) -> str:
    """A Python value as TOML (strings, numbers, booleans, lists and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise UserError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def dump_toml(tables: dict[str, dict[str, Any]], header: str = "") -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _raw_spec(spec_file: Path) -> dict[str, Any]:
    if not spec_file.exists():
        raise UserError(f"{spec_file} is missing; the study's spec copy is needed to write follow-ups "
                        "(recreate the study with `hpc-unet manifest`)")
    try:
        return tomllib.loads(spec_file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{spec_file} is not valid TOML ({exc})") from exc


def _count(tables: dict[str, dict[str, Any]]) -> int:
    """Validate a generated spec (data paths aside) and count its experiments."""
    from hpc_unet.manifest import build_rows
    from hpc_unet.spec import validate_spec

    raw = {k: dict(v) for k, v in tables.items()}
    raw["data"] = {"kind": "synthetic", "patch_size": raw.get("data", {}).get("patch_size", 256)}
    return len(build_rows(validate_spec(raw, base=Path.cwd()), resolve=False))


def _cell_means(completed: pd.DataFrame, metric: str = PERFORMANCE) -> pd.DataFrame:
    cells = completed.groupby(list(FACTORS))[metric].agg(["mean", "count"]).reset_index()
    return cells[np.isfinite(cells["mean"])].sort_values("mean", ascending=False, kind="stable")


def plan_followups(study_dir: str | Path, out: str | Path, top: int = 3, epochs: int = 100, replicates: int = 3,
                   comparison_epochs: int | None = None) -> tuple[list[FollowupSpec], list[str]]:
    """(the follow-up specs, not yet written; notes for the user)."""
    if top < 1 or epochs < 1 or replicates < 1:
        raise UserError("--top, --epochs and --replicates must be positive integers")
    data = load_study(study_dir)
    from hpc_unet.analysis.pipeline import primary_metric

    cells = _cell_means(learned_runs(data.completed), primary_metric(data.spec_text))
    if cells.empty:
        raise UserError(f"{data.study.root} has no completed runs to follow up; run and collect experiments first")
    raw = _raw_spec(data.study.spec_file)
    base_train = {k: v for k, v in raw.get("train", {}).items() if k not in AXES}
    if comparison_epochs is None:
        comparison_epochs = int(raw.get("train", {}).get("epochs", int(data.manifest["epochs"].max())))
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".toml" else out
    name = str(raw.get("study", {}).get("name", data.name))
    archs_all = arch_order(data.manifest["architecture"].unique())
    stamp = time.strftime("%Y-%m-%d")
    specs: list[FollowupSpec] = []
    notes: list[str] = []

    def make(kind: str, lr: float, bs: int, archs: list[str], n_epochs: int, purpose: str,
             configs: list[str]) -> None:
        tag = f"lr{format_number(lr)}-bs{bs}"
        train = {**base_train, "epochs": n_epochs}
        tables: dict[str, dict[str, Any]] = {
            "study": {"name": f"{name}-{kind}-{tag}", "description": purpose},
            "data": dict(raw.get("data", {})),
            "train": train,
            "grid": {"architecture": archs, "learning_rate": [float(lr)], "batch_size": [int(bs)],
                     "replicates": replicates},
        }
        for table in ("slurm", "policy", "analysis"):
            if table in raw:
                tables[table] = dict(raw[table])
        header = (f"Follow-up of study '{name}' ({data.study.root}), written by `hpc-unet followup` on {stamp}.\n"
                  f"{purpose}\nConfigurations: {'; '.join(configs)}")
        specs.append(FollowupSpec(path=Path(f"{stem}-{kind}-{tag}.toml"), purpose=purpose, configurations=configs,
                                  experiments=_count(tables), text=dump_toml(tables, header)))

    chosen = cells.head(top)
    if len(chosen) < top:
        notes.append(f"only {len(chosen)} configuration(s) completed; following up all of them")
    for (lr, bs), grp in chosen.groupby(["learning_rate", "batch_size"], sort=False):
        archs = arch_order(grp["architecture"])
        configs = [f"{a} lr {format_number(float(lr))} bs {int(bs)} (J {m:.3f})"
                   for a, m in zip(grp["architecture"], grp["mean"], strict=True)]
        make("extended", float(lr), int(bs), archs, epochs,
             f"Extended training ({epochs} epochs, {replicates} seeds) of top-{top} configuration(s).", configs)

    budget = budget_facts(data.manifest, data.learned)
    if budget["note"]:
        notes.append(f"most runs that learned were still improving ({budget['note']}); the extended specs train "
                     f"for {epochs} epochs" + ("" if epochs > budget["epochs"] else
                                               f": pass --epochs above {budget['epochs']} to train longer"))
    levels = {f: sorted(data.manifest[f].unique()) for f in ("learning_rate", "batch_size")}
    top_cell = cells.iloc[0]
    for edge in grid_edges(top_cell.to_dict(), levels):
        lr = edge["next"] if edge["factor"] == "learning_rate" else float(top_cell["learning_rate"])
        bs = int(edge["next"]) if edge["factor"] == "batch_size" else int(top_cell["batch_size"])
        words = "learning rate" if edge["factor"] == "learning_rate" else "batch size"
        make("beyond", lr, bs, [str(top_cell["architecture"])], comparison_epochs,
             f"The best cell lies on the {edge['edge']} {words} of the grid: the next level out "
             f"({comparison_epochs} epochs, {replicates} seeds).",
             [f"{top_cell['architecture']} lr {format_number(lr)} bs {bs}"])
    best = cells.drop_duplicates("architecture")  # sorted by mean: first row per architecture is its optimum
    for (lr, bs), grp in best.groupby(["learning_rate", "batch_size"], sort=False):
        owners = arch_order(grp["architecture"])
        configs = [f"optimum of {a}" for a in owners]
        make("comparison", float(lr), int(bs), archs_all, comparison_epochs,
             f"Architecture comparison at the optimal settings of {', '.join(owners)} "
             f"({comparison_epochs} epochs, {replicates} seeds, paired by seed).", configs)
    return specs, notes


def write_followups(specs: list[FollowupSpec], force: bool = False) -> None:
    existing = [str(s.path) for s in specs if s.path.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} already exists; choose another --out or pass --force to overwrite")
    for spec in specs:
        atomic_write_text(spec.path, spec.text)
