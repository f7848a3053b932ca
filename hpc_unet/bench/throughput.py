"""Training throughput: our training path against the original study's, in the same process.

*ours*: ``train.pipeline.train_dataset`` + ``eval_dataset`` and the stateful metrics (JacardCoef,
ThresholdedIoU, Dice), compiled and fitted exactly as ``train/run.py`` does (without its callbacks'
checkpoint writes, which ``bench overhead`` times separately).

*reference*: the original study's loop: the whole dataset as NumPy arrays into
``model.fit(x, y, batch_size=b, validation_data=(vx, vy), shuffle=True)`` with a per-batch *function*
metric ``jacard_coef``. Both use the same model, seed, loss (binary focal, gamma 2) and optimizer
(Adam, clipnorm 1), so the ratio isolates the input pipeline and the metrics.

Each (architecture, batch) fits ``1 + warm_epochs`` epochs per path; the first epoch (graph tracing)
is dropped and the median of the warm epochs is reported. Train and validation time are taken apart
with on_test_begin, so the epoch time at the study's protocol (1,780 train + 198 val patches) is
extrapolated from per-image costs. The paths of one configuration run in threads that take turns epoch by epoch (RoundRobin), so
neighbouring epochs see the same load on a shared machine; ``ratio_paired`` is the median over warm
rounds of reference epoch seconds / ours.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hpc_unet.bench.common import machine, median, print_table, quiet_tensorflow
from hpc_unet.spec import ARCHITECTURES

PROTOCOL_TRAIN = 1780
PROTOCOL_VAL = 198
PATHS = ("ours", "reference")
DIAGNOSTIC_PATHS = ("ours_fn_metric", "reference_stateful")


@dataclass
class TrainBenchConfig:
    size: int = 64
    base: int = 8
    depth: int = 4
    architectures: tuple[str, ...] = ARCHITECTURES
    batches: tuple[int, ...] = (8, 16, 32)
    n_train: int = 256
    n_val: int = 32
    warm_epochs: int = 3
    precision: str = "float32"
    jit_compile: bool = False
    learning_rate: float = 1e-3
    seed: int = 0
    diagnose: bool = False
    paths: tuple[str, ...] = field(default=PATHS)


def jacard_coef(y_true: Any, y_pred: Any) -> Any:
    """The original study's metric: soft Jaccard of one batch (Keras averages it over batches)."""
    from keras import ops

    y_true = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    inter = ops.sum(y_true * y_pred)
    return (inter + 1.0) / (ops.sum(y_true) + ops.sum(y_pred) - inter + 1.0)


def make_data(cfg: TrainBenchConfig) -> dict[str, Any]:
    """Random images in [0, 1] and blob-like binary masks (content does not change the cost)."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed)

    def pair(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.random((n, cfg.size, cfg.size, 1), dtype=np.float32)
        y = (x > 0.85).astype(np.float32)
        return x, y

    tx, ty = pair(cfg.n_train)
    vx, vy = pair(cfg.n_val)
    return {"train_x": tx, "train_y": ty, "val_x": vx, "val_y": vy}


class RoundRobin:
    """Lets several ``model.fit`` calls (one per thread) run one epoch at a time, in turn.

    Adjacent epochs of different paths then see the same machine load, which matters on a shared CPU;
    each path is still one uninterrupted ``fit`` as in ``train/run.py``.
    """

    def __init__(self, n: int) -> None:
        import threading

        self.cond = threading.Condition()
        self.turn = 0
        self.done = [False] * n

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def release(self, i: int, finished: bool = False) -> None:
        with self.cond:
            self.done[i] = self.done[i] or finished
            n = len(self.done)
            for k in range(1, n + 1):
                nxt = (i + k) % n
                if not self.done[nxt]:
                    self.turn = nxt
                    break
            self.cond.notify_all()


def _timer_class() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Waits for its turn, then times the epoch: train (begin -> validation begin) and validation."""

        def __init__(self, baton: RoundRobin, index: int) -> None:
            super().__init__()
            self.baton, self.index = baton, index
            self.epochs: list[dict[str, float]] = []
            self._t0 = self._tv = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.baton.wait(self.index)
            self._t0 = self._tv = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._tv = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            end = time.perf_counter()
            tv = self._tv if self._tv > self._t0 else end
            self.epochs.append({"train_s": tv - self._t0, "val_s": end - tv, "epoch_s": end - self._t0})
            self.baton.release(self.index, finished=epoch + 1 >= self.params["epochs"])

    return EpochTimer


def _prepare(path: str, arch: str, batch: int, data: dict[str, Any], cfg: TrainBenchConfig) -> Any:
    """Build and compile one model for ``path``; returns fit(callbacks) -> keras History."""
    import keras

    from hpc_unet.models import build_model
    from hpc_unet.train.losses import get_loss
    from hpc_unet.train.metrics import JacardCoef, make_metrics
    from hpc_unet.train.pipeline import eval_dataset, steps_per_epoch, train_dataset
    from hpc_unet.train.run import configure_tensorflow

    configure_tensorflow({"precision": cfg.precision, "seed": cfg.seed})
    model = build_model(arch, input_shape=(cfg.size, cfg.size, 1), base_filters=cfg.base, depth=cfg.depth)
    metrics: list[Any] = {"ours": make_metrics, "reference_stateful": lambda: [JacardCoef()],
                          }.get(path, lambda: [jacard_coef])()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate, clipnorm=1.0),
                  loss=get_loss("focal", gamma=2.0), metrics=metrics, jit_compile=cfg.jit_compile)
    epochs = 1 + cfg.warm_epochs
    if path in ("ours", "ours_fn_metric"):
        train = train_dataset(data["train_x"], data["train_y"], batch, cfg.seed, epochs)
        val = eval_dataset(data["val_x"], data["val_y"], batch)
        steps = steps_per_epoch(len(data["train_x"]), batch)
        return lambda callbacks: model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps,
                                           callbacks=callbacks, verbose=0, shuffle=False)
    return lambda callbacks: model.fit(data["train_x"], data["train_y"], batch_size=batch,
                                       validation_data=(data["val_x"], data["val_y"]), epochs=epochs,
                                       shuffle=True, callbacks=callbacks, verbose=0)


def fit_paths(paths: list[str], arch: str, batch: int, data: dict[str, Any],
              cfg: TrainBenchConfig) -> list[dict[str, Any]]:
    """Fit every path for (arch, batch), epochs interleaved round-robin; per-path timing rows."""
    import threading

    import keras

    fits = [_prepare(p, arch, batch, data, cfg) for p in paths]
    baton = RoundRobin(len(paths))
    timers = [_timer_class()(baton, i) for i in range(len(paths))]
    results: list[Any] = [None] * len(paths)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        keras.mixed_precision.set_global_policy(cfg.precision)  # Keras global state is per thread
        try:
            t0 = time.perf_counter()
            hist = fits[i]([timers[i]])
            results[i] = (hist, time.perf_counter() - t0)
        except BaseException as exc:  # keep the others from waiting forever
            errors.append(exc)
            baton.release(i, finished=True)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    fits.clear()
    keras.backend.clear_session()  # free this configuration's models and traced graphs
    rows = []
    n_train, n_val = len(data["train_x"]), len(data["val_x"])
    for path, timer, (hist, total) in zip(paths, timers, results, strict=True):
        warm = timer.epochs[1:] or timer.epochs
        train_s, val_s = median(e["train_s"] for e in warm), median(e["val_s"] for e in warm)
        rows.append({
            "path": path, "architecture": arch, "batch": batch,
            "first_epoch_s": timer.epochs[0]["epoch_s"], "warm_epoch_s": median(e["epoch_s"] for e in warm),
            "warm_train_s": train_s, "warm_val_s": val_s, "warm_epochs": [e["epoch_s"] for e in warm],
            "train_images_per_s": n_train / train_s if train_s > 0 else float("nan"),
            "epoch_images_per_s": n_train / (train_s + val_s) if train_s + val_s > 0 else float("nan"),
            "protocol_epoch_s": train_s / n_train * PROTOCOL_TRAIN + val_s / n_val * PROTOCOL_VAL,
            "fit_s": total, "final_loss": float(hist.history["loss"][-1]),
            "final_val_jaccard": float(hist.history["val_jacard_coef"][-1]),
        })
    return rows


def bench_train(cfg: TrainBenchConfig) -> dict[str, Any]:
    """Run every (architecture, batch, path); returns the JSON payload (rows + ours/reference ratios)."""
    quiet_tensorflow()
    import tensorflow as tf

    from hpc_unet.train.run import device_name

    data = make_data(cfg)
    paths = list(cfg.paths) + (list(DIAGNOSTIC_PATHS) if cfg.diagnose else [])
    rows: list[dict[str, Any]] = []
    for arch in cfg.architectures:
        for batch in cfg.batches:
            rows.extend(fit_paths(paths, arch, batch, data, cfg))
    ratios = []
    for arch in cfg.architectures:
        for batch in cfg.batches:
            got = {r["path"]: r for r in rows if r["architecture"] == arch and r["batch"] == batch}
            if "ours" in got and "reference" in got:
                ours, ref = got["ours"], got["reference"]
                paired = [r / o for o, r in zip(ours["warm_epochs"], ref["warm_epochs"], strict=False) if o > 0]
                entry = {"architecture": arch, "batch": batch,
                         "ours_images_per_s": ours["epoch_images_per_s"],
                         "reference_images_per_s": ref["epoch_images_per_s"],
                         "ratio_epoch": ours["epoch_images_per_s"] / ref["epoch_images_per_s"],
                         "ratio_paired": median(paired),
                         "ratio_train": ours["train_images_per_s"] / ref["train_images_per_s"],
                         "ratio_val": ref["warm_val_s"] / ours["warm_val_s"] if ours["warm_val_s"] else None,
                         "ours_protocol_epoch_s": ours["protocol_epoch_s"],
                         "reference_protocol_epoch_s": ref["protocol_epoch_s"]}
                ratios.append(entry)
    payload = {"bench": "train", "config": {**asdict(cfg), "paths": paths}, "machine": machine(),
               "device": device_name(), "tf_version": tf.__version__, "rows": rows, "ratios": ratios,
               "ratio_epoch_median": median(r["ratio_epoch"] for r in ratios) if ratios else None}
    return payload


def print_train(payload: dict[str, Any]) -> None:
    cfg = payload["config"]
    print_table(
        f"Training throughput, {cfg['size']}x{cfg['size']} base {cfg['base']} depth {cfg['depth']}, "
        f"{cfg['precision']}{' jit' if cfg['jit_compile'] else ''} on {payload['device']} "
        f"({cfg['n_train']} train + {cfg['n_val']} val, median of {cfg['warm_epochs']} warm epochs)",
        ["architecture", "batch", "path", "img/s (epoch)", "img/s (train)", "warm epoch s", "first epoch s",
         f"epoch s @ {PROTOCOL_TRAIN}+{PROTOCOL_VAL}"],
        [[r["architecture"], r["batch"], r["path"], r["epoch_images_per_s"], r["train_images_per_s"],
          r["warm_epoch_s"], r["first_epoch_s"], r["protocol_epoch_s"]] for r in payload["rows"]],
    )
    if payload["ratios"]:
        print_table(
            "ours / reference (throughput ratio; > 1 means ours is faster)",
            ["architecture", "batch", "ours img/s", "ref img/s", "ratio epoch", "paired", "train", "val"],
            [[r["architecture"], r["batch"], r["ours_images_per_s"], r["reference_images_per_s"],
              r["ratio_epoch"], r["ratio_paired"], r["ratio_train"], r["ratio_val"]] for r in payload["ratios"]],
            caption=f"median ratio (epoch): {payload['ratio_epoch_median']:.3f}",
        )
