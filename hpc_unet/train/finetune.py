"""Fine-tuning: a run's model starts from a source model's weights, optionally with a frozen encoder.

The encoder is the contracting path and the bottleneck (layers ``enc<level>_*`` and ``bottleneck*``,
models/unet.py); the decoder (attention gates included) and the head always train. With
``freeze = "encoder_then_all"`` the encoder is frozen for the first ``unfreeze_epoch`` epochs, then every
layer trains with a fresh Adam (the learning rate carries over, ReduceLROnPlateau's reductions
included): Adam keeps one moment slot per trainable variable, so the optimizer of the frozen phase has
no slots for the encoder. The optimizer never comes from the source: its file holds none.

Exact resume: a checkpoint written at the end of epoch ``unfreeze_epoch`` still holds the frozen phase's
optimizer, so a run resumed there is rebuilt frozen and switches before its next epoch, as the
uninterrupted run did.
"""

from __future__ import annotations

import re
from typing import Any

from hpc_unet.errors import UserError

ENCODER = re.compile(r"(enc\d+_|bottleneck)")


def freeze_mode(row: dict[str, Any]) -> str:
    """The run's freeze setting; scratch runs (init_from = none) freeze nothing."""
    if str(row.get("init_from", "none")) == "none":
        return "none"
    return str(row.get("freeze", "none"))


def frozen_after(row: dict[str, Any], epochs_done: int) -> bool:
    """Whether the encoder was frozen in the epoch that ended at ``epochs_done`` (or starts when 0)."""
    mode = freeze_mode(row)
    return mode == "encoder" or (mode == "encoder_then_all" and epochs_done <= int(row["unfreeze_epoch"]))


def unfreeze_epoch(row: dict[str, Any]) -> int | None:
    """Epochs after which every layer trains (encoder_then_all), else None."""
    return int(row["unfreeze_epoch"]) if freeze_mode(row) == "encoder_then_all" else None


def encoder_layers(model: Any) -> list[Any]:
    return [layer for layer in model.layers if ENCODER.match(layer.name)]


def set_encoder_trainable(model: Any, trainable: bool) -> None:
    for layer in encoder_layers(model):
        layer.trainable = trainable


def load_source_weights(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Copy the source's weights into ``model`` layer by layer (by name); return what the run records.

    The file must still be the one ``manifest`` checked (its SHA-256), so a study's results never mix
    sources. The source's normalisation statistics are recorded, never used: the run scales its data with
    the target dataset's own."""
    from pathlib import Path

    import keras

    from hpc_unet.transfer.source import read_source

    path = Path(str(row["init_path"]))
    if not path.is_file():
        raise UserError(f"init_from: source model {path} is gone; restore it or rerun `hpc-unet manifest --force`")
    source_info = read_source(path)
    if row.get("init_sha256") and source_info.sha256 != row["init_sha256"]:
        raise UserError(f"init_from: {path} changed since `hpc-unet manifest` (SHA-256 {source_info.sha256[:12]}, "
                        f"manifest {str(row['init_sha256'])[:12]}); rerun `hpc-unet manifest --force`")
    source = keras.models.load_model(path, compile=False, safe_mode=True)
    copied = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise UserError(f"init_from: {path} has no layer '{layer.name}'; the source is not the same "
                            "architecture") from None
        shapes = [tuple(w.shape) for w in layer.weights], [tuple(w.shape) for w in src.weights]
        if shapes[0] != shapes[1]:
            raise UserError(f"init_from: layer '{layer.name}' of {path} has weights {shapes[1]}, the run's "
                            f"{shapes[0]}; use a source with the same depth, base filters and channels")
        layer.set_weights(src.get_weights())
        copied += 1
    meta = source_info.metadata
    return {"path": str(path), "sha256": source_info.sha256, "layers_copied": copied,
            "exp_id": meta.get("exp_id", ""), "study_name": meta.get("study_name", ""),
            "architecture": source_info.architecture, "source_scaling": meta.get("scaling"),
            "source_data": meta.get("data"), "freeze": freeze_mode(row)}
