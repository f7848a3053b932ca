"""Read image/mask sources: TIFF stacks (the EPFL EM layout) and folders of files paired by stem.

Each file is read into memory once, hashed and decoded from those same bytes, so the SHA-256 in the
provenance is the hash of exactly what was decoded. Every problem a user can fix raises ``UserError`` with
one line that names the ``[data]`` key, the file and the fix; nothing is cached before all checks pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.errors import UserError

IMAGE_EXTS = (".tif", ".tiff", ".png")
KINDS = ("tiff", "folders")


@dataclass
class Pair:
    """Decoded images and binarized masks of one source (the training data or the test set).

    ``images[i]`` is ``(n, H, W, C)`` in the file's dtype, ``masks[i]`` is ``(n, H, W)`` uint8 in {0, 1};
    a TIFF stack gives one item, a folder one item per file (sizes may differ between files).
    """

    kind: str
    images_path: Path
    masks_path: Path
    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]
    images_sha256: str
    masks_sha256: str
    dtype: str
    channels: int
    mask_values: list[float] = field(default_factory=list)
    mask_objects: int | None = None

    @property
    def count(self) -> int:
        """Slices of a stack, or files of a folder."""
        return sum(a.shape[0] for a in self.images) if self.kind == "tiff" else len(self.images)

    @property
    def slices(self) -> int:
        return sum(a.shape[0] for a in self.images)

    def image_shape(self) -> list[int | None]:
        """``[slices, H, W, C]``; H and W are None when the files of a folder differ in size."""
        sizes = {a.shape[1:3] for a in self.images}
        h, w = next(iter(sizes)) if len(sizes) == 1 else (None, None)
        return [self.slices, h, w, self.channels]

    def mask_fraction(self) -> float:
        pos = sum(int(np.count_nonzero(m)) for m in self.masks)
        return pos / max(1, sum(m.size for m in self.masks))


# ----------------------------------------------------------------------------------------- paths, hashes


def check_paths(kind: str, images: Path, masks: Path, role: str = "") -> None:
    """Fail early (before any lock or cache work) on missing paths or a file/folder mix-up."""
    for key, path in ((f"{role}images", images), (f"{role}masks", masks)):
        if not str(path) or str(path) == ".":
            raise UserError(f"[data] {key} is empty; set it to the {'folder' if kind == 'folders' else 'TIFF file'}")
        if not path.exists():
            raise UserError(f"[data] {key}: {path} does not exist; fix the path in the grid spec (or --set data.{key}=...)")
        if kind == "tiff" and path.is_dir():
            raise UserError(f"[data] {key}: {path} is a folder; use kind = 'folders' for folders of images, "
                            "or point it at the TIFF file")
        if kind == "folders" and not path.is_dir():
            raise UserError(f"[data] {key}: {path} is a file, not a folder; use kind = 'tiff' for TIFF stacks")


def _image_files(folder: Path, key: str) -> list[Path]:
    try:
        files = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise UserError(f"[data] {key}: cannot list {folder} ({exc.strerror}); check its permissions") from exc
    if not files:
        raise UserError(f"[data] {key}: folder {folder} has no {'/'.join(IMAGE_EXTS)} files; "
                        "point it at the folder that holds the images")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise UserError(f"[data] {key}: {seen[p.stem].name} and {p.name} in {folder} share the stem "
                            f"'{p.stem}'; keep one of them")
        seen[p.stem] = p
    return files


def pair_folder_files(images: Path, masks: Path, role: str = "") -> list[tuple[Path, Path]]:
    """Images and masks paired by file stem; an unpaired file on either side is an error."""
    imgs = {p.stem: p for p in _image_files(images, f"{role}images")}
    msks = {p.stem: p for p in _image_files(masks, f"{role}masks")}
    for stem, p in imgs.items():
        if stem not in msks:
            raise UserError(f"[data] {role}images: {p} has no mask named '{stem}.tif/.tiff/.png' in {masks}; "
                            "add the mask or remove the image")
    for stem, p in msks.items():
        if stem not in imgs:
            raise UserError(f"[data] {role}masks: {p} has no image named '{stem}.tif/.tiff/.png' in {images}; "
                            "add the image or remove the mask")
    return [(imgs[s], msks[s]) for s in sorted(imgs)]


def _read_bytes(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise UserError(f"[data] {key}: {path} does not exist (it vanished while reading); fix the path") from exc
    except OSError as exc:
        raise UserError(f"[data] {key}: cannot read {path} ({exc.strerror}); check its permissions") from exc


def sha256_file(path: Path, key: str = "images") -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise UserError(f"[data] {key}: cannot read {path} ({exc.strerror}); check the path and permissions") from exc


def combine_hashes(named: list[tuple[str, str]]) -> str:
    """One hash for a folder: SHA-256 over the sorted ``name<TAB>sha256`` lines."""
    text = "".join(f"{name}\t{sha}\n" for name, sha in sorted(named))
    return hashlib.sha256(text.encode()).hexdigest()


def digests(kind: str, images: Path, masks: Path, role: str = "") -> tuple[str, str]:
    """Content hashes of a source without decoding it (what the cache key is made of)."""
    if kind == "tiff":
        return sha256_file(images, f"{role}images"), sha256_file(masks, f"{role}masks")
    pairs = pair_folder_files(images, masks, role)
    return (combine_hashes([(i.name, sha256_file(i, f"{role}images")) for i, _ in pairs]),
            combine_hashes([(m.name, sha256_file(m, f"{role}masks")) for _, m in pairs]))


def stat_fingerprint(kind: str, path: Path) -> list[Any]:
    """Cheap identity of a file or folder (no reads): path, size, mtime, ctime and inode of each file.

    ctime cannot be set by users and changes on every write or replace, so an edited file never matches.
    """
    def one(p: Path) -> list[Any]:
        st = p.stat()
        return [str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    try:
        if kind == "tiff":
            return one(path)
        return [one(p) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
    except OSError:
        return [str(path), "unreadable", os.getpid()]  # never matches: forces the hashing path


# ------------------------------------------------------------------------------------------------ decoding


def _normalize_tiff(arr: np.ndarray, axes: str) -> np.ndarray:
    """tifffile series -> (n, H, W, C): samples (S) last, every other leading axis flattened into slices."""
    if "S" in axes:
        s = axes.index("S")
        arr = np.moveaxis(arr, s, -1)
        axes = axes[:s] + axes[s + 1:] + "S"
    else:
        arr = arr[..., None]
        axes = axes + "S"
    if not axes.endswith("YXS"):
        raise ValueError(f"unsupported TIFF axes {axes!r}")
    return arr.reshape((-1, *arr.shape[-3:]))


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs its complaints about a damaged file (to stderr when nothing configures logging);
    the UserError raised for it says the same in one line, so keep the log quiet meanwhile."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def _decode(data: bytes, path: Path, key: str, is_mask: bool) -> np.ndarray:
    """Bytes of one .tif/.tiff/.png -> (n, H, W, C) array in the file's own dtype."""
    fix = "re-export it (e.g. with Fiji: File > Save As > Tiff) or remove it"
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with _quiet_tifffile(), tifffile.TiffFile(io.BytesIO(data)) as tif:
                if not tif.series:
                    raise ValueError("no image data")
                series = tif.series[0]
                arr = _normalize_tiff(series.asarray(), series.axes)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise UserError(f"[data] {key}: {path} is not a readable TIFF ({type(exc).__name__}: {exc}); {fix}") from None
    else:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                mode = img.mode
                if mode in ("1", "CMYK", "YCbCr", "HSV", "LAB") or (mode == "P" and not is_mask):
                    img = img.convert("L" if mode == "1" else "RGB")
                arr = np.asarray(img)
        except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
            raise UserError(f"[data] {key}: {path} is not a readable image ({type(exc).__name__}: {exc}); {fix}") from None
        if mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)  # 16-bit PNG that Pillow widened to int32
        arr = (arr[..., None] if arr.ndim == 2 else arr)[None]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * (1 if is_mask else 255)
    if arr.dtype.kind not in "uif":
        raise UserError(f"[data] {key}: {path} has unsupported pixel type {arr.dtype}; save it as 8/16-bit grayscale or RGB")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise UserError(f"[data] {key}: {path} holds an empty image; {fix}")
    return arr


def _image_channels(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    c = arr.shape[-1]
    if c in (1, 3):
        return arr
    if c == 2:  # gray + alpha
        return arr[..., :1]
    if c == 4:  # RGBA: the alpha channel carries no image content
        return arr[..., :3]
    raise UserError(f"[data] {key}: {path} has {c} channels; images must be grayscale (1) or RGB (3)")


def _mask_plane(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    """(n, H, W, C) mask -> (n, H, W); colour masks are accepted when their colour channels are equal."""
    if arr.shape[-1] in (2, 4):  # drop alpha
        arr = arr[..., : arr.shape[-1] - 1]
    if arr.shape[-1] > 1 and not all(np.array_equal(arr[..., 0], arr[..., i]) for i in range(1, arr.shape[-1])):
        raise UserError(f"[data] {key}: {path} is a colour mask with different channels; save it as a "
                        "single-channel binary mask (e.g. 0/255)")
    return arr[..., 0]


def _distinct(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.flatnonzero(np.bincount(arr.ravel(), minlength=256)).astype(np.uint8)
    return np.unique(arr)


def _fmt_values(values: Any, limit: int = 6) -> str:
    vals = [f"{v:g}" for v in list(values)[:limit]]
    return ", ".join(vals) + (", ..." if len(values) > limit else "")


def _count_objects(mask: np.ndarray) -> int:
    """Distinct positive labels per 2-D slice, summed over slices (the instances a 2-D model sees)."""
    return sum(int(np.count_nonzero(np.unique(s[s > 0]) if s.dtype != np.uint8 else
                                    np.bincount(s.ravel(), minlength=256)[1:])) for s in mask)


def load_pair(kind: str, images: Path, masks: Path, role: str = "", mask_mode: str = "binary") -> Pair:
    """Read, check and binarize one source. ``role`` is '' or 'test_' (it prefixes the key in messages).

    ``mask_mode = "labels"`` takes every value > 0 as foreground (label images: one integer per object) and
    counts the objects; ``"binary"`` wants at most two values."""
    ikey, mkey = f"{role}images", f"{role}masks"
    check_paths(kind, images, masks, role)
    files = [(images, masks)] if kind == "tiff" else pair_folder_files(images, masks, role)
    imgs: list[np.ndarray] = []
    raw_masks: list[np.ndarray] = []
    names: list[str] = []
    img_hashes: list[tuple[str, str]] = []
    mask_hashes: list[tuple[str, str]] = []
    dtype: np.dtype | None = None
    channels = 0
    first_values: tuple[Path, set[float]] | None = None
    objects = 0
    all_values: set[float] = set()
    for ipath, mpath in files:
        idata, mdata = _read_bytes(ipath, ikey), _read_bytes(mpath, mkey)
        img_hashes.append((ipath.name, hashlib.sha256(idata).hexdigest()))
        mask_hashes.append((mpath.name, hashlib.sha256(mdata).hexdigest()))
        img = _image_channels(_decode(idata, ipath, ikey, is_mask=False), ipath, ikey)
        del idata
        mask = _mask_plane(_decode(mdata, mpath, mkey, is_mask=True), mpath, mkey)
        del mdata
        if img.shape[:3] != mask.shape:
            raise UserError(
                f"[data] {mkey}: {mpath} is {_shape(mask.shape)} but its image {ipath} is {_shape(img.shape[:3])}; "
                "images and masks must have the same slices and size: pair the right files")
        if dtype is None:
            dtype, channels = img.dtype, img.shape[-1]
        elif img.dtype != dtype or img.shape[-1] != channels:
            raise UserError(
                f"[data] {ikey}: {ipath} is {img.dtype} with {img.shape[-1]} channel(s) but {files[0][0].name} is "
                f"{dtype} with {channels}; convert all images to one type and channel count")
        if img.dtype.kind == "f" and not np.isfinite(img).all():
            raise UserError(f"[data] {ikey}: {ipath} contains NaN or infinite pixels; replace them and save again")
        if mask_mode == "labels":
            objects += _count_objects(mask)
            all_values |= {float(mask.min()), float(mask.max())}
            imgs.append(img)
            raw_masks.append(mask > 0)
            names.append(str(ipath))
            continue
        values = _distinct(mask)
        if len(values) > 2:
            raise UserError(
                f"[data] {mkey}: {mpath} has {len(values)} distinct values ({_fmt_values(values)}); a mask must be "
                "binary (two values, e.g. 0/255): threshold it and save it again, or, for a label image (one "
                "integer per object), set [data] mask = 'labels'")
        vset = {float(v) for v in values}
        if first_values is None:
            first_values = (mpath, vset)
        all_values |= vset
        if len(all_values) > 2:
            raise UserError(
                f"[data] {mkey}: {mpath} uses values {_fmt_values(sorted(vset))} but {first_values[0].name} uses "
                f"{_fmt_values(sorted(first_values[1]))}; save all masks with the same two values (e.g. 0/255)")
        imgs.append(img)
        raw_masks.append(mask)
        names.append(str(ipath))
    # Two values: the higher one is foreground (0/255, 0/1, False/True); a single value is foreground if > 0.
    values_sorted = sorted(all_values)
    fg = values_sorted[-1] if len(values_sorted) == 2 else None
    if mask_mode == "labels":
        values_sorted = [min(all_values), max(all_values)] if all_values else [0.0]
        bin_masks = [m.astype(np.uint8) for m in raw_masks]
    else:
        bin_masks = [((m == fg) if fg is not None else (m > 0)).astype(np.uint8) for m in raw_masks]
    del raw_masks
    if kind == "tiff":
        ish, msh = img_hashes[0][1], mask_hashes[0][1]
    else:
        ish, msh = combine_hashes(img_hashes), combine_hashes(mask_hashes)
    assert dtype is not None
    return Pair(kind=kind, images_path=images, masks_path=masks, images=imgs, masks=bin_masks, names=names,
                images_sha256=ish, masks_sha256=msh, dtype=str(dtype), channels=channels,
                mask_values=values_sorted, mask_objects=objects if mask_mode == "labels" else None)


def _shape(shape: tuple[int, ...]) -> str:
    n, h, w = shape[:3]
    return f"{n} slice(s) of {h}x{w}"


def read_image(path: Path, key: str = "images") -> np.ndarray:
    """One image file (TIFF stack, single TIFF page or PNG) -> ``(n, H, W, C)`` in its own dtype, C = 1 or 3,
    with the same checks as training data (what ``hpc-unet predict`` reads)."""
    img = _image_channels(_decode(_read_bytes(path, key), path, key, is_mask=False), path, key)
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise UserError(f"{key}: {path} contains NaN or infinite pixels; replace them and save again")
    return img


def read_mask(path: Path, key: str = "masks", mask_mode: str = "binary") -> np.ndarray:
    """One mask file -> ``(n, H, W)`` bool foreground: values > 0 for labels, else the higher of at most
    two values (a single value is foreground where > 0), as for training."""
    mask = _mask_plane(_decode(_read_bytes(path, key), path, key, is_mask=True), path, key)
    if mask_mode == "labels":
        return mask > 0
    values = _distinct(mask)
    if len(values) > 2:
        raise UserError(f"{key}: {path} has {len(values)} distinct values ({_fmt_values(values)}); a mask must be "
                        "binary (two values, e.g. 0/255), or pass --mask labels for a label image")
    return (mask == values[-1]) if len(values) == 2 else (mask > 0)


def image_files(folder: Path, key: str = "images") -> list[Path]:
    """The .tif/.tiff/.png files of a folder, sorted (an error when there are none)."""
    return _image_files(folder, key)
