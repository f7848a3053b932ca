"""Benchmarks behind ``hpc-unet bench``: each returns a JSON-ready dict and prints a rich table.

- ``throughput``: training images/s, our tf.data + stateful-metric path against the original study's
  NumPy ``model.fit`` path with a per-batch function metric (same process, warm epochs).
- ``overhead``: seconds from task start to the first training step, per-phase timings of real tasks.
- ``flops``: analytic conv MACs per architecture, device peaks, utilization and GPU-hour projection.
- ``orchestration``: manifest / status / collect / analyze on synthetic studies of 36 to 36,000 runs.
- ``options``: float32 vs mixed_bfloat16 vs jit_compile, speed and accuracy on the smoke data.
- ``gpu_check``: one script for a GPU node (``python -m hpc_unet.bench.gpu_check --out DIR``).

Login-node rule: importing ``hpc_unet.bench`` or ``hpc_unet.bench.common`` never imports TensorFlow;
the TensorFlow benches import it inside their functions.
"""
