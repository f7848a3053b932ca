"""Attention Residual U-Net: the Attention U-Net with residual conv blocks throughout."""

from __future__ import annotations

import keras

from hpc_unet.models.unet import encoder_decoder


def build_attention_resunet(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    depth: int = 4,
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> keras.Model:
    """Residual blocks (Conv1x1+BN shortcut) in encoder and decoder, attention-gated skips."""
    return encoder_decoder(
        input_shape, base_filters, depth, dropout, batch_norm,
        residual=True, attention=True, name="Attention_ResUNet",
    )
