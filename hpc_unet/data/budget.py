"""The data budget (train setting ``train_fraction``): a run trains on the first share of its training patches.

"First" in the split's order: the seeded permutation of a patch-level split (a random subset), slice
order for ``split = "slice"`` (whole slices first). Smaller budgets are subsets of larger ones, and the
validation and test patches are the study's cached arrays, untouched, so every budget is scored on the
same images: the provenance carries their SHA-256 (``val_sha256``, ``test_sha256``) to check that.
NumPy only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from hpc_unet.data.prepare import Prepared


def budget_count(n_train: int, fraction: float) -> int:
    """ceil(n * fraction) patches (rounded first, so 0.1 of 1780 is 178), at least 1."""
    return min(n_train, max(1, math.ceil(round(n_train * fraction, 9))))


def arrays_sha256(*arrays: np.ndarray | None) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes ('' when the first is None)."""
    if arrays[0] is None:
        return ""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def apply_budget(data: Prepared, fraction: float) -> Prepared:
    """``data`` with its training patches cut to the budget, and the provenance saying so."""
    n = budget_count(len(data.train_x), fraction)
    prov = {**data.provenance, "train_fraction": fraction, "patches_train_total": int(len(data.train_x)),
            "patches_train": n, "val_sha256": arrays_sha256(data.val_x, data.val_y),
            "test_sha256": arrays_sha256(data.test_x, data.test_y)}
    if n == len(data.train_x):
        return dataclasses.replace(data, provenance=prov)
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n], provenance=prov)
