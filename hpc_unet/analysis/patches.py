"""A run's scored validation patches as the report shows them: truth, thresholded prediction, errors.

Reads what training stored (``runs/<id>/val_patches.npz``: per-patch counts and the worst/best patches;
older runs only have ``examples.npz``, a few patches with their probabilities) and turns a patch into
RGB panels: the image, the image with the truth tinted, the thresholded prediction, and an error map
with true positives, false positives and false negatives in colour-blind-safe colours. NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.train.val_patches import VAL_PATCHES_FILE, patch_iou, read_val_patches

# Okabe-Ito: readable for the common colour-vision deficiencies
TP_RGB = (0, 158, 115)   # bluish green
FP_RGB = (230, 159, 0)   # orange
FN_RGB = (0, 114, 178)   # blue
TRUTH_RGB = (240, 228, 66)  # yellow
ERROR_LEGEND = "green: true positive, orange: false positive (predicted, not in the truth), blue: false negative (missed)"
PANELS = ("image", "truth", "prediction > 0.5", "errors")


@dataclass
class Patches:
    """The stored patches of one run; ``iou`` is per shown patch, ``all_iou`` over every scored patch."""

    split: str
    image: np.ndarray      # (n, h, w) uint8
    mask: np.ndarray       # (n, h, w) bool
    predicted: np.ndarray  # (n, h, w) bool
    index: np.ndarray      # (n,) patch index in its split
    iou: np.ndarray        # (n,)
    worst: list[int]       # positions into the arrays above, worst first
    best: list[int]        # best first
    all_iou: np.ndarray | None
    counts: dict[str, np.ndarray]  # tp, fp, fn per shown patch


def load_patches(root: Path, exp_id: str, examples_rel: Any = "") -> Patches | None:
    """The run's scored validation patches, else its examples file, else None."""
    run_dir = Path(root) / "runs" / exp_id
    stored = read_val_patches(run_dir / VAL_PATCHES_FILE)
    if stored is not None and len(stored.get("index", [])):
        return _from_val_patches(stored)
    from hpc_unet.train.examples import EXAMPLES_FILE, read_examples

    rel = str(examples_rel or "")
    path = Path(root) / rel if rel and rel != "nan" else run_dir / EXAMPLES_FILE
    ex = read_examples(path)
    if ex is None or not len(ex.get("image", [])):
        return None
    mask, predicted = ex["mask"] > 127, ex["prediction"] > 127
    counts = _counts(mask, predicted)
    iou = patch_iou(counts["tp"], counts["fp"], counts["fn"])
    order = [int(i) for i in np.argsort(np.where(np.isfinite(iou), iou, np.inf), kind="stable") if np.isfinite(iou[i])]
    return Patches(split=str(ex["split"]), image=ex["image"], mask=mask, predicted=predicted,
                   index=np.asarray(ex.get("index", np.arange(len(mask)))), iou=iou, worst=order,
                   best=order[::-1], all_iou=None, counts=counts)


def _counts(mask: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    axes = (1, 2)
    return {"tp": (mask & predicted).sum(axis=axes), "fp": (~mask & predicted).sum(axis=axes),
            "fn": (mask & ~predicted).sum(axis=axes)}


def _from_val_patches(s: dict[str, np.ndarray]) -> Patches:
    index = s["index"]
    where = {int(i): k for k, i in enumerate(index)}
    counts = {c: s[c][index] for c in ("tp", "fp", "fn")}
    return Patches(split="validation", image=s["image"], mask=s["mask"] > 127, predicted=s["predicted"] > 0,
                   index=index, iou=s["iou"][index].astype(float), worst=[where[int(i)] for i in s["worst"]],
                   best=[where[int(i)] for i in s["best"]], all_iou=s["iou"].astype(float), counts=counts)


def _gray(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(image, dtype=np.float32)[..., None], 3, axis=-1)


def _tint(base: np.ndarray, where: np.ndarray, rgb: tuple[int, int, int], alpha: float) -> np.ndarray:
    out = base.copy()
    out[where] = (1 - alpha) * out[where] + alpha * np.asarray(rgb, dtype=np.float32)
    return out


def error_map(image: np.ndarray, mask: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The image dimmed, with true positives, false positives and false negatives painted in colour."""
    base = _gray(image) * 0.55
    base = _tint(base, mask & predicted, TP_RGB, 0.75)
    base = _tint(base, ~mask & predicted, FP_RGB, 0.9)
    base = _tint(base, mask & ~predicted, FN_RGB, 0.9)
    return base.astype(np.uint8)


def panels(image: np.ndarray, mask: np.ndarray, predicted: np.ndarray) -> list[np.ndarray]:
    """RGB uint8 panels in the order of ``PANELS``."""
    gray = _gray(image)
    truth = _tint(gray, mask, TRUTH_RGB, 0.5)
    pred = np.repeat((predicted.astype(np.uint8) * 255)[..., None], 3, axis=-1)
    return [gray.astype(np.uint8), truth.astype(np.uint8), pred, error_map(image, mask, predicted)]


def strip(image: np.ndarray, mask: np.ndarray, predicted: np.ndarray, gap: int = 2) -> np.ndarray:
    """The four panels side by side with white gaps: one image per patch for the HTML pages."""
    parts = panels(image, mask, predicted)
    h = parts[0].shape[0]
    white = np.full((h, gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for k, p in enumerate(parts):
        row += [p] if k == 0 else [white, p]
    return np.concatenate(row, axis=1)


def png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 array (Pillow, no resampling: pages scale it up pixelated)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
