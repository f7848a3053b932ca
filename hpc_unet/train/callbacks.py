"""Keras callbacks whose state survives a restart, and the epoch recorder that checkpoints it.

Keras resets EarlyStopping and ReduceLROnPlateau in ``on_train_begin``; after a resume they must
continue with the wait counters, best values and best weights of the interrupted run, or the run stops
at a different epoch with different weights (seen with Keras' BackupAndRestore, which restores only
weights, optimizer and epoch). The subclasses take a pending state and apply it right after Keras's
reset.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np


def snapshot_variables(variables: list[Any]) -> list[Any]:
    """Immutable tensors of ``variables``, e.g. for the background checkpoint writer.

    A read of a TensorFlow resource variable shares its buffer until the next update, which then copies
    (copy on write), so the snapshot costs no copy on the training thread and later steps cannot change
    it. ``get_weights()`` instead copies every variable to NumPy: ~0.1-0.5 s at base 64 (docs/bench.md).
    """
    import tensorflow as tf

    return [tf.convert_to_tensor(v.value) for v in variables]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping with ``restore_best_weights`` whose state can be saved and restored.

    The best weights are tensor snapshots (``snapshot_variables(model.weights)``), not Keras's NumPy
    copies, so an improving epoch does not stall training; ``set_weights`` takes either.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(restore_best_weights=True, **kwargs)
        self._pending: tuple[dict[str, Any], list[np.ndarray] | None] | None = None

    def get_state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch}

    def set_state(self, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        self._pending = (state, best_weights)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Keras 3's EarlyStopping.on_epoch_end (restore_best_weights=True), with snapshots for copies."""
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.best_weights is None:
            self.best_weights = snapshot_variables(self.model.weights)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            self.best_weights = snapshot_variables(self.model.weights)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._pending is not None:
            state, weights = self._pending
            self.wait, self.best = int(state["wait"]), state["best"]
            self.best_epoch, self.stopped_epoch = int(state["best_epoch"]), int(state["stopped_epoch"])
            self.best_weights = weights
            self._pending = None


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose wait/best/cooldown survive a restart (the lr itself is optimizer state)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pending: dict[str, Any] | None = None

    def get_state(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._pending is not None:
            self.wait, self.best = int(self._pending["wait"]), self._pending["best"]
            self.cooldown_counter = int(self._pending["cooldown_counter"])
            self._pending = None


class Diverged(Exception):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, logs: dict[str, Any]) -> None:
        super().__init__(f"loss is not finite at epoch {epoch} (loss={logs.get('loss')}, "
                         f"val_loss={logs.get('val_loss')})")
        self.epoch = epoch


class WriterWatch(keras.callbacks.Callback):
    """Raises a background checkpoint write's error in the epoch after it, before that epoch is recorded:
    checked after every batch, and at the epoch's end by waiting for the write (which the next bundle's
    submit would wait for anyway). So the failure shard, progress.json and status all count the epochs
    whose bundles were handed over, not one more. Place it just before :class:`EpochRecorder`."""

    def __init__(self, writer: Any) -> None:
        super().__init__()
        self.writer = writer
        self.blocked_seconds = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.writer.raise_if_failed()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        t0 = time.perf_counter()
        self.writer.wait()
        self.blocked_seconds = time.perf_counter() - t0


class EpochRecorder(keras.callbacks.Callback):
    """Records each epoch, stops on NaN/inf, and hands the end-of-epoch state to ``on_epoch_done``.

    Place it last, so that EarlyStopping and ReduceLROnPlateau have updated their state (and the lr)
    before the checkpoint is taken.
    """

    def __init__(self, history: list[dict[str, Any]], on_epoch_done: Callable[[int, bool], None],
                 epochs: int | None = None) -> None:
        super().__init__()
        self.epochs = epochs  # the run's epochs, when one fit trains only part of them (fine-tuning phases)
        self.finished = False
        self.history = history
        self.on_epoch_done = on_epoch_done
        self.diverged: Diverged | None = None
        self._t0 = 0.0
        self._lr = 0.0
        if os.environ.get("HPC_UNET_FAULT", "").startswith("mid-epoch"):
            self.on_train_batch_end = self._mid_epoch_fault

    def _mid_epoch_fault(self, batch: int, logs: dict | None = None) -> None:
        from hpc_unet.study import fault_point

        if fault_point("mid-epoch") == "nan":  # poison the weights: every later loss is really NaN
            for weight in self.model.trainable_weights:
                weight.assign(weight * math.nan)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        record = {"epoch": epoch + 1, "lr": self._lr, "epoch_seconds": time.perf_counter() - self._t0}
        for key in ("loss", "val_loss", "jacard_coef", "val_jacard_coef", "iou", "val_iou", "dice", "val_dice"):
            record[key] = float(logs.get(key, math.nan))
        if not (math.isfinite(record["loss"]) and math.isfinite(record["val_loss"])):
            self.diverged = Diverged(epoch + 1, record)
            self.model.stop_training = True
            return
        self.history.append(record)
        finished = bool(self.model.stop_training) or epoch + 1 >= (self.epochs or self.params["epochs"])
        self.finished = finished
        self.on_epoch_done(epoch + 1, finished)
