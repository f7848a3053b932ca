"""Sliding-window inference geometry: tile positions with 50 % overlap, padding, Gaussian blending.

The model sees ``P x P`` tiles (its training patch size). Tiles overlap by half a tile; each tile's
probabilities are weighted by a Gaussian centred on the tile (sigma = P/8, scaled to a maximum of 1; the
nnU-Net recipe), since a U-Net is least reliable at its borders. The weighted sum divided by the sum of
weights has no seams. Images smaller than a tile are padded (mirrored) to one tile; the padding is cut off
again. NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

OVERLAP = 0.5


def gaussian_weights(patch: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """``(P, P)`` float64 weights: a Gaussian with sigma ``P * sigma_scale``, maximum 1, no zeros (a value
    that underflows to 0 is replaced by the smallest non-zero weight, so every pixel has some weight)."""
    centre = (patch - 1) / 2
    sigma = patch * sigma_scale
    axis = np.exp(-((np.arange(patch) - centre) ** 2) / (2 * sigma**2))
    w = np.outer(axis, axis)
    w /= w.max()
    if (w == 0).any():
        w[w == 0] = w[w > 0].min()
    return w


def starts(length: int, patch: int, overlap: float = OVERLAP) -> list[int]:
    """Tile start offsets along one axis of ``length`` >= ``patch``: evenly spaced, at most
    ``patch * (1 - overlap)`` apart, first at 0 and last at ``length - patch``."""
    if length <= patch:
        return [0]
    step = patch * (1 - overlap)
    n = math.ceil((length - patch) / step) + 1
    actual = (length - patch) / (n - 1)
    return sorted({int(round(i * actual)) for i in range(n)})


def pad_to_tile(image: np.ndarray, patch: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Mirror-pad ``(H, W, C)`` at the bottom/right to at least ``P x P``; returns it and the original size."""
    h, w = image.shape[:2]
    ph, pw = max(0, patch - h), max(0, patch - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    return image, (h, w)


def windows(height: int, width: int, patch: int) -> Iterator[tuple[int, int]]:
    """Top-left corners of the tiles covering a padded ``height x width`` image, row-major."""
    for y in starts(height, patch):
        for x in starts(width, patch):
            yield y, x


class Blender:
    """Accumulates weighted tile probabilities for one padded image and returns the blended map."""

    def __init__(self, height: int, width: int, weights: np.ndarray) -> None:
        self.sum = np.zeros((height, width), np.float64)
        self.weight = np.zeros((height, width), np.float64)
        self.w = weights
        self.p = weights.shape[0]

    def add(self, y: int, x: int, prob: np.ndarray) -> None:
        self.sum[y:y + self.p, x:x + self.p] += prob * self.w
        self.weight[y:y + self.p, x:x + self.p] += self.w

    def result(self, size: tuple[int, int]) -> np.ndarray:
        """The blended probabilities cropped to the original ``size``, float32."""
        h, w = size
        return (self.sum[:h, :w] / self.weight[:h, :w]).astype(np.float32)
