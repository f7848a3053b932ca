"""Synthetic EM-like stacks in the EPFL layout, so the whole pipeline runs without the real data.

Images are meant to be *learnable but not trivial*: the mask is the set of membrane-bounded, elongated
mitochondria-like bodies (darker interior with cristae stripes and a dark membrane ring), drawn in 3-D so
they persist over neighbouring slices; darkness alone does not identify them, because the background also
holds cell membranes, vesicles, dense granules and dark blobs without a membrane ring (distractors).
NumPy only (Gaussian blur by FFT), deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpc_unet.study import atomic_write

SYNTH_VERSION = 1
IMAGES_NAME = "training.tif"
MASKS_NAME = "training_groundtruth.tif"
TARGET_FRACTION = 0.13  # of pixels inside mitochondria (the EPFL stack has ~6%; more helps tiny smoke runs)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """2-D Gaussian blur via FFT with reflected borders (no SciPy on login nodes)."""
    if sigma <= 0:
        return img
    pad = int(3 * sigma) + 1
    p = np.pad(img, pad, mode="reflect")
    fy = np.fft.fftfreq(p.shape[0])[:, None]
    fx = np.fft.rfftfreq(p.shape[1])[None, :]
    g = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy * fy + fx * fx))
    out = np.fft.irfft2(np.fft.rfft2(p) * g, s=p.shape)
    return out[pad:-pad, pad:-pad]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance smoothed white noise: the texture of cytoplasm at scale ``sigma``."""
    n = gaussian_blur(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-8)


def _capsule_distance(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, angle: float, half_len: float,
                      radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to a rotated capsule (negative inside) and the coordinate along its axis."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    d = np.sqrt(np.maximum(np.abs(u) - half_len, 0.0) ** 2 + v * v) - radius
    return d, u


def _bbox(cy: float, cx: float, r: float, h: int, w: int) -> tuple[slice, slice] | None:
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _draw_disc(img: np.ndarray, rng: np.random.Generator, cy: float, cx: float, r: float, value: float,
               ring: float | None = None, ring_width: float = 1.0) -> None:
    """A round distractor: filled (dense granule, dark blob) or a ring with a light lumen (vesicle)."""
    box = _bbox(cy, cx, r + 2, *img.shape)
    if box is None:
        return
    yy, xx = np.mgrid[box]
    d = np.hypot(yy - cy, xx - cx) - r
    inside = np.clip(0.5 - d, 0.0, 1.0)
    sub = img[box]
    sub[:] = sub * (1 - inside) + value * inside
    if ring is not None:
        band = np.clip(1.0 - np.abs(d + ring_width / 2) / (ring_width / 2 + 0.5), 0.0, 1.0)
        sub[:] = sub * (1 - band) + ring * band


def _plan_mitochondria(rng: np.random.Generator, slices: int, h: int, w: int, scale: float) -> list[dict]:
    """Mitochondria as 3-D tubes: each has a z centre and z radius; its cross-section shrinks towards its
    ends. Their count aims at TARGET_FRACTION of the stack's pixels."""
    r_lo, r_hi = 4.0 * scale, 7.5 * scale
    mean_radius = (r_lo + r_hi) / 2
    mean_area = np.pi * mean_radius**2 + 4 * mean_radius * (1.4 * mean_radius)
    zr_lo, zr_hi = 2.5, 7.0
    mean_span = 2 * (zr_lo + zr_hi) / 2 * (2 / 3)
    z_range = slices + zr_hi * 2
    n_mito = rng.poisson(TARGET_FRACTION * h * w * z_range / (mean_area * mean_span)) + 1
    mito = []
    for _ in range(n_mito):
        radius = rng.uniform(r_lo, r_hi)
        mito.append({
            "cy": rng.uniform(0, h), "cx": rng.uniform(0, w),
            "zc": rng.uniform(-zr_hi, slices - 1 + zr_hi), "zr": rng.uniform(zr_lo, zr_hi),
            "angle": rng.uniform(0, np.pi), "radius": radius,
            "half_len": radius * rng.uniform(0.2, 2.6),
            "drift": rng.normal(0, 0.6 * scale, size=2),  # tubes are tilted against the cutting plane
            "tone": rng.uniform(0.34, 0.46),
            "cristae_period": rng.uniform(3.0, 5.0) * scale,
            "cristae_tilt": rng.normal(0, 0.25),
            "phase": rng.uniform(0, 2 * np.pi),
        })
    return mito


def _darken_membranes(img: np.ndarray, seeds: np.ndarray, yy: np.ndarray, xx: np.ndarray,
                      scale: float) -> np.ndarray:
    """Cell membranes: the boundaries of the Voronoi partition of ``seeds``, darkened."""
    dist = np.sqrt((yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2)
    two = np.partition(dist, 1, axis=0)[:2]
    gap = (two[1] - two[0]) / 2  # distance to the nearest cell boundary
    band = np.clip(1.0 - gap / (1.2 * scale + 0.5), 0.0, 1.0)
    return img * (1 - 0.55 * band)


def _draw_distractors(img: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """Not in the mask: dark blobs without a membrane, vesicles, dense granules."""
    h, w = img.shape
    area_units = h * w / (64.0 * scale) ** 2
    for _ in range(rng.poisson(0.5 * area_units)):
        _draw_disc(img, rng, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3.0, 7.0) * scale,
                   value=rng.uniform(0.38, 0.5))
    for _ in range(rng.poisson(2.0 * area_units)):
        _draw_disc(img, rng, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 3.5) * scale,
                   value=0.72, ring=0.3, ring_width=max(1.0, 0.8 * scale))
    for _ in range(rng.poisson(2.0 * area_units)):
        _draw_disc(img, rng, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.8, 1.8) * scale, value=0.22)


def _draw_mitochondrion(img: np.ndarray, mask: np.ndarray, m: dict, z: int, texture: np.ndarray,
                        yy: np.ndarray, xx: np.ndarray, membrane: float) -> None:
    """Slice ``z`` of one tube: striped interior (cristae) inside a dark membrane ring; adds it to ``mask``."""
    t = (z - m["zc"]) / m["zr"]
    if abs(t) >= 1:
        return
    f = np.sqrt(1 - t * t)
    radius, half_len = m["radius"] * f, m["half_len"] * np.sqrt(f)
    if radius < 1.5:
        return
    cy, cx = m["cy"] + z * m["drift"][0], m["cx"] + z * m["drift"][1]
    box = _bbox(cy, cx, radius + half_len + 2, *img.shape)
    if box is None:
        return
    d, u = _capsule_distance(yy[box], xx[box], cy, cx, m["angle"], half_len, radius)
    inside = np.clip(0.5 - d, 0.0, 1.0)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (u + m["cristae_tilt"] * d) / m["cristae_period"] + m["phase"])
    interior = m["tone"] - 0.12 * stripes ** 3 + 0.03 * texture[box]
    ring = np.clip(1.0 - np.abs(d + membrane / 2) / (membrane / 2 + 0.5), 0.0, 1.0)
    sub = img[box]
    sub[:] = sub * (1 - inside) + interior * inside
    sub[:] = sub * (1 - ring) + 0.17 * ring
    mask[box] |= d <= 0


def render_stack(slices: int, height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8) and masks (uint8, 0/255) of shape (slices, height, width), deterministic for ``seed``.

    The random draws keep one order (the plan of tubes and cells, then per slice: background, distractors,
    texture, noise), so a seed gives the same bytes as long as SYNTH_VERSION stays.
    """
    rng = np.random.default_rng([SYNTH_VERSION, seed])
    h, w = height, width
    scale = float(np.clip(np.sqrt(h * w) / 512.0, 0.5, 2.5))  # object sizes grow gently with the image
    yy_full, xx_full = np.mgrid[0:h, 0:w].astype(np.float32)
    mito = _plan_mitochondria(rng, slices, h, w, scale)
    # cell membranes: seeds of a Voronoi partition that drift slowly through the stack
    n_cells = max(3, int(h * w / (150.0 * scale) ** 2))
    cell_seeds = np.stack([rng.uniform(0, h, n_cells), rng.uniform(0, w, n_cells)], axis=1)
    cell_drift = rng.normal(0, 0.8 * scale, size=(n_cells, 2))
    membrane = max(1.2, 1.6 * scale)

    images = np.empty((slices, h, w), np.uint8)
    masks = np.empty((slices, h, w), np.uint8)
    for z in range(slices):
        img = (0.60 + 0.045 * smooth_noise(rng, (h, w), 1.5 * scale)
               + 0.05 * smooth_noise(rng, (h, w), 14.0 * scale)
               + rng.uniform(-0.04, 0.04) * (xx_full / w - 0.5) + rng.uniform(-0.04, 0.04) * (yy_full / h - 0.5))
        img = _darken_membranes(img, cell_seeds + z * cell_drift, yy_full, xx_full, scale)
        _draw_distractors(img, rng, scale)
        texture = smooth_noise(rng, (h, w), 1.0 * scale)
        mask = np.zeros((h, w), bool)
        for m in mito:
            _draw_mitochondrion(img, mask, m, z, texture, yy_full, xx_full, membrane)
        img = gaussian_blur(img, 0.7 * scale) + rng.normal(0, 0.035, size=(h, w))
        images[z] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        masks[z] = mask.astype(np.uint8) * 255
    return images, masks


def write_tiff(path: Path, stack: np.ndarray) -> None:
    """Write a grayscale stack atomically, one page per slice (readers see the whole file or none)."""
    import tifffile

    def writer(tmp: Path) -> None:
        tifffile.imwrite(tmp, stack, photometric="minisblack")

    atomic_write(path, writer)


def synthesize(out_dir: Path, slices: int, height: int, width: int, seed: int) -> tuple[Path, Path]:
    """Write ``training.tif`` and ``training_groundtruth.tif`` (uint8, masks 0/255) into ``out_dir``.

    The same arguments give byte-identical files; each file is replaced atomically (``prepare`` adds a
    marker file after both, so it never uses a half-written pair).
    """
    out_dir = Path(out_dir)
    images, masks = render_stack(slices, height, width, seed)
    images_path, masks_path = out_dir / IMAGES_NAME, out_dir / MASKS_NAME
    write_tiff(images_path, images)
    write_tiff(masks_path, masks)
    return images_path, masks_path
