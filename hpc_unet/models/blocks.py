"""Building blocks shared by the three U-Nets (docs/models.md, after bnsreenu's ``224_225_226_models.py``).

Only stock Keras layers are used, so a saved ``.keras`` file loads with ``safe_mode=True`` and no
``custom_objects`` -- even in a process that never imported hpc_unet. The reference broadcast its
attention map over channels with a ``Lambda`` layer; Keras 3's ``Multiply`` broadcasts a 1-channel
tensor by itself, so no Lambda (and no custom layer) is needed.
"""

from __future__ import annotations

import keras
from keras import layers


def _bn(x: keras.KerasTensor, batch_norm: bool, name: str) -> keras.KerasTensor:
    """BatchNormalization over channels, or nothing when ``batch_norm`` is off."""
    return layers.BatchNormalization(axis=-1, name=name)(x) if batch_norm else x


def conv_block(
    x: keras.KerasTensor, filters: int, dropout: float, batch_norm: bool, name: str
) -> keras.KerasTensor:
    """(Conv3x3 same -> BN -> ReLU) x 2, then optional dropout: the plain U-Net stage."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{i}")(x)
        x = _bn(x, batch_norm, f"{name}_bn{i}")
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


def res_conv_block(
    x: keras.KerasTensor, filters: int, dropout: float, batch_norm: bool, name: str
) -> keras.KerasTensor:
    """Residual stage: Conv-BN-ReLU-Conv-BN (+dropout) added to a Conv1x1(+BN) shortcut, then ReLU.

    The ReLU comes after the addition (the original ResNet ordering), as in the reference.
    """
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(x)
    y = _bn(y, batch_norm, f"{name}_bn1")
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
    y = _bn(y, batch_norm, f"{name}_bn2")
    if dropout > 0:
        y = layers.Dropout(dropout, name=f"{name}_drop")(y)
    shortcut = layers.Conv2D(filters, 1, padding="same", name=f"{name}_shortcut")(x)
    shortcut = _bn(shortcut, batch_norm, f"{name}_shortcut_bn")
    out = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_relu_out")(out)


def gating_signal(x: keras.KerasTensor, filters: int, batch_norm: bool, name: str) -> keras.KerasTensor:
    """Conv1x1 -> BN -> ReLU on the coarser tensor: the gate that tells the skip where to look."""
    x = layers.Conv2D(filters, 1, padding="same", name=f"{name}_conv")(x)
    x = _bn(x, batch_norm, f"{name}_bn")
    return layers.Activation("relu", name=f"{name}_relu")(x)


def attention_gate(
    skip: keras.KerasTensor, gate: keras.KerasTensor, inter_filters: int, batch_norm: bool, name: str
) -> keras.KerasTensor:
    """Additive attention gate (Oktay et al. 2018) weighting the skip connection by a [0, 1] map.

    theta = Conv2x2/2 on the skip; phi = Conv1x1 on the gate, brought to theta's size by a 3x3
    Conv2DTranspose (stride = size ratio, 1 in these U-Nets, kept general like the reference);
    ReLU(theta + phi) -> Conv1x1(1) -> sigmoid -> upsampled to the skip's size -> times the skip
    (broadcast over channels) -> Conv1x1 -> BN.
    """
    skip_h, skip_w, skip_c = skip.shape[1], skip.shape[2], skip.shape[3]
    theta = layers.Conv2D(inter_filters, 2, strides=2, padding="same", name=f"{name}_theta")(skip)
    phi = layers.Conv2D(inter_filters, 1, padding="same", name=f"{name}_phi")(gate)
    stride = (theta.shape[1] // gate.shape[1], theta.shape[2] // gate.shape[2])
    phi = layers.Conv2DTranspose(inter_filters, 3, strides=stride, padding="same", name=f"{name}_phi_up")(phi)
    act = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([phi, theta]))
    psi = layers.Conv2D(1, 1, padding="same", name=f"{name}_psi")(act)
    psi = layers.Activation("sigmoid", name=f"{name}_sigmoid")(psi)
    psi = layers.UpSampling2D(size=(skip_h // psi.shape[1], skip_w // psi.shape[2]), name=f"{name}_psi_up")(psi)
    weighted = layers.Multiply(name=f"{name}_weight")([psi, skip])
    out = layers.Conv2D(skip_c, 1, padding="same", name=f"{name}_out")(weighted)
    return _bn(out, batch_norm, f"{name}_out_bn")


def output_head(x: keras.KerasTensor, batch_norm: bool) -> keras.KerasTensor:
    """Conv1x1(1) -> BN -> sigmoid; the sigmoid runs in float32 so mixed precision cannot underflow it."""
    x = layers.Conv2D(1, 1, name="head_conv")(x)
    x = _bn(x, batch_norm, "head_bn")
    return layers.Activation("sigmoid", dtype="float32", name="head_sigmoid")(x)
