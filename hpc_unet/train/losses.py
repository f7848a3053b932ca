"""Training losses by manifest name: focal (the study's loss), bce, dice_bce."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from hpc_unet.errors import UserError
from hpc_unet.spec import LOSSES, did_you_mean


@keras.saving.register_keras_serializable(package="hpc_unet")
class DiceBCELoss(keras.losses.Loss):
    """Per-sample mean BCE + (1 - soft Dice); the Dice term counters foreground/background imbalance.

    Dice is computed per sample (smooth = 1), so an all-background patch asks for all-zero output and
    sample weights apply per patch; Keras then averages the per-sample values over the batch.
    """

    def __init__(
        self, smooth: float = 1.0, name: str = "dice_bce", reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        axes = tuple(range(1, len(y_pred.shape)))
        bce = keras.losses.binary_crossentropy(y_true, y_pred)  # mean over the channel axis
        bce = ops.mean(bce, axis=tuple(range(1, len(bce.shape)))) if len(bce.shape) > 1 else bce
        inter = ops.sum(y_true * y_pred, axis=axes)
        dice = (2.0 * inter + self.smooth) / (
            ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes) + self.smooth
        )
        return bce + 1.0 - dice

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


def get_loss(
    name: str = "focal", gamma: float = 2.0, class_balancing: bool = False, alpha: float = 0.25
) -> keras.losses.Loss:
    """Loss object for a manifest's ``loss`` value; gamma/class_balancing/alpha apply to focal only.

    focal = keras BinaryFocalCrossentropy, numerically the ``focal_loss`` package's
    BinaryFocalLoss(gamma) the original study used (with class_balancing, segmentation_models' alpha form).
    """
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(
            gamma=float(gamma), apply_class_balancing=bool(class_balancing), alpha=float(alpha), name="focal"
        )
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "dice_bce":
        return DiceBCELoss()
    raise UserError(f"unknown loss '{name}'{did_you_mean(name, LOSSES)}; choose one of {', '.join(LOSSES)}")
