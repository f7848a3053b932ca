"""Follow-up specs for transfer learning and ensembles, from a finished study (``hpc-unet followup``).

- ``--transfer TARGET.toml``: per architecture, the study's best configuration (highest mean validation
  Jaccard over its seeds) and that configuration's best run as the source. One spec per architecture,
  because a source fits only its own architecture: ``[grid] train_fraction = [0.05, 0.1, 0.25, 1.0]`` x
  ``init_from = ["none", "<study>:<run>"]`` x 3 seeds, the target's ``[data]`` table, the configuration's
  training settings.
- ``--ensemble K``: the K best configurations x seeds (one spec per learning rate and batch size, as a grid
  is a cartesian product); ``hpc-unet evaluate --model ...`` over all their runs gives the ensemble's test
  score with its interval (the command is printed in the spec's header and by followup).
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

from hpc_unet.analysis.followup import AXES, FollowupSpec, _cell_means, _count, _raw_spec, dump_toml
from hpc_unet.analysis.load import PERFORMANCE, load_study
from hpc_unet.errors import UserError
from hpc_unet.manifest import format_number

BUDGETS = [0.05, 0.1, 0.25, 1.0]
SHAPE_KEYS = ("depth", "base_filters", "batch_norm")  # must match the source (transfer/source.py)


def _target_data(target: str | Path) -> dict[str, Any]:
    path = Path(target)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--transfer {path} does not exist; pass the grid spec of the target dataset") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--transfer {path} is not a readable TOML grid spec ({exc})") from None
    data = raw.get("data")
    if not isinstance(data, dict) or not data:
        raise UserError(f"--transfer {path} has no [data] table; the target's data come from it")
    base = path.resolve().parent
    out = dict(data)
    for key in ("images", "masks", "test_images", "test_masks"):  # relative to the target spec, kept absolute
        if isinstance(out.get(key), str) and out[key] and "$" not in out[key] and not Path(out[key]).is_absolute():
            out[key] = str((base / out[key]).resolve())
    return out


def _best_run(completed: pd.DataFrame, cell: pd.Series) -> str:
    same = completed
    for key in AXES:
        same = same[same[key] == cell[key]]
    return str(same.sort_values([PERFORMANCE, "exp_id"], ascending=[False, True]).iloc[0]["exp_id"])


def plan_transfer(study_dir: str | Path, target: str | Path, out: str | Path, replicates: int = 3,
                  budgets: list[float] | None = None) -> list[FollowupSpec]:
    """One transfer spec per architecture of the study (not yet written)."""
    data = load_study(study_dir)
    cells = _cell_means(data.completed)
    if cells.empty:
        raise UserError(f"{data.study.root} has no completed runs to transfer from; run and collect them first")
    raw = _raw_spec(data.study.spec_file)
    target_data = _target_data(target)
    stem = Path(out).with_suffix("") if Path(out).suffix == ".toml" else Path(out)
    name = str(raw.get("study", {}).get("name", data.name))
    specs = []
    for cell in cells.drop_duplicates("architecture").itertuples(index=False):
        cell = pd.Series(cell._asdict())
        arch = str(cell["architecture"])
        run = _best_run(data.completed, cell)
        train = {k: v for k, v in raw.get("train", {}).items() if k not in (*AXES, "seed", "init_from")}
        row = data.manifest[data.manifest["exp_id"] == run].iloc[0]
        train.update({k: row[k].item() if hasattr(row[k], "item") else row[k] for k in SHAPE_KEYS})
        train.update(architecture=arch, learning_rate=float(cell["learning_rate"]), batch_size=int(cell["batch_size"]))
        source = f"{data.study.root.resolve()}:{run}"
        purpose = (f"Transfer of {arch} (lr {format_number(float(cell['learning_rate']))}, batch "
                   f"{int(cell['batch_size'])}: best mean val Jaccard {cell['mean']:.3f}) to {Path(target).name}: "
                   f"scratch vs fine-tuned from {run}, budgets {', '.join(f'{b:g}' for b in (budgets or BUDGETS))}, "
                   f"{replicates} seeds.")
        tables: dict[str, dict[str, Any]] = {
            "study": {"name": f"{name}-transfer-{arch}", "description": purpose},
            "data": target_data, "train": train,
            "grid": {"train_fraction": list(budgets or BUDGETS), "init_from": ["none", source],
                     "replicates": replicates},
        }
        for table in ("slurm", "policy"):
            if table in raw:
                tables[table] = dict(raw[table])
        header = (f"Transfer follow-up of study '{name}' ({data.study.root}), written by `hpc-unet followup "
                  f"--transfer` on {time.strftime('%Y-%m-%d')}.\n{purpose}\nZero-shot point (budget 0): "
                  f"hpc-unet evaluate --model {data.study.root.resolve()}/runs/{run}/model/best.keras --data THIS.toml "
                  "--out NEW_STUDY/analysis/evaluate")
        specs.append(FollowupSpec(path=Path(f"{stem}-transfer-{arch}.toml"), purpose=purpose, configurations=[run],
                                  experiments=_count(tables), text=dump_toml(tables, header)))
    return specs


def plan_ensemble(study_dir: str | Path, out: str | Path, k: int, replicates: int = 3) -> tuple[list[FollowupSpec], str]:
    """Specs for the K best configurations x seeds, and the evaluate command that scores their ensemble."""
    if k < 2 or replicates < 1:
        raise UserError("--ensemble needs K >= 2 configurations and --replicates >= 1")
    from hpc_unet.manifest import build_rows
    from hpc_unet.spec import validate_spec

    data = load_study(study_dir)
    cells = _cell_means(data.completed).head(k)
    if len(cells) < 2:
        raise UserError(f"{data.study.root} has {len(cells)} completed configuration(s); an ensemble needs 2")
    raw = _raw_spec(data.study.spec_file)
    stem = Path(out).with_suffix("") if Path(out).suffix == ".toml" else Path(out)
    name = str(raw.get("study", {}).get("name", data.name))
    base_train = {k_: v for k_, v in raw.get("train", {}).items() if k_ not in AXES}
    planned: list[tuple[FollowupSpec, dict[str, dict[str, Any]]]] = []
    models: list[str] = []
    for (lr, bs), grp in cells.groupby(["learning_rate", "batch_size"], sort=False):
        tag = f"lr{format_number(float(lr))}-bs{int(bs)}"
        archs = list(dict.fromkeys(grp["architecture"]))
        purpose = (f"Ensemble members: {', '.join(archs)} at lr {format_number(float(lr))}, batch {int(bs)}, "
                   f"{replicates} seeds (top-{k} configurations of '{name}').")
        tables: dict[str, dict[str, Any]] = {
            "study": {"name": f"{name}-ensemble-{tag}", "description": purpose},
            "data": dict(raw.get("data", {})), "train": dict(base_train),
            "grid": {"architecture": archs, "learning_rate": [float(lr)], "batch_size": [int(bs)],
                     "replicates": replicates},
        }
        for table in ("slurm", "policy"):
            if table in raw:
                tables[table] = dict(raw[table])
        spec_raw = {t: dict(v) for t, v in tables.items()}
        spec_raw["data"] = {"kind": "synthetic", "patch_size": spec_raw["data"].get("patch_size", 256)}
        ids = list(build_rows(validate_spec(spec_raw, base=Path.cwd()), resolve=False)["exp_id"])
        folder = "STUDY_" + tag.upper().replace("-", "_").replace("+", "").replace(".", "_")
        models += [f"--model {folder}/runs/{e}/model/best.keras" for e in ids]
        configs = [f"{a} lr {format_number(float(lr))} bs {int(bs)}" for a in archs]
        planned.append((FollowupSpec(path=Path(f"{stem}-ensemble-{tag}.toml"), purpose=purpose,
                                     configurations=configs, experiments=len(ids), text=""), tables))
    command = (f"hpc-unet evaluate {' '.join(models)} --data SPEC.toml --out DIR   "
               "(STUDY_*: the study directory of each spec; the ensemble row has the test IoU and its 95 % interval)")
    stamp = time.strftime("%Y-%m-%d")
    for spec, tables in planned:
        spec.text = dump_toml(tables, f"Ensemble follow-up of study '{name}' ({data.study.root}), written by "
                              f"`hpc-unet followup --ensemble {k}` on {stamp}.\n{spec.purpose}\nAfterwards: {command}")
    return [spec for spec, _ in planned], command
