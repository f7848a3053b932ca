"""Intensity normalisation: raw pixels -> float32 in [0, 1], the same function for training and predict.

A *scaling* is a small JSON-able dict (stored in the provenance and in every saved model) that says how:

- ``dtype``: divide by the dtype's range (uint8 / 255, uint16 / 65535; floats are taken as already in [0, 1]).
  Right for 8-bit data, wrong for 12/16-bit cameras whose pixels span a few hundred counts of 65535.
- ``minmax``: map the minimum and maximum to 0 and 1.
- ``percentile``: map the ``percentile_low`` and ``percentile_high`` percentiles to 0 and 1 (CSBDeep and
  StarDist use 1 and 99.8 per image): robust to hot pixels and to the camera's bit depth.

``per = "image"`` computes minmax/percentile statistics on each 2-D image (slice) on its own, so predict
needs no statistics from training; ``per = "dataset"`` computes them once on the training images and stores
them (``low``/``high``), and every later image (validation, test, predict) uses those same numbers.
``auto`` resolves to dtype for 8-bit images, percentile for other integer types and minmax for floats.
Values outside [0, 1] after scaling are clipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpc_unet.errors import UserError

# Above this many pixels, dataset percentiles are taken on an evenly strided subsample (same result to
# well under one grey level, and bounded time and memory on large stacks).
_MAX_PIXELS = 20_000_000


def resolve_method(method: str, dtype: np.dtype | str) -> str:
    """``auto`` -> the method used for this dtype; other methods pass through."""
    if method != "auto":
        return method
    dt = np.dtype(dtype)
    if dt == np.uint8 or dt == np.bool_:
        return "dtype"
    return "percentile" if dt.kind in "ui" else "minmax"


def dtype_range(dtype: np.dtype | str) -> tuple[float, float]:
    """The value range a dtype stands for: integer limits; [0, 1] for floats."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def _subsample(flat: np.ndarray) -> np.ndarray:
    step = max(1, -(-flat.size // _MAX_PIXELS))
    return flat[::step]


def _stats(values: np.ndarray, method: str, low: float, high: float) -> tuple[float, float]:
    if method == "minmax":
        return float(values.min()), float(values.max())
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


def plan(images: list[np.ndarray], cfg: dict[str, Any]) -> dict[str, Any]:
    """The scaling for these training images under ``cfg`` (the ``[data]`` keys normalize, normalize_per,
    percentile_low, percentile_high): per-dataset statistics are computed here, once."""
    dtype = images[0].dtype
    method = resolve_method(cfg.get("normalize", "auto"), dtype)
    per = cfg.get("normalize_per", "image")
    low, high = float(cfg.get("percentile_low", 1.0)), float(cfg.get("percentile_high", 99.8))
    if low >= high:
        raise UserError(f"[data] percentile_low = {low:g} must be below percentile_high = {high:g} (e.g. 1 and 99.8)")
    out: dict[str, Any] = {"method": method, "requested": cfg.get("normalize", "auto"), "per": per,
                           "percentile_low": low, "percentile_high": high, "dtype": str(dtype),
                           "low": None, "high": None}
    if method == "dtype":
        out["low"], out["high"] = dtype_range(dtype)
        out["per"] = "dataset"
    elif per == "dataset":
        flat = np.concatenate([_subsample(a.ravel()) for a in images])
        out["low"], out["high"] = _stats(flat, method, low, high)
    return out


def image_ranges(stack: np.ndarray, scaling: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (axis 0) ``low`` and ``high`` float32 arrays, each of shape ``(n,)``."""
    n = stack.shape[0]
    method = resolve_method(scaling["method"], stack.dtype)
    if method == "dtype":  # the range of this stack's own dtype (predict may get 16-bit for an 8-bit model)
        lo, hi = dtype_range(stack.dtype)
        return np.full(n, lo, np.float32), np.full(n, hi, np.float32)
    if scaling.get("per") == "dataset" and scaling.get("low") is not None:
        return np.full(n, scaling["low"], np.float32), np.full(n, scaling["high"], np.float32)
    lows, highs = np.empty(n, np.float32), np.empty(n, np.float32)
    for i in range(n):
        lows[i], highs[i] = _stats(stack[i].ravel(), method, scaling["percentile_low"], scaling["percentile_high"])
    return lows, highs


def apply(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(x - low) / (high - low)`` clipped to [0, 1], float32; ``low``/``high`` hold one value per item of
    axis 0. A constant image (high == low) becomes 0. Patches and whole images give identical pixels."""
    lo = np.asarray(low, np.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    span = np.asarray(high, np.float32).reshape(lo.shape) - lo
    span = np.where(span > 0, span, np.float32(1.0)).astype(np.float32)
    out = x.astype(np.float32)
    out -= lo
    out /= span
    np.clip(out, 0.0, 1.0, out=out)
    return out


def normalize_stack(stack: np.ndarray, scaling: dict[str, Any]) -> np.ndarray:
    """``(n, H, W, C)`` raw images -> float32 in [0, 1] (what predict feeds the model)."""
    return apply(stack, *image_ranges(stack, scaling))


def range_used(normalized: np.ndarray | list[np.ndarray]) -> float:
    """Share of [0, 1] the bulk of the pixels span (0.1th to 99.9th percentile): near 0 means the model
    sees an almost constant image (e.g. a 12-bit camera divided by 65535)."""
    parts = normalized if isinstance(normalized, list) else [normalized]
    flat = np.concatenate([_subsample(np.asarray(a).ravel()) for a in parts])
    if flat.size == 0:
        return 0.0
    lo, hi = np.percentile(flat, [0.1, 99.9])
    return float(hi - lo)


def describe(scaling: dict[str, Any]) -> str:
    """One line for messages: ``percentile 1-99.8 per image`` / ``dtype 0..65535``."""
    m = scaling["method"]
    if m == "dtype":
        return f"dtype ({scaling['dtype']}: {scaling['low']:g}..{scaling['high']:g})"
    what = f"percentile {scaling['percentile_low']:g}-{scaling['percentile_high']:g}" if m == "percentile" else m
    if scaling["per"] == "dataset":
        return f"{what} of the training set ({scaling['low']:g}..{scaling['high']:g})"
    return f"{what} per image"


LOW_RANGE = 0.05


def low_range_advice(used: float, scaling: dict[str, Any]) -> str:
    """A warning (or '') when the scaled pixels span under 5 % of [0, 1], naming the option that fixes it."""
    if used >= LOW_RANGE:
        return ""
    return (f"the images use only {100 * used:.1f} % of the [0, 1] range after scaling with {describe(scaling)}; "
            "the network will barely see them: set [data] normalize = 'percentile' (or 'minmax')")
