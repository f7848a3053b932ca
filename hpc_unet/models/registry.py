"""Architecture name -> builder, with argument checks that fail with a fixable message."""

from __future__ import annotations

import keras

from hpc_unet.errors import UserError
from hpc_unet.models.unet import encoder_decoder
from hpc_unet.spec import ARCHITECTURES, did_you_mean

# name -> (residual blocks, attention-gated skips). UNet: Ronneberger et al. 2015 with the reference's BN
# and sigmoid head; Attention_UNet: every skip attention-gated (Oktay et al. 2018); Attention_ResUNet:
# residual blocks plus attention gates.
VARIANTS: dict[str, tuple[bool, bool]] = {
    "UNet": (False, False),
    "Attention_UNet": (False, True),
    "Attention_ResUNet": (True, True),
}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def build_model(
    architecture: str,
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    depth: int = 4,
    dropout: float = 0.0,
    batch_norm: bool = True,
) -> keras.Model:
    """Build an uncompiled model by its manifest name; output is (H, W, 1) float32 sigmoid.

    Bad arguments raise UserError here rather than an opaque shape error deep inside Keras.
    """
    if architecture not in VARIANTS:
        raise UserError(
            f"unknown architecture '{architecture}'{did_you_mean(architecture, ARCHITECTURES)}; "
            f"choose one of {', '.join(ARCHITECTURES)}"
        )
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
        raise UserError(f"input_shape {input_shape!r} must be three positive integers (height, width, channels)")
    if not _is_int(depth) or depth < 1:
        raise UserError(f"depth {depth!r} must be a positive integer (number of max-pool levels)")
    if not _is_int(base_filters) or base_filters < 1:
        raise UserError(f"base_filters {base_filters!r} must be a positive integer")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout {dropout!r} must be in [0, 1)")
    step = 2**depth
    if shape[0] % step or shape[1] % step:
        raise UserError(
            f"input height and width {shape[:2]} must be divisible by 2**depth = {step} "
            f"(depth {depth} halves them {depth} times); change the patch size or depth"
        )
    residual, attention = VARIANTS[architecture]
    return encoder_decoder(shape, base_filters, depth, float(dropout), bool(batch_norm),
                           residual=residual, attention=attention, name=architecture)
