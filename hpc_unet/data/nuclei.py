"""Real annotated microscopy for transfer studies: the fluorescence nuclei image that StarDist's wheel ships.

``stardist`` (PyPI, BSD-3-Clause) carries ``stardist/data/images/img2d.tif`` (512x512, uint16 with 8-bit
values) and ``mask2d.tif`` (its nucleus labels, 0 = background): a crop from the 2018 Data Science Bowl
(Caicedo et al., Nature Methods 16, 2019; BBBC038). The files are inside the wheel (no download at import
time), so ``pip download stardist==0.9.2 --no-deps`` and this module are all it takes; stardist itself (and
its dependencies) need not be installed. The image is split into a top half (training and validation)
and a bottom half (test) so the test nuclei were never seen in training. Zip and tifffile only.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from hpc_unet.errors import UserError
from hpc_unet.study import atomic_write, atomic_write_text

MEMBERS = {"images": "stardist/data/images/img2d.tif", "masks": "stardist/data/images/mask2d.tif"}
FILES = ("train.tif", "train_masks.tif", "test.tif", "test_masks.tif")


def _read_wheel(wheel: Path) -> tuple[np.ndarray, np.ndarray, str, dict[str, str]]:
    import io

    import tifffile

    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = {k: zf.read(v) for k, v in MEMBERS.items()}
            licence = next((zf.read(n).decode() for n in zf.namelist()
                            if n.endswith(("LICENSE.txt", "LICENSE")) and ".dist-info/" in n), "")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise UserError(f"--wheel {wheel}: not a stardist wheel with {MEMBERS['images']} ({exc}); get one with "
                        "`pip download stardist==0.9.2 --no-deps -d DIR`") from None
    image = tifffile.imread(io.BytesIO(raw["images"]))
    mask = tifffile.imread(io.BytesIO(raw["masks"]))
    return image, mask, licence, {k: hashlib.sha256(v).hexdigest() for k, v in raw.items()}


def write_nuclei(wheel: Path, out: Path) -> dict[str, object]:
    """Write train/test TIFF pairs (top/bottom halves) plus the licence and a source note; return the note."""
    import tifffile

    image, mask, licence, digests = _read_wheel(Path(wheel))
    if image.ndim != 2 or image.shape != mask.shape:
        raise UserError(f"--wheel {wheel}: expected one 2D image and its mask, got {image.shape} and {mask.shape}")
    half = image.shape[0] // 2
    parts = {"train.tif": image[:half], "train_masks.tif": mask[:half],
             "test.tif": image[half:], "test_masks.tif": mask[half:]}
    out.mkdir(parents=True, exist_ok=True)
    for name, array in parts.items():
        atomic_write(out / name, lambda tmp, a=array: tifffile.imwrite(tmp, np.ascontiguousarray(a)))
    note = {"source": f"{Path(wheel).name}: {MEMBERS['images']}, {MEMBERS['masks']}",
            "sha256": digests, "licence": "BSD-3-Clause (stardist); image from the 2018 Data Science Bowl (BBBC038)",
            "split": f"rows 0..{half - 1} -> train.tif (training + validation), rows {half}.. -> test.tif",
            "shape": list(image.shape), "nuclei_train": int(len(np.unique(mask[:half])) - 1),
            "nuclei_test": int(len(np.unique(mask[half:])) - 1)}
    atomic_write_text(out / "SOURCE.json", json.dumps(note, indent=2) + "\n")
    if licence:
        atomic_write_text(out / "LICENSE-stardist.txt", licence)
    return note
