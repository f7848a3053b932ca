"""Train options with measured gains: ``precision`` (float32 | mixed_bfloat16) and ``jit_compile``.

The smoke spec (synthetic EM-like data, fixed seeds) narrowed to one lr and batch (default 5e-3 and 8,
where all three architectures learn within 12 epochs; at lr 1e-3 / batch 16 the UNet stays at its
epoch-1 Jaccard, which makes an accuracy comparison meaningless),
with ``precision`` and ``jit_compile`` as grid axes; every experiment is trained by ``hpc-unet train``
in its own process (the real path, precision policy per process), one after another, interleaved by
architecture. From each shard: warm epoch seconds (median over epochs 2..n of the history), first
epoch (tracing / XLA compile), best val Jaccard. Reported against float32 without jit of the same
architecture and seed: speed-up (warm epochs) and best-val-Jaccard difference, judged against a stated
tolerance. ``nan_check`` also trains one mixed_bfloat16 run with an absurd learning rate to show the
NaN guard (train/callbacks.EpochRecorder) ends it as ``diverged``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hpc_unet.bench.common import machine, median, print_table
from hpc_unet.spec import ARCHITECTURES

VARIANTS = (("float32", False), ("mixed_bfloat16", False), ("float32", True), ("mixed_bfloat16", True))


def _spec_overrides(architectures: tuple[str, ...], lr: float, batch: int, epochs: int, replicates: int,
                    extra: list[str], jit: bool = True) -> list[str]:
    archs = ", ".join(f"'{a}'" for a in architectures)
    out = [f"grid.architecture=[{archs}]", f"grid.learning_rate=[{lr}]", f"grid.batch_size=[{batch}]",
           "grid.precision=['float32', 'mixed_bfloat16']", f"grid.jit_compile=[false{', true' if jit else ''}]",
           f"train.epochs={epochs}", "train.early_stopping=false"]
    if replicates > 1:
        out.append(f"grid.replicates={replicates}")
    from hpc_unet.bench.overhead import production_defaults

    return out + production_defaults() + list(extra)


def _train(study_dir: Path, exp_id: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", "train", "--study", str(study_dir),
                           "--experiment", exp_id, "--fresh"], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"hpc-unet train {exp_id} crashed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def _shard(study_dir: Path, exp_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import pandas as pd

    summaries = sorted((study_dir / "shards").glob(f"{exp_id}.a*.summary.parquet"), key=lambda p: p.stat().st_mtime)
    summary = pd.read_parquet(summaries[-1]).iloc[0].to_dict()
    hist_file = summaries[-1].with_name(summary["attempt_id"] + ".history.parquet")
    history = pd.read_parquet(hist_file).to_dict("records") if hist_file.exists() else []
    return summary, history


def bench_options(architectures: tuple[str, ...] = ARCHITECTURES, lr: float = 5e-3, batch: int = 8,
                  epochs: int = 12, replicates: int = 1, tolerance: float = 0.02, overrides: list[str] | None = None,
                  nan_check: bool = True, workdir: str | None = None, threads: int = 0,
                  jit: bool = True) -> dict[str, Any]:
    """Train every (architecture, precision, jit) of the narrowed smoke grid; the ``bench options`` payload."""
    import os

    from hpc_unet.data.prepare import prepare_study
    from hpc_unet.manifest import create_study
    from hpc_unet.spec import load_spec
    from hpc_unet.study import Study

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hpc-unet-bench-options-"))
    study_dir = base / "study"
    spec_file = Path(__file__).resolve().parents[1] / "manifests" / "smoke.toml"
    sets = _spec_overrides(architectures, lr, batch, epochs, replicates, overrides or [], jit)
    spec = load_spec(spec_file, overrides=sets)
    study = Study.at(study_dir)
    frame = create_study(study, spec, force=True)
    prepare_study(study)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads:
        env["HPC_UNET_THREADS"] = str(threads)
    runs = []
    rows = frame.to_dict("records")
    for rec in rows:  # manifest order interleaves the variants of one architecture and seed
        wall = _train(study_dir, rec["exp_id"], env)
        summary, history = _shard(study_dir, rec["exp_id"])
        secs = [h["epoch_seconds"] for h in history]
        runs.append({"exp_id": rec["exp_id"], "architecture": rec["architecture"], "seed": int(rec["seed"]),
                     "precision": rec["precision"], "jit_compile": bool(rec["jit_compile"]),
                     "status": summary["status"], "wall_s": wall,
                     "first_epoch_s": secs[0] if secs else None,
                     "warm_epoch_s": median(secs[1:]) if len(secs) > 1 else None,
                     "best_val_jaccard": summary.get("best_val_jaccard"), "best_val_iou": summary.get("best_val_iou"),
                     "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run")})
    comparison = []
    for run in runs:
        ref = next((r for r in runs if r["architecture"] == run["architecture"] and r["seed"] == run["seed"]
                    and r["precision"] == "float32" and not r["jit_compile"]), None)
        if ref is None or run is ref or ref["status"] != "completed" or run["status"] != "completed":
            continue
        diff = float(run["best_val_jaccard"]) - float(ref["best_val_jaccard"])
        comparison.append({"architecture": run["architecture"], "seed": run["seed"],
                           "variant": f"{run['precision']}{' + jit' if run['jit_compile'] else ''}",
                           "speedup_warm_epoch": ref["warm_epoch_s"] / run["warm_epoch_s"],
                           "first_epoch_ratio": run["first_epoch_s"] / ref["first_epoch_s"],
                           "jaccard_float32": ref["best_val_jaccard"], "jaccard_variant": run["best_val_jaccard"],
                           "jaccard_difference": diff, "within_tolerance": abs(diff) <= tolerance})
    payload: dict[str, Any] = {
        "bench": "options", "machine": machine(), "workdir": str(base),
        "config": {"spec": "manifests/smoke.toml", "overrides": sets, "tolerance": tolerance,
                   "threads": threads or os.environ.get("HPC_UNET_THREADS", "")},
        "runs": runs, "comparison": comparison,
        "summary": {v: {"speedup_median": median(c["speedup_warm_epoch"] for c in comparison if c["variant"] == v),
                        "jaccard_difference_median": median(c["jaccard_difference"] for c in comparison
                                                            if c["variant"] == v),
                        "all_within_tolerance": all(c["within_tolerance"] for c in comparison if c["variant"] == v)}
                    for v in sorted({c["variant"] for c in comparison})},
    }
    if nan_check:
        payload["nan_check"] = nan_guard_check(base / "nan", env)
    if not workdir:  # a temporary study: remove it (pass --workdir to keep it)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
        payload["workdir"] = None
    return payload


def nan_guard_check(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """Train one mixed_bfloat16 run whose loss must blow up; the shard must say ``diverged``."""
    from hpc_unet.manifest import create_study
    from hpc_unet.spec import load_spec
    from hpc_unet.study import Study

    spec_file = Path(__file__).resolve().parents[1] / "manifests" / "smoke.toml"
    spec = load_spec(spec_file, overrides=["grid.architecture=['UNet']", "grid.learning_rate=[10.0]",
                                           "grid.batch_size=[16]", "train.precision='mixed_bfloat16'",
                                           "train.clipnorm=0", "train.epochs=3"])
    study = Study.at(root)
    frame = create_study(study, spec, force=True)
    exp_id = frame["exp_id"].iloc[0]
    _train(root, exp_id, env)
    summary, history = _shard(root, exp_id)
    return {"exp_id": exp_id, "status": summary["status"], "diverged_epoch": summary.get("diverged_epoch"),
            "error_message": summary.get("error_message"), "epochs_recorded": len(history),
            "guard_works": summary["status"] == "diverged"}


def print_options(payload: dict[str, Any]) -> None:
    print_table(
        "Runs (hpc-unet train per experiment; smoke data, fixed seeds)",
        ["experiment", "status", "first epoch s", "warm epoch s", "best val J", "best epoch"],
        [[r["exp_id"], r["status"], r["first_epoch_s"], r["warm_epoch_s"], r["best_val_jaccard"], r["best_epoch"]]
         for r in payload["runs"]],
    )
    tol = payload["config"]["tolerance"]
    print_table(
        "Against float32 without jit (same architecture and seed)",
        ["architecture", "seed", "variant", "speed-up (warm)", "1st epoch ratio", "J float32", "J variant", "diff",
         f"|diff| <= {tol:g}"],
        [[c["architecture"], c["seed"], c["variant"], c["speedup_warm_epoch"], c["first_epoch_ratio"],
          c["jaccard_float32"], c["jaccard_variant"], c["jaccard_difference"], str(c["within_tolerance"])]
         for c in payload["comparison"]],
    )
    nan = payload.get("nan_check")
    if nan:
        print_table("NaN guard (mixed_bfloat16, lr 10 (the spec's upper bound), no clipping)", ["experiment", "status", "diverged epoch",
                    "guard works"], [[nan["exp_id"], nan["status"], nan["diverged_epoch"], str(nan["guard_works"])]])
