"""What predict needs to use a model, stored inside its ``.keras`` file.

A ``.keras`` file is a zip archive (``config.json``, ``metadata.json``, ``model.weights.h5``); Keras reads
only the members it knows, so an extra member ``hpc_unet.json`` travels with the model, survives copying,
and loads under ``safe_mode`` (no custom layer, no code). It holds the patch size, channels, the intensity
scaling (with per-dataset statistics), the mask threshold and where the model came from.
No TensorFlow here: reading it is a zip read.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError

MEMBER = "hpc_unet.json"
FORMAT = 1
THRESHOLD = 0.5  # the ThresholdedIoU threshold the study scores with


def model_metadata(row: dict[str, Any], provenance: dict[str, Any], patch_size: int, channels: int
                   ) -> dict[str, Any]:
    """The metadata of a model trained on ``row`` (a manifest row) with data of ``provenance``."""
    return {
        "format": FORMAT, "patch_size": int(patch_size), "channels": int(channels),
        "scaling": provenance.get("scaling"), "threshold": THRESHOLD, "mask": provenance.get("mask", "binary"),
        "image_dtype": provenance.get("image_dtype"),
        "exp_id": row.get("exp_id", ""), "study_name": row.get("study_name", ""),
        "architecture": row.get("architecture", ""), "seed": row.get("seed"),
        "train": {k: row.get(k) for k in ("learning_rate", "batch_size", "epochs", "loss", "base_filters",
                                          "depth", "augment") if k in row},
        "data": {"images_sha256": provenance.get("images_sha256", ""), "cache_key": provenance.get("cache_key", ""),
                 "patch_size": provenance.get("patch_size")},
    }


def embed(path: Path, meta: dict[str, Any]) -> None:
    """Add ``hpc_unet.json`` to a saved ``.keras`` archive (call on the temporary file, before the rename)."""
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(MEMBER, json.dumps(meta, sort_keys=True, default=str))


def read(path: Path) -> dict[str, Any] | None:
    """The embedded metadata, or None for a ``.keras`` file saved without it."""
    try:
        with zipfile.ZipFile(path) as zf:
            if MEMBER not in zf.namelist():
                return None
            return json.loads(zf.read(MEMBER))
    except FileNotFoundError:
        raise UserError(f"--model: {path} does not exist; pass a .keras file saved by a study") from None
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"--model: {path} is not a readable .keras file ({exc}); pass a model saved by "
                        "a study (runs/<exp>/model/best.keras)") from None
