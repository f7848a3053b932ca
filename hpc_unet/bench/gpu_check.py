"""GPU check: one script for a GPU node, within ~8 minutes on an H100.

    python -m hpc_unet.bench.gpu_check --out DIR            # the study's model size: 256x256, base 64

Measures, with our training path (``train.pipeline`` datasets, stateful metrics, Adam clipnorm 1,
binary focal loss) on synthetic EM-like patches (``data.synth``, flipped/rotated to a few hundred):

1. float32 (TF32 on Ampere/Hopper) epoch time for the three architectures at batch 8/16/32: warm
   epochs only (the first, with graph tracing, is reported apart), training images/s, achieved TFLOPS
   from the analytic FLOPs (``bench.flops``) and fraction of the device's dense peak, GPU memory peak
   (``tf.config.experimental.get_memory_info``), and the epoch time projected to the study's protocol
   (1,780 train + 198 val patches);
2. mixed_bfloat16, then jit_compile, against float32 at batch 16 (the float32 timing run at that batch,
   trained ``--compare-epochs``): speed-up, and accuracy after the same epochs from the same seed and
   data (best val Jaccard; tolerance ``--tolerance``, default 0.02; with batch norm and ~100 steps the
   validation Jaccard may not have moved yet, so the last epoch's training Jaccard and loss are compared too).

A time budget (``--budget-s``, default 450) skips the runs that would end after it (judged by the
longest run of the same kind so far), recorded as skipped, rather than overrunning. Without a GPU it prints a clear message and exits 3, unless ``--allow-cpu`` (for testing
the script itself at tiny sizes: ``--size 32 --base 4 --depth 2 --n-train 16 --n-val 8 --batches 4``).
Writes DIR/gpu_check.json; ``hpc-unet bench flops --measured DIR/gpu_check.json`` reads it too.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from hpc_unet.spec import ARCHITECTURES

PROTOCOL_TRAIN, PROTOCOL_VAL = 1780, 198
EXIT_NO_GPU = 3


def make_data(size: int, n_train: int, n_val: int, seed: int = 0) -> dict[str, Any]:
    """Learnable EM-like patches: a few synthetic slices tiled into size x size patches, then the 8
    flips/rotations of each patch until there are enough (generation is NumPy and slow at scale)."""
    import numpy as np

    from hpc_unet.data.synth import render_stack
    from hpc_unet.data.tiling import tile

    need = n_train + n_val
    side = size * 2
    slices = max(1, math.ceil(need / (4 * 8)))
    images, masks = render_stack(slices, side, side, seed)
    x = tile(images, size).astype(np.float32) / 255.0
    y = (tile(masks, size) > 0).astype(np.float32)
    if x.ndim == 3:
        x, y = x[..., None], y[..., None]
    variants_x, variants_y = [], []
    for k in range(8):
        rx, ry = np.rot90(x, k % 4, axes=(1, 2)), np.rot90(y, k % 4, axes=(1, 2))
        if k >= 4:
            rx, ry = rx[:, :, ::-1], ry[:, :, ::-1]
        variants_x.append(rx)
        variants_y.append(ry)
    x, y = np.concatenate(variants_x)[:need], np.concatenate(variants_y)[:need]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = np.ascontiguousarray(x[order]), np.ascontiguousarray(y[order])
    return {"train_x": x[:n_train], "train_y": y[:n_train], "val_x": x[n_train:], "val_y": y[n_train:]}


def gpu_memory(reset: bool = False) -> int | None:
    """Peak bytes on GPU:0 since the last reset (None without a GPU)."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    try:
        if reset:
            tf.config.experimental.reset_memory_stats("GPU:0")
            return 0
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except (ValueError, RuntimeError):
        return None


def run_one(arch: str, batch: int, precision: str, jit: bool, data: dict[str, Any], cfg: argparse.Namespace,
            epochs: int, device: str) -> dict[str, Any]:
    """Build, compile and fit one configuration; timings, throughput, utilization, memory, accuracy."""
    import keras
    import numpy as np

    from hpc_unet.bench.flops import model_macs, peak_tflops
    from hpc_unet.models import build_model
    from hpc_unet.train.losses import get_loss
    from hpc_unet.train.metrics import make_metrics
    from hpc_unet.train.pipeline import eval_dataset, steps_per_epoch, train_dataset
    from hpc_unet.train.run import configure_tensorflow

    keras.backend.clear_session()
    gc.collect()
    configure_tensorflow({"precision": precision, "seed": cfg.seed})
    gpu_memory(reset=True)
    model = build_model(arch, input_shape=(cfg.size, cfg.size, 1), base_filters=cfg.base, depth=cfg.depth)
    macs = model_macs(model)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, clipnorm=1.0),
                  loss=get_loss("focal", gamma=2.0), metrics=make_metrics(), jit_compile=jit)
    marks: list[dict[str, float]] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = self.tv = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self.tv = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            end = time.perf_counter()
            marks.append({"train_s": self.tv - self.t0, "val_s": end - self.tv, "epoch_s": end - self.t0})

    n_train, n_val = len(data["train_x"]), len(data["val_x"])
    t0 = time.perf_counter()
    hist = model.fit(train_dataset(data["train_x"], data["train_y"], batch, cfg.seed, epochs),
                     validation_data=eval_dataset(data["val_x"], data["val_y"], batch), epochs=epochs,
                     steps_per_epoch=steps_per_epoch(n_train, batch), callbacks=[Timer()], verbose=0, shuffle=False)
    fit_s = time.perf_counter() - t0
    warm = marks[1:] or marks
    train_s = float(np.median([m["train_s"] for m in warm]))
    val_s = float(np.median([m["val_s"] for m in warm]))
    ips = n_train / train_s
    train_flops = 3.0 * 2.0 * macs
    tflops = train_flops * ips / 1e12
    peak = peak_tflops(device, precision)
    vj = [float(v) for v in hist.history["val_jacard_coef"]]
    tj = [float(v) for v in hist.history["jacard_coef"]]
    out = {"architecture": arch, "batch": batch, "precision": precision, "jit_compile": jit, "path": "ours",
           "epochs": epochs, "first_epoch_s": marks[0]["epoch_s"], "warm_epoch_s": float(np.median([m["epoch_s"] for m in warm])),
           "warm_train_s": train_s, "warm_val_s": val_s, "train_images_per_s": ips,
           "protocol_epoch_s": train_s / n_train * PROTOCOL_TRAIN + val_s / max(1, n_val) * PROTOCOL_VAL,
           "forward_gmacs": macs / 1e9, "achieved_tflops": tflops, "peak_tflops": peak,
           "fraction_of_peak": tflops / peak if peak else None, "memory_peak_bytes": gpu_memory(),
           "best_val_jaccard": max(vj) if vj else None, "final_val_jaccard": vj[-1] if vj else None,
           "final_train_jaccard": tj[-1] if tj else None,
           "final_loss": float(hist.history["loss"][-1]), "finite": bool(np.isfinite(hist.history["loss"]).all()),
           "fit_s": fit_s}
    del model
    keras.backend.clear_session()
    gc.collect()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpc_unet.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for gpu_check.json")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--base", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    p.add_argument("--batches", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--n-train", type=int, default=256, help="training patches per epoch (default 256)")
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="epochs per timing run, the first excluded (default 3)")
    p.add_argument("--compare-epochs", type=int, default=6,
                   help="epochs of the float32 / bf16 / jit comparison runs (default 6)")
    p.add_argument("--compare-batch", type=int, default=16)
    p.add_argument("--no-compare", action="store_true", help="skip the precision / jit comparison")
    p.add_argument("--no-jit", action="store_true", help="skip jit_compile runs (XLA compiles take minutes)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.02, help="|best val Jaccard difference| accepted")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="start no run that would end after this many seconds, judged by the longest run of its "
                        "kind so far (default 450)")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (testing, tiny sizes)")
    p.add_argument("--train-task-epochs", type=int, default=0,
                   help="then time one real `hpc-unet train` task (seed grid, UNet lr 5e-4 batch 16, synthetic EM "
                        "data) for this many epochs (default 0: skip)")
    p.add_argument("--train-task-slices", type=int, default=32,
                   help="synthetic 512x512 slices of that task (4 patches each; default 32)")
    p.add_argument("--train-task-set", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override for that task (repeatable; e.g. train.base_filters=4 to test on a CPU)")
    return p.parse_args(argv)


NO_GPU_MESSAGE = ("no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty): run this on a GPU "
                  "node (e.g. srun --gres=gpu:1 python -m hpc_unet.bench.gpu_check --out DIR), or pass --allow-cpu "
                  "with tiny sizes to test the script")


class Runs:
    """Runs benchmark configurations within the time budget, saving the payload after each one.

    A run is skipped when the longest run of its kind so far says it would end after ``budget_s``; an XLA
    compile is assumed to take three times a traced run until one was seen.
    """

    def __init__(self, cfg: argparse.Namespace, payload: dict[str, Any], data: dict[str, Any], device: str,
                 out_file: Path, start: float) -> None:
        self.cfg, self.payload, self.data, self.device = cfg, payload, data, device
        self.out_file, self.start = out_file, start
        self.took: dict[tuple[str, bool], float] = {}

    def expected(self, precision: str, jit: bool) -> float:
        if (precision, jit) in self.took:
            return self.took[(precision, jit)]
        return max(self.took.values(), default=0.0) * (3.0 if jit else 1.0)

    def attempt(self, kind: str, arch: str, batch: int, precision: str, jit: bool, epochs: int) -> dict[str, Any] | None:
        from hpc_unet.study import atomic_write_json

        if time.perf_counter() - self.start + self.expected(precision, jit) > self.cfg.budget_s:
            self.payload["skipped"].append({"kind": kind, "architecture": arch, "batch": batch, "precision": precision,
                                            "jit_compile": jit, "reason": "time budget"})
            return None
        t0 = time.perf_counter()
        try:
            row = run_one(arch, batch, precision, jit, self.data, self.cfg, epochs, self.device)
        except Exception as exc:  # OOM at batch 32, XLA failure: record and go on
            row = {"architecture": arch, "batch": batch, "precision": precision, "jit_compile": jit,
                   "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        self.took[(precision, jit)] = max(self.took.get((precision, jit), 0.0), time.perf_counter() - t0)
        row["kind"] = kind
        self.payload["rows"].append(row)
        print(json.dumps({k: row.get(k) for k in ("kind", "architecture", "batch", "precision", "jit_compile",
                                                  "warm_epoch_s", "train_images_per_s", "achieved_tflops",
                                                  "fraction_of_peak", "memory_peak_bytes", "error")}), flush=True)
        atomic_write_json(self.out_file, self.payload)  # partial results survive a kill
        return row


def timing_runs(runs: Runs, cfg: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """1. float32 at every batch; the run at the comparison batch trains longer and is its baseline."""
    baseline: dict[str, dict[str, Any]] = {}
    for arch in cfg.architectures:
        for batch in cfg.batches:
            compare = not cfg.no_compare and batch == cfg.compare_batch
            row = runs.attempt("timing", arch, batch, "float32", False, cfg.compare_epochs if compare else cfg.epochs)
            if row is not None and compare:
                baseline[arch] = row
    return baseline


def comparison_runs(runs: Runs, cfg: argparse.Namespace, baseline: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """2. mixed_bfloat16, then 3. jit_compile (slowest to start, least likely used) against float32."""
    out = []
    variants = [("mixed_bfloat16", False)] + ([] if cfg.no_jit else [("float32", True)])
    for precision, jit in variants:
        for arch in cfg.architectures:
            if arch not in baseline:
                baseline[arch] = runs.attempt("compare", arch, cfg.compare_batch, "float32", False,
                                              cfg.compare_epochs) or {}
            row = runs.attempt("compare", arch, cfg.compare_batch, precision, jit, cfg.compare_epochs)
            base = baseline.get(arch) or {}
            if row is None or "error" in row or not base or "error" in base:
                continue
            diff = row["best_val_jaccard"] - base["best_val_jaccard"]
            out.append({
                "architecture": arch, "batch": cfg.compare_batch, "variant": f"{precision}{' + jit' if jit else ''}",
                "speedup_warm_epoch": base["warm_epoch_s"] / row["warm_epoch_s"],
                "float32_best_val_jaccard": base["best_val_jaccard"], "variant_best_val_jaccard": row["best_val_jaccard"],
                "jaccard_difference": diff, "within_tolerance": abs(diff) <= cfg.tolerance, "finite": row["finite"],
                "train_jaccard_difference": row["final_train_jaccard"] - base["final_train_jaccard"],
                "final_loss_float32": base["final_loss"], "final_loss_variant": row["final_loss"],
                "first_epoch_s_float32": base["first_epoch_s"], "first_epoch_s_variant": row["first_epoch_s"]})
    return out


def train_task(out_dir: Path, epochs: int, slices: int, extra: list[str] | None = None) -> dict[str, Any]:
    """One real ``hpc-unet train`` task of the seed grid (UNet, lr 5e-4, batch 16) on synthetic EM data,
    in a subprocess, end to end: wall time, the shard's phases (start to first epoch, finalize), epoch time,
    and the checkpoint time the training thread was blocked (progress file)."""
    import subprocess

    import pandas as pd

    root = out_dir / "train-task"
    sets = ["data.kind='synthetic'", *[f"data.{k}=''" for k in ("images", "masks", "test_images", "test_masks")],
            f"data.synth_slices={slices}", "data.synth_height=512",
            "data.synth_width=512", f"train.epochs={epochs}", "grid.architecture=['UNet']",
            "grid.learning_rate=[5e-4]", "grid.batch_size=[16]", *(extra or [])]
    cli = [sys.executable, "-m", "hpc_unet.cli"]
    spec = Path(__file__).resolve().parents[1] / "manifests" / "seed-grid.toml"
    made = subprocess.run([*cli, "manifest", "--grid", str(spec), "--study", str(root), "--quiet", "--force",
                           *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True)
    if made.returncode != 0:
        return {"error": f"manifest failed: {made.stderr.strip()[-500:]}"}
    exp = pd.read_parquet(root / "manifest.parquet")["exp_id"].iloc[0]
    t0 = time.perf_counter()
    proc = subprocess.run([*cli, "train", "--study", str(root), "--experiment", exp, "--fresh"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    shards = sorted((root / "shards").glob(f"{exp}.*.summary.parquet"))
    if proc.returncode != 0 or not shards:
        return {"exp_id": exp, "wall_s": wall, "error": (proc.stdout + proc.stderr)[-1000:]}
    row = pd.read_parquet(shards[-1]).iloc[0]
    progress = json.loads((root / "runs" / exp / "progress.json").read_text()) \
        if (root / "runs" / exp / "progress.json").exists() else {}
    return {"exp_id": exp, "wall_s": wall, "status": row["status"], "device": row.get("device"),
            "phases": json.loads(row["phase_seconds"]) if row.get("phase_seconds") else {},
            "epochs_run": int(row["epochs_run"]), "mean_epoch_seconds": float(row["mean_epoch_seconds"]),
            "last_checkpoint_blocked_s": progress.get("checkpoint_blocked_seconds"),
            "last_checkpoint_write_s": progress.get("checkpoint_write_seconds")}


def print_results(payload: dict[str, Any], cfg: argparse.Namespace, device: str) -> None:
    from hpc_unet.bench.common import print_table

    timing = [r for r in payload["rows"] if r.get("kind") == "timing"]
    print_table(f"gpu_check on {device}: {cfg.size}x{cfg.size} base {cfg.base}, float32, {cfg.n_train} train patches",
                ["architecture", "batch", "warm epoch s", "img/s", "TFLOPS", "of peak", "memory GiB",
                 "epoch s @1780+198", "first epoch s"],
                [[r["architecture"], r["batch"], r.get("warm_epoch_s"), r.get("train_images_per_s"),
                  r.get("achieved_tflops"), r.get("fraction_of_peak"),
                  (r["memory_peak_bytes"] / 2**30) if r.get("memory_peak_bytes") else None,
                  r.get("protocol_epoch_s"), r.get("first_epoch_s") or r.get("error")] for r in timing])
    if payload["comparison"]:
        print_table(f"Precision / jit at batch {cfg.compare_batch}, {cfg.compare_epochs} epochs, same seed and data",
                    ["architecture", "variant", "speed-up", "val J float32", "val J variant", "diff",
                     f"within {cfg.tolerance:g}", "train J diff", "loss float32", "loss variant"],
                    [[c["architecture"], c["variant"], c["speedup_warm_epoch"], c["float32_best_val_jaccard"],
                      c["variant_best_val_jaccard"], c["jaccard_difference"], str(c["within_tolerance"]),
                      c["train_jaccard_difference"], c["final_loss_float32"], c["final_loss_variant"]]
                     for c in payload["comparison"]])
    if payload.get("train_task"):
        print(f"hpc-unet train task: {json.dumps(payload['train_task'], default=str)}", flush=True)
    if payload["skipped"]:
        print(f"skipped (time budget {cfg.budget_s:g} s): {len(payload['skipped'])} runs", flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "gpu_check.json"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    import tensorflow as tf

    from hpc_unet.bench.common import machine
    from hpc_unet.bench.flops import DEVICE_PEAKS, device_key
    from hpc_unet.study import atomic_write_json
    from hpc_unet.train.run import configure_tensorflow, device_name

    configure_tensorflow({"precision": "float32", "seed": cfg.seed})  # memory growth before GPU init
    tf.get_logger().setLevel("ERROR")  # one retracing warning per new model is expected here
    device = device_name()
    payload: dict[str, Any] = {"bench": "gpu_check", "device": device, "machine": machine(),
                               "tf_version": tf.__version__, "config": vars(cfg), "rows": [], "comparison": [],
                               "skipped": [], "peaks": DEVICE_PEAKS.get(device_key(device) or "", None)}
    if not tf.config.list_physical_devices("GPU") and not cfg.allow_cpu:
        payload.update(status="no-gpu", message=NO_GPU_MESSAGE)
        atomic_write_json(out_file, payload)
        print(f"gpu_check: {NO_GPU_MESSAGE}", file=sys.stderr)
        return EXIT_NO_GPU
    print(f"gpu_check on {device} (TensorFlow {tf.__version__}); writing {out_file}", flush=True)
    t_data = time.perf_counter()
    data = make_data(cfg.size, cfg.n_train, cfg.n_val, cfg.seed)
    payload["data_seconds"] = time.perf_counter() - t_data
    runs = Runs(cfg, payload, data, device, out_file, start)
    baseline = timing_runs(runs, cfg)
    if not cfg.no_compare:
        payload["comparison"] = comparison_runs(runs, cfg, baseline)
    if cfg.train_task_epochs:
        payload["train_task"] = train_task(out_dir, cfg.train_task_epochs, cfg.train_task_slices, cfg.train_task_set)
    payload["status"] = "ok" if not payload["skipped"] else "partial (time budget)"
    payload["total_seconds"] = time.perf_counter() - start
    atomic_write_json(out_file, payload)
    print_results(payload, cfg, device)
    print(f"done in {payload['total_seconds']:.0f} s -> {out_file}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
