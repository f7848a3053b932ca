"""Tiling into non-overlapping patches and the seeded train/validation split (scaling: ``normalize``).

Patches are cut row-major per slice (the order of ``patchify`` in the original notebooks); the remainder at
the right and bottom edges is dropped, never padded, so every patch is real data.
"""

from __future__ import annotations

import math

import numpy as np

from hpc_unet.errors import UserError


def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """Patches per column and per row of one slice."""
    return height // patch, width // patch


def tile(stack: np.ndarray, patch: int) -> np.ndarray:
    """``(n, H, W[, C])`` -> ``(n * H//p * W//p, p, p[, C])``; a copy, in slice then row-major order."""
    n, h, w = stack.shape[:3]
    rows, cols = patch_grid(h, w, patch)
    rest = stack.shape[3:]
    cut = stack[:, : rows * patch, : cols * patch]
    blocks = cut.reshape(n, rows, patch, cols, patch, *rest)
    blocks = blocks.transpose(0, 1, 3, 2, 4, *range(5, 5 + len(rest)))
    return np.ascontiguousarray(blocks).reshape(n * rows * cols, patch, patch, *rest)


def count_val(n: int, val_fraction: float) -> int:
    """ceil(n * fraction) like scikit-learn's train_test_split, at least 1 (rounded first: 1980*0.1 is 198)."""
    return max(1, math.ceil(round(n * val_fraction, 9)))


def split_indices(n: int, val_fraction: float, split_seed: int, max_patches: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded patch-level split -> (train indices, val indices) into the ``n`` patches.

    ``max_patches`` > 0 first keeps a seeded random subset of that many patches (smoke runs). The same
    (n, fraction, seed, max_patches) always gives the same indices, on any machine (PCG64).
    """
    rng = np.random.default_rng(split_seed)
    chosen = np.arange(n)
    if 0 < max_patches < n:
        chosen = np.sort(rng.choice(n, size=max_patches, replace=False))
    order = chosen[rng.permutation(len(chosen))]
    n_val = count_val(len(order), val_fraction)
    if n_val >= len(order):
        raise UserError(
            f"[data] only {len(order)} patch(es) to split with val_fraction = {val_fraction}: at least one training "
            "and one validation patch are needed; lower patch_size, raise max_patches or add data")
    return order[n_val:], order[:n_val]
