"""Read a study's results for analysis: validate, join with the manifest, derive per-run metrics.

The manifest lists every planned experiment, so an experiment without a results row is shown as
``missing`` instead of silently vanishing from the grid. Only ``completed`` runs with a finite best
Jaccard enter the statistics; every other status is reported, never averaged as a zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.errors import UserError
from hpc_unet.study import Study, read_json

FACTORS = ("architecture", "learning_rate", "batch_size")
FACTOR_LABELS = {"architecture": "architecture", "learning_rate": "learning rate", "batch_size": "batch size"}

# metric column -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "best_val_jaccard": ("best val Jaccard (soft)", True),
    "best_val_iou": ("val IoU, thresholded at 0.5", True),
    "best_val_dice_05": ("val Dice, thresholded at 0.5", True),
    "val_loss_std": ("val-loss std (stability, the seed's measure)", False),
    "val_loss_std_detrended": ("detrended val-loss std (oscillation)", False),
    "best_epoch": ("epochs to best (convergence)", False),
    "overfit_gap_end": ("overfitting gap (val - train loss, last epoch)", False),
    "jaccard_per_gpu_hour": ("best val Jaccard per device-hour", True),
}
PERFORMANCE = "best_val_jaccard"
IOU = "best_val_iou"
STABILITY = "val_loss_std"
OSCILLATION = "val_loss_std_detrended"
MISSING = "missing"
# Undefined for a run that did not learn (or is marginal): a flat curve has a tiny std, its best epoch is 1
# and its train and val losses barely part, which would otherwise rank it "most stable", "fastest" and
# "least overfitting"; its Jaccard per hour is the speed of learning nothing.
NEEDS_LEARNING = (STABILITY, OSCILLATION, "best_epoch", "overfit_gap_end", "jaccard_per_gpu_hour")
LEARNED_FROM_PROVENANCE = "derived from the validation mask fraction in data_provenance"

_REQUIRED = ("exp_id", "status")
_NUMERIC = ("best_val_jaccard", "best_val_iou", "best_val_dice", "val_loss_std", "val_loss_std_detrended",
            "best_epoch", "overfit_gap_end", "overfit_gap_best", "total_train_seconds", "mean_epoch_seconds",
            "epochs_run", "peak_gpu_bytes", "param_count", "test_jaccard", "test_iou", "test_dice",
            "val_mask_fraction", "trivial_val_jaccard", "trivial_val_iou", "learned_skill")


@dataclass
class StudyData:
    """Everything analysis needs from one study directory."""

    study: Study
    meta: dict[str, Any]
    manifest: pd.DataFrame
    runs: pd.DataFrame  # one row per manifest experiment; status 'missing' when no result yet
    history: pd.DataFrame | None
    spec_text: str
    notes: list[str] = field(default_factory=list)

    @property
    def completed(self) -> pd.DataFrame:
        """Runs that enter the statistics."""
        ok = (self.runs["status"] == "completed") & np.isfinite(self.runs[PERFORMANCE])
        return self.runs[ok]

    @property
    def learned(self) -> pd.DataFrame:
        """Completed runs whose stability and convergence are defined (learned, or unknown for old shards)."""
        return learned_runs(self.completed)

    @property
    def description(self) -> str:
        """The spec's [study] description (study.json does not keep it)."""
        import tomllib

        try:
            return str(tomllib.loads(self.spec_text).get("study", {}).get("description", ""))
        except tomllib.TOMLDecodeError:
            return ""

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.study.root.name)


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path} is unreadable ({type(exc).__name__}: {exc}); rerun `hpc-unet collect` "
                        f"to rewrite the {what}") from exc


def results_file(study: Study) -> Path:
    return study.results_dir / "results.parquet"


def history_file(study: Study) -> Path:
    return study.results_dir / "history.parquet"


def read_results(study: Study) -> pd.DataFrame:
    """results.parquet, or a one-line UserError that says to run collect."""
    _require_results(study)
    return _check_results(study, _read_parquet(results_file(study), "results"))


def _require_results(study: Study) -> None:
    if not study.root.exists():
        raise UserError(f"no such study: {study.root} does not exist; check the path")
    if not results_file(study).exists():
        raise UserError(f"{study.root} has no results yet ({results_file(study)} is missing); run "
                        f"`hpc-unet collect --study {study.root}` first")


def _check_results(study: Study, frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(f"{results_file(study)} lacks columns {missing}; rerun "
                        f"`hpc-unet collect --study {study.root}`")
    if frame.empty:
        raise UserError(f"no experiment of {study.root} has a result yet; when runs have finished, run "
                        f"`hpc-unet collect --study {study.root}` again (see `hpc-unet status`)")
    return frame


def read_results_and_history(study: Study) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """results.parquet and history.parquet written by the same collect (a concurrent collect replaces
    both files one after the other; ``read_collected`` rereads until their collect tokens match).
    History is None when the study has none."""
    from hpc_unet.results.collect import read_collected

    _require_results(study)
    if not history_file(study).exists():
        return read_results(study), None
    try:
        results, history = read_collected(study)
    except RuntimeError as exc:
        raise UserError(f"{exc}; wait for it to finish and run this again") from exc
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{study.results_dir} has an unreadable results/history file ({type(exc).__name__}: "
                        f"{exc}); rerun `hpc-unet collect --study {study.root}` to rewrite them") from exc
    return _check_results(study, results), history


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the derived metrics (Jaccard per GPU-hour) and make metric columns numeric."""
    out = frame.copy()
    for col in _NUMERIC:
        if col not in out.columns:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    # Dice of the thresholded masks from their IoU (pooled counts: Dice = 2 IoU / (1 + IoU)); the recorded
    # best_val_dice / test_dice are soft (probabilities), like the soft Jaccard
    for iou, dice in ((IOU, "best_val_dice_05"), ("test_iou", "test_dice_05")):
        out[dice] = 2 * out[iou] / (1 + out[iou])
    hours = out["total_train_seconds"] / 3600.0
    out["jaccard_per_gpu_hour"] = np.where(hours > 0, out["best_val_jaccard"] / hours.where(hours > 0), np.nan)
    for col in ("error_type", "error_message"):
        if col not in out.columns:
            out[col] = ""
        out[col] = out[col].fillna("").astype(str)
    if "attempts" not in out.columns:
        out["attempts"] = out["attempt"] if "attempt" in out.columns else np.nan
    return _derive_learned(out)


def _mask_fraction_val(provenance: Any) -> float:
    prov = parse_json(provenance)
    try:
        return float(prov.get("mask_fraction_val")) if isinstance(prov, dict) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _derive_learned(out: pd.DataFrame) -> pd.DataFrame:
    """``learning`` (learned / marginal / not learned / None), ``learned`` (True only for 'learned') and
    ``learned_source`` for every row, by today's rule (``train.summary.learning_of``), whatever rule the
    shard was written under.

    Shards written before the check have no trivial scores; their validation mask fraction f (recorded
    in data_provenance) gives them: all-foreground scores f on both metrics, the best trivial score.
    """
    from hpc_unet.train.summary import LEARNED, learning_evidence, learning_of

    state = pd.Series([None] * len(out), index=out.index, dtype=object)
    source = pd.Series("", index=out.index, dtype=object)
    completed = out["status"] == "completed"
    for idx, row in zip(out.index[completed], out.loc[completed].to_dict("records"), strict=True):
        state.at[idx] = learning_of(row)
        source.at[idx] = "recorded" if state.at[idx] is not None else "unknown"
        if state.at[idx] is not None:
            continue
        frac = _mask_fraction_val(row.get("data_provenance"))
        if not math.isfinite(frac):
            continue
        ev = learning_evidence(float(row[PERFORMANCE]), float(row[IOU]), frac, frac)
        if ev["learning"] is None:
            continue
        state.at[idx] = ev["learning"]
        source.at[idx] = LEARNED_FROM_PROVENANCE
        out.at[idx, "learned_skill"] = ev["learned_skill"]
        out.at[idx, "trivial_val_jaccard"] = out.at[idx, "trivial_val_iou"] = frac
        out.at[idx, "val_mask_fraction"] = frac
    out["learning"] = state
    out["learned"] = state.map(lambda v: None if v is None else v == LEARNED).astype(object)
    out["learned_source"] = source
    return out


def not_learned(frame: pd.DataFrame) -> pd.Series:
    """True where a run is known not to have learned on both metrics (not learned, or marginal)."""
    if "learned" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame["learned"].map(lambda v: v is False or (isinstance(v, (bool, np.bool_)) and not v))


def marginal(frame: pd.DataFrame) -> pd.Series:
    """True where a run beat the image-blind predictor on one of the two metrics only."""
    if "learning" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame["learning"] == "marginal"


def learned_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows not known to have failed to learn (unknown counts as learned, and the report says how many);
    marginal runs are left out like runs that did not learn."""
    return frame[~not_learned(frame)]


def hour_unit(runs: pd.DataFrame) -> str:
    """'GPU-hour', 'CPU-hour' or 'device-hour' (mixed or unknown), from the devices the runs used."""
    if "device" not in runs.columns:
        return "device-hour"
    devices = {str(d) for d in runs.loc[runs["status"] == "completed", "device"].dropna() if str(d)}
    if not devices:
        return "device-hour"
    cpu = {d for d in devices if d.upper() == "CPU"}
    return "CPU-hour" if cpu == devices else "GPU-hour" if not cpu else "device-hour"


def join_manifest(manifest: pd.DataFrame, results: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """One row per manifest experiment: its result columns, or status 'missing'."""
    stray = sorted(set(results["exp_id"]) - set(manifest["exp_id"]))
    if stray:
        notes.append(f"{len(stray)} result row(s) belong to experiments no longer in the manifest and were "
                     f"ignored (e.g. {stray[0]})")
    from hpc_unet.results.schema import SUMMARY_COLUMNS

    # a result column a run measured (e.g. `device`, the device used) wins over a manifest setting of the
    # same name (the `device` setting asks for one)
    shadowed = [c for c in SUMMARY_COLUMNS if c != "exp_id" and c in manifest.columns and c in results.columns]
    manifest = manifest.drop(columns=shadowed)
    extra = [c for c in results.columns if c not in manifest.columns or c == "exp_id"]
    runs = manifest.merge(results[extra], on="exp_id", how="left")
    runs["status"] = runs["status"].fillna(MISSING).astype(str)
    return derive(runs)


def varying_settings(manifest: pd.DataFrame) -> list[str]:
    """Train settings other than the three factors and the seed that vary across the manifest."""
    from hpc_unet.spec import TRAIN_PARAMS

    skip = {*FACTORS, "seed"}
    return [k for k in TRAIN_PARAMS if k in manifest.columns and k not in skip and manifest[k].nunique() > 1]


def load_study(path: str | Path) -> StudyData:
    """Load manifest, results and history of a study; raise UserError with the fix when absent."""
    from hpc_unet.manifest import read_manifest

    study = Study.at(path)
    study.require()
    manifest = read_manifest(study)
    results, history = read_results_and_history(study)
    notes: list[str] = []
    runs = join_manifest(manifest, results, notes)
    if history is None:
        notes.append("no results/history.parquet; learning curves and epochs-to-baseline skipped")
    elif not {"exp_id", "epoch"} <= set(history.columns):
        notes.append("history.parquet lacks exp_id/epoch columns; learning curves skipped")
        history = None
    extra = varying_settings(manifest)
    if extra:
        notes.append(f"settings {extra} also vary in this study; the analysis pools over them")
    spec_text = study.spec_file.read_text() if study.spec_file.exists() else ""
    return StudyData(study=study, meta=read_json(study.meta_file), manifest=manifest, runs=runs,
                     history=history, spec_text=spec_text, notes=notes)


def load_baseline(path: str | Path) -> pd.DataFrame:
    """Completed runs of the baseline study (its results.parquet), with derived metrics."""
    study = Study.at(path)
    frame = derive(read_results(study))
    if "architecture" not in frame.columns:
        raise UserError(f"baseline {results_file(study)} has no architecture column; rerun collect there")
    ok = (frame["status"] == "completed") & np.isfinite(frame[PERFORMANCE])
    if not ok.any():
        raise UserError(f"baseline {study.root} has no completed runs; finish it or drop --baseline")
    return frame[ok]


def arch_order(values: Any) -> list[str]:
    """Architectures in the study plan's order (UNet, Attention_UNet, Attention_ResUNet), others after."""
    from hpc_unet.spec import ARCHITECTURES

    names = {str(v) for v in values}
    return [a for a in ARCHITECTURES if a in names] + sorted(names - set(ARCHITECTURES))


def parse_json(value: Any) -> Any:
    """A data_provenance cell -> Python object (kept as text when it is not JSON)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def patch_arrays(row: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(intersection, union) per validation patch of one run, or None when not recorded."""
    inter = row.get("val_patch_intersection") if hasattr(row, "get") else None
    union = row.get("val_patch_union") if hasattr(row, "get") else None
    if inter is None or union is None:
        return None
    try:
        i = np.asarray(inter, dtype=float).ravel()
        u = np.asarray(union, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if i.size == 0 or i.size != u.size or not (np.isfinite(i).all() and np.isfinite(u).all()):
        return None
    return i, u


def cell_status(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (architecture, lr, batch) cell of the manifest: planned and completed runs, a status label
    for cells without a usable value ('oom', 'failed', 'missing', ...), and metric means over completed runs.
    """
    rows = []
    for key, grp in runs.groupby(list(FACTORS), sort=True):
        ok = (grp["status"] == "completed") & np.isfinite(grp[PERFORMANCE])
        flat = ok & not_learned(grp)
        others = grp.loc[~ok, "status"].replace({"completed": "no metrics"})
        counts = others.value_counts()
        if not ok.any():
            label = "/".join(str(s) for s in counts.index[:2])
        elif len(counts):
            label = f"{int(ok.sum())}/{len(grp)} ok"
        else:
            label = ""
        rec = dict(zip(FACTORS, key, strict=True))
        rec.update(n_planned=len(grp), n_completed=int(ok.sum()), label=label,
                   statuses=", ".join(f"{s} x{n}" for s, n in counts.items()),
                   n_not_learned=int(flat.sum()), n_marginal=int((ok & marginal(grp)).sum()))
        for metric in METRICS:
            if metric not in grp.columns:
                rec[metric] = np.nan
                continue
            vals = grp.loc[(ok & ~flat) if metric in NEEDS_LEARNING else ok, metric].astype(float)
            vals = vals[np.isfinite(vals)]
            rec[metric] = float(vals.mean()) if len(vals) else np.nan
        rows.append(rec)
    return pd.DataFrame(rows)
