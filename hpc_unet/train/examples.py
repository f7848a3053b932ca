"""A few example patches per run (image, ground truth, prediction) for the report's overlays.

Written at the end of training next to the model, as uint8 arrays in one small ``.npz``, so the
analysis (which must not import TensorFlow) can draw overlays without loading a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hpc_unet.study import atomic_write

EXAMPLES_FILE = "examples.npz"
N_EXAMPLES = 3


def pick_examples(masks: np.ndarray, n: int = N_EXAMPLES) -> np.ndarray:
    """Indices of ``n`` patches spread over the foreground amounts present (most foreground first).

    Patches without foreground are used only when there are not enough others, so the overlays show
    the structure being segmented.
    """
    amount = np.asarray(masks, dtype=np.float64).reshape(len(masks), -1).mean(axis=1)
    order = np.argsort(-amount, kind="stable")
    fg = order[amount[order] > 0]
    pool = fg if len(fg) >= n else order
    if len(pool) <= n:
        return pool
    return pool[np.linspace(0, len(pool) - 1, n).round().astype(int)]


def to_u8(a: np.ndarray) -> np.ndarray:
    """A [0, 1] patch (first channel) as uint8 for storage; val_patches uses it too."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 4:
        a = a[..., 0]
    return np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)


def write_examples(path: Path, images: np.ndarray, masks: np.ndarray, predictions: np.ndarray,
                   split: str) -> list[int]:
    """Store the chosen patches' image (first channel), mask and predicted probability as uint8."""
    idx = pick_examples(masks)
    arrays = {"image": to_u8(np.asarray(images)[idx]), "mask": to_u8(np.asarray(masks)[idx]),
              "prediction": to_u8(np.asarray(predictions)[idx]), "index": np.asarray(idx, dtype=np.int64),
              "split": np.asarray(split)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)
    return [int(i) for i in idx]


def save_run_examples(path: Path, predict: Callable[[np.ndarray], np.ndarray], val_x: np.ndarray,
                      val_y: np.ndarray, val_pred: np.ndarray, test_x: np.ndarray | None = None,
                      test_y: np.ndarray | None = None) -> None:
    """Examples from the held-out test patches when there are any (predicted here), else validation."""
    if test_x is not None and test_y is not None and len(test_x):
        idx = pick_examples(test_y)
        x, y = np.asarray(test_x)[idx], np.asarray(test_y)[idx]
        write_examples(path, x, y, predict(x), "test")
    else:
        write_examples(path, val_x, val_y, val_pred, "validation")


def read_examples(path: Path) -> dict[str, np.ndarray] | None:
    """The stored examples, or None when the file is absent or unreadable (older runs have none)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError):
        return None
