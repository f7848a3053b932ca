"""predict/evaluate scores against independent computations: a hand-worked case, NumPy set operations on
the masks, and scipy's bootstrap for the intervals (their level and their pooling). No TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hpc_unet.predict import scores


def np_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    union = np.logical_or(truth, pred).sum()
    return 1.0 if union == 0 else np.logical_and(truth, pred).sum() / union


def np_dice(truth: np.ndarray, pred: np.ndarray) -> float:
    total = truth.sum() + pred.sum()
    return 1.0 if total == 0 else 2 * np.logical_and(truth, pred).sum() / total


def test_hand_worked_image_row():
    # truth 4 pixels, prediction 3, overlap 2: IoU 2 / (4 + 3 - 2) = 0.4, Dice 2 * 2 / (4 + 3) = 4/7
    truth = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0]], bool)
    row = scores.image_row("a", truth, pred)
    assert (row["intersection"], row["sum_true"], row["sum_pred"], row["pixels"]) == (2, 4, 3, 9)
    assert row["iou"] == pytest.approx(0.4, abs=1e-12) and row["dice"] == pytest.approx(4 / 7, abs=1e-12)


@pytest.mark.parametrize(("truth", "pred", "iou", "dice"), [
    (0, 0, 1.0, 1.0),  # nothing to find, nothing found
    (5, 0, 0.0, 0.0),
    (0, 5, 0.0, 0.0),
])
def test_empty_masks(truth, pred, iou, dice):
    t = np.zeros(10, bool)
    t[:truth] = True
    p = np.zeros(10, bool)
    p[:pred] = True
    row = scores.image_row("e", t, p)
    assert (row["iou"], row["dice"]) == (iou, dice)
    assert scores.pooled(np.array([scores.counts(t, p)])) == {"iou": iou, "dice": dice}


def random_images(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(5, 40, 2)
        truth = rng.random((h, w)) < rng.uniform(0.0, 0.6)
        noise = rng.random((h, w)) < rng.uniform(0.0, 0.4)
        out.append((truth, truth ^ noise))
    return out


def scipy_interval(counts: np.ndarray, score: str, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the pooled score over units by scipy (its own resampling and quantiles)."""
    def statistic(ix: np.ndarray, axis: int = -1) -> np.ndarray:
        i, st, sp = np.moveaxis(counts[ix].sum(axis=-2), -1, 0)
        if score == "iou":
            return np.where(st + sp - i > 0, i / np.maximum(st + sp - i, 1e-300), 1.0)
        return np.where(st + sp > 0, 2 * i / np.maximum(st + sp, 1e-300), 1.0)

    res = stats.bootstrap((np.arange(len(counts)),), statistic, vectorized=True, n_resamples=20000,
                          confidence_level=level, method="percentile", random_state=np.random.default_rng(1))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def test_summary_matches_numpy_and_scipy_over_40_images():
    images = random_images(40, seed=7)
    rows = [scores.image_row(str(k), t, p) for k, (t, p) in enumerate(images)]
    blocks = np.concatenate([scores.block_counts(t, p, 8) for t, p in images])
    s = scores.summarize(rows, blocks, seed=3)
    truth = np.concatenate([t.ravel() for t, _ in images])
    pred = np.concatenate([p.ravel() for _, p in images])
    assert s["iou"] == pytest.approx(np_iou(truth, pred), abs=1e-12)  # pooled over all pixels
    assert s["dice"] == pytest.approx(np_dice(truth, pred), abs=1e-12)
    assert s["mean_image_iou"] == pytest.approx(np.mean([np_iou(t, p) for t, p in images]), abs=1e-12)
    assert (s["intersection"], s["sum_true"], s["sum_pred"]) == (
        int((truth & pred).sum()), int(truth.sum()), int(pred.sum()))
    assert s["interval_unit"] == "image" and s["interval_units"] == 40 and s["images"] == 40
    counts = np.array([scores.counts(t, p) for t, p in images], float)
    for score in ("iou", "dice"):
        lo, hi = scipy_interval(counts, score)
        width = hi - lo
        assert width > 0.01
        got = s[f"{score}_ci"]
        assert got[0] < s[score] < got[1]
        # Monte Carlo error of 2000 resamples is a few % of the width; a 50 % or 99 % interval is off by ~30 %
        assert got[0] == pytest.approx(lo, abs=0.1 * width) and got[1] == pytest.approx(hi, abs=0.1 * width)
    lo50, hi50 = scipy_interval(counts, "iou", 0.5)
    assert s["iou_ci"][1] - s["iou_ci"][0] > 2 * (hi50 - lo50)  # a 95 % interval, not a 50 % one


def test_bootstrap_blocks_are_pixels_and_cover_the_image():
    rng = np.random.default_rng(2)
    truth, pred = rng.random((21, 17)) < 0.3, rng.random((21, 17)) < 0.3
    blocks = scores.block_counts(truth, pred, 8)
    assert blocks.shape == (3 * 3, 3)  # 21 and 17 pixels: 3 blocks each way, the edge ones smaller
    assert tuple(blocks.sum(axis=0)) == scores.counts(truth, pred)
    assert tuple(blocks[0]) == scores.counts(truth[:8, :8], pred[:8, :8])
    assert tuple(blocks[-1]) == scores.counts(truth[16:, 16:], pred[16:, 16:])


@pytest.mark.parametrize(("images", "blocks", "unit"), [
    (scores.MIN_UNITS - 1, 50, "block"),   # too few images: blocks of pixels
    (scores.MIN_UNITS, 50, "image"),       # enough images
    (3, 3, "image"),                       # no more blocks than images: images
    (3, 4, "block"),
])
def test_the_bootstrap_unit_switches_at_min_units(images, blocks, unit):
    rows = [{"intersection": 1, "sum_true": 2, "sum_pred": 2}] * images
    got, counts = scores.units(rows, np.ones((blocks, 3)))
    assert got == unit and len(counts) == (images if unit == "image" else blocks)
    assert scores.MIN_UNITS == 10


def test_one_unit_gives_a_zero_width_interval():
    ci = scores.bootstrap(np.array([[2.0, 4.0, 3.0]]))
    assert ci == {"iou": [0.4, 0.4], "dice": [4 / 7, 4 / 7]}


def test_paired_difference_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(5)
    base = np.array([scores.counts(t, p) for t, p in random_images(30, seed=11)], float)
    better = base.copy()
    better[:, 0] = np.minimum(base[:, 0] + rng.integers(0, 4, len(base)), np.minimum(base[:, 1], base[:, 2]))
    d = scores.paired_difference(better, base, seed=0)

    def pooled_iou(c: np.ndarray) -> np.ndarray:
        i, st, sp = np.moveaxis(c, -1, 0)
        return i / (st + sp - i)

    assert d["diff"] == pytest.approx(pooled_iou(better.sum(0)) - pooled_iou(base.sum(0)), abs=1e-12)
    res = stats.bootstrap((np.arange(len(base)),), lambda ix, axis=-1: pooled_iou(better[ix].sum(-2))
                          - pooled_iou(base[ix].sum(-2)), vectorized=True, n_resamples=20000,
                          method="percentile", random_state=np.random.default_rng(1))
    lo, hi = res.confidence_interval
    assert d["ci"][0] == pytest.approx(lo, abs=0.1 * (hi - lo)) and d["ci"][1] == pytest.approx(hi, abs=0.1 * (hi - lo))
    assert scores.paired_difference(base[:1], base[:1]) == {"diff": 0.0, "ci": [0.0, 0.0]}


def test_paired_difference_edges_empty_unions_two_units_and_seeds():
    empty, half, miss, whole = [0, 0, 0], [1, 2, 1], [0, 1, 0], [1, 1, 1]
    # an empty union scores 1 (nothing to find, nothing found); a union of one missed pixel scores 0
    assert scores.paired_difference(np.array([empty] * 3), np.array([half] * 3))["diff"] == pytest.approx(0.5)
    assert scores.paired_difference(np.array([miss] * 3), np.array([whole] * 3)) == {"diff": -1.0,
                                                                                     "ci": [-1.0, -1.0]}
    two = scores.paired_difference(np.array([whole, miss]), np.array([miss, miss]), n=400)
    assert two["diff"] == pytest.approx(0.5) and two["ci"][0] < two["ci"][1]  # two units are resampled
    a = np.array([scores.counts(t, p) for t, p in random_images(12, seed=1)], float)
    b = a * [0.9, 1, 1]
    assert scores.paired_difference(a, b, seed=4) == scores.paired_difference(a, b, seed=4)
    assert scores.paired_difference(a, b, seed=4)["ci"] != scores.paired_difference(a, b, seed=5)["ci"]
    assert scores.bootstrap(a, seed=4) == scores.bootstrap(a, seed=4) != scores.bootstrap(a, seed=5)
    ci = scores.bootstrap(np.array([empty, empty]))
    assert ci == {"iou": [1.0, 1.0], "dice": [1.0, 1.0]}


def test_bootstrap_draws_every_unit_and_summarize_is_seeded():
    # only unit 0 overlaps: a resampling that never drew it would give an interval of [0, 0]
    ci = scores.bootstrap(np.array([[5, 5, 5], [0, 5, 5], [0, 5, 5]], float), n=500)
    assert ci["iou"][1] > 0.3 and ci["dice"][1] > 0.4
    images = random_images(4, seed=9)  # fewer than MIN_UNITS: blocks are the unit
    rows = [scores.image_row(str(k), t, p) for k, (t, p) in enumerate(images)]
    blocks = np.concatenate([scores.block_counts(t, p, 4) for t, p in images])
    first = scores.summarize(rows, blocks, seed=3)
    assert first == scores.summarize(rows, blocks, seed=3) and first["interval_unit"] == "block"
    assert first["interval_units"] == len(blocks)
    assert first["iou_ci"] != scores.summarize(rows, blocks, seed=4)["iou_ci"]
    none = scores.summarize([], np.zeros((0, 3)))
    assert np.isnan(none["mean_image_iou"]) and none["images"] == 0


def resampled(units: np.ndarray, seed: int, n: int) -> np.ndarray:
    """The bootstrap's draws written out: ``n`` resamples of the units with replacement, pooled."""
    idx = np.random.default_rng(seed).integers(0, len(units), (n, len(units)))
    return units[idx].sum(axis=1)


def test_bootstrap_and_paired_difference_equal_their_written_out_percentiles():
    rng = np.random.default_rng(8)
    units = np.array([[0, 1, 0], [0, 0, 0], [2, 3, 2], [1, 1, 2], [0, 0, 1]], float)  # empty and 1-pixel unions
    units = np.concatenate([units, rng.integers(0, 4, (7, 3)).astype(float)])
    units[:, 1:] = np.maximum(units[:, 1:], units[:, :1])  # intersections never exceed either sum
    s = resampled(units, 6, 300)
    i, st_, sp = s.T
    iou = np.array([1.0 if st_[k] + sp[k] - i[k] == 0 else i[k] / (st_[k] + sp[k] - i[k]) for k in range(300)])
    dice = np.array([1.0 if st_[k] + sp[k] == 0 else 2 * i[k] / (st_[k] + sp[k]) for k in range(300)])
    got = scores.bootstrap(units, seed=6, n=300)
    assert got["iou"] == np.percentile(iou, [2.5, 97.5]).tolist()
    assert got["dice"] == np.percentile(dice, [2.5, 97.5]).tolist()
    other = units[::-1].copy()
    sb = resampled(other, 6, 300)
    iou_b = np.array([1.0 if r[1] + r[2] - r[0] == 0 else r[0] / (r[1] + r[2] - r[0]) for r in sb])
    d = scores.paired_difference(units, other, seed=6, n=300)
    assert d["ci"] == pytest.approx(np.percentile(iou - iou_b, [2.5, 97.5]).tolist(), abs=1e-12)
    two = scores.bootstrap(units[2:4], seed=1, n=50)
    assert two["iou"][0] < two["iou"][1]  # two units are resampled, not one


def test_equal_sums_are_not_a_perfect_dice_and_blocks_run_down_the_rows():
    # truth 2 pixels, prediction 2 pixels, one shared: Dice 2 * 1 / 4 = 0.5 (equal sums are not a match)
    assert scores.dice(1, 2, 2) == 0.5 and scores.iou(1, 2, 2) == pytest.approx(1 / 3)
    truth, pred = np.ones((25, 9), bool), np.zeros((25, 9), bool)
    blocks = scores.block_counts(truth, pred, 8)
    assert blocks.shape == (4 * 2, 3) and blocks[:, 1].sum() == 25 * 9
    assert scores.image_row("x", truth, pred)["image"] == "x"


def test_bootstrap_of_tiny_unions_equals_the_written_out_scores():
    units = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]], float)  # resampled unions of 0, 1, 2 ...
    i, st_, sp = resampled(units, 2, 400).T
    union = st_ + sp - i
    iou = np.where(union == 0, 1.0, i / np.maximum(union, 1))
    dice = np.where(st_ + sp == 0, 1.0, 2 * i / np.maximum(st_ + sp, 1))
    got = scores.bootstrap(units, seed=2, n=400, level=0.5)
    assert got == {"iou": np.percentile(iou, [25, 75]).tolist(), "dice": np.percentile(dice, [25, 75]).tolist()}
    a = scores.paired_difference(units, units[::-1], seed=2, n=400, level=0.5)
    j, su, sq = resampled(units[::-1], 2, 400).T
    other = np.where(su + sq - j == 0, 1.0, j / np.maximum(su + sq - j, 1))
    assert a["ci"] == pytest.approx(np.percentile(iou - other, [25, 75]).tolist(), abs=1e-12)


def test_any_non_zero_pixel_is_foreground_in_either_mask():
    """Masks read from files may hold 0/255 or labels (1, 2, ...): non-zero is foreground, so 2 & 1 is a
    hit (as integers it would be 0)."""
    truth = np.array([[2, 0], [255, 1]], np.uint8)
    pred = np.array([[1, 0], [4, 0]], np.uint8)
    assert scores.counts(truth, pred) == (2, 3, 2)  # (0, 0) and (1, 0) overlap
    assert scores.counts(pred, truth) == (2, 2, 3)
    row = scores.image_row("a.png", truth, pred)
    assert row["image"] == "a.png" and row["iou"] == pytest.approx(2 / 3) and row["dice"] == pytest.approx(4 / 5)
