"""Inputs and outputs of ``hpc-unet predict``: image files in, masks/probabilities/overlays out. No TensorFlow.

Input: a TIFF stack or a single image (one output file with as many slices), or a folder of
``.tif/.tiff/.png`` files (one output per file, same stem). Masks are uint8 0/255 (what Fiji and the
training data use); probabilities are float32 TIFFs; overlays are RGB PNGs, one per slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpc_unet.data import sources
from hpc_unet.errors import UserError
from hpc_unet.study import atomic_write

FORMATS = ("tif", "png")


@dataclass(frozen=True)
class Item:
    """One input file; ``read()`` decodes it to ``(n, H, W, C)`` in its own dtype."""

    path: Path
    stem: str

    def read(self) -> np.ndarray:
        return sources.read_image(self.path, "--images")


def list_inputs(images: Path) -> list[Item]:
    """The files behind ``--images`` (a file, or a folder's image files sorted by name)."""
    images = Path(images).expanduser()
    if not images.exists():
        raise UserError(f"--images: {images} does not exist; pass a TIFF stack, an image or a folder of images")
    if images.is_dir():
        return [Item(p, p.stem) for p in sources.image_files(images, "--images")]
    if images.suffix.lower() not in sources.IMAGE_EXTS:
        raise UserError(f"--images: {images} is not a .tif/.tiff/.png file; convert it or pass a folder")
    return [Item(images, images.stem)]


def mask_for(item: Item, masks: Path, folder_input: bool) -> Path:
    """The ground-truth file of ``item``: ``masks`` itself for a file input, the same stem in a folder."""
    if not folder_input:
        if masks.is_dir():
            raise UserError(f"--masks: {masks} is a folder but --images is one file; pass the mask file")
        return masks
    if not masks.is_dir():
        raise UserError(f"--masks: {masks} is a file but --images is a folder; pass the folder of masks")
    for ext in sources.IMAGE_EXTS:
        for cand in (masks / f"{item.stem}{ext}", masks / f"{item.stem}{ext.upper()}"):
            if cand.exists():
                return cand
    raise UserError(f"--masks: no mask named '{item.stem}.tif/.tiff/.png' in {masks} for {item.path}; add it "
                    "or remove the image")


def read_truth(path: Path, shape: tuple[int, int, int], mask_mode: str) -> np.ndarray:
    mask = sources.read_mask(path, "--masks", mask_mode)
    if mask.shape != shape:
        raise UserError(f"--masks: {path} is {mask.shape[0]} slice(s) of {mask.shape[1]}x{mask.shape[2]} but its "
                        f"image is {shape[0]} of {shape[1]}x{shape[2]}; pair the right files")
    return mask


def write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, array, photometric="minisblack"))


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            Image.fromarray(array).save(fh, format="PNG")

    atomic_write(path, writer)


def write_mask(out_dir: Path, item: Item, mask: np.ndarray, fmt: str) -> Path:
    """``(n, H, W)`` bool -> uint8 0/255; PNG only for single slices (a stack stays a TIFF)."""
    data = mask.astype(np.uint8) * 255
    if fmt == "png" and data.shape[0] == 1:
        path = out_dir / f"{item.stem}.png"
        write_png(path, data[0])
    else:
        path = out_dir / f"{item.stem}.tif"
        write_tiff(path, data if data.shape[0] > 1 else data[0])
    return path


def overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 view of a normalised ``(H, W, C)`` slice with the prediction tinted green; with ground
    truth, missed foreground is magenta and false foreground red."""
    base = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    rgb = (np.clip(base, 0, 1) * 255).astype(np.float32)
    tints = [(pred if truth is None else pred & truth, (0, 255, 0))]
    if truth is not None:
        tints += [(truth & ~pred, (255, 0, 255)), (pred & ~truth, (255, 0, 0))]
    for where, colour in tints:
        rgb[where] = 0.55 * rgb[where] + 0.45 * np.array(colour, np.float32)
    return rgb.round().astype(np.uint8)
