"""Pooled segmentation metrics: hand-computed values, accumulation, and batch-size independence."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras import ops  # noqa: E402

from hpc_unet.train.metrics import Dice, JacardCoef, ThresholdedIoU, make_metrics, patch_overlaps  # noqa: E402

# Batch A: t=[1,1,0,0], p=[.5,1,.5,0] -> I=1.5, T=2, P=2, U=2.5; thresholded p=[0,1,0,0] -> I=1, P=1, U=2.
A_T = np.array([[1, 1, 0, 0]], "float32")
A_P = np.array([[0.5, 1.0, 0.5, 0.0]], "float32")
# Batch B: t=[0,0,1,1], p=[.25,0,.75,1] -> I=1.75, T=2, P=2, U=2.25; thresholded p=[0,0,1,1] -> I=2, P=2, U=2.
B_T = np.array([[0, 0, 1, 1]], "float32")
B_P = np.array([[0.25, 0.0, 0.75, 1.0]], "float32")


def _value(metric: keras.metrics.Metric, *batches: tuple[np.ndarray, np.ndarray]) -> float:
    metric.reset_state()
    for t, p in batches:
        metric.update_state(t, p)
    return float(metric.result())


@pytest.mark.parametrize(
    ("metric", "batch", "expected"),
    [
        (JacardCoef(), (A_T, A_P), (1.5 + 1) / (2.5 + 1)),  # 5/7
        (JacardCoef(), (B_T, B_P), (1.75 + 1) / (2.25 + 1)),  # 11/13
        (ThresholdedIoU(), (A_T, A_P), (1 + 1) / (2 + 1)),  # p=0.5 is not above 0.5
        (ThresholdedIoU(), (B_T, B_P), (2 + 1) / (2 + 1)),
        (Dice(), (A_T, A_P), (2 * 1.5 + 1) / (2 + 2 + 1)),  # 0.8
        (Dice(), (B_T, B_P), (2 * 1.75 + 1) / (2 + 2 + 1)),  # 0.9
    ],
)
def test_hand_computed_single_batch(metric: keras.metrics.Metric, batch: tuple, expected: float) -> None:
    assert _value(metric, batch) == pytest.approx(expected, abs=1e-12)


def test_thresholded_iou_threshold_is_a_parameter() -> None:
    # threshold 0.4: A's p -> [1,1,1,0]: I=2, T=2, P=3, U=3 -> 3/4
    assert _value(ThresholdedIoU(threshold=0.4), (A_T, A_P)) == pytest.approx(3 / 4, abs=1e-12)


def test_empty_masks_score_one_by_smoothing() -> None:
    z = np.zeros((2, 4, 4, 1), "float32")
    for m in make_metrics():
        assert _value(m, (z, z)) == 1.0


@pytest.mark.parametrize(
    ("cls", "pooled", "per_batch_mean"),
    [
        # pooled I=3.25, T=4, P=4, U=4.75
        (JacardCoef, 4.25 / 5.75, (5 / 7 + 11 / 13) / 2),
        (ThresholdedIoU, (3 + 1) / (4 + 1), (2 / 3 + 1) / 2),
        (Dice, (6.5 + 1) / (8 + 1), (0.8 + 0.9) / 2),
    ],
)
def test_two_batches_pool_like_one(cls: type, pooled: float, per_batch_mean: float) -> None:
    two = _value(cls(), (A_T, A_P), (B_T, B_P))
    one = _value(cls(), (np.concatenate([A_T, B_T]), np.concatenate([A_P, B_P])))
    assert two == pytest.approx(one, abs=1e-12)
    assert two == pytest.approx(pooled, abs=1e-12)
    assert abs(two - per_batch_mean) > 1e-3  # what a per-batch average would have reported


def test_reset_state_forgets() -> None:
    m = JacardCoef()
    m.update_state(B_T, B_P)
    m.reset_state()
    m.update_state(A_T, A_P)
    assert float(m.result()) == pytest.approx(5 / 7, abs=1e-12)


def test_sample_weight_zero_drops_a_sample() -> None:
    m = JacardCoef()
    m.update_state(np.concatenate([A_T, B_T]), np.concatenate([A_P, B_P]), sample_weight=np.array([1.0, 0.0]))
    assert float(m.result()) == pytest.approx(5 / 7, abs=1e-12)


def test_make_metrics_names_order_direction_and_config_roundtrip() -> None:
    ms = make_metrics()
    assert [m.name for m in ms] == ["jacard_coef", "iou", "dice"]
    assert [type(m) for m in ms] == [JacardCoef, ThresholdedIoU, Dice]
    assert all(m._direction == "up" for m in ms)
    for m in ms + [ThresholdedIoU(threshold=0.3, name="iou30")]:
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
        assert type(again) is type(m) and again.get_config() == m.get_config()
    assert keras.saving.get_registered_object("hpc_unet>JacardCoef") is JacardCoef
    # float64 is each metric's declared dtype (the module docstring's reason), kept through a save
    assert [m.get_config()["dtype"] for m in ms] == ["float64"] * 3 and all(m.dtype == "float64" for m in ms)
    for m in ms:  # the running sums themselves: float32 ones would drift past 2**24 pixels
        assert [(v.name, str(v.dtype)) for v in m.variables] == [
            ("intersection", "float64"), ("sum_true", "float64"), ("sum_pred", "float64")]


def test_per_pixel_sample_weights_line_up_with_the_mask() -> None:
    # masks (1, 2, 2, 1) and a weight per pixel (1, 2, 2): the weight gains the channel axis at the end
    t = np.array([[[[1.0], [1.0]], [[0.0], [1.0]]]], "float32")
    p = np.array([[[[1.0], [0.0]], [[1.0], [1.0]]]], "float32")
    w = np.array([[[1.0, 0.0], [1.0, 0.0]]], "float32")  # keeps pixels (0,0) and (1,0) only
    # kept: t=[1, 0], p=[1, 1] -> I=1, T=1, P=2, U=2 -> (1+1)/(2+1)
    m = JacardCoef()
    m.update_state(t, p, sample_weight=w)
    assert float(m.result()) == pytest.approx(2 / 3, abs=1e-12)


@pytest.mark.parametrize(("cls", "expected"), [
    (JacardCoef, (1.5 + 0.25) / (2.5 + 0.25)),   # batch A with smooth 0.25, by hand
    (ThresholdedIoU, (1 + 0.25) / (2 + 0.25)),
    (Dice, (2 * 1.5 + 0.25) / (2 + 2 + 0.25)),
])
def test_smooth_is_passed_through(cls: type, expected: float) -> None:
    metric = cls(smooth=0.25)
    assert metric.get_config()["smooth"] == 0.25
    assert _value(metric, (A_T, A_P)) == pytest.approx(expected, abs=1e-12)


def test_patch_overlaps_hand_values_and_pooling() -> None:
    t = np.stack([A_T, B_T]).reshape(2, 2, 2, 1)
    p = np.stack([A_P, B_P]).reshape(2, 2, 2, 1)
    inter, union = patch_overlaps(t, p)
    np.testing.assert_allclose(inter, [1.5, 1.75])
    np.testing.assert_allclose(union, [2.5, 2.25])
    assert inter.dtype == np.float64
    assert (inter.sum() + 1) / (union.sum() + 1) == pytest.approx(_value(JacardCoef(), (t, p)), abs=1e-12)
    with pytest.raises(ValueError):
        patch_overlaps(t, p[:1])


def test_patch_overlaps_edges_and_messages() -> None:
    # bool masks (as thresholded predictions arrive) still give float64 sums, per the docstring
    t = np.array([[[True, True], [False, False]]])
    p = np.array([[[True, False], [True, False]]])
    inter, union = patch_overlaps(t, p)
    assert inter.dtype == union.dtype == np.float64 and inter.tolist() == [1.0] and union.tolist() == [3.0]
    # one axis is enough: one value per sample, nothing to sum
    inter, union = patch_overlaps(np.array([1.0, 0.0, 0.5]), np.array([1.0, 1.0, 0.5]))
    assert inter.tolist() == [1.0, 0.0, 0.25] and union.tolist() == [1.0, 1.0, 0.75]
    with pytest.raises(ValueError, match=r"^y_true shape \(2, 3\) != y_pred shape \(1, 3\)$"):
        patch_overlaps(np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"^need at least one axis \(samples\)$"):
        patch_overlaps(np.float64(1.0), np.float64(1.0))


def test_thresholded_iou_counts_a_soft_label_of_one_half_as_background() -> None:
    # t=[0.5, 1] -> [0, 1] (0.5 is not above 0.5), p=[1, 1]: I=1, U=2 -> (1+1)/(2+1)
    t, p = np.array([[0.5, 1.0]], "float32"), np.array([[1.0, 1.0]], "float32")
    assert _value(ThresholdedIoU(), (t, p)) == pytest.approx(2 / 3, abs=1e-12)
    t = np.array([[0.5001, 1.0]], "float32")  # just above: foreground, I=2, U=2 -> 1
    assert _value(ThresholdedIoU(), (t, p)) == pytest.approx(1.0, abs=1e-12)


def _naive_jaccard(y_true, y_pred):  # the original study's function metric, averaged per batch by Keras
    t = ops.reshape(y_true, (-1,))
    p = ops.reshape(y_pred, (-1,))
    inter = ops.sum(t * p)
    return (inter + 1.0) / (ops.sum(t) + ops.sum(p) - inter + 1.0)


def _disks(n: int, size: int) -> np.ndarray:
    """Masks whose foreground grows with the sample index, so batches differ from each other."""
    yy, xx = np.mgrid[:size, :size]
    r = np.linspace(2, size / 2, n)
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r[:, None, None] ** 2).astype("float32")[..., None]


def test_evaluate_jaccard_independent_of_batch_size() -> None:
    from hpc_unet.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("UNet", (32, 32, 1), base_filters=4, depth=2)
    model.compile(loss="binary_crossentropy", metrics=[*make_metrics(), _naive_jaccard])
    y = _disks(40, 32)  # 40 is not a multiple of 16 or 32: uneven last batches too
    x = (y + np.random.default_rng(0).normal(0, 0.3, y.shape)).astype("float32")
    res = {b: model.evaluate(x, y, batch_size=b, verbose=0, return_dict=True) for b in (8, 16, 32)}
    for key in ("jacard_coef", "iou", "dice"):
        vals = [res[b][key] for b in res]
        assert max(vals) - min(vals) < 1e-6, (key, vals)
    naive = [res[b]["_naive_jaccard"] for b in res]
    assert max(naive) - min(naive) > 1e-3, naive  # the bias the stateful metric removes
    inter, union = patch_overlaps(y, model.predict(x, batch_size=40, verbose=0))
    assert res[8]["jacard_coef"] == pytest.approx((inter.sum() + 1) / (union.sum() + 1), abs=1e-6)

    es = keras.callbacks.EarlyStopping(monitor="val_jacard_coef")  # mode="auto" needs _direction
    es.set_model(model)
    es._set_monitor_op()
    assert es.monitor_op is ops.greater


# ------------------------------------------------------------------------------------------- metrics
masks = st.integers(0, 2**32 - 1).flatmap(lambda seed: st.tuples(
    st.just(seed), st.integers(1, 4), st.integers(1, 12), st.floats(0.0, 1.0), st.booleans()))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=masks)
def test_metrics_match_numpy(case):
    """JacardCoef, ThresholdedIoU and Dice (pooled, +1 smoothed) equal NumPy set arithmetic on random
    masks and soft predictions, empty masks included, whatever the batching."""
    seed, n, size, density, empty = case
    rng = np.random.default_rng(seed)
    t = (rng.random((n, size, size, 1)) < (0.0 if empty else density)).astype("float32")
    p = rng.random((n, size, size, 1)).astype("float32") * (0.0 if empty and seed % 2 else 1.0)
    t64, p64 = t.astype(np.float64), p.astype(np.float64)
    inter, st_, sp = (t64 * p64).sum(), t64.sum(), p64.sum()
    hard_t, hard_p = t64 > 0.5, p64 > 0.5
    hi, hu = np.logical_and(hard_t, hard_p).sum(), np.logical_or(hard_t, hard_p).sum()
    expected = {"jacard": (inter + 1) / (st_ + sp - inter + 1), "iou": (hi + 1) / (hu + 1),
                "dice": (2 * inter + 1) / (st_ + sp + 1)}
    for metric, key in ((JacardCoef(), "jacard"), (ThresholdedIoU(), "iou"), (Dice(), "dice")):
        for k in range(n):  # one sample per batch: pooling across batches
            metric.update_state(t[k:k + 1], p[k:k + 1])
        assert float(metric.result()) == pytest.approx(expected[key], rel=1e-9, abs=1e-12)
