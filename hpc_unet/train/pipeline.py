"""tf.data input pipelines whose order and augmentation depend only on (seed, epoch).

The data order of epoch e is a permutation drawn from ``default_rng([seed, e])``, so a run resumed at
epoch k sees exactly the batches the uninterrupted run would have seen. Batches are gathered from
in-memory tensors by index (no per-sample Python), and prefetched.

Augmentation (``augment = "d4"``): each sample of epoch e gets one of the 8 symmetries of the square
(4 rotations by 90 degrees, each with or without a left-right flip), chosen by NumPy from
``default_rng([seed, e, 1])`` alongside the permutation. The choice travels with the indices through
tf.data and is applied with exact, deterministic ops (reverse, transpose), never with TensorFlow's random
ops, so resumed runs and reruns on CPU stay bit-identical.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

D4 = 8  # the dihedral group of the square


def epoch_permutations(n: int, seed: int, epochs: int) -> np.ndarray:
    return np.stack([np.random.default_rng([seed, e]).permutation(n) for e in range(epochs)]).astype(np.int32)


def epoch_transforms(n: int, seed: int, epochs: int) -> np.ndarray:
    """``(epochs, n)`` codes in 0..7 for the samples in permutation order: rotations ``code % 4``,
    flipped when ``code >= 4``."""
    return np.stack([np.random.default_rng([seed, e, 1]).integers(0, D4, n) for e in range(epochs)]).astype(np.int32)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def apply_d4(x: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
    """Per-sample symmetry of a ``(B, P, P, C)`` batch of square patches: flip (code >= 4), then rotate by
    ``code % 4`` quarter turns. Each variant is built for the whole batch and selected per sample."""
    flip = tf.reshape(codes >= 4, (-1, 1, 1, 1))
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    rot1 = tf.reverse(tf.transpose(x, (0, 2, 1, 3)), axis=[1])  # 90 degrees counter-clockwise
    rot2 = tf.reverse(x, axis=[1, 2])
    rot3 = tf.reverse(tf.transpose(x, (0, 2, 1, 3)), axis=[2])
    variants = tf.stack([x, rot1, rot2, rot3])  # (4, B, P, P, C)
    k = tf.math.floormod(codes, 4)
    return tf.gather_nd(variants, tf.stack([k, tf.range(tf.shape(codes)[0], dtype=k.dtype)], axis=1))


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epochs: int,
                  initial_epoch: int = 0, augment: str = "none") -> tf.data.Dataset:
    """Batches for epochs ``initial_epoch..epochs-1``; no batch crosses an epoch boundary."""
    images, masks = tf.constant(np.asarray(x)), tf.constant(np.asarray(y))
    perms = epoch_permutations(len(x), seed, epochs)[initial_epoch:]
    if augment == "none":
        ds = tf.data.Dataset.from_tensor_slices(perms)
        ds = ds.flat_map(lambda p: tf.data.Dataset.from_tensor_slices(p).batch(batch_size))
        ds = ds.map(lambda idx: (tf.gather(images, idx), tf.gather(masks, idx)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    if augment != "d4":
        raise ValueError(f"unknown augment {augment!r}")
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"d4 augmentation needs square patches, got {x.shape[1]}x{x.shape[2]}")
    codes = epoch_transforms(len(x), seed, epochs)[initial_epoch:]
    ds = tf.data.Dataset.from_tensor_slices((perms, codes))
    ds = ds.flat_map(lambda p, c: tf.data.Dataset.from_tensor_slices((p, c)).batch(batch_size))
    ds = ds.map(lambda idx, c: (apply_d4(tf.gather(images, idx), c), apply_d4(tf.gather(masks, idx), c)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Fixed-order batches; the cached tensors are reused every epoch."""
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x), np.asarray(y))).batch(batch_size)
    return ds.cache().prefetch(tf.data.AUTOTUNE)
