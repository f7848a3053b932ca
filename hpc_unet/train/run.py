"""Train one manifest row, resuming exactly from its newest checkpoint, and write its result shard.

``run_experiment(row, study)`` is the single training entry point: the CLI's ``train`` verb, the
submitit task (local or Slurm) and the tests all call it. Every outcome writes a shard: completed,
failed (with the error), oom (with memory figures), diverged (with the epoch), or skipped (OOM policy).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_unet import runinfo
from hpc_unet.lease import current_restarts, leased
from hpc_unet.results.shards import completed_experiments, new_attempt_id, now_iso, write_shard
from hpc_unet.study import Study, atomic_write_json, fault_point, read_json
from hpc_unet.train.checkpoint import Bundle, CheckpointWriter, clear, load_latest
from hpc_unet.train.examples import EXAMPLES_FILE, save_run_examples
from hpc_unet.train.logs import write_history_csv
from hpc_unet.train.progress import Progress
from hpc_unet.train.summary import learned_columns, summarize_history
from hpc_unet.train.val_patches import VAL_PATCHES_FILE, save_val_patches

ENV_THREADS = "HPC_UNET_THREADS"


class AttemptInfo(dict):
    """attempt, attempt_id, starts, started_at: persisted so Slurm restarts count as one attempt."""


def _attempt_info(study: Study, exp_id: str, attempt: int) -> AttemptInfo:
    path = study.run_dir(exp_id) / "attempt.json"
    info: dict[str, Any] = {}
    if path.exists():
        try:
            info = read_json(path)
        except (OSError, ValueError):
            info = {}
    if info.get("attempt") != attempt:
        info = {"attempt": attempt, "attempt_id": new_attempt_id(exp_id, attempt), "starts": 0,
                "started_at": now_iso(), "train_seconds_lost": 0.0}
    info["starts"] += 1
    atomic_write_json(path, info)
    return AttemptInfo(info)


def _oom_skip_reason(study: Study, row: dict[str, Any]) -> str:
    """Under on_oom = skip-larger-batches: the smaller batch of the same configuration that ran out of memory.

    The same configuration: every manifest setting equal except the batch size and the seed (the
    learning rate is compared too, as the policy is stated per architecture and learning rate).
    """
    meta = read_json(study.meta_file) if study.meta_file.exists() else {}
    if meta.get("policy", {}).get("on_oom") != "skip-larger-batches":
        return ""
    statuses = completed_experiments(study)
    if not any(s == "oom" for s in statuses.values()):
        return ""
    from hpc_unet.manifest import COLUMNS, read_manifest

    frame = read_manifest(study)
    same = frame["batch_size"] < row["batch_size"]
    for column in COLUMNS:
        if column not in ("index", "exp_id", "replicate", "seed", "batch_size") and column in row:
            value = row[column]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                same &= frame[column].isna()
            else:
                same &= frame[column] == value
    for exp, batch in zip(frame.loc[same, "exp_id"], frame.loc[same, "batch_size"], strict=True):
        if statuses.get(exp) == "oom":
            return (f"skipped: {exp} (batch size {batch}, otherwise the same configuration) ran out of memory, "
                    f"so batch size {row['batch_size']} would too")
    return ""


def _select_device(row: dict[str, Any], study: Study) -> None:
    """The ``device`` setting, before TensorFlow starts: fail now if an allocated GPU is unusable."""
    from hpc_unet.train.device import select_device

    meta = read_json(study.meta_file) if study.meta_file.exists() else {}
    select_device(str(row.get("device", "auto")), spec_slurm=meta.get("slurm") or {})


def configure_tensorflow(row: dict[str, Any]) -> None:
    """Threads, logging and precision; must run before TensorFlow creates its runtime."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    threads = int(os.environ.get(ENV_THREADS, "0") or 0)
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass  # runtime already initialised in this process (tests): keep its settings
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    # Grappler's rewrites cost seconds at trace time; for tiny CPU models that is most of a task.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not row.get("graph_rewrites", True)})
    import keras

    keras.mixed_precision.set_global_policy(row.get("precision", "float32"))
    keras.utils.set_random_seed(int(row["seed"]))


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return str(details.get("device_name", "GPU"))


def _peak_gpu_bytes() -> int:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return 0
    try:
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except (ValueError, RuntimeError):
        return 0


def _peak_gpu_bytes_if_loaded() -> int:
    """The GPU peak for a failure shard: 0 when the task failed before TensorFlow was imported."""
    import sys

    if "tensorflow" not in sys.modules:
        return 0
    try:
        return _peak_gpu_bytes()
    except Exception:  # the runtime may be in a bad state after the failure; the figure is optional
        return 0


def _save_model(model_builder: Any, weights: list, path: Path, metadata: dict[str, Any] | None = None) -> int:
    """Save the best weights as a .keras model without optimizer state, atomically; return its size.

    ``metadata`` (patch size, normalisation, threshold) is embedded for ``hpc-unet predict``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".model.", dir=path.parent))
    try:
        clone = model_builder()
        clone.set_weights(weights)
        tmp = tmpdir / path.name
        clone.save(tmp)
        if metadata is not None:
            from hpc_unet.predict.metadata import embed

            embed(tmp, metadata)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path.stat().st_size


def restore_variables(model: Any, optimizer: Any, bundle: Bundle) -> None:
    """Model and optimizer state from a bundle; every model variable (seed generators too) when it has them."""
    if bundle.variables:
        for var, value in zip(model.variables, bundle.model, strict=True):
            var.assign(value)
    else:
        import warnings

        warnings.warn(f"checkpoint {bundle.path} predates seed-generator state (bundle version 1): weights are "
                      "restored, but dropout masks restart from their seed, so the run is not bit-identical",
                      stacklevel=2)
        model.set_weights(bundle.model)
    optimizer.build(model.trainable_variables)
    for var, value in zip(optimizer.variables, bundle.optimizer, strict=True):
        var.assign(value)


@leased  # one live task per experiment; counts interruptions across attempts (hpc_unet/lease.py)
def run_experiment(row: dict[str, Any], study: Study, *, attempt: int = 1, fresh: bool = False) -> dict[str, Any]:
    """Train ``row`` (a manifest row) to its end, resuming from disk; return its summary.

    Raises after writing a failure shard, so a job scheduler also sees the task fail.
    """
    exp_id = row["exp_id"]
    run_dir = study.run_dir(exp_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    if completed_experiments(study).get(exp_id) == "completed" and not fresh:
        clear(run_dir / "checkpoint")
        return {"exp_id": exp_id, "status": "completed", "note": "already completed"}
    info = _attempt_info(study, exp_id, attempt)
    if fresh and info["starts"] == 1:
        clear(run_dir / "checkpoint")  # a retry of a diverged/oom run starts over, but its restarts resume
    progress = Progress(study, exp_id, attempt=attempt, attempt_id=info["attempt_id"], epochs=int(row["epochs"]),
                        restarts=current_restarts(study, exp_id), state="starting", started_at=info["started_at"])
    progress.update()
    base = {**row, "attempt": attempt, "attempt_id": info["attempt_id"], "restarts": current_restarts(study, exp_id),
            "job_id": runinfo.job_id(), "host": runinfo.host(), "started_at": info["started_at"],
            "package_version": runinfo.package_version(), "git_commit": runinfo.git_commit(),
            "diverged_epoch": 0, "error_type": "", "error_message": "", "error_traceback": "",
            # the summary's `device` is the device used; the setting (auto|gpu|cpu) keeps its own column
            "device_setting": row.get("device", "auto")}
    history: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    skip = _oom_skip_reason(study, row)
    if skip:
        summary = {**base, **summarize_history([], int(row["epochs"])), "status": "skipped", "error_type": "Skipped",
                   "error_message": skip, "max_rss_bytes": runinfo.max_rss_bytes(), "peak_gpu_bytes": 0,
                   "finished_at": now_iso()}
        write_shard(study, summary, [])
        progress.update(state="skipped")
        return summary
    try:
        summary = _train(row, study, base, history, state, progress)
    except BaseException as exc:
        status = _classify(exc)
        if status is None:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise  # the task is being stopped, not failing
            raise SystemExit(-1) from exc  # the stop, disguised by the code it interrupted (see _classify)
        summary = {**base, **summarize_history(history, int(row["epochs"])), **state, "status": status,
                   "error_type": type(exc).__name__, "error_message": str(exc)[:2000],
                   "error_traceback": "".join(traceback.format_exception(exc)[-6:])[-4000:],
                   "diverged_epoch": getattr(exc, "epoch", 0) if status == "diverged" else 0,
                   "max_rss_bytes": runinfo.max_rss_bytes(), "peak_gpu_bytes": _peak_gpu_bytes_if_loaded(),
                   "finished_at": now_iso()}
        cause = f"{type(exc).__name__}: {str(exc)[:600]}"
        try:
            write_shard(study, summary, history)
        except OSError as err:  # a full disk: the failure shard is lost, progress.json keeps the cause
            exc.shard_not_written = err  # type: ignore[attr-defined]  (commands/train.py says so)
            cause += f" (its failure shard could not be written to {study.shards_dir}: {err.strerror or err})"
        _record_end(progress, state=status, error=cause)
        raise
    return summary


def _record_end(progress: Progress, **fields: Any) -> None:
    """The final progress update; on a full disk the atomic write (a second copy) may not fit, so the file
    is then rewritten in place: status must see the failure and its cause even then."""
    try:
        progress.update(**fields)
    except OSError:
        try:
            progress.update_in_place(**fields)
        except OSError:
            pass  # nothing can be written: the task's own exit status and log still say it failed


def _classify(exc: BaseException) -> str | None:
    """The status a training exception records; None when it is the task being stopped: a SystemExit or
    KeyboardInterrupt, an error raised while one was propagating (in its chain: TensorFlow's scope exits
    raise their own errors "from None", which keeps the stop as the context), or any error after this
    process was told to stop (runinfo.stopping, set by the preemption handler)."""
    if runinfo.stopping() or _stop_in_chain(exc):
        return None
    import sys

    callbacks = sys.modules.get("hpc_unet.train.callbacks")  # not imported yet: no Diverged (and no Keras
    if callbacks is not None and isinstance(exc, callbacks.Diverged):  # import to print its noise after bad data)
        return "diverged"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        return "oom"
    return "failed"


def _stop_in_chain(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a SystemExit or KeyboardInterrupt."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, KeyboardInterrupt | SystemExit):
            return True
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
    return False


def _predict(model: Any, x: Any, batch_size: int) -> Any:
    """Eager forward passes: skips tracing a predict function, which dominates tiny runs."""
    import numpy as np

    return np.concatenate([np.asarray(model(np.asarray(x[i:i + batch_size]), training=False))
                           for i in range(0, len(x), batch_size)])


class _Phases(dict):
    """Wall seconds per phase of a task (import, data, build, restore, first epoch, train, finalize)."""

    def __init__(self) -> None:
        super().__init__()
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self[name] = round(self.get(name, 0.0) + now - self._t, 4)
        self._t = now


@dataclass
class _Parts:
    """The compiled model of a run and the callbacks whose state its checkpoints carry."""

    builder: Any
    model: Any
    optimizer: Any
    early: Any
    plateau: Any
    callbacks: list[Any]
    compile_with: Any = None  # learning rate -> a fresh optimizer, the model compiled with it


def _build(row: dict[str, Any], study: Study, data: Any, state: dict[str, Any], start: int = 0,
           fresh: bool = True) -> _Parts:
    """The compiled model for a run that has ``start`` epochs done; ``fresh``: no checkpoint, so a
    fine-tuned run's weights come from its source model."""
    import keras

    from hpc_unet.models import build_model
    from hpc_unet.train import finetune
    from hpc_unet.train.callbacks import ResumableEarlyStopping, ResumableReduceLROnPlateau
    from hpc_unet.train.losses import get_loss
    from hpc_unet.train.metrics import make_metrics

    def builder() -> keras.Model:
        return build_model(row["architecture"], input_shape=tuple(data.train_x.shape[1:]),
                           base_filters=int(row["base_filters"]), depth=int(row["depth"]),
                           dropout=float(row["dropout"]), batch_norm=bool(row["batch_norm"]))

    model = builder()
    if str(row.get("init_from", "none")) != "none":
        source = finetune.load_source_weights(model, row) if fresh else _source_record(row)
        state["init_source"] = source
        data.provenance["source_model"] = source
        finetune.set_encoder_trainable(model, not finetune.frozen_after(row, start))

    def compile_with(learning_rate: float) -> Any:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate,
                                          clipnorm=float(row["clipnorm"]) if row["clipnorm"] else None)
        model.compile(optimizer=optimizer,
                      loss=get_loss(row["loss"], gamma=float(row["focal_gamma"]),
                                    class_balancing=bool(row["class_balancing"]), alpha=float(row["focal_alpha"])),
                      metrics=make_metrics(), jit_compile=bool(row["jit_compile"]),
                      run_eagerly=bool(row.get("run_eagerly", False)))
        # Adam's slots created inside the first traced train step make tf.function trace that step twice;
        # built here they exist before fit (measured, CPU seconds to the first smoke batch: UNet 3.9 -> 2.4,
        # Attention_ResUNet 8.0 -> 2.7). A second build (on restore) is a no-op.
        optimizer.build(model.trainable_variables)
        return optimizer

    optimizer = compile_with(float(row["learning_rate"]))
    state["param_count"] = int(model.count_params())
    state["device"] = device_name()
    import tensorflow as tf

    state["tf_version"] = tf.__version__
    patience = int(row["early_stopping_patience"]) if row["early_stopping"] else 10**9
    early = ResumableEarlyStopping(monitor="val_jacard_coef", mode="max", patience=patience)
    callbacks: list[keras.callbacks.Callback] = [early]
    plateau = None
    if row["reduce_lr"]:
        plateau = ResumableReduceLROnPlateau(monitor="val_jacard_coef", mode="max",
                                             factor=float(row["reduce_lr_factor"]),
                                             patience=int(row["reduce_lr_patience"]), min_lr=float(row["min_lr"]))
        callbacks.append(plateau)
    if row.get("tensorboard"):
        from hpc_unet.train.logs import tensorboard_callback

        callbacks.append(tensorboard_callback(study.run_dir(row["exp_id"])))
    return _Parts(builder, model, optimizer, early, plateau, callbacks, compile_with)


def _source_record(row: dict[str, Any]) -> dict[str, Any]:
    """What a resumed fine-tuned run records of its source (the weights come from its checkpoint)."""
    from hpc_unet.transfer.source import read_source

    info = read_source(Path(str(row["init_path"])))
    meta = info.metadata
    return {"path": str(info.path), "sha256": info.sha256, "exp_id": meta.get("exp_id", ""),
            "study_name": meta.get("study_name", ""), "architecture": info.architecture,
            "source_scaling": meta.get("scaling"), "source_data": meta.get("data"),
            "freeze": str(row.get("freeze", "none"))}


def _unfreeze(parts: _Parts) -> None:
    """Every layer trainable, with a fresh Adam at the current learning rate (finetune.py says why)."""
    import keras

    from hpc_unet.train.finetune import set_encoder_trainable

    lr = float(keras.ops.convert_to_numpy(parts.optimizer.learning_rate))
    set_encoder_trainable(parts.model, True)
    parts.optimizer = parts.compile_with(lr)


def _restore(parts: _Parts, bundle: Bundle | None, history: list[dict[str, Any]], state: dict[str, Any]) -> tuple[int, bool]:
    """Continue from ``bundle``: variables, callback state, history; return (epochs done, finished)."""
    start, finished = 0, False
    if bundle is not None:
        restore_variables(parts.model, parts.optimizer, bundle)
        parts.early.set_state(bundle.state["early_stopping"], bundle.best)
        if parts.plateau is not None:
            parts.plateau.set_state(bundle.state["reduce_lr"])
        history.extend(bundle.state["history"])
        start, finished = bundle.epoch, bool(bundle.state["finished"])
    state["resumed_from_epoch"] = start
    state["resumed_from_attempt"] = bundle.state.get("attempt_id", "") if bundle is not None else ""
    return start, finished


def _fit(row: dict[str, Any], study: Study, base: dict[str, Any], data: Any, parts: _Parts,
         history: list[dict[str, Any]], start: int, progress: Progress, phases: _Phases) -> None:
    """Train epochs ``start..epochs-1``; each epoch end hands a snapshot bundle to the background writer."""
    from hpc_unet.train.callbacks import EpochRecorder, WriterWatch, snapshot_variables
    from hpc_unet.train.pipeline import eval_dataset, steps_per_epoch, train_dataset

    exp_id, epochs, batch = row["exp_id"], int(row["epochs"]), int(row["batch_size"])
    model, early, plateau = parts.model, parts.early, parts.plateau
    # the "epoch-end" fault point fires once the epoch's bundle is in place, as when bundles were synchronous
    writer = CheckpointWriter(study.run_dir(exp_id) / "checkpoint", on_published=lambda _: fault_point("epoch-end"))
    last_best: list[Any] = [None]

    def on_epoch_done(epoch: int, done: bool) -> None:
        t0 = time.perf_counter()
        best = max(h["val_jacard_coef"] for h in history)
        best_weights = early.best_weights
        snapshot = Bundle(
            epoch=epoch, model=snapshot_variables(model.variables), best=best_weights,
            optimizer=snapshot_variables(parts.optimizer.variables), best_changed=best_weights is not last_best[0],
            state={"history": [dict(h) for h in history], "finished": done, "early_stopping": early.get_state(),
                   "reduce_lr": plateau.get_state() if plateau else None, "seed": int(row["seed"]),
                   "exp_id": exp_id, "attempt_id": base["attempt_id"]})
        last_best[0] = best_weights
        writer.submit(snapshot)
        progress.update(state="running", epoch=epoch, best_val_jaccard=best,
                        last_epoch_seconds=history[-1]["epoch_seconds"], lr=history[-1]["lr"],
                        checkpoint_blocked_seconds=round(time.perf_counter() - t0 + watch.blocked_seconds, 4),
                        checkpoint_write_seconds=round(writer.last_write_seconds, 4))
        write_history_csv(study.run_dir(exp_id), history)
        if "first_epoch" not in phases:
            phases.mark("first_epoch")

    watch = WriterWatch(writer)
    recorder = EpochRecorder(history, on_epoch_done, epochs=epochs)
    progress.update(state="running", epoch=start)
    try:
        for first, last in _segments(row, start, epochs):
            if recorder.finished or recorder.diverged is not None:
                break  # early stopping (or a NaN) ended the run in the frozen phase
            if first > start or (first == start and _needs_unfreeze(row, start)):
                _unfreeze(parts)
            keep_best = early.restore_best_weights
            early.restore_best_weights = last == epochs  # a segment's end must not swap in the best weights
            if first > start:  # fit resets the callbacks at its start: carry their state over
                early.set_state(early.get_state(), early.best_weights)
                if plateau is not None:
                    plateau.set_state(plateau.get_state())
            model.fit(train_dataset(data.train_x, data.train_y, batch, int(row["seed"]), epochs, first,
                                    augment=row.get("augment", "none")),
                      validation_data=eval_dataset(data.val_x, data.val_y, batch), epochs=last, initial_epoch=first,
                      steps_per_epoch=steps_per_epoch(len(data.train_x), batch),
                      callbacks=[*parts.callbacks, watch, recorder], verbose=0, shuffle=False)
            early.restore_best_weights = keep_best
    except BaseException:
        writer.close(raise_error=False)  # the bundle in flight is published (or not) before we leave
        raise
    writer.close()
    if recorder.diverged is not None:
        raise recorder.diverged


def _segments(row: dict[str, Any], start: int, epochs: int) -> list[tuple[int, int]]:
    """(first, last) epoch ranges trained by one fit each: two when the encoder unfreezes in between."""
    from hpc_unet.train.finetune import unfreeze_epoch

    switch = unfreeze_epoch(row)
    if switch is None or switch <= start or switch >= epochs:
        return [(start, epochs)]
    return [(start, switch), (switch, epochs)]


def _needs_unfreeze(row: dict[str, Any], start: int) -> bool:
    """A run resumed from the checkpoint of epoch ``unfreeze_epoch`` was built frozen; it unfreezes first."""
    from hpc_unet.train.finetune import unfreeze_epoch

    return unfreeze_epoch(row) == start


def _finalize(row: dict[str, Any], study: Study, base: dict[str, Any], data: Any, parts: _Parts,
              history: list[dict[str, Any]], state: dict[str, Any], best_weights: Any, progress: Progress,
              phases: _Phases) -> dict[str, Any]:
    """Best weights -> validation overlaps, examples, test scores, best.keras; then the shard (commit point)."""
    import numpy as np

    from hpc_unet.predict.metadata import model_metadata
    from hpc_unet.train.metrics import patch_overlaps
    from hpc_unet.train.pipeline import eval_dataset

    exp_id, epochs, batch = row["exp_id"], int(row["epochs"]), int(row["batch_size"])
    model = parts.model
    if best_weights is not None:
        model.set_weights(best_weights)
    val_pred = _predict(model, data.val_x, batch)
    inter, union = patch_overlaps(np.asarray(data.val_y), val_pred)
    save_val_patches(study.run_dir(exp_id) / VAL_PATCHES_FILE, data.val_x, data.val_y, val_pred)
    examples = study.run_dir(exp_id) / EXAMPLES_FILE
    save_run_examples(examples, lambda x: _predict(model, x, batch), data.val_x, data.val_y, val_pred,
                      data.test_x, data.test_y)
    test: dict[str, float] = {"test_jaccard": math.nan, "test_iou": math.nan, "test_dice": math.nan}
    if data.test_x is not None:
        scores = model.evaluate(eval_dataset(data.test_x, data.test_y, batch), return_dict=True, verbose=0)
        test = {"test_jaccard": float(scores["jacard_coef"]), "test_iou": float(scores["iou"]),
                "test_dice": float(scores["dice"])}
        # per test patch, thresholded as test_iou: intervals over test patches (analysis/transfer.py)
        t_inter, t_union = patch_overlaps(np.asarray(data.test_y),
                                          (_predict(model, data.test_x, batch) > 0.5).astype(np.float32))
        test.update(test_patch_intersection=t_inter.tolist(), test_patch_union=t_union.tolist())
    metadata = model_metadata(row, data.provenance, data.train_x.shape[1], data.train_x.shape[-1])
    if state.get("init_source"):  # a fine-tuned model names the model it started from
        metadata["init_source"] = {k: state["init_source"].get(k) for k in ("path", "sha256", "exp_id", "study_name")}
    model_bytes = _save_model(parts.builder, model.get_weights(), study.run_dir(exp_id) / "model" / "best.keras",
                              metadata)
    phases.mark("finalize")
    summary = {**base, **state, **summarize_history(history, epochs), **test, "status": "completed",
               "val_patch_intersection": inter.tolist(), "val_patch_union": union.tolist(),
               "model_bytes": model_bytes, "peak_gpu_bytes": _peak_gpu_bytes(),
               "max_rss_bytes": runinfo.max_rss_bytes(), "finished_at": now_iso()}
    learning = learned_columns(summary, np.asarray(data.val_y))
    state = learning.pop("learning")  # derived again on read (train.summary.learning_of): not a shard column
    summary.update(learning, examples=str(examples.relative_to(study.root)))
    write_shard(study, summary, history)
    progress.update(state="completed", epoch=len(history), best_val_jaccard=summary["best_val_jaccard"],
                    finished_at=time.time(), learned=summary["learned"], learning=state)
    fault_point("after-shard")
    clear(study.run_dir(exp_id) / "checkpoint")
    return summary


def _train(row: dict[str, Any], study: Study, base: dict[str, Any], history: list[dict[str, Any]],
           state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Device check, data, model, restore, fit, finalize; ``history`` and ``state`` stay readable to the
    caller, which writes the failure shard when this raises."""
    phases = _Phases()
    state["phase_seconds"] = phases
    from hpc_unet.data import prepare_for_row
    from hpc_unet.data.budget import apply_budget

    # An allocated GPU that TensorFlow cannot see fails before the data is read (the cache of a large
    # dataset takes minutes); without a GPU requirement this imports nothing, so the data is read next,
    # NumPy only, before TensorFlow starts: a bad data file is then the first line a user sees.
    _select_device(row, study)
    data = apply_budget(prepare_for_row(row, study), float(row.get("train_fraction", 1.0)))
    phases.mark("data")
    state["data_provenance"] = data.provenance
    configure_tensorflow(row)
    phases.mark("import")
    bundle = load_latest(study.run_dir(row["exp_id"]) / "checkpoint")
    parts = _build(row, study, data, state, start=bundle.epoch if bundle is not None else 0, fresh=bundle is None)
    phases.mark("build")
    start, finished = _restore(parts, bundle, history, state)
    phases.mark("restore")
    if not finished and start < int(row["epochs"]):
        _fit(row, study, base, data, parts, history, start, progress, phases)
        best_weights = parts.early.best_weights
    else:
        best_weights = bundle.best if bundle is not None else None
    phases.mark("train")
    return _finalize(row, study, base, data, parts, history, state, best_weights, progress, phases)
