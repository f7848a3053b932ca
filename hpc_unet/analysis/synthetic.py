"""Constructed study results with known effects, to test the analysis (and try the report) without a cluster.

The generator follows the data's real structure: each run's Jaccard is computed from per-patch
intersections and unions, so the patch bootstrap, the t-intervals and the ANOVA all see the kind of
noise they are built for, and the true cell values are known.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from hpc_unet.results.schema import SHARD_SCHEMA_VERSION
from hpc_unet.study import Study, atomic_write

Cell = tuple[str, float, int]
Effect = Callable[[str, float, int], float]

LR_EFFECT = {1e-4: -0.10, 5e-4: 0.03, 1e-3: 0.04, 5e-3: -0.08}
MASK_FRACTION = 0.115  # validation foreground share of the constructed data

# The seed study's hypotheses and success criteria, as manifests/seed-grid.toml declares them.
SEED_HYPOTHESES = """
[[hypothesis]]
id = "H1"
claim = "learning rates 5e-4 to 1e-3 give the best Jaccard for every architecture"
rule = "lr_range_best"
learning_rate = [5e-4, 1e-3]

[[hypothesis]]
id = "H1-UNet"
claim = "UNet is best at lr 5e-4"
rule = "best_lr"
architecture = "UNet"
learning_rate = 5e-4

[[hypothesis]]
id = "H1-Attention_UNet"
claim = "Attention_UNet is best at lr 1e-3"
rule = "best_lr"
architecture = "Attention_UNet"
learning_rate = 1e-3

[[hypothesis]]
id = "H1-Attention_ResUNet"
claim = "Attention_ResUNet is best at lr 1e-3"
rule = "best_lr"
architecture = "Attention_ResUNet"
learning_rate = 1e-3

[[hypothesis]]
id = "H2"
claim = "val-loss std falls with batch size: BS32 < BS16 < BS8"
rule = "std_falls_with_batch"
batch_size = [8, 16, 32]

[[hypothesis]]
id = "H2-UNet"
claim = "the stability gain from larger batches is strongest for UNet"
rule = "stability_gain_strongest"
architecture = "UNet"

[[hypothesis]]
id = "H3-sensitive"
claim = "UNet is the most sensitive to learning rate and batch size"
rule = "most_sensitive"
architecture = "UNet"

[[hypothesis]]
id = "H3-batch"
claim = "Attention_UNet gains most from larger batches"
rule = "batch_gain_largest"
architecture = "Attention_UNet"

[[hypothesis]]
id = "H3-robust"
claim = "Attention_ResUNet is the most robust to learning rate and batch size"
rule = "most_robust"
architecture = "Attention_ResUNet"

[[hypothesis]]
id = "S1"
claim = "more than 50% lower val-loss std than the baseline"
rule = "baseline_stability"
reduction = 0.5

[[hypothesis]]
id = "S2"
claim = "best Jaccard at least the baseline's (performance maintained)"
rule = "baseline_performance"

[[hypothesis]]
id = "S3"
claim = "results are consistent across repeated runs"
rule = "consistency"

[[hypothesis]]
id = "S4"
claim = "faster convergence than the baseline"
rule = "baseline_convergence"

[[hypothesis]]
id = "S5"
claim = "better Jaccard per GPU-hour than the baseline"
rule = "baseline_efficiency"

[[hypothesis]]
id = "S6"
claim = "a recommended configuration for every architecture, better than a typical setting"
rule = "recommended_beats_median"
"""
ARCH_EFFECT = {"UNet": 0.0, "Attention_UNet": 0.03, "Attention_ResUNet": 0.05}


def default_jaccard(arch: str, lr: float, batch: int) -> float:
    """True cell Jaccard: strong lr and architecture effects, no batch-size effect."""
    return 0.70 + LR_EFFECT.get(lr, 0.0) + ARCH_EFFECT.get(arch, 0.0)


def default_stability(arch: str, lr: float, batch: int) -> float:
    """True val-loss std: falls with batch size (most for UNet), rises with lr."""
    slope = {"UNet": 0.012, "Attention_UNet": 0.008, "Attention_ResUNet": 0.006}.get(arch, 0.008)
    return 0.02 + slope * (32 - batch) / 8 + 0.01 * np.log10(lr / 1e-4)


def spec_text(name: str = "constructed", architectures: Iterable[str] = tuple(ARCH_EFFECT),
              learning_rates: Iterable[float] = tuple(LR_EFFECT), batch_sizes: Iterable[int] = (8, 16, 32),
              replicates: int = 1, epochs: int = 30, hypotheses: str = SEED_HYPOTHESES) -> str:
    """A grid spec on synthetic data (no paths to resolve), in the manifests/*.toml format."""
    archs = ", ".join(f'"{a}"' for a in architectures)
    lrs = ", ".join(repr(float(x)) for x in learning_rates)
    bss = ", ".join(str(int(x)) for x in batch_sizes)
    return f"""[study]
name = "{name}"
description = "constructed results with known effects"

[data]
kind = "synthetic"
patch_size = 32

[train]
epochs = {epochs}
loss = "focal"
clipnorm = 1.0

[grid]
architecture = [{archs}]
learning_rate = [{lrs}]
batch_size = [{bss}]
replicates = {replicates}

[slurm]
partition = "a40"
gpu_type = "a40"
cpus_per_task = 8
mem = "64G"
time = "04:00:00"

[policy]
on_oom = "record"
""" + hypotheses


def make_study(root: str | Path, *, spec: str | None = None, jaccard: Effect = default_jaccard,
               stability: Effect = default_stability, seed_sd: float = 0.0, patch_sd: float = 0.08,
               n_patches: int = 60, statuses: dict[Cell, str] | None = None,
               missing: Iterable[Cell] = (), seed: int = 0, history: bool = True,
               results: bool = True, not_learning: Iterable[Cell] = (), test: bool = False,
               device: str = "NVIDIA A40", examples: bool = False) -> Study:
    """Create a study directory with manifest, results.parquet and history.parquet of known truth.

    ``statuses`` marks cells whose runs failed (``oom``, ``failed``, ``diverged``); ``missing`` cells get
    no results row at all. ``seed_sd`` adds seed-to-seed noise on top of the patch sampling noise.
    """
    from hpc_unet.manifest import create_study
    from hpc_unet.spec import load_spec

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / "spec.toml"  # create_study rewrites it with the same text
    spec_file.write_text(spec or spec_text(name=root.name))
    study = Study.at(root)
    manifest = create_study(study, load_spec(spec_file))
    if not results:
        return study
    frame, hist = make_results(manifest, jaccard=jaccard, stability=stability, seed_sd=seed_sd,
                               patch_sd=patch_sd, n_patches=n_patches, statuses=statuses or {},
                               missing=set(missing), seed=seed, not_learning=set(not_learning), test=test,
                               device=device)
    if examples:
        for exp_id in frame.loc[frame["status"] == "completed", "exp_id"]:
            frame.loc[frame["exp_id"] == exp_id, "examples"] = write_example_patches(study, str(exp_id), seed)
    atomic_write(study.results_dir / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    if history:
        atomic_write(study.results_dir / "history.parquet", lambda tmp: hist.to_parquet(tmp, index=False))
    return study


def write_example_patches(study: Study, exp_id: str, seed: int = 0, size: int = 48, n: int = 8) -> str:
    """A run's examples file and scored validation patches as training writes them: blobs on a noisy
    background, a prediction that misses more of some blobs than of others (so patch IoUs differ)."""
    from hpc_unet.train.examples import EXAMPLES_FILE, write_examples
    from hpc_unet.train.val_patches import VAL_PATCHES_FILE, save_val_patches

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks, images, preds = [], [], []
    for k in range(n):
        cy, cx, r = rng.uniform(12, size - 12, 2).tolist() + [rng.uniform(5, 10)]
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        masks.append(m)
        images.append(np.clip(0.3 + 0.4 * m + rng.normal(0, 0.08, m.shape), 0, 1))
        shift = k % 4  # a prediction displaced by 0..3 pixels: worse IoU for larger shifts
        preds.append(np.clip(0.85 * np.roll(m, shift, axis=1) + rng.normal(0, 0.1, m.shape), 0, 1))
    mask, image, pred = np.stack(masks)[..., None], np.stack(images)[..., None], np.stack(preds)[..., None]
    path = study.run_dir(exp_id) / EXAMPLES_FILE
    write_examples(path, image[:4], mask[:4], pred[:4], "validation")
    save_val_patches(study.run_dir(exp_id) / VAL_PATCHES_FILE, image, mask, pred)
    return str(path.relative_to(study.root))


def _cell(row: dict) -> Cell:
    return (str(row["architecture"]), float(row["learning_rate"]), int(row["batch_size"]))


def make_results(manifest: pd.DataFrame, *, jaccard: Effect = default_jaccard,
                 stability: Effect = default_stability, seed_sd: float = 0.0, patch_sd: float = 0.08,
                 n_patches: int = 60, statuses: dict[Cell, str] | None = None, missing: set[Cell] | None = None,
                 seed: int = 0, not_learning: set[Cell] | None = None, test: bool = False,
                 device: str = "NVIDIA A40") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, history) frames in the collector's format for the given manifest rows.

    ``not_learning`` cells get runs that never leave the trivial predictor: Jaccard about the mask
    fraction, best epoch 1 and a tiny val-loss std (the pattern that must not rank as "most stable").
    ``test`` adds test-set scores (a little below validation).
    """
    from hpc_unet.train.summary import learning_evidence

    not_learning = not_learning or set()
    rng = np.random.default_rng(seed)
    statuses = statuses or {}
    missing = missing or set()
    rows, hist_rows = [], []
    for row in manifest.to_dict("records"):
        cell = _cell(row)
        if cell in missing:
            continue
        status = statuses.get(cell, "completed")
        epochs = int(row["epochs"])
        rec = {**row, **_summary_defaults(row, status), "device": device}
        if status == "completed" and cell in not_learning:
            union = rng.uniform(300, 700, n_patches)
            inter = union * np.clip(MASK_FRACTION + rng.normal(0, 0.005, n_patches), 0, 1)
            best = float((inter.sum() + 1) / (union.sum() + 1))
            rec.update(best_val_jaccard=best, best_val_iou=0.0, best_val_dice=2 * best / (1 + best), best_epoch=1,
                       epochs_run=5, stopped_early=True, val_loss_std=1e-4, val_loss_std_detrended=5e-5,
                       overfit_gap_best=0.0, overfit_gap_end=0.0, final_loss=0.1, final_val_loss=0.1,
                       mean_epoch_seconds=30.0, total_train_seconds=150.0, val_patch_intersection=inter.tolist(),
                       val_patch_union=union.tolist(), val_mask_fraction=MASK_FRACTION,
                       trivial_val_jaccard=MASK_FRACTION, trivial_val_iou=MASK_FRACTION,
                       **learning_evidence(best, 0.0, MASK_FRACTION, MASK_FRACTION))
            hist_rows.extend(_history(row, rec, rng))
        elif status == "completed":
            truth = jaccard(*cell) + rng.normal(0, seed_sd)
            union = rng.uniform(300, 700, n_patches)
            ratio = np.clip(truth + rng.normal(0, patch_sd, n_patches), 0.0, 1.0)
            inter = ratio * union
            best = float((inter.sum() + 1) / (union.sum() + 1))
            std = max(1e-4, stability(*cell) * (1 + rng.normal(0, 0.05)))
            best_epoch = int(np.clip(round(epochs * (0.3 + 0.4 * (1e-3 / cell[1]) ** 0.2)), 1, epochs))
            epoch_s = {"UNet": 60.0, "Attention_UNet": 66.0, "Attention_ResUNet": 72.0}.get(cell[0], 60.0)
            epoch_s *= 8 / cell[2] * 0.5 + 0.5
            gap_end = 0.02 + 0.5 * std
            rec.update(best_val_jaccard=best, best_val_iou=best * 0.98, best_val_dice=2 * best / (1 + best),
                       best_epoch=best_epoch, epochs_run=epochs, val_loss_std=std,
                       val_loss_std_detrended=std * 0.6, overfit_gap_best=gap_end / 2, overfit_gap_end=gap_end,
                       final_loss=0.05, final_val_loss=0.05 + gap_end, mean_epoch_seconds=epoch_s,
                       total_train_seconds=epoch_s * epochs, val_patch_intersection=inter.tolist(),
                       val_patch_union=union.tolist(), val_mask_fraction=MASK_FRACTION,
                       trivial_val_jaccard=MASK_FRACTION, trivial_val_iou=MASK_FRACTION,
                       **learning_evidence(best, best * 0.98, MASK_FRACTION, MASK_FRACTION))
            if test:
                rec.update(test_jaccard=best - 0.03, test_iou=best * 0.98 - 0.03,
                           test_dice=2 * (best - 0.03) / (1 + best - 0.03))
            curve = _history(row, rec, rng)
            hist_rows.extend(curve)
        rows.append(rec)
    return pd.DataFrame(rows), pd.DataFrame(hist_rows)


def _summary_defaults(row: dict, status: str) -> dict:
    nan = float("nan")
    errors = {
        "oom": ("ResourceExhaustedError", "OOM when allocating tensor with shape [32,64,256,256]"),
        "failed": ("FileNotFoundError", "training.tif: no such file"),
        "diverged": ("FloatingPointError", "loss became NaN at epoch 4"),
    }
    error_type, message = errors.get(status, ("", ""))
    return {
        "attempt_id": f"{row['exp_id']}.a001.0000abcd", "attempt": 1, "attempts": 1, "status": status,
        "error_type": error_type, "error_message": message, "error_traceback": "",
        "diverged_epoch": 4 if status == "diverged" else 0, "best_val_jaccard": nan, "best_val_iou": nan,
        "best_val_dice": nan, "best_epoch": nan, "epochs_run": 0, "stopped_early": False,
        "val_loss_std": nan, "val_loss_std_detrended": nan, "overfit_gap_best": nan, "overfit_gap_end": nan,
        "final_loss": nan, "final_val_loss": nan, "mean_epoch_seconds": nan, "total_train_seconds": 0.0,
        "peak_gpu_bytes": 0, "max_rss_bytes": 2**31, "param_count": 31_400_000, "model_bytes": 125_000_000,
        "device": "NVIDIA A40", "tf_version": "2.21.0", "package_version": "0.1.0", "git_commit": "abc1234",
        "data_provenance": json.dumps({"kind": "synthetic", "patches": 1980, "patch_size": 256,
                                       "sha256": "0" * 64}),
        "restarts": 0, "resumed_from_epoch": 0, "job_id": "1234_0", "host": "gpu01",
        "started_at": "2026-01-01T00:00:00", "finished_at": "2026-01-01T01:00:00", "test_jaccard": nan,
        "test_iou": nan, "test_dice": nan, "val_patch_intersection": [], "val_patch_union": [],
        "val_mask_fraction": nan, "trivial_val_jaccard": nan, "trivial_val_iou": nan, "learned_skill": nan,
        "learned": None, "examples": "",
        "schema_version": SHARD_SCHEMA_VERSION,
    }


def _history(row: dict, rec: dict, rng: np.random.Generator) -> list[dict]:
    """Learning curves whose maximum val Jaccard is the run's best, reached at its best epoch."""
    epochs, best_epoch, best = int(rec["epochs_run"]), int(rec["best_epoch"]), float(rec["best_val_jaccard"])
    t = np.arange(1, epochs + 1)
    rise = best * (1 - np.exp(-3 * t / best_epoch)) / (1 - np.exp(-3))
    val_j = np.where(t <= best_epoch, np.minimum(rise, best), best - 0.002 * (t - best_epoch))
    val_j = np.minimum(val_j, best - 1e-6)
    val_j[best_epoch - 1] = best
    val_loss = 0.3 * np.exp(-t / 5) + 0.05 + rng.normal(0, rec["val_loss_std"] * 0.5, epochs)
    loss = 0.3 * np.exp(-t / 4) + 0.04
    return [{"exp_id": row["exp_id"], "attempt_id": rec["attempt_id"], "epoch": int(e), "loss": float(lo),
             "val_loss": float(vl), "jacard_coef": float(min(1.0, vj + 0.03)), "val_jacard_coef": float(vj),
             "iou": float(vj), "val_iou": float(vj), "dice": float(vj), "val_dice": float(vj),
             "lr": float(row["learning_rate"]), "epoch_seconds": float(rec["mean_epoch_seconds"])}
            for e, lo, vl, vj in zip(t, loss, val_loss, val_j, strict=True)]
