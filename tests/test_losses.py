"""Losses: focal equals the focal_loss package's formula, bce / dice_bce hand values, name lookup."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hpc_unet.errors import UserError  # noqa: E402
from hpc_unet.train.losses import DiceBCELoss, get_loss  # noqa: E402


def focal_reference(y: np.ndarray, p: np.ndarray, gamma: float, alpha: float | None = None) -> float:
    """focal_loss.BinaryFocalLoss(gamma) on probabilities, written out in float64 NumPy.

    Per pixel: -y (1-p)^gamma log(p) - (1-y) p^gamma log(1-p), averaged over all pixels
    (Keras SUM_OVER_BATCH_SIZE). ``alpha`` adds segmentation_models' weighting: alpha on
    positives, 1-alpha on negatives.
    """
    y = y.astype(np.float64)
    p = p.astype(np.float64)
    pos = -y * (1 - p) ** gamma * np.log(p)
    neg = -(1 - y) * p**gamma * np.log(1 - p)
    if alpha is not None:
        pos, neg = alpha * pos, (1 - alpha) * neg
    return float(np.mean(pos + neg))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random((3, 4, 4, 1)) > 0.6).astype("float32")
    p = rng.uniform(0.02, 0.98, y.shape).astype("float32")  # away from the 1e-7 clipping
    return y, p


@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.5])
def test_focal_equals_focal_loss_package_formula(gamma: float) -> None:
    y, p = _data()
    got = float(get_loss("focal", gamma=gamma)(y, p))
    assert got == pytest.approx(focal_reference(y, p, gamma), rel=1e-5)


def test_focal_class_balancing_equals_alpha_weighting() -> None:
    y, p = _data()
    got = float(get_loss("focal", gamma=2.0, class_balancing=True, alpha=0.25)(y, p))
    assert got == pytest.approx(focal_reference(y, p, 2.0, alpha=0.25), rel=1e-5)
    assert got != pytest.approx(float(get_loss("focal")(y, p)), rel=1e-3)


def test_focal_hand_values() -> None:
    # y=1, p=0.8: 0.2^2 * -ln 0.8 = 0.04 * 0.2231436 ; y=0, p=0.4: 0.4^2 * -ln 0.6 = 0.16 * 0.5108256
    y = np.array([[1.0], [0.0]], "float32")
    p = np.array([[0.8], [0.4]], "float32")
    expected = (0.04 * 0.22314355 + 0.16 * 0.51082562) / 2
    assert float(get_loss("focal")(y, p)) == pytest.approx(expected, rel=1e-5)


def test_bce_hand_value() -> None:
    y = np.array([[1.0], [0.0]], "float32")
    p = np.array([[0.8], [0.4]], "float32")
    assert float(get_loss("bce")(y, p)) == pytest.approx((0.22314355 + 0.51082562) / 2, rel=1e-5)


def test_dice_bce_hand_values() -> None:
    # sample 1: t=[1,1,0,0], p=[.5,.9,.5,.1]: bce = mean(ln2, -ln .9, ln2, -ln .9)
    #   dice = (2*1.4+1)/(2+2+1) = 0.76 -> loss1 = bce + 0.24
    # sample 2: all background t=0, p=[.2,.2,.2,.2]: bce = -ln .8, dice = 1/(0.8+1) -> loss2 = bce + 1 - 1/1.8
    t = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], "float32").reshape(2, 2, 2, 1)
    p = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]], "float32").reshape(2, 2, 2, 1)
    ln2, ln09, ln08 = 0.69314718, 0.10536052, 0.22314355
    loss1 = (2 * ln2 + 2 * ln09) / 4 + (1 - 0.76)
    loss2 = ln08 + 1 - 1 / 1.8
    loss = get_loss("dice_bce")
    assert isinstance(loss, DiceBCELoss)
    assert float(loss(t[:1], p[:1])) == pytest.approx(loss1, rel=1e-5)
    assert float(loss(t, p)) == pytest.approx((loss1 + loss2) / 2, rel=1e-5)
    assert float(loss(t, p, sample_weight=np.array([0.0, 1.0]))) == pytest.approx(loss2 / 2, rel=1e-5)


def test_names_resolve() -> None:
    focal = get_loss()
    assert isinstance(focal, keras.losses.BinaryFocalCrossentropy) and focal.name == "focal"
    cfg = get_loss("focal", gamma=3.0, class_balancing=True, alpha=0.4).get_config()
    assert (cfg["gamma"], cfg["apply_class_balancing"], cfg["alpha"]) == (3.0, True, 0.4)
    assert isinstance(get_loss("bce"), keras.losses.BinaryCrossentropy) and get_loss("bce").name == "bce"
    assert get_loss("dice_bce").name == "dice_bce"
    assert get_loss("focal", class_balancing=True).get_config()["alpha"] == 0.25  # the default alpha
    with pytest.raises(UserError, match="choose one of focal, bce, dice_bce$"):
        get_loss("nope")


def test_dice_bce_reduction_dtype_integer_masks_and_any_rank() -> None:
    t = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], "float32").reshape(2, 2, 2, 1)
    p = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]], "float32").reshape(2, 2, 2, 1)
    mean = float(DiceBCELoss()(t, p))
    assert float(DiceBCELoss(reduction="sum")(t, p)) == pytest.approx(2 * mean, rel=1e-6)
    assert DiceBCELoss(dtype="float64").dtype == "float64"
    assert float(DiceBCELoss()(t.astype("uint8"), p)) == pytest.approx(mean, rel=1e-6)  # masks as stored
    # (N, L, 1) sequences: the BCE is averaged per sample like the Dice term, whatever the rank
    assert float(DiceBCELoss()(t.reshape(2, 4, 1), p.reshape(2, 4, 1))) == pytest.approx(mean, rel=1e-6)


@pytest.mark.parametrize(("name", "hint"), [("focl", "did you mean 'focal'"), ("dice-bce", "did you mean 'dice_bce'")])
def test_unknown_loss_suggests(name: str, hint: str) -> None:
    with pytest.raises(UserError, match=hint):
        get_loss(name)


def test_dice_bce_serializes_by_registered_name() -> None:
    cfg = keras.saving.serialize_keras_object(DiceBCELoss(smooth=2.0))
    assert cfg["registered_name"] == "hpc_unet>DiceBCELoss"
    again = keras.saving.deserialize_keras_object(cfg)
    assert isinstance(again, DiceBCELoss) and again.smooth == 2.0


def test_compiled_model_with_custom_loss_and_metrics_reloads_safely(tmp_path) -> None:
    from hpc_unet.train.metrics import make_metrics

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    model.compile(optimizer="adam", loss=get_loss("dice_bce"), metrics=make_metrics())
    y = (np.random.default_rng(0).random((4, 8, 8, 1)) > 0.5).astype("float32")
    model.fit(y, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(again.loss, DiceBCELoss)
    a = model.evaluate(y, y, verbose=0, return_dict=True)
    b = again.evaluate(y, y, verbose=0, return_dict=True)
    assert set(b) == {"loss", "jacard_coef", "iou", "dice"}
    for k in a:
        assert b[k] == pytest.approx(a[k], abs=1e-6)
