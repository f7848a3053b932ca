"""Predict's tiling geometry on hand-worked cases: where the tiles start, how an image is mirror-padded, the
Gaussian weights against scipy's window and the blend as a weighted average written out (mutmut survivors
of ``predict.tiles``; the property tests in test_properties.py cover every size)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import windows as scipy_windows

from hpc_unet.predict import tiles


@pytest.mark.parametrize(("length", "patch", "expected"), [
    (100, 32, [0, 14, 27, 41, 54, 68]),  # step <= 16: ceil(68 / 16) + 1 = 6 tiles, 13.6 apart, rounded
    (64, 32, [0, 16, 32]),               # exactly half a tile apart
    (33, 32, [0, 1]),                    # one pixel more than a tile: two tiles
    (32, 32, [0]), (5, 32, [0]),         # a tile or less: one tile
    (10, 4, [0, 2, 4, 6]),               # step 2: ceil(6 / 2) + 1 = 4
])
def test_tile_starts_worked_by_hand(length, patch, expected):
    assert tiles.starts(length, patch) == expected


def test_a_custom_overlap_spaces_the_tiles_by_its_share():
    assert tiles.starts(100, 20, overlap=0.0) == [0, 20, 40, 60, 80]  # no overlap: abutting tiles
    assert tiles.starts(100, 20, overlap=0.75) == list(range(0, 81, 5))  # step 20 * 0.25 = 5


@pytest.mark.parametrize("patch", [1, 2, 7, 8, 32, 48])
def test_gaussian_weights_equal_scipys_window_with_sigma_an_eighth_of_the_patch(patch):
    axis = scipy_windows.gaussian(patch, std=patch / 8)
    expected = np.outer(axis, axis)
    np.testing.assert_allclose(tiles.gaussian_weights(patch), expected / expected.max(), rtol=1e-12)
    axis = scipy_windows.gaussian(patch, std=patch / 4)
    expected = np.outer(axis, axis)
    np.testing.assert_allclose(tiles.gaussian_weights(patch, sigma_scale=1 / 4), expected / expected.max(),
                               rtol=1e-12)


def test_weights_that_underflow_take_the_smallest_non_zero_weight():
    w = tiles.gaussian_weights(64, sigma_scale=0.01)  # sigma 0.64 px: the corners underflow to 0
    axis = np.exp(-((np.arange(64) - 31.5) ** 2) / (2 * 0.64 ** 2))
    raw = np.outer(axis, axis)
    raw /= raw.max()
    assert (raw == 0).any()
    smallest = raw[raw > 0].min()
    np.testing.assert_array_equal(w, np.where(raw == 0, smallest, raw))
    assert w.min() == smallest > 0


def test_small_images_are_mirrored_at_the_bottom_and_right():
    image = np.array([[1.0, 2.0, 3.0]])[..., None]  # 1 x 3, one channel
    padded, size = tiles.pad_to_tile(image, 5)
    assert size == (1, 3) and padded.shape == (5, 5, 1)
    # "symmetric" repeats the edge pixel (3, 3, 2), where "reflect" would skip it (3, 2, 1)
    np.testing.assert_array_equal(padded[..., 0], np.tile([1.0, 2.0, 3.0, 3.0, 2.0], (5, 1)))
    tall = np.arange(6.0).reshape(6, 1, 1)
    padded, size = tiles.pad_to_tile(tall, 3)
    assert size == (6, 1) and padded.shape == (6, 3, 1)
    np.testing.assert_array_equal(padded[..., 0], np.repeat(np.arange(6.0)[:, None], 3, axis=1))
    big = np.ones((4, 4, 2))
    padded, size = tiles.pad_to_tile(big, 4)
    assert padded is big and size == (4, 4)  # nothing to pad: the image itself


def test_windows_are_row_major_over_both_axes():
    assert list(tiles.windows(6, 4, 4)) == [(0, 0), (2, 0)]
    assert list(tiles.windows(4, 6, 4)) == [(0, 0), (0, 2)]
    assert list(tiles.windows(6, 6, 4)) == [(0, 0), (0, 2), (2, 0), (2, 2)]


def test_blend_is_the_weighted_average_of_the_overlapping_tiles():
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    blender = tiles.Blender(2, 3, w)
    blender.add(0, 0, np.full((2, 2), 0.2))
    blender.add(0, 1, np.full((2, 2), 0.8))
    # (0, 1): 0.2 with weight w[0, 1] = 2 and 0.8 with w[0, 0] = 1; (1, 1): weights 4 and 3
    expected = np.array([[0.2, (0.2 * 2 + 0.8 * 1) / 3, 0.8], [0.2, (0.2 * 4 + 0.8 * 3) / 7, 0.8]])
    out = blender.result((2, 3))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(blender.result((1, 2)), expected[:1, :2], rtol=1e-6)  # cropped to the image
    tile = np.array([[0.1, 0.3], [0.5, 0.7]])  # a tile's own pattern survives where it is alone
    alone = tiles.Blender(2, 2, w)
    alone.add(0, 0, tile)
    np.testing.assert_allclose(alone.result((2, 2)), tile, rtol=1e-6)
