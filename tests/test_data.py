"""Data sources, tiling, split, per-study cache, synthetic generator and `hpc-unet data` (tiny files only)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from hpc_unet.cli import main
from hpc_unet.data import cache, prepare, prepare_for_row, sources, synthesize
from hpc_unet.data.synth import IMAGES_NAME, MASKS_NAME
from hpc_unet.data.tiling import count_val, split_indices, tile
from hpc_unet.errors import UserError
from hpc_unet.study import Study


def _stack(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric=kw.pop("photometric", "minisblack"), **kw)
    return path


def _pair(tmp: Path, n: int = 3, h: int = 40, w: int = 50, dtype=np.uint8, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    img = rng.integers(0, hi, size=(n, h, w), dtype=dtype, endpoint=True)
    mask = (rng.random((n, h, w)) < 0.3).astype(np.uint8) * 255
    return _stack(tmp / "training.tif", img), _stack(tmp / "training_groundtruth.tif", mask)


def _cfg(images: Path | str = "", masks: Path | str = "", **kw) -> dict:
    cfg = {"kind": "tiff", "images": str(images), "masks": str(masks), "patch_size": 16, "val_fraction": 0.2,
           "split_seed": 0}
    cfg.update(kw)
    return cfg


def _entries(cache_dir: Path) -> list[Path]:
    return cache.entries(cache_dir)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------- tiling and split


def test_tile_order_and_remainder():
    stack = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    patches = tile(stack, 2)
    assert patches.shape == (2 * 2 * 3, 2, 2)  # 5x7 -> 2x3 patches; last row and column dropped
    assert np.array_equal(patches[0], stack[0, 0:2, 0:2])
    assert np.array_equal(patches[1], stack[0, 0:2, 2:4])
    assert np.array_equal(patches[3], stack[0, 2:4, 0:2])
    assert np.array_equal(patches[6], stack[1, 0:2, 0:2])
    rgb = np.arange(1 * 4 * 4 * 3).reshape(1, 4, 4, 3)
    assert np.array_equal(tile(rgb, 2)[3], rgb[0, 2:4, 2:4])


def test_split_is_seeded_disjoint_and_sized():
    tr, va = split_indices(100, 0.1, 3)
    tr2, va2 = split_indices(100, 0.1, 3)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert len(va) == 10 and len(tr) == 90
    assert sorted(np.concatenate([tr, va])) == list(range(100))
    assert not np.array_equal(va, split_indices(100, 0.1, 4)[1])
    assert count_val(1980, 0.1) == 198 and count_val(5, 0.01) == 1
    tr, va = split_indices(100, 0.25, 0, max_patches=12)
    assert len(tr) + len(va) == 12 and len(va) == 3 and len(set(tr) | set(va)) == 12
    with pytest.raises(UserError, match="at least one training"):
        split_indices(1, 0.5, 0)


# ------------------------------------------------------------------------------------------------ sources


def test_tiff_stack_prepare(tmp_path):
    images, masks = _pair(tmp_path / "src")
    prep = prepare(_cfg(images, masks), tmp_path / "cache", tmp_path / "data")
    # 40x50 at 16 -> 2x3 patches per slice, 3 slices = 18; ceil(18 * 0.2) = 4 validation patches
    assert prep.train_x.shape == (14, 16, 16, 1) and prep.val_x.shape == (4, 16, 16, 1)
    assert prep.train_y.shape == (14, 16, 16, 1) and prep.train_x.dtype == np.float32
    assert prep.test_x is None and prep.test_y is None
    assert set(np.unique(prep.train_y)) <= {0.0, 1.0} and 0 <= prep.train_x.min() and prep.train_x.max() <= 1
    pv = prep.provenance
    assert pv["patches_total"] == 18 and pv["patches_train"] == 14 and pv["patches_val"] == 4
    assert pv["count"] == 3 and pv["image_shape"] == [3, 40, 50, 1] and pv["image_dtype"] == "uint8"
    assert pv["edge_dropped_pixels"] == {"bottom": 8, "right": 2}
    assert pv["images_sha256"] == hashlib.sha256(images.read_bytes()).hexdigest()
    assert pv["cache_key"] == prep.cache_key and not prep.from_cache
    assert 0.2 < pv["mask_fraction"] < 0.4
    # Every patch is an exact, scaled crop of the source.
    raw = tifffile.imread(images)
    all_patches = tile(raw, 16).astype(np.float32) / 255
    tr_idx, va_idx = split_indices(18, 0.2, 0)
    assert np.array_equal(prep.train_x[..., 0], all_patches[tr_idx])
    assert np.array_equal(prep.val_x[..., 0], all_patches[va_idx])


def test_uint16_and_float_scaling_and_single_page(tmp_path):
    img16 = np.full((32, 32), 65535, np.uint16)
    img16[:16] = 0
    img16[16:, :16] = 32768
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 1  # 0/1 masks binarize the same as 0/255
    i, m = _stack(tmp_path / "a" / "i.tif", img16), _stack(tmp_path / "a" / "m.tif", mask)
    prep = prepare(_cfg(i, m, val_fraction=0.25, normalize="dtype"), tmp_path / "c1", tmp_path / "d")
    x = np.concatenate([prep.train_x, prep.val_x])
    assert x.shape == (4, 16, 16, 1)
    assert sorted(np.unique(x).tolist()) == pytest.approx([0.0, 32768 / 65535, 1.0])
    assert prep.provenance["scaling"]["high"] == 65535 and prep.provenance["scaling"]["method"] == "dtype"
    assert prep.provenance["image_shape"] == [1, 32, 32, 1] and prep.provenance["mask_values"] == [0, 1]
    auto = prepare(_cfg(i, m, val_fraction=0.25), tmp_path / "c1", tmp_path / "d")
    assert auto.cache_key != prep.cache_key  # the normalisation is part of the cache key
    assert auto.provenance["scaling"]["method"] == "percentile" and auto.provenance["scaling"]["per"] == "image"

    f = np.linspace(-3.0, 5.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    i2 = _stack(tmp_path / "b" / "i.tif", f)
    prep = prepare(_cfg(i2, m, val_fraction=0.25), tmp_path / "c2", tmp_path / "d")
    x = np.concatenate([prep.train_x, prep.val_x])
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)
    assert prep.provenance["scaling"]["method"] == "minmax"


def test_rgb_tiff_keeps_channels_and_bool_masks(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    i = _stack(tmp_path / "i.tif", rgb, photometric="rgb")
    m = _stack(tmp_path / "m.tif", np.ones((2, 32, 32), bool))  # a single value > 0: all foreground
    prep = prepare(_cfg(i, m, val_fraction=0.3), tmp_path / "c", tmp_path / "d")
    assert prep.train_x.shape[1:] == (16, 16, 3) and prep.provenance["channels"] == 3
    assert float(prep.train_y.min()) == 1.0


def test_folders_paired_by_stem(tmp_path):
    imgs, msks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir()
    msks.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(imgs / "a.png")
    _stack(imgs / "b.tif", rng.integers(0, 255, (40, 32, 3), dtype=np.uint8), photometric="rgb")
    Image.fromarray((rng.random((32, 48)) < 0.5).astype(np.uint8) * 255).save(msks / "a.png")
    Image.fromarray((rng.random((40, 32)) < 0.5).astype(np.uint8) * 255).convert("RGB").save(msks / "b.png")
    (imgs / "notes.txt").write_text("ignored")
    prep = prepare(_cfg(imgs, msks, kind="folders", val_fraction=0.2), tmp_path / "c", tmp_path / "d")
    pv = prep.provenance
    assert pv["count"] == 2 and pv["count_unit"] == "files" and pv["image_shape"] == [2, None, None, 3]
    assert pv["patches_total"] == 2 * 3 + 2 * 2
    assert prep.train_x.shape[1:] == (16, 16, 3)
    expected = sources.combine_hashes([(p.name, hashlib.sha256(p.read_bytes()).hexdigest())
                                       for p in (imgs / "a.png", imgs / "b.tif")])
    assert pv["images_sha256"] == expected


def test_test_set_and_max_patches(tmp_path):
    i, m = _pair(tmp_path / "train", n=4, h=32, w=32)
    ti, tm = _pair(tmp_path / "test", n=1, h=48, w=32, seed=5)
    cfg = _cfg(i, m, test_images=str(ti), test_masks=str(tm), max_patches=6, val_fraction=0.3)
    prep = prepare(cfg, tmp_path / "c", tmp_path / "d")
    assert len(prep.train_x) + len(prep.val_x) == 6 and len(prep.val_x) == 2
    assert prep.test_x.shape == (6, 16, 16, 1) and prep.test_y.shape == (6, 16, 16, 1)
    pv = prep.provenance
    assert pv["patches_total"] == 16 and pv["patches_used"] == 6 and pv["patches_test"] == 6
    assert pv["test_images_sha256"] == hashlib.sha256(ti.read_bytes()).hexdigest()
    again = prepare(cfg, tmp_path / "c2", tmp_path / "d")  # fresh cache: same seeded subset and split
    assert np.array_equal(again.val_x, prep.val_x) and np.array_equal(again.train_y, prep.train_y)
    other = prepare({**cfg, "split_seed": 1}, tmp_path / "c", tmp_path / "d")
    assert other.cache_key != prep.cache_key and not np.array_equal(other.val_x, prep.val_x)


# -------------------------------------------------------------------------------------------------- cache


def test_cache_hit_reads_no_source(tmp_path, monkeypatch):
    i, m = _pair(tmp_path / "src")
    cfg = _cfg(i, m)
    first = prepare(cfg, tmp_path / "cache", tmp_path / "data")

    def boom(*_a, **_k):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(sources, "load_pair", boom)
    monkeypatch.setattr(sources, "sha256_file", boom)
    second = prepare(cfg, tmp_path / "cache", tmp_path / "data")
    assert second.from_cache and isinstance(second.train_x, np.memmap)
    assert not second.train_x.flags.writeable
    assert np.array_equal(second.train_x, first.train_x) and second.provenance == first.provenance
    # Without the stat pointer (e.g. data copied elsewhere) the sources are hashed but not decoded again.
    monkeypatch.undo()
    monkeypatch.setattr(sources, "load_pair", boom)
    for p in (tmp_path / "cache" / "lookup").iterdir():
        p.unlink()
    third = prepare(cfg, tmp_path / "cache", tmp_path / "data")
    assert third.from_cache and third.cache_key == first.cache_key
    assert len(_entries(tmp_path / "cache")) == 1


def test_changed_file_changes_hash_and_key(tmp_path):
    i, m = _pair(tmp_path / "src")
    first = prepare(_cfg(i, m), tmp_path / "cache", tmp_path / "data")
    mask = tifffile.imread(m)
    mask[0, 0, 0] = 255 - mask[0, 0, 0]
    _stack(m, mask)  # same size, new content
    second = prepare(_cfg(i, m), tmp_path / "cache", tmp_path / "data")
    assert not second.from_cache
    assert second.provenance["masks_sha256"] != first.provenance["masks_sha256"]
    assert second.provenance["images_sha256"] == first.provenance["images_sha256"]
    assert second.cache_key != first.cache_key and len(_entries(tmp_path / "cache")) == 2


@pytest.mark.parametrize("damage", ["truncate", "no_index", "bad_index"])
def test_damaged_entry_is_rebuilt(tmp_path, damage):
    i, m = _pair(tmp_path / "src")
    first = prepare(_cfg(i, m), tmp_path / "cache", tmp_path / "data")
    entry = first.entry
    good = np.array(first.train_x)
    del first
    if damage == "truncate":
        path = entry / "train_x.npy"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "no_index":
        (entry / "index.json").unlink()
    else:
        (entry / "index.json").write_text("{not json")
    again = prepare(_cfg(i, m), tmp_path / "cache", tmp_path / "data")
    assert not again.from_cache and np.array_equal(again.train_x, good)
    assert cache.verify_entry(tmp_path / "cache", again.cache_key) == []


def test_kill_before_index_leaves_partial_entry_that_is_rebuilt(tmp_path):
    i, m = _pair(tmp_path / "src")
    code = (f"from hpc_unet.data import prepare; prepare({_cfg(i, m)!r}, {str(tmp_path / 'cache')!r}, "
            f"{str(tmp_path / 'data')!r})")
    env = {**os.environ, "HPC_UNET_FAULT": "data.cache_before_index:kill"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9
    [entry] = _entries(tmp_path / "cache")
    assert (entry / "train_x.npy").exists() and not (entry / "index.json").exists()
    prep = prepare(_cfg(i, m), tmp_path / "cache", tmp_path / "data")
    assert not prep.from_cache and prep.entry == entry and (entry / "index.json").exists()


def _worker(cfg, cache_dir, synth_dir, barrier, queue):
    barrier.wait()
    prep = prepare(cfg, Path(cache_dir), Path(synth_dir))
    queue.put((prep.from_cache, prep.cache_key, _digest(prep.train_x, prep.train_y, prep.val_x, prep.val_y)))


def test_concurrent_prepare_builds_once(tmp_path):
    ctx = mp.get_context("spawn")  # no fork: other tests in this process may have started threads
    n = 3
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    cfg = {"kind": "synthetic", "patch_size": 16, "val_fraction": 0.2, "synth_slices": 2, "synth_height": 48,
           "synth_width": 48, "synth_seed": 3}
    procs = [ctx.Process(target=_worker, args=(cfg, str(tmp_path / "cache"), str(tmp_path / "data"), barrier, queue))
             for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r[0] for r in results) == [False, True, True]  # exactly one process built it
    assert len({r[1] for r in results}) == 1 and len({r[2] for r in results}) == 1
    assert len(_entries(tmp_path / "cache")) == 1
    assert len(list((tmp_path / "data").iterdir())) == 1


def test_prepare_for_row(tmp_path):
    study = Study.at(tmp_path / "study")
    row = {"exp_id": "unet-lr1e-03-bs8-s0", "data_kind": "synthetic", "data_images": "", "data_masks": "",
           "data_test_images": None, "data_test_masks": "", "data_patch_size": np.int64(16),
           "data_val_fraction": np.float64(0.25), "data_split_seed": np.int64(0), "data_max_patches": np.int64(0),
           "data_synth_slices": np.int64(1), "data_synth_height": np.int64(32), "data_synth_width": np.int64(32),
           "data_synth_seed": np.int64(0)}
    prep = prepare_for_row(row, study)
    assert prep.train_x.shape == (3, 16, 16, 1) and prep.val_x.shape == (1, 16, 16, 1)
    assert prep.entry.parent == study.cache_dir
    assert (study.data_dir / "synthetic-1x32x32-seed0-v1" / IMAGES_NAME).exists()
    assert prep.provenance["kind"] == "synthetic" and prep.provenance["synthetic"]["seed"] == 0
    assert '"kind": "synthetic"' in prep.provenance_json()


# ----------------------------------------------------------------------------------------------- bad data


def _bad_case(tmp: Path, case: str) -> tuple[dict, str]:
    """-> (config, the file name the error must mention)."""
    i, m = _pair(tmp / "src", n=2, h=32, w=32)
    if case == "shape_mismatch":
        _stack(m, np.zeros((2, 32, 16), np.uint8))
        return _cfg(i, m), m.name
    if case == "mask_values":
        mask = np.zeros((2, 32, 32), np.uint8)
        mask[0, :3, 0] = [1, 2, 3]
        _stack(m, mask)
        return _cfg(i, m), m.name
    if case == "corrupt":
        i.write_bytes(b"II*\x00garbage" * 10)
        return _cfg(i, m), i.name
    if case == "missing":
        return _cfg(i, tmp / "src" / "nope.tif"), "nope.tif"
    if case == "too_small":
        return _cfg(i, m, patch_size=64), i.name
    if case == "test_missing":
        return _cfg(i, m, test_images=str(tmp / "t.tif"), test_masks=str(m)), "t.tif"
    imgs, msks = tmp / "imgs", tmp / "msks"
    imgs.mkdir()
    msks.mkdir()
    if case == "empty_folder":
        return _cfg(imgs, msks, kind="folders"), "imgs"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(imgs / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(imgs / "b.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(msks / "a.png")
    if case == "unpaired":
        return _cfg(imgs, msks, kind="folders"), "b.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(msks / "b.png")
    if case == "mixed_mask_values":
        Image.fromarray(np.array([[0, 1] * 16] * 32, np.uint8)).save(msks / "a.png")
        Image.fromarray(np.array([[0, 255] * 16] * 32, np.uint8)).save(msks / "b.png")
        return _cfg(imgs, msks, kind="folders"), "b.png"
    if case == "corrupt_png":
        (msks / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        return _cfg(imgs, msks, kind="folders"), "b.png"
    if case == "folder_is_file":
        return _cfg(i, msks, kind="folders"), i.name
    raise AssertionError(case)


BAD_CASES = ["shape_mismatch", "mask_values", "corrupt", "missing", "too_small", "test_missing", "empty_folder",
             "unpaired", "mixed_mask_values", "corrupt_png", "folder_is_file"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_data_is_a_user_error_and_caches_nothing(tmp_path, case):
    cfg, name = _bad_case(tmp_path, case)
    with pytest.raises(UserError) as info:
        prepare(cfg, tmp_path / "cache", tmp_path / "data")
    message = str(info.value)
    assert name in message and "\n" not in message
    leftover = [p for p in (tmp_path / "cache").rglob("*") if p.name != cache.LOCK_NAME] \
        if (tmp_path / "cache").exists() else []
    assert leftover == []


def test_bad_config_values():
    with pytest.raises(UserError, match="did you mean 'patch_size'"):
        prepare({"kind": "synthetic", "patchsize": 16}, Path("/nonexistent"), Path("/nonexistent"))
    with pytest.raises(UserError, match="test_images and test_masks"):
        prepare(_cfg("a", "b", test_images="x"), Path("/nonexistent"), Path("/nonexistent"))


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthesize_is_deterministic_and_plausible(tmp_path):
    a = synthesize(tmp_path / "a", 3, 64, 80, seed=7)
    b = synthesize(tmp_path / "b", 3, 64, 80, seed=7)
    c = synthesize(tmp_path / "c", 3, 64, 80, seed=8)
    assert [p.name for p in a] == [IMAGES_NAME, MASKS_NAME]
    assert a[0].read_bytes() == b[0].read_bytes() and a[1].read_bytes() == b[1].read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()
    img, mask = tifffile.imread(a[0]), tifffile.imread(a[1])
    assert img.shape == mask.shape == (3, 64, 80) and img.dtype == mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert 0.05 <= (mask > 0).mean() <= 0.40
    # Mitochondria are darker than the rest on average, but not separable by intensity alone.
    assert img[mask > 0].mean() < img[mask == 0].mean()
    assert img.std() > 10
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_cli_data_synth_and_info(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--slices", "2", "--height", "40", "--width", "40",
                 "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert str(out / IMAGES_NAME) in text and "mask fraction" in text
    assert tifffile.imread(out / IMAGES_NAME).shape == (2, 40, 40)
    assert main(["data", "info", "--images", str(out / IMAGES_NAME), "--masks", str(out / MASKS_NAME),
                 "--patch-size", "16"]) == 0
    text = capsys.readouterr().out
    assert "2 slice(s) of 40x40" in text and "8 of 16x16" in text
    assert main(["data", "info", "--images", str(out / IMAGES_NAME), "--masks", str(tmp_path / "x.tif")]) == 2
    assert "x.tif" in capsys.readouterr().err
