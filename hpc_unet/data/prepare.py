"""``prepare``: a manifest row's ``[data]`` settings -> train/val(/test) patch arrays plus provenance.

The first task of a study reads, checks, tiles and splits the data and stores the arrays in the study's
cache; every later call (36 array tasks, restarts) memory-maps them. Lookup order:

1. *stat key* (paths, sizes, mtimes, ctimes, inodes + settings) -> cache key: no source byte is read;
2. *content key* (SHA-256 of every input + settings + cache format): the sources are hashed, not decoded;
3. build under the cache lock, then write the stat pointer.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.data import cache, normalize, sources, synth
from hpc_unet.data.tiling import count_val, patch_grid, split_indices, tile
from hpc_unet.errors import UserError
from hpc_unet.spec import DATA_PARAMS, check_value
from hpc_unet.study import atomic_write_json

PATH_KEYS = ("images", "masks", "test_images", "test_masks")
NORMALIZE_KEYS = ("normalize", "normalize_per", "percentile_low", "percentile_high")


@dataclass
class Prepared:
    """Arrays of one data configuration. x: (N, P, P, C) float32 in [0, 1]; y: (N, P, P, 1) float32 in {0, 1}.

    Arrays are read-only memory maps when they come from the cache; copy before writing into them.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    provenance: dict[str, Any]
    cache_key: str
    from_cache: bool = True
    entry: Path | None = field(default=None, repr=False)

    def provenance_json(self) -> str:
        """The provenance as the one-line JSON string that result shards store."""
        return json.dumps(self.provenance, sort_keys=True, default=str)


@dataclass(frozen=True)
class _Source:
    kind: str  # "tiff" | "folders"
    images: Path
    masks: Path
    role: str  # "" | "test_"


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def normalize_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults from ``DATA_PARAMS`` and validate, so hand-edited manifests fail with a clear message."""
    out = {k: v[0] for k, v in DATA_PARAMS.items()}
    for key, value in cfg.items():
        value = str(value) if isinstance(value, os.PathLike) else _py(value)
        if key in PATH_KEYS and (value is None or (isinstance(value, float) and value != value)):
            value = ""  # pandas may hand back None/NaN for an empty path column
        check_value("data", DATA_PARAMS, key, value)
        out[key] = value
    if bool(out["test_images"]) != bool(out["test_masks"]):
        raise UserError("[data] test_images and test_masks go together: set both or neither")
    if out["percentile_low"] >= out["percentile_high"]:
        raise UserError(f"[data] percentile_low = {out['percentile_low']} must be below percentile_high = "
                        f"{out['percentile_high']} (e.g. 1 and 99.8)")
    return out


def _path(value: str) -> Path:
    return Path(os.path.expanduser(value)).resolve() if value else Path("")


def _synth_params(cfg: dict[str, Any]) -> dict[str, int]:
    return {"slices": cfg["synth_slices"], "height": cfg["synth_height"], "width": cfg["synth_width"],
            "seed": cfg["synth_seed"], "generator_version": synth.SYNTH_VERSION}


def ensure_synthetic(cfg: dict[str, Any], synth_dir: Path, lock_path: Path) -> tuple[Path, Path]:
    """Generate the study's synthetic stack once (under the lock); later calls only check the marker."""
    params = _synth_params(cfg)
    out = Path(synth_dir) / (f"synthetic-{params['slices']}x{params['height']}x{params['width']}"
                             f"-seed{params['seed']}-v{synth.SYNTH_VERSION}")
    images, masks, marker = out / synth.IMAGES_NAME, out / synth.MASKS_NAME, out / "synth.json"

    def complete() -> bool:
        try:
            meta = json.loads(marker.read_text())
            return bool(meta["params"] == params and images.stat().st_size == meta["bytes"]["images"]
                        and masks.stat().st_size == meta["bytes"]["masks"])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    if not complete():
        with cache.file_lock(lock_path, "the synthetic data"):
            if not complete():
                synth.synthesize(out, params["slices"], params["height"], params["width"], params["seed"])
                atomic_write_json(marker, {
                    "params": params,
                    "bytes": {"images": images.stat().st_size, "masks": masks.stat().st_size},
                    "sha256": {"images": sources.sha256_file(images), "masks": sources.sha256_file(masks)},
                })
    return images, masks


def _sources(cfg: dict[str, Any], synth_dir: Path, lock_path: Path) -> list[_Source]:
    if cfg["kind"] == "synthetic":
        images, masks = ensure_synthetic(cfg, synth_dir, lock_path)
        out = [_Source("tiff", images, masks, "")]
    else:
        out = [_Source(cfg["kind"], _path(cfg["images"]), _path(cfg["masks"]), "")]
    if cfg["test_images"]:
        ti, tm = _path(cfg["test_images"]), _path(cfg["test_masks"])
        kind = cfg["kind"] if cfg["kind"] != "synthetic" else ("folders" if ti.is_dir() else "tiff")
        out.append(_Source(kind, ti, tm, "test_"))
    for s in out:
        sources.check_paths(s.kind, s.images, s.masks, s.role)
    return out


def _settings(cfg: dict[str, Any], srcs: list[_Source]) -> dict[str, Any]:
    return {
        "kind": cfg["kind"], "source_kinds": [s.kind for s in srcs],
        "patch_size": cfg["patch_size"], "val_fraction": cfg["val_fraction"], "split_seed": cfg["split_seed"],
        "max_patches": cfg["max_patches"],
        **({"split": cfg["split"]} if cfg.get("split", "patch") != "patch" else {}),
        "synthetic": _synth_params(cfg) if cfg["kind"] == "synthetic" else None,
        **{k: cfg[k] for k in NORMALIZE_KEYS}, "mask": cfg["mask"],
    }


def _tiles(pair: sources.Pair, patch: int, role: str, scaling: dict[str, Any]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """All patches of a source: raw-dtype images (N, P, P, C), uint8 masks (N, P, P) and the (2, N)
    normalisation low/high of the image each patch comes from (whole-image statistics, as in predict)."""
    xs, ys, lows, highs = [], [], [], []
    dropped = [0, 0]
    for img, mask, name in zip(pair.images, pair.masks, pair.names, strict=True):
        h, w = img.shape[1:3]
        if h < patch or w < patch:
            raise UserError(f"[data] {role}images: {name} is {h}x{w} pixels, smaller than patch_size = {patch}; "
                            "lower [data] patch_size or use larger images")
        dropped = [max(dropped[0], h % patch), max(dropped[1], w % patch)]
        xs.append(tile(img, patch))
        ys.append(tile(mask, patch))
        rows, cols = patch_grid(h, w, patch)
        lo, hi = normalize.image_ranges(img, scaling)
        lows.append(np.repeat(lo, rows * cols))
        highs.append(np.repeat(hi, rows * cols))
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    y = ys[0] if len(ys) == 1 else np.concatenate(ys)
    return x, y, np.stack([np.concatenate(lows), np.concatenate(highs)]), dropped


def _slice_groups(pair: sources.Pair, patch: int) -> np.ndarray:
    """For each patch (in ``_tiles`` order) the index of the slice (or folder file) it was cut from."""
    groups, offset = [], 0
    for img in pair.images:
        rows, cols = patch_grid(img.shape[1], img.shape[2], patch)
        groups.append(np.repeat(np.arange(offset, offset + img.shape[0]), rows * cols))
        offset += img.shape[0]
    return np.concatenate(groups)


def _split(cfg: dict[str, Any], pair: sources.Pair, patch: int, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, val, description). ``split = "slice"`` sends whole slices (whole files of a folder dataset) to
    validation, so no validation patch has a neighbour from the same slice in training."""
    if cfg.get("split", "patch") != "slice":
        train, val = split_indices(n, cfg["val_fraction"], cfg["split_seed"], cfg["max_patches"])
        return train, val, "patch-level seeded permutation (numpy PCG64)"
    unit = "slices" if pair.kind == "tiff" else "files"
    rng = np.random.default_rng(cfg["split_seed"])
    chosen = np.arange(n)
    if 0 < cfg["max_patches"] < n:
        chosen = np.sort(rng.choice(n, size=cfg["max_patches"], replace=False))
    groups = _slice_groups(pair, patch)[chosen]
    ids = rng.permutation(np.unique(groups))
    counts = np.array([np.count_nonzero(groups == i) for i in ids])
    k = int(np.searchsorted(np.cumsum(counts), count_val(len(chosen), cfg["val_fraction"]))) + 1
    if k >= len(ids):
        raise UserError(f"[data] split = 'slice' needs at least 2 {unit} with patches (found {len(ids)}) so that "
                        f"both training and validation get whole {unit}; use split = 'patch' or add data")
    is_val = np.isin(groups, ids[:k])
    names = ", ".join(str(int(i)) for i in sorted(ids[:k]))
    return (chosen[~is_val], chosen[is_val],
            f"slice-level: whole {unit} go to validation (seeded, numpy PCG64); validation {unit} (0-based): {names}")


def _as_target(y: np.ndarray) -> np.ndarray:
    return y.astype(np.float32)[..., None]


def _fraction(y: np.ndarray) -> float:
    return round(float(np.count_nonzero(y)) / max(1, y.size), 6)


def build(cfg: dict[str, Any], srcs: list[_Source], expected: dict[str, str]
          ) -> tuple[dict[str, np.ndarray | None], dict[str, Any]]:
    """Read, check, tile, scale and split. Raises UserError before anything is written."""
    patch = cfg["patch_size"]
    pairs = [sources.load_pair(s.kind, s.images, s.masks, s.role, cfg["mask"]) for s in srcs]
    for s, pair in zip(srcs, pairs, strict=True):
        for key, got in ((f"{s.role}images", pair.images_sha256), (f"{s.role}masks", pair.masks_sha256)):
            if expected.get(key) and expected[key] != got:
                path = s.images if key.endswith("images") else s.masks
                raise UserError(f"[data] {key}: {path} changed while it was being read; "
                                "rerun once nothing writes to it")
    train_pair = pairs[0]
    if len(pairs) > 1 and pairs[1].channels != train_pair.channels:
        raise UserError(f"[data] test_images: {pairs[1].images_path} has {pairs[1].channels} channel(s) but the "
                        f"training images have {train_pair.channels}; use the same channel count")
    scaling = normalize.plan(train_pair.images, cfg)
    x_raw, y_raw, ranges, dropped = _tiles(train_pair, patch, "", scaling)
    train_idx, val_idx, split_text = _split(cfg, train_pair, patch, len(x_raw))
    arrays: dict[str, np.ndarray | None] = {
        "train_x": normalize.apply(x_raw[train_idx], *ranges[:, train_idx]), "train_y": _as_target(y_raw[train_idx]),
        "val_x": normalize.apply(x_raw[val_idx], *ranges[:, val_idx]), "val_y": _as_target(y_raw[val_idx]),
        "test_x": None, "test_y": None,
    }
    used_range = normalize.range_used(arrays["train_x"])
    advice = normalize.low_range_advice(used_range, scaling)
    if advice:
        print(f"hpc-unet: warning: {advice}", file=sys.stderr)
    used = np.concatenate([train_idx, val_idx])
    prov: dict[str, Any] = {
        "kind": cfg["kind"],
        "source_kind": train_pair.kind,
        "images": str(train_pair.images_path), "masks": str(train_pair.masks_path),
        "images_sha256": train_pair.images_sha256, "masks_sha256": train_pair.masks_sha256,
        "count": train_pair.count, "count_unit": "slices" if train_pair.kind == "tiff" else "files",
        "image_shape": train_pair.image_shape(), "image_dtype": train_pair.dtype,
        "channels": train_pair.channels, "mask_values": train_pair.mask_values,
        "scaling": scaling, "range_used": round(used_range, 6), "mask": cfg["mask"],
        "mask_objects": train_pair.mask_objects,
        "patch_size": patch, "edge_dropped_pixels": {"bottom": dropped[0], "right": dropped[1]},
        "patches_total": int(len(x_raw)), "patches_used": int(len(used)),
        "patches_train": int(len(train_idx)), "patches_val": int(len(val_idx)), "patches_test": 0,
        "val_fraction": cfg["val_fraction"], "split_seed": cfg["split_seed"], "max_patches": cfg["max_patches"],
        "split": split_text, "split_mode": cfg.get("split", "patch"),
        "mask_fraction": _fraction(y_raw[used]),
        "mask_fraction_train": _fraction(y_raw[train_idx]), "mask_fraction_val": _fraction(y_raw[val_idx]),
        "mask_fraction_source": round(train_pair.mask_fraction(), 6),
        "test_images": "", "test_masks": "", "test_images_sha256": "", "test_masks_sha256": "",
        "test_count": 0, "test_image_shape": None, "mask_fraction_test": None,
        "synthetic": _synth_params(cfg) if cfg["kind"] == "synthetic" else None,
    }
    del x_raw, y_raw
    if len(pairs) > 1:
        tp = pairs[1]
        tx, ty, test_ranges, _ = _tiles(tp, patch, "test_", scaling)
        arrays["test_x"], arrays["test_y"] = normalize.apply(tx, *test_ranges), _as_target(ty)
        prov.update({
            "test_images": str(tp.images_path), "test_masks": str(tp.masks_path),
            "test_images_sha256": tp.images_sha256, "test_masks_sha256": tp.masks_sha256,
            "test_count": tp.count, "test_image_shape": tp.image_shape(),
            "patches_test": int(len(tx)), "mask_fraction_test": _fraction(ty),
            "test_mask_objects": tp.mask_objects,
        })
    return arrays, prov


def _result(arrays: dict[str, np.ndarray | None], prov: dict[str, Any], key: str, srcs: list[_Source],
            cache_dir: Path, from_cache: bool) -> Prepared:
    prov = dict(prov)
    for s in srcs:  # the same content may have been cached from another location: report where it is now
        prov[f"{s.role}images"], prov[f"{s.role}masks"] = str(s.images), str(s.masks)
    assert arrays["train_x"] is not None and arrays["train_y"] is not None
    assert arrays["val_x"] is not None and arrays["val_y"] is not None
    return Prepared(train_x=arrays["train_x"], train_y=arrays["train_y"], val_x=arrays["val_x"],
                    val_y=arrays["val_y"], test_x=arrays["test_x"], test_y=arrays["test_y"], provenance=prov,
                    cache_key=key, from_cache=from_cache, entry=cache.entry_dir(cache_dir, key))


def prepare(cfg: dict[str, Any], cache_dir: Path, synth_dir: Path) -> Prepared:
    """Arrays and provenance for ``cfg`` (the keys of ``DATA_PARAMS``), built once per study and cached.

    Safe to call from many processes at once: one builds under the lock, the others wait and load.
    Bad data raises UserError naming the file, and nothing is cached.
    """
    cfg = normalize_config(cfg)
    cache_dir = Path(cache_dir)
    new_dir = not cache_dir.exists()
    lock_path = cache_dir / cache.LOCK_NAME
    srcs = _sources(cfg, Path(synth_dir), lock_path)
    settings = _settings(cfg, srcs)

    stat_key = cache.make_key({"settings": settings, "stats": [
        [sources.stat_fingerprint(s.kind, s.images), sources.stat_fingerprint(s.kind, s.masks)] for s in srcs]})
    known = cache.lookup(cache_dir, stat_key)
    if known is not None:
        hit = cache.read_entry(cache_dir, known)
        if hit is not None:
            return _result(*hit, known, srcs, cache_dir, from_cache=True)

    expected: dict[str, str] = {}
    for s in srcs:
        expected[f"{s.role}images"], expected[f"{s.role}masks"] = sources.digests(s.kind, s.images, s.masks, s.role)
    key = cache.make_key({"settings": settings, "sha256": expected})
    hit = cache.read_entry(cache_dir, key)
    built = False
    if hit is None:
        try:
            hit, built = _build_locked(cfg, srcs, expected, cache_dir, key, lock_path)
        except UserError:
            if new_dir:
                _remove_empty_cache(cache_dir)  # bad data: leave the study as it was
            raise
    cache.remember(cache_dir, stat_key, key)
    return _result(*hit, key, srcs, cache_dir, from_cache=not built)


def _remove_empty_cache(cache_dir: Path) -> None:
    """Remove a cache directory this call created if nothing but its lock file is in it.

    Safe while others wait on the lock: correctness never depends on the lock (entries are atomic)."""
    try:
        if {p.name for p in cache_dir.iterdir()} <= {cache.LOCK_NAME}:
            (cache_dir / cache.LOCK_NAME).unlink(missing_ok=True)
            cache_dir.rmdir()
    except OSError:
        pass


def _build_locked(cfg: dict[str, Any], srcs: list[_Source], expected: dict[str, str], cache_dir: Path, key: str,
                  lock_path: Path) -> tuple[tuple[dict[str, np.ndarray | None], dict[str, Any]], bool]:
    built = False
    with cache.file_lock(lock_path):
        hit = cache.read_entry(cache_dir, key)
        if hit is None:
            arrays, prov = build(cfg, srcs, expected)
            prov.update({"cache_key": key, "cache_format": cache.CACHE_FORMAT})
            cache.write_entry(cache_dir, key, arrays, prov)
            del arrays
            built = True
            hit = cache.read_entry(cache_dir, key)
            if hit is None:
                raise RuntimeError(f"data cache entry {cache.entry_dir(cache_dir, key)} unreadable right after writing")
    return hit, built


def config_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The ``data_<key>`` columns of a manifest row -> a ``[data]`` config (defaults for missing columns)."""
    return {k: _py(row[f"data_{k}"]) for k in DATA_PARAMS if f"data_{k}" in row}


def prepare_for_row(row: dict[str, Any], study: Any) -> Prepared:
    """``prepare`` for one manifest row of ``study`` (a ``hpc_unet.study.Study``)."""
    return prepare(config_from_row(row), study.cache_dir, study.data_dir)


def _study_configs(study: Any) -> list[dict[str, Any]]:
    """The distinct data settings in the study's manifest, in manifest order."""
    import json

    from hpc_unet.manifest import read_manifest, row_dict

    seen: set[str] = set()
    out = []
    for row in read_manifest(study).to_dict("records"):
        cfg = config_from_row(row_dict(row))
        text = json.dumps(cfg, sort_keys=True, default=str)
        if text not in seen:
            seen.add(text)
            out.append(cfg)
    return out


def prepare_study(study: Any) -> list[Prepared]:
    """Build (or find) the cache of every distinct data setting in the study's manifest, once, so the
    array tasks only load it. Runs on the login node before submitting (NumPy only)."""
    return [prepare(cfg, study.cache_dir, study.data_dir) for cfg in _study_configs(study)]


def check_study_data(study: Any) -> None:
    """Raise the UserError :func:`prepare_study` would, writing nothing (``submit --dry-run``): each data
    setting the cache does not hold yet is read, checked and tiled in memory. Synthetic training data is
    generated by hpc-unet itself, so only its test files (if any) are read."""
    for cfg in _study_configs(study):
        cfg = normalize_config(cfg)
        if cfg["kind"] == "synthetic":
            if cfg["test_images"]:
                ti, tm = _path(cfg["test_images"]), _path(cfg["test_masks"])
                kind = "folders" if ti.is_dir() else "tiff"
                sources.check_paths(kind, ti, tm, "test_")
                sources.load_pair(kind, ti, tm, "test_", cfg["mask"])
            continue
        srcs = _sources(cfg, Path(study.data_dir), Path(study.cache_dir) / cache.LOCK_NAME)
        stat_key = cache.make_key({"settings": _settings(cfg, srcs), "stats": [
            [sources.stat_fingerprint(s.kind, s.images), sources.stat_fingerprint(s.kind, s.masks)] for s in srcs]})
        known = cache.lookup(Path(study.cache_dir), stat_key)
        if known is not None and cache.entry_dir(Path(study.cache_dir), known).is_dir():
            continue  # read and checked when it was cached, and unchanged since (same sizes and mtimes)
        build(cfg, srcs, {})
