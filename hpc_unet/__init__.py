"""hpc-unet: systematic U-Net hyperparameter studies on Slurm GPU clusters.

The pipeline: spec -> manifest -> dispatch -> train -> shard -> collect -> analyze -> report.
Only ``hpc_unet.models`` and ``hpc_unet.train`` import TensorFlow.
"""

__version__ = "0.1.0"
