"""Plain U-Net, plus the encoder-decoder skeleton the attention variants share (docs/models.md)."""

from __future__ import annotations

import keras
from keras import layers

from hpc_unet.models.blocks import attention_gate, conv_block, gating_signal, output_head, res_conv_block


def encoder_decoder(
    input_shape: tuple[int, int, int],
    base_filters: int,
    depth: int,
    dropout: float,
    batch_norm: bool,
    *,
    residual: bool,
    attention: bool,
    name: str,
) -> keras.Model:
    """One skeleton for all three models, so they differ only where the paper says they do.

    Encoder: ``depth`` stages of (block -> MaxPool2x2) with ``base_filters * 2**level`` filters, then a
    bottleneck block at ``base_filters * 2**depth``. Decoder, per level from the bottom: UpSampling2D
    of the coarser tensor, concatenated with the skip (attention-gated when ``attention``; the gate is
    computed from the same coarser tensor), then a block. ``residual`` swaps conv blocks for residual ones.
    """
    block = res_conv_block if residual else conv_block
    inputs = keras.Input(shape=input_shape, name="image")
    skips = []
    x = inputs
    for level in range(depth):
        x = block(x, base_filters * 2**level, dropout, batch_norm, name=f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = block(x, base_filters * 2**depth, dropout, batch_norm, name="bottleneck")
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        skip = skips[level]
        if attention:
            gate = gating_signal(x, filters, batch_norm, name=f"gate{level}")
            skip = attention_gate(skip, gate, filters, batch_norm, name=f"att{level}")
        up = layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([up, skip])
        x = block(x, filters, dropout, batch_norm, name=f"dec{level}")
    return keras.Model(inputs, output_head(x, batch_norm), name=name)

