"""Per-task overhead: what an array task spends before (and around) training.

Four measurements, each in fresh processes because a warm process hides most of it:

1. *startup*: a fresh ``python`` that does what ``train/run.py`` does up to the end of its first epoch,
   timestamped: interpreter start, imports (TensorFlow, Keras, our modules), data (cache load),
   model build + compile, first training step (graph tracing + one step), rest of the first epoch
   (validation tracing), and one warm epoch for comparison. Run per *graph option*: ``default``,
   ``no-meta-optimizer`` (Grappler's meta optimizer off: less work per traced graph) and ``eager``
   (``run_eagerly``: no tracing at all).
2. *task*: ``hpc-unet train`` as a subprocess on a tiny study (the smoke spec), its wall time and the
   ``phase_seconds`` its shard records (import, data, build, restore, first_epoch, train, finalize);
   what is left over is interpreter start, CLI and manifest before ``run_experiment``.
3. *demo*: an existing demo study's ``demo-timing.json`` and its shards' phases, summed per phase.
4. *checkpoint*: the epoch-end bundle (weights, Adam state, best weights) at the study's model size (base
   64), which the throughput bench does not include: seconds the training thread is blocked before
   (synchronous write) and after (tensor snapshots + ``train/checkpoint.CheckpointWriter``'s background write).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hpc_unet.bench.common import machine, median, print_table

GRAPH_OPTIONS = ("default", "no-meta-optimizer", "eager")
PHASES = ("import", "data", "build", "restore", "first_epoch", "train", "finalize")


def apply_graph_option(option: str) -> dict[str, Any]:
    """Set a TensorFlow graph option in this process (before any function is traced).

    ``no-meta-optimizer``: ``tf.config.optimizer.set_experimental_options({"disable_meta_optimizer":
    True})`` -- Grappler's graph rewrites (constant folding, layout, remapping, arithmetic, ...) are
    skipped at trace time. Returns the compile keyword arguments the option implies.
    """
    if option not in GRAPH_OPTIONS:
        raise ValueError(f"graph option {option!r} is not one of {', '.join(GRAPH_OPTIONS)}")
    import tensorflow as tf

    # explicit either way: configure_tensorflow already applied the row's graph_rewrites setting
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": option == "no-meta-optimizer"})
    return {"run_eagerly": option == "eager"}


# ------------------------------------------------------------------------------------------ 1. startup
def startup_child(study_dir: str, exp_id: str, option: str, launched: float, epochs: int = 3) -> dict[str, Any]:
    """Runs in the fresh process: the start of ``train/run.py``'s ``_train`` with timestamps."""
    marks: dict[str, float] = {"launched": launched, "python_ready": time.time()}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from hpc_unet.manifest import get_row
    from hpc_unet.study import Study
    from hpc_unet.train.run import configure_tensorflow

    study = Study.at(study_dir)
    row = get_row(study, exp_id)
    configure_tensorflow(row)
    import keras

    from hpc_unet.data import prepare_for_row
    from hpc_unet.models import build_model
    from hpc_unet.train.losses import get_loss
    from hpc_unet.train.metrics import make_metrics
    from hpc_unet.train.pipeline import eval_dataset, steps_per_epoch, train_dataset

    compile_kwargs = apply_graph_option(option)
    marks["imported"] = time.time()
    data = prepare_for_row(row, study)
    marks["data"] = time.time()
    batch = int(row["batch_size"])
    model = build_model(row["architecture"], input_shape=tuple(data.train_x.shape[1:]),
                        base_filters=int(row["base_filters"]), depth=int(row["depth"]),
                        dropout=float(row["dropout"]), batch_norm=bool(row["batch_norm"]))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(row["learning_rate"]), clipnorm=1.0),
                  loss=get_loss(row["loss"], gamma=float(row["focal_gamma"])), metrics=make_metrics(),
                  jit_compile=bool(row["jit_compile"]), **compile_kwargs)
    marks["built"] = time.time()
    epochs_s: list[float] = []

    class Marks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if "first_step" not in marks:
                marks["first_step"] = time.time()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = time.time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = time.time()
            if "first_epoch" not in marks:
                marks["first_epoch"] = now
            epochs_s.append(now - self.t0)

    model.fit(train_dataset(data.train_x, data.train_y, batch, int(row["seed"]), epochs),
              validation_data=eval_dataset(data.val_x, data.val_y, batch), epochs=epochs,
              steps_per_epoch=steps_per_epoch(len(data.train_x), batch), callbacks=[Marks()], verbose=0,
              shuffle=False)
    order = ["launched", "python_ready", "imported", "data", "built", "first_step", "first_epoch"]
    names = ["interpreter", "imports", "data", "build", "first_step", "rest_of_first_epoch"]
    phases = {n: marks[b] - marks[a] for n, a, b in zip(names, order[:-1], order[1:], strict=True)}
    return {"option": option, "exp_id": exp_id, "architecture": row["architecture"], "phases": phases,
            "to_first_step_s": marks["first_step"] - marks["launched"],
            "to_first_epoch_end_s": marks["first_epoch"] - marks["launched"],
            "warm_epoch_s": median(epochs_s[1:]), "first_epoch_s": epochs_s[0],
            "train_patches": int(len(data.train_x))}


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_startup(study_dir: Path, exp_id: str, option: str, epochs: int = 3) -> dict[str, Any]:
    launched = time.time()
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.bench.overhead", "startup-child", str(study_dir),
                           exp_id, option, repr(launched), str(epochs)], capture_output=True, text=True,
                          env=_child_env(), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"startup child failed ({option}, {exp_id}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def production_defaults() -> list[str]:
    """Spec overrides that undo the smoke spec's CPU-only shortcuts (graph_rewrites = false), so the
    benches time the settings a real study uses."""
    from hpc_unet.spec import TRAIN_PARAMS

    return ["train.graph_rewrites=true"] if "graph_rewrites" in TRAIN_PARAMS else []


def make_tiny_study(root: Path, architectures: tuple[str, ...], epochs: int = 3, batch: int = 8,
                    lr: float = 1e-3) -> list[str]:
    """The smoke spec (synthetic data, 32x32 patches, base 8, depth 2) narrowed to a few experiments."""
    from hpc_unet.manifest import create_study
    from hpc_unet.spec import load_spec
    from hpc_unet.study import Study

    spec_file = Path(__file__).resolve().parents[1] / "manifests" / "smoke.toml"
    arch_list = ", ".join(f"'{a}'" for a in architectures)
    sets = [f"grid.architecture=[{arch_list}]", f"grid.learning_rate=[{lr}]", f"grid.batch_size=[{batch}]",
            f"train.epochs={epochs}"]
    spec = load_spec(spec_file, overrides=sets + production_defaults())
    study = Study.at(root)
    frame = create_study(study, spec, force=True)
    from hpc_unet.data.prepare import prepare_study

    prepare_study(study)  # build the data cache once, as `submit` does before dispatch
    return list(frame["exp_id"])


# --------------------------------------------------------------------------------------------- 2. task
def run_task(study_dir: Path, exp_id: str) -> dict[str, Any]:
    """``hpc-unet train`` in a subprocess; its wall time and the phases its shard recorded."""
    import pandas as pd

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", "train", "--study", str(study_dir),
                           "--experiment", exp_id, "--fresh"], capture_output=True, text=True,
                          env=_child_env(), timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"hpc-unet train {exp_id} failed: {proc.stdout[-1000:]} {proc.stderr[-2000:]}")
    shards = sorted((study_dir / "shards").glob(f"{exp_id}.a*.completed.summary.parquet"),
                    key=lambda p: p.stat().st_mtime)
    row = pd.read_parquet(shards[-1]).iloc[0]
    phases = json.loads(row["phase_seconds"]) if row.get("phase_seconds") else {}
    return {"exp_id": exp_id, "wall_s": wall, "phases": phases,
            "outside_run_experiment_s": wall - sum(phases.values()),
            "epochs_run": int(row["epochs_run"]), "mean_epoch_seconds": float(row["mean_epoch_seconds"])}


# --------------------------------------------------------------------------------------------- 3. demo
def demo_phases(study_dir: str | os.PathLike) -> dict[str, Any]:
    """Aggregate an existing demo study: demo-timing.json plus the phase_seconds of its shards."""
    import pandas as pd

    from hpc_unet.results.shards import summary_files
    from hpc_unet.study import Study

    study = Study.at(study_dir)
    timing_file = study.root / "demo-timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    per_phase: dict[str, list[float]] = {p: [] for p in PHASES}
    n = 0
    for path in summary_files(study):
        try:
            row = pd.read_parquet(path, columns=["status", "phase_seconds"]).iloc[0]
        except Exception:
            continue
        if row["status"] != "completed" or not row["phase_seconds"]:
            continue
        n += 1
        for name, secs in json.loads(row["phase_seconds"]).items():
            per_phase.setdefault(name, []).append(float(secs))
    sums = {k: sum(v) for k, v in per_phase.items() if v}
    total = sum(sums.values())
    return {"study": str(study.root), "demo_timing": timing, "experiments": n,
            "phase_sum_s": sums, "phase_median_s": {k: median(v) for k, v in per_phase.items() if v},
            "phase_share": {k: v / total for k, v in sums.items()} if total else {},
            "task_seconds_total": total}


# --------------------------------------------------------------------------------------- 4. checkpoint
def _sync_epochs(model: Any, optimizer: Any, directory: Path, epochs: int) -> list[float]:
    """Before: what train/run.py did at each epoch end until the background writer (all on the training
    thread: numpy copies of the weights and Adam state, then write + fsync + rename of the whole bundle)."""
    import numpy as np

    from hpc_unet.train.checkpoint import Bundle, save_bundle

    times = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        weights = model.get_weights()
        save_bundle(directory, Bundle(epoch=epoch, model=weights, optimizer=[np.array(v) for v in optimizer.variables],
                                      best=weights, state={"history": [], "finished": False}, variables=False))
        times.append(time.perf_counter() - t0)
    return times


def _background_epochs(model: Any, optimizer: Any, directory: Path, epochs: int) -> tuple[list[float], list[dict]]:
    """After: train/run.py's epoch end now: tensor snapshots handed to the background writer. The best
    weights change every other epoch (unchanged ones are hard-linked). The writer is waited for outside
    the timed part, as a real epoch (longer than the write) would."""
    from hpc_unet.train.callbacks import snapshot_variables
    from hpc_unet.train.checkpoint import Bundle, CheckpointWriter

    writer = CheckpointWriter(directory)
    best = model.get_weights()
    blocked, writes = [], []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        writer.submit(Bundle(epoch=epoch, model=snapshot_variables(model.variables),
                             optimizer=snapshot_variables(optimizer.variables), best=best,
                             best_changed=epoch % 2 == 1, state={"history": [], "finished": False}))
        blocked.append(time.perf_counter() - t0)
        writer.wait()
        writes.append({"best_changed": epoch % 2 == 1, "write_s": writer.last_write_seconds})
    return blocked, writes


def checkpoint_cost(workdir: Path, size: int = 256, base: int = 64, repeats: int = 3,
                    architectures: tuple[str, ...] = ("UNet", "Attention_ResUNet")) -> list[dict[str, Any]]:
    """Seconds the training thread is blocked per epoch-end bundle (model + Adam state + best weights) at
    the study's model size: before (synchronous write) and after (background writer); the first epoch of
    each is left out of the medians (page cache, directory creation)."""
    from hpc_unet.bench.common import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from hpc_unet.models import build_model
    from hpc_unet.train.checkpoint import clear

    out = []
    for arch in architectures:
        model = build_model(arch, input_shape=(size, size, 1), base_filters=base)
        optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        optimizer.build(model.trainable_variables)
        t0 = time.perf_counter()
        model.get_weights()
        t_get = time.perf_counter() - t0
        sync = _sync_epochs(model, optimizer, workdir / f"ckpt-sync-{arch}", repeats + 1)
        directory = workdir / f"ckpt-bg-{arch}"
        blocked, writes = _background_epochs(model, optimizer, directory, repeats + 1)
        newest = sorted(directory.iterdir())[-1]
        size_bytes = sum(f.stat().st_size for f in newest.iterdir())
        clear(workdir / f"ckpt-sync-{arch}")
        clear(directory)
        changed = [w["write_s"] for w in writes[1:] if w["best_changed"]]
        unchanged = [w["write_s"] for w in writes[1:] if not w["best_changed"]]
        out.append({"architecture": arch, "bundle_bytes": size_bytes, "get_weights_s": t_get,
                    "save_bundle_s": median(sync[1:]), "save_bundle_first_s": sync[0],
                    "write_mb_per_s": size_bytes / 1e6 / median(sync[1:]),
                    "sync_blocked_s": median(sync[1:]), "background_blocked_s": median(blocked[1:]),
                    "background_blocked_max_s": max(blocked[1:]),
                    "background_write_s": median(changed) if changed else None,
                    "background_write_best_unchanged_s": median(unchanged) if unchanged else None,
                    "load_average": list(os.getloadavg())})
        del model
        keras.backend.clear_session()
    return out


def bench_overhead(options: tuple[str, ...] = GRAPH_OPTIONS, architectures: tuple[str, ...] = ("UNet",
                   "Attention_ResUNet"), repeats: int = 1, tasks: bool = True, demo_study: str | None = None,
                   checkpoint: bool = True, checkpoint_base: int = 64, checkpoint_size: int = 256,
                   epochs: int = 3, workdir: str | None = None, startup_runs: bool = True) -> dict[str, Any]:
    """The ``bench overhead`` payload (``epochs`` >= 2: the startup runs also time a warm epoch);
    ``startup_runs=False`` with ``tasks=False`` times the checkpoint alone."""
    epochs = max(2, epochs)
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hpc-unet-bench-overhead-"))
    base.mkdir(parents=True, exist_ok=True)
    study_dir = base / "study"
    ids = make_tiny_study(study_dir, architectures, epochs=epochs) if startup_runs or tasks else []
    startup = []
    for rep in range(repeats if startup_runs else 0):
        for exp_id in ids:
            seq = options if rep % 2 == 0 else tuple(reversed(options))
            for option in seq:
                startup.append(run_startup(study_dir, exp_id, option, epochs))
    summary = []
    for option in options:
        for exp_id in ids:
            got = [s for s in startup if s["option"] == option and s["exp_id"] == exp_id]
            if not got:
                continue
            entry = {"option": option, "architecture": got[0]["architecture"],
                     **{k: median(g["phases"][k] for g in got) for k in got[0]["phases"]},
                     "to_first_step_s": median(g["to_first_step_s"] for g in got),
                     "to_first_epoch_end_s": median(g["to_first_epoch_end_s"] for g in got),
                     "first_epoch_s": median(g["first_epoch_s"] for g in got),
                     "warm_epoch_s": median(g["warm_epoch_s"] for g in got)}
            summary.append(entry)
    for entry in summary:
        ref = next((e for e in summary if e["option"] == "default" and e["architecture"] == entry["architecture"]), None)
        if ref:
            entry["first_epoch_end_ratio_vs_default"] = entry["to_first_epoch_end_s"] / ref["to_first_epoch_end_s"]
            entry["warm_epoch_ratio_vs_default"] = entry["warm_epoch_s"] / ref["warm_epoch_s"]
    payload: dict[str, Any] = {"bench": "overhead", "machine": machine(), "workdir": str(base),
                               "config": {"options": list(options), "architectures": list(architectures),
                                          "repeats": repeats, "epochs": epochs,
                                          "study": f"manifests/smoke.toml, {epochs} epochs, lr 1e-3, batch 8"},
                               "startup_runs": startup, "startup": summary}
    if tasks:
        payload["tasks"] = [run_task(study_dir, exp_id) for exp_id in ids]
    if demo_study:
        payload["demo"] = demo_phases(demo_study)
    if checkpoint:
        payload["checkpoint"] = checkpoint_cost(base, size=checkpoint_size, base=checkpoint_base)
    if not workdir:  # a temporary study: remove it (pass --workdir to keep it)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
        payload["workdir"] = None
    return payload


def print_overhead(payload: dict[str, Any]) -> None:
    rows = payload["startup"]
    if rows:
        phase_names = [k for k in ("interpreter", "imports", "data", "build", "first_step", "rest_of_first_epoch")]
        print_table(
            "Fresh process to first training step (seconds; smoke model 32x32 base 8, CPU)",
            ["option", "architecture", *phase_names, "to 1st step", "to 1st epoch end", "warm epoch",
             "1st epoch end vs default"],
            [[r["option"], r["architecture"], *(r[k] for k in phase_names), r["to_first_step_s"],
              r["to_first_epoch_end_s"], r["warm_epoch_s"], r.get("first_epoch_end_ratio_vs_default")]
             for r in rows],
        )
    if payload.get("tasks"):
        print_table(
            "hpc-unet train in a subprocess: shard phase_seconds",
            ["experiment", "wall", *PHASES, "outside run_experiment", "epochs", "mean epoch"],
            [[t["exp_id"], t["wall_s"], *(t["phases"].get(p) for p in PHASES), t["outside_run_experiment_s"],
              t["epochs_run"], t["mean_epoch_seconds"]] for t in payload["tasks"]],
        )
    demo = payload.get("demo")
    if demo:
        print_table(
            f"Demo study {demo['study']}: {demo['experiments']} completed tasks, phases summed over tasks",
            ["phase", "sum s", "median s / task", "share"],
            [[k, v, demo["phase_median_s"].get(k), demo["phase_share"].get(k)] for k, v in demo["phase_sum_s"].items()],
            caption="demo-timing.json: " + json.dumps(demo["demo_timing"]),
        )
    if payload.get("checkpoint"):
        print_table(
            "Epoch-end checkpoint bundle at the study's model size (model + Adam + best weights, fsynced): "
            "seconds the training thread is blocked",
            ["architecture", "MB", "before: sync write", "after: blocked", "after: max blocked",
             "background write", "write, best unchanged", "get_weights s", "load avg 1 min"],
            [[c["architecture"], c["bundle_bytes"] / 1e6, c["sync_blocked_s"], c["background_blocked_s"],
              c["background_blocked_max_s"], c["background_write_s"], c["background_write_best_unchanged_s"],
              c["get_weights_s"], c["load_average"][0]] for c in payload["checkpoint"]],
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m hpc_unet.bench.overhead startup-child STUDY EXP OPTION LAUNCHED EPOCHS`` (internal)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 6 and argv[0] == "startup-child":
        result = startup_child(argv[1], argv[2], argv[3], float(argv[4]), int(argv[5]))
        print(json.dumps(result))
        return 0
    print("usage: python -m hpc_unet.bench.overhead startup-child STUDY EXP OPTION LAUNCHED EPOCHS "
          "(use `hpc-unet bench overhead`)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
