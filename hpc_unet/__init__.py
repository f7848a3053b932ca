"""hpc-unet: systematic U-Net hyperparameter studies on Slurm GPU clusters.

The pipeline: spec -> manifest -> dispatch -> train -> shard -> collect -> analyze -> report.
Only ``hpc_unet.models`` and ``hpc_unet.train`` import TensorFlow.
"""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probes on CPU nodes) hides real messages; users can override.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
