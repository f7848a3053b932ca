"""Load a model and turn raw images into probability maps (imports TensorFlow; only predict/evaluate use it).

``LoadedModel.probabilities(raw_slices)`` normalises each ``(H, W, C)`` slice with the model's training
scaling (``hpc_unet.data.normalize``: the same function the cache builder uses), cuts the padded slices
into overlapping tiles, runs them through the network in fixed-size batches (one traced function for any
input) and blends the tiles back with Gaussian weights.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.data import normalize
from hpc_unet.errors import UserError
from hpc_unet.predict import metadata, tiles


@dataclass
class LoadedModel:
    """A Keras model with its metadata; ``name`` labels it in tables (the experiment id or the file)."""

    model: Any
    meta: dict[str, Any]
    name: str
    path: Path
    batch_size: int = 16

    @property
    def patch(self) -> int:
        return int(self.meta["patch_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", metadata.THRESHOLD))

    def __post_init__(self) -> None:
        import tensorflow as tf

        spec = tf.TensorSpec((None, self.patch, self.patch, self.channels), tf.float32)
        model = self.model
        self._forward = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                                    input_signature=[spec])

    def check_channels(self, stack: np.ndarray, where: str) -> None:
        if stack.shape[-1] != self.channels:
            fix = ("convert the images to grayscale" if self.channels == 1 else "save the images as RGB")
            raise UserError(f"{where} has {stack.shape[-1]} channel(s) but the model {self.name} was trained on "
                            f"{self.channels}; {fix}")

    def normalized(self, stack: np.ndarray) -> np.ndarray:
        """Raw ``(n, H, W, C)`` -> float32 in [0, 1] with the model's training scaling."""
        return normalize.normalize_stack(stack, self.meta["scaling"])

    def probabilities(self, slices: list[np.ndarray], advance: Callable[[int], None] | None = None
                      ) -> list[np.ndarray]:
        """Normalised ``(H, W, C)`` slices -> ``(H, W)`` float32 foreground probabilities.

        Tiles of all given slices share batches, so many small images run as fast as one large one."""
        p = self.patch
        weights = tiles.gaussian_weights(p)
        padded = [tiles.pad_to_tile(s, p) for s in slices]
        blenders = [tiles.Blender(img.shape[0], img.shape[1], weights) for img, _ in padded]
        jobs = [(i, y, x) for i, (img, _) in enumerate(padded) for y, x in tiles.windows(img.shape[0], img.shape[1], p)]
        batch = np.zeros((self.batch_size, p, p, self.channels), np.float32)
        for lo in range(0, len(jobs), self.batch_size):
            chunk = jobs[lo:lo + self.batch_size]
            for k, (i, y, x) in enumerate(chunk):
                batch[k] = padded[i][0][y:y + p, x:x + p]
            out = self._forward(batch[:len(chunk)]).numpy()
            for k, (i, y, x) in enumerate(chunk):
                blenders[i].add(y, x, out[k, ..., 0])
            if advance is not None:
                advance(len(chunk))
        return [b.result(size) for b, (_, size) in zip(blenders, padded, strict=True)]

    def tile_count(self, shapes: list[tuple[int, int]]) -> int:
        p = self.patch
        return sum(len(tiles.starts(max(h, p), p)) * len(tiles.starts(max(w, p), p)) for h, w in shapes)


def _configure() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    threads = int(os.environ.get("HPC_UNET_THREADS", "0") or 0)
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass  # the runtime already started in this process (tests): keep its settings
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass


def load_model(path: Path, name: str = "", batch_size: int = 16) -> LoadedModel:
    """A ``.keras`` file saved by a study (``safe_mode``: no code is loaded) with its embedded metadata.

    A file without metadata (saved before predict existed, or by other code) works when its input shape
    is square: the patch size and channels come from it and the scaling is ``auto`` per image."""
    path = Path(path).expanduser()
    meta = metadata.read(path)
    _configure()
    import keras

    import hpc_unet.train.metrics  # noqa: F401  (registers the study's metrics for compiled models)

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError/TypeError/OSError for foreign or damaged files
        raise UserError(f"--model: cannot load {path} ({type(exc).__name__}: {str(exc)[:200]}); pass a .keras "
                        "file saved by a study (runs/<exp>/model/best.keras)") from None
    shape = tuple(model.input_shape[1:])
    if meta is None:
        if len(shape) != 3 or shape[0] is None or shape[0] != shape[1]:
            raise UserError(f"--model: {path} has no hpc-unet metadata and input shape {shape}; retrain it with "
                            "this version of hpc-unet")
        print(f"hpc-unet: warning: {path} carries no hpc-unet metadata; using its input shape {shape} and "
              "normalize = 'auto' per image", file=sys.stderr)
        meta = {"format": 0, "patch_size": shape[0], "channels": shape[2], "threshold": metadata.THRESHOLD,
                "scaling": {"method": "auto", "requested": "auto", "per": "image", "percentile_low": 1.0,
                            "percentile_high": 99.8, "dtype": "", "low": None, "high": None},
                "mask": "binary", "exp_id": ""}
    return LoadedModel(model=model, meta=meta, name=name or meta.get("exp_id") or path.stem, path=path,
                       batch_size=batch_size)
