"""Per-patch scores of a run's validation predictions, and its worst and best patches, for the report.

Written once at the end of training (with the best weights) as one small compressed ``.npz`` beside the
model, so the analysis, which must not import TensorFlow or load a model, can show each run's overlays
(image, truth, thresholded prediction, false positives and negatives) and per-patch IoU. Only the
``K`` worst and ``K`` best patches are stored as pixels (uint8); the counts are kept for every patch.
NumPy only: this module is imported on the login node too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpc_unet.study import atomic_write
from hpc_unet.train.examples import to_u8

VAL_PATCHES_FILE = "val_patches.npz"
K = 4
THRESHOLD = 0.5  # as the thresholded IoU metric (train/metrics.ThresholdedIoU): prediction > 0.5


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(len(a), -1)


def patch_counts(masks: np.ndarray, probs: np.ndarray, threshold: float = THRESHOLD) -> dict[str, np.ndarray]:
    """True positives, false positives and false negatives per patch (prediction > threshold, truth > 0.5)."""
    t = _flat(masks) > 0.5
    p = _flat(probs) > threshold
    if t.shape != p.shape:
        raise ValueError(f"masks {np.shape(masks)} and predictions {np.shape(probs)} differ in shape")
    return {"tp": (t & p).sum(axis=1).astype(np.int64), "fp": (~t & p).sum(axis=1).astype(np.int64),
            "fn": (t & ~p).sum(axis=1).astype(np.int64)}


def patch_iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """IoU per patch, tp / (tp + fp + fn); NaN where truth and prediction are both empty (nothing to score)."""
    union = np.asarray(tp + fp + fn, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def rank_patches(iou: np.ndarray, k: int = K, has_truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` worst (lowest IoU first) and ``k`` best (highest first) scored patches.

    Patches with nothing to score (NaN) are never chosen; ties keep the patch order. With ``has_truth``
    only patches whose truth has foreground are ranked (while there are ``k`` of them): a patch of
    background with a few false-positive pixels has IoU 0 and would otherwise be every run's "worst".
    When fewer than 2k patches are scored, the two lists share patches rather than show fewer.
    """
    scored = np.flatnonzero(np.isfinite(iou))
    if has_truth is not None and np.count_nonzero(np.asarray(has_truth)[scored]) >= k:
        scored = scored[np.asarray(has_truth)[scored]]
    order = scored[np.argsort(iou[scored], kind="stable")]
    worst = order[:k]
    best = order[::-1][:k] if len(order) else order
    return worst.astype(np.int64), best.astype(np.int64)


def save_val_patches(path: Path, images: np.ndarray, masks: np.ndarray, probs: np.ndarray,
                     k: int = K) -> dict[str, np.ndarray]:
    """Write the per-patch counts and IoU of every validation patch and the pixels of the worst/best ``k``."""
    counts = patch_counts(masks, probs)
    iou = patch_iou(counts["tp"], counts["fp"], counts["fn"])
    worst, best = rank_patches(iou, k, has_truth=(counts["tp"] + counts["fn"]) > 0)
    shown = np.unique(np.r_[worst, best]).astype(np.int64)
    images = np.asarray(images)
    arrays = {**counts, "iou": iou.astype(np.float32), "worst": worst, "best": best, "index": shown,
              "pixels": np.asarray(_flat(masks).shape[1], dtype=np.int64), "threshold": np.asarray(THRESHOLD),
              "image": to_u8(images[shown]), "mask": to_u8(np.asarray(masks)[shown]),
              "prediction": to_u8(np.asarray(probs)[shown]),
              "predicted": (_flat(probs)[shown] > THRESHOLD).reshape(np.shape(masks[shown])[:3]).astype(np.uint8)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(Path(path), write)
    return arrays


def read_val_patches(path: Path) -> dict[str, np.ndarray] | None:
    """The stored file, or None when it is absent or unreadable (runs trained before it existed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None
