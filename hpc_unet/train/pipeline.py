"""tf.data input pipelines whose order depends only on (seed, epoch).

The data order of epoch e is a permutation drawn from ``default_rng([seed, e])``, so a run resumed at
epoch k sees exactly the batches the uninterrupted run would have seen. Batches are gathered from
in-memory tensors by index (no per-sample Python), and prefetched.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def epoch_permutations(n: int, seed: int, epochs: int) -> np.ndarray:
    return np.stack([np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)]).astype(np.int32)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epochs: int,
                  initial_epoch: int = 0) -> tf.data.Dataset:
    """Batches for epochs ``initial_epoch..epochs-1``; no batch crosses an epoch boundary."""
    images, masks = tf.constant(np.asarray(x)), tf.constant(np.asarray(y))
    perms = epoch_permutations(len(x), seed, epochs)[initial_epoch:]
    ds = tf.data.Dataset.from_tensor_slices(perms)
    ds = ds.flat_map(lambda p: tf.data.Dataset.from_tensor_slices(p).batch(batch_size))
    ds = ds.map(lambda idx: (tf.gather(images, idx), tf.gather(masks, idx)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Fixed-order batches; the cached tensors are reused every epoch."""
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y))).batch(batch_size)
    return ds.cache().prefetch(tf.data.AUTOTUNE)
