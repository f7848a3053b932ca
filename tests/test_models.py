"""The three U-Nets: shapes, exact parameter counts, safe .keras round trip, options, errors."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import subprocess  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hpc_unet.errors import UserError  # noqa: E402
from hpc_unet.models import ARCHITECTURES, build_model  # noqa: E402

# Pinned at base 64, depth 4 (also in docs/models.md). Built only, never run.
PARAMS = {
    ("UNet", 1): 31_401_349,
    ("UNet", 3): 31_402_501,
    ("Attention_UNet", 1): 37_333_513,
    ("Attention_UNet", 3): 37_334_665,
    ("Attention_ResUNet", 1): 39_089_097,
    ("Attention_ResUNet", 3): 39_090_377,
}


def _layers_of(model: keras.Model, cls: type) -> list:
    return [layer for layer in model.layers if isinstance(layer, cls)]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shape_and_range(arch: str, channels: int) -> None:
    model = build_model(arch, (64, 64, channels), base_filters=8)
    assert model.name == arch
    x = np.random.default_rng(0).random((2, 64, 64, channels)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 64, 64, 1) and y.dtype == np.float32
    assert np.all((y > 0) & (y < 1))
    assert not _layers_of(model, keras.layers.Lambda)


@pytest.mark.parametrize(("arch", "channels"), list(PARAMS))
def test_parameter_count_pinned(arch: str, channels: int) -> None:
    model = build_model(arch, (256, 256, channels))
    assert model.count_params() == PARAMS[(arch, channels)]


def unet_params(channels: int, base: int, depth: int) -> int:
    """Parameters of the U-Net in docs/models.md from its layers: per block two Conv3x3 (+bias) each with a
    BN (4F: gamma, beta, moving mean, moving variance); decoder input = upsampled coarser level + skip;
    head Conv1x1(F0 -> 1) + BN(1)."""
    fs = [base * 2**level for level in range(depth + 1)]

    def block(cin: int, f: int) -> int:
        return 9 * cin * f + f + 4 * f + 9 * f * f + f + 4 * f

    encoder = sum(block(channels if level == 0 else fs[level - 1], fs[level]) for level in range(depth + 1))
    decoder = sum(block(fs[level + 1] + fs[level], fs[level]) for level in range(depth))
    return encoder + decoder + fs[0] + 1 + 4


@pytest.mark.parametrize(("channels", "base", "depth"), [(1, 64, 4), (3, 64, 4), (1, 8, 2)])
def test_unet_parameters_follow_from_its_layers(channels: int, base: int, depth: int) -> None:
    want = PARAMS.get(("UNet", channels)) if (base, depth) == (64, 4) else None
    got = want or build_model("UNet", (32, 32, channels), base_filters=base, depth=depth).count_params()
    assert got == unet_params(channels, base, depth)


def test_attention_and_residual_differences_match_reference_layers() -> None:
    # Each attention level (F filters, gate input 2F channels) adds, per the reference attention_block
    # + gating_signal: gate conv 2F*F+F, BN 4F, theta 4F*F+F, phi F*F+F, transpose 9F*F+F, psi F+1,
    # out conv F*F+F, BN 4F = 17F^2 + 14F + 1. A 3-channel input only changes the first conv (+2*9*64)
    # and, for the residual net, its 1x1 shortcut (+2*64).
    fs = [64, 128, 256, 512]
    att = sum(17 * f * f + 14 * f + 1 for f in fs)
    assert PARAMS[("Attention_UNet", 1)] - PARAMS[("UNet", 1)] == att
    # Residual shortcut = Conv1x1(cin->F) + BN(4F), for 9 blocks (cin, F):
    blocks = [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1024),
              (1536, 512), (768, 256), (384, 128), (192, 64)]
    assert PARAMS[("Attention_ResUNet", 1)] - PARAMS[("Attention_UNet", 1)] == sum(
        c * f + f + 4 * f for c, f in blocks
    )
    for arch in ARCHITECTURES:
        extra = 2 * 9 * 64 + (2 * 64 if arch == "Attention_ResUNet" else 0)
        assert PARAMS[(arch, 3)] - PARAMS[(arch, 1)] == extra


def test_float32_output_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("Attention_ResUNet", (64, 64, 1), base_filters=8)
        assert model.layers[1].compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.output.dtype == "float32"
    assert model.get_layer("head_sigmoid").compute_dtype == "float32"


LOADER = """
import sys, numpy as np, keras
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    m = keras.models.load_model(path, safe_mode=True)
    logits = keras.Model(m.inputs, m.get_layer("head_sigmoid").input)
    np.save(path + ".logits.npy", logits.predict(x, verbose=0))
    np.savez(path + ".vars.npz", **{v.path: keras.ops.convert_to_numpy(v) for v in m.variables})
print(any(k == "hpc_unet" or k.startswith("hpc_unet.") for k in sys.modules))
"""


def scramble(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every variable (batch-norm moving means and variances included) its own random values. The
    test compares logits (before the sigmoid, which saturates) and every variable exactly, so any one
    variable left at its initial value, or all of them shifted by 0.05, shows."""
    for v in model.variables:
        values = rng.normal(0.0, 0.3, v.shape)
        if "moving_variance" in v.path or v.path.endswith("gamma"):
            values = 0.5 + np.abs(values)
        v.assign(values.astype(v.dtype))


def test_keras_file_loads_safely_in_a_fresh_process(tmp_path) -> None:
    """Saved models load with safe_mode and no custom_objects, even without hpc_unet imported, with every
    variable bit-identical and the same pre-sigmoid outputs."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected, variables, paths = {}, {}, []
    for arch in ARCHITECTURES:
        model = build_model(arch, (32, 32, 1), base_filters=4, depth=2)
        scramble(model, rng)
        logits = keras.Model(model.inputs, model.get_layer("head_sigmoid").input)
        expected[arch] = logits.predict(x, verbose=0)
        assert np.std(expected[arch]) > 0.05  # logits vary over the image: no constant output hides a change
        variables[arch] = {v.path: keras.ops.convert_to_numpy(v) for v in model.variables}
        paths.append(str(tmp_path / f"{arch}.keras"))
        model.save(paths[-1])
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "x.npy"), *paths],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("False")  # loaded without importing hpc_unet
    for arch, path in zip(ARCHITECTURES, paths, strict=True):
        loaded = dict(np.load(path + ".vars.npz"))
        assert sorted(loaded) == sorted(variables[arch])
        assert any("moving_variance" in k for k in loaded)
        for name, value in variables[arch].items():
            assert np.array_equal(loaded[name], value), f"{arch}: {name} differs after loading"
        # Logits equal to float32 rounding, not bit for bit: this process's TensorFlow state left by earlier
        # tests (thread pools, graph options) can change summation order; a missed load differs by far more.
        np.testing.assert_allclose(np.load(path + ".logits.npy"), expected[arch], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_depth_3_without_batch_norm_with_dropout(arch: str) -> None:
    model = build_model(arch, (64, 64, 1), base_filters=8, depth=3, dropout=0.1, batch_norm=False)
    assert len(_layers_of(model, keras.layers.MaxPooling2D)) == 3
    assert not _layers_of(model, keras.layers.BatchNormalization)
    assert len(_layers_of(model, keras.layers.Dropout)) == 2 * 3 + 1
    assert model.output_shape == (None, 64, 64, 1)
    bottleneck = model.get_layer("bottleneck_conv2")
    assert bottleneck.filters == 8 * 2**3
    with_bn = build_model(arch, (64, 64, 1), base_filters=8, depth=3)
    assert _layers_of(with_bn, keras.layers.BatchNormalization)
    assert not _layers_of(with_bn, keras.layers.Dropout)


@pytest.mark.parametrize(
    ("name", "hint"),
    [("Unet", "did you mean 'UNet'"), ("Attention_Unet", "did you mean 'Attention_UNet'"),
     ("AttentionResUNet", "did you mean 'Attention_ResUNet'")],
)
def test_unknown_architecture_suggests(name: str, hint: str) -> None:
    with pytest.raises(UserError, match=hint) as err:
        build_model(name, (64, 64, 1), base_filters=8)
    assert "UNet, Attention_UNet, Attention_ResUNet" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"input_shape": (60, 64, 1)}, "divisible by 2\\*\\*depth = 16"),
     ({"input_shape": (64, 64)}, "three positive integers"),
     ({"depth": 0}, "depth"),
     ({"base_filters": 0}, "base_filters"),
     ({"dropout": 1.0}, "dropout"),
     ({"dropout": "0.1"}, "dropout")],
)
def test_bad_arguments_are_user_errors(kwargs: dict, fragment: str) -> None:
    args = {"input_shape": (64, 64, 1), "base_filters": 8, **kwargs}
    with pytest.raises(UserError, match=fragment):
        build_model("UNet", **args)
