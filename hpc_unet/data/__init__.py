"""Data for the studies: sources (TIFF stacks, image folders), tiling, the per-study cache, synthetic data.

NumPy, tifffile and Pillow only (never TensorFlow): login-node commands import this package.
Entry points: ``prepare(cfg, cache_dir, synth_dir)``, ``prepare_for_row(row, study)`` and ``synthesize``.
"""

from hpc_unet.data.cache import CACHE_FORMAT
from hpc_unet.data.prepare import Prepared, config_from_row, normalize_config, prepare, prepare_for_row
from hpc_unet.data.sources import Pair, load_pair
from hpc_unet.data.synth import synthesize

__all__ = [
    "CACHE_FORMAT", "Pair", "Prepared", "config_from_row", "load_pair", "normalize_config", "prepare",
    "prepare_for_row", "synthesize",
]
