"""The three U-Nets of the study (TensorFlow side): ``build_model(name, ...)`` and their names.

Importing this package only defines builders (no model is built, nothing is printed). It imports
Keras, so login-node code should take names from ``hpc_unet.spec.ARCHITECTURES`` instead.
"""

from hpc_unet.models.registry import VARIANTS, build_model
from hpc_unet.spec import ARCHITECTURES

__all__ = ["ARCHITECTURES", "VARIANTS", "build_model"]
