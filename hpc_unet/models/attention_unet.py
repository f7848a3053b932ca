"""Attention U-Net (Oktay et al. 2018): the U-Net with every skip connection attention-gated."""

from __future__ import annotations

import keras

from hpc_unet.models.unet import encoder_decoder


def build_attention_unet(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    depth: int = 4,
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> keras.Model:
    """Conv blocks as in U-Net; each skip passes an attention gate driven by the coarser decoder tensor."""
    return encoder_decoder(
        input_shape, base_filters, depth, dropout, batch_norm,
        residual=False, attention=True, name="Attention_UNet",
    )
