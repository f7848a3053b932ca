"""IoU and Dice of binary masks, per image and pooled, with bootstrap intervals. NumPy only.

Pooled ("overall") scores add up intersections and unions over all images before dividing, like the
training metrics, so a large image weighs more than a small one. An image whose mask and prediction are
both empty scores 1 (nothing to find, nothing found). Intervals resample the scored units (images, or
fixed blocks of pixels when there are few images) with replacement and pool each replicate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP = 2000
MIN_UNITS = 10  # fewer images than this: bootstrap over blocks of pixels instead


def counts(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    """(intersection, sum(truth), sum(pred)) of two boolean masks."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    return int(np.count_nonzero(t & p)), int(np.count_nonzero(t)), int(np.count_nonzero(p))


def iou(inter: float, st: float, sp: float) -> float:
    union = st + sp - inter
    return 1.0 if union == 0 else inter / union


def dice(inter: float, st: float, sp: float) -> float:
    return 1.0 if st + sp == 0 else 2 * inter / (st + sp)


def block_counts(truth: np.ndarray, pred: np.ndarray, block: int) -> np.ndarray:
    """``(n, 3)`` counts per ``block x block`` tile of a 2-D mask pair (edge tiles are smaller)."""
    rows = []
    for y in range(0, truth.shape[0], block):
        for x in range(0, truth.shape[1], block):
            rows.append(counts(truth[y:y + block, x:x + block], pred[y:y + block, x:x + block]))
    return np.array(rows, np.float64).reshape(-1, 3)


def pooled(c: np.ndarray) -> dict[str, float]:
    i, st, sp = np.asarray(c, np.float64).reshape(-1, 3).sum(axis=0)
    return {"iou": iou(i, st, sp), "dice": dice(i, st, sp)}


def bootstrap(units: np.ndarray, seed: int = 0, n: int = BOOTSTRAP, level: float = 0.95
              ) -> dict[str, list[float]]:
    """Percentile intervals of pooled IoU and Dice over ``units`` (``(n, 3)`` counts) resampled with
    replacement; a single unit gives a zero-width interval."""
    units = np.asarray(units, np.float64).reshape(-1, 3)
    if len(units) < 2:
        p = pooled(units)
        return {"iou": [p["iou"]] * 2, "dice": [p["dice"]] * 2}
    idx = np.random.default_rng(seed).integers(0, len(units), (n, len(units)))
    sums = units[idx].sum(axis=1)  # (n, 3)
    i, st, sp = sums[:, 0], sums[:, 1], sums[:, 2]
    union = st + sp - i
    ious = np.where(union > 0, i / np.where(union > 0, union, 1), 1.0)
    dices = np.where(st + sp > 0, 2 * i / np.where(st + sp > 0, st + sp, 1), 1.0)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"iou": np.percentile(ious, q).tolist(), "dice": np.percentile(dices, q).tolist()}


def _pooled_iou(sums: np.ndarray) -> np.ndarray:
    i, st, sp = sums[..., 0], sums[..., 1], sums[..., 2]
    union = st + sp - i
    return np.where(union > 0, i / np.where(union > 0, union, 1), 1.0)


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0, n: int = BOOTSTRAP, level: float = 0.95
                      ) -> dict[str, Any]:
    """Pooled IoU of ``a`` minus that of ``b`` (``(n, 3)`` counts of the same units, e.g. an ensemble and its
    best member on the same images), with a paired percentile interval (both resampled with the same draws)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 3), np.asarray(b, np.float64).reshape(-1, 3)
    diff = float(_pooled_iou(a.sum(axis=0)) - _pooled_iou(b.sum(axis=0)))
    if len(a) < 2:
        return {"diff": diff, "ci": [diff, diff]}
    idx = np.random.default_rng(seed).integers(0, len(a), (n, len(a)))
    d = _pooled_iou(a[idx].sum(axis=1)) - _pooled_iou(b[idx].sum(axis=1))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"diff": diff, "ci": np.percentile(d, q).tolist()}


def units(per_image: list[dict[str, Any]], blocks: np.ndarray) -> tuple[str, np.ndarray]:
    """The bootstrap unit and its ``(n, 3)`` counts: images when there are ``MIN_UNITS`` or more, else blocks."""
    c = np.array([[r["intersection"], r["sum_true"], r["sum_pred"]] for r in per_image], np.float64).reshape(-1, 3)
    if len(c) >= MIN_UNITS or len(blocks) <= len(c):
        return "image", c
    return "block", np.asarray(blocks, np.float64).reshape(-1, 3)


def summarize(per_image: list[dict[str, Any]], blocks: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Overall scores of ``per_image`` rows (with intersection/sum_true/sum_pred) and their intervals;
    the bootstrap unit is the image when there are at least ``MIN_UNITS`` of them, else ``blocks``."""
    c = np.array([[r["intersection"], r["sum_true"], r["sum_pred"]] for r in per_image], np.float64).reshape(-1, 3)
    unit, counts_ = units(per_image, blocks)
    ci = bootstrap(counts_, seed)
    overall = pooled(c)
    return {"iou": overall["iou"], "dice": overall["dice"], "iou_ci": ci["iou"], "dice_ci": ci["dice"],
            "mean_image_iou": float(np.mean([r["iou"] for r in per_image])) if per_image else float("nan"),
            "images": len(per_image), "interval_unit": unit, "interval_units": int(len(counts_)),
            "intersection": int(c[:, 0].sum()), "sum_true": int(c[:, 1].sum()), "sum_pred": int(c[:, 2].sum())}


def image_row(name: str, truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    i, st, sp = counts(truth, pred)
    return {"image": name, "iou": iou(i, st, sp), "dice": dice(i, st, sp), "intersection": i, "sum_true": st,
            "sum_pred": sp, "pixels": int(np.asarray(truth).size)}
