"""Synthesize, inspect or pre-build a study's data.

  hpc-unet data synth --out DIR [--slices N --height H --width W --seed S]
  hpc-unet data info --images A --masks B [--patch-size P]
  hpc-unet data prepare --study DIR     (build the study's patch cache now, e.g. before submitting)
  hpc-unet data nuclei --wheel stardist-0.9.2-*.whl --out DIR   (real nuclei from a PyPI wheel, docs/transfer.md)
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("synth", help="write a synthetic EM-like stack (training.tif + training_groundtruth.tif)")
    p.add_argument("--out", required=True, help="folder to write into (created if missing)")
    p.add_argument("--slices", type=int, default=8, help="number of slices (default 8)")
    p.add_argument("--height", type=int, default=256, help="slice height in pixels (default 256)")
    p.add_argument("--width", type=int, default=256, help="slice width in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")

    p = sub.add_parser("info", help="check a dataset and print shapes, counts and the mask fraction")
    p.add_argument("--images", required=True, help="image TIFF stack, or folder of images")
    p.add_argument("--masks", required=True, help="mask TIFF stack, or folder of masks paired by file stem")
    p.add_argument("--patch-size", type=int, default=256, help="patch size to count patches for (default 256)")
    p.add_argument("--normalize", default="auto", help="[data] normalize to check: auto (default), dtype, minmax "
                   "or percentile")
    p.add_argument("--normalize-per", default="image", help="[data] normalize_per: image (default) or dataset")
    p.add_argument("--percentile-low", type=float, default=1.0, help="[data] percentile_low (default 1)")
    p.add_argument("--percentile-high", type=float, default=99.8, help="[data] percentile_high (default 99.8)")
    p.add_argument("--mask", default="binary", help="[data] mask: binary (default) or labels (values > 0 are "
                   "foreground)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("prepare", help="build the patch cache of every data setting in a study's manifest")
    p.add_argument("--study", required=True, help="study directory (made by `hpc-unet manifest`)")

    p = sub.add_parser("nuclei", help="real annotated fluorescence nuclei from StarDist's wheel (BSD-3): "
                       "train/test TIFF pairs")
    p.add_argument("--wheel", required=True, help="stardist wheel (`pip download stardist==0.9.2 --no-deps -d DIR`)")
    p.add_argument("--out", required=True, help="folder to write train.tif, train_masks.tif, test.tif, test_masks.tif")


def run(args: argparse.Namespace) -> int:
    return {"synth": _synth, "info": _info, "prepare": _prepare, "nuclei": _nuclei}[args.data_command](args)


def _nuclei(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpc_unet.data.nuclei import write_nuclei

    note = write_nuclei(Path(args.wheel).expanduser(), Path(args.out).expanduser())
    print(f"wrote {args.out}: train.tif / test.tif ({note['nuclei_train']} / {note['nuclei_test']} nuclei), "
          f"labels masks ([data] mask = \"labels\"); {note['licence']}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpc_unet.errors import UserError

    for name in ("slices", "height", "width"):
        if getattr(args, name) < (1 if name == "slices" else 8):
            raise UserError(f"--{name} must be at least {1 if name == 'slices' else 8}")
    if args.seed < 0:
        raise UserError("--seed must be a non-negative integer")
    from hpc_unet.data.synth import synthesize

    images, masks = synthesize(Path(args.out), args.slices, args.height, args.width, args.seed)
    import tifffile

    m = tifffile.imread(masks)
    print(f"wrote {images} ({args.slices} x {args.height} x {args.width} uint8)")
    print(f"wrote {masks} (0/255, mask fraction {(m > 0).mean():.3f})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from hpc_unet.data import normalize
    from hpc_unet.data.sources import load_pair
    from hpc_unet.data.tiling import patch_grid
    from hpc_unet.errors import UserError
    from hpc_unet.spec import DATA_PARAMS, check_value

    if args.patch_size < 1:
        raise UserError("--patch-size must be a positive integer")
    cfg = {"normalize": args.normalize, "normalize_per": args.normalize_per,
           "percentile_low": args.percentile_low, "percentile_high": args.percentile_high, "mask": args.mask}
    for key, value in cfg.items():
        check_value("data", DATA_PARAMS, key, value)
    images, masks = Path(args.images).expanduser().resolve(), Path(args.masks).expanduser().resolve()
    kind = "folders" if images.is_dir() else "tiff"
    pair = load_pair(kind, images, masks, mask_mode=args.mask)
    scaling = normalize.plan(pair.images, cfg)
    used = normalize.range_used([normalize.normalize_stack(a, scaling) for a in pair.images])
    advice = normalize.low_range_advice(used, scaling)
    p = args.patch_size
    patches, small = 0, []
    for img, name in zip(pair.images, pair.names, strict=True):
        rows, cols = patch_grid(img.shape[1], img.shape[2], p)
        patches += img.shape[0] * rows * cols
        if rows == 0 or cols == 0:
            small.append(name)
    lo = min(float(a.min()) for a in pair.images)
    hi = max(float(a.max()) for a in pair.images)
    info = {
        "kind": kind, "images": str(images), "masks": str(masks),
        "count": pair.count, "count_unit": "slices" if kind == "tiff" else "files",
        "image_shape": pair.image_shape(), "image_dtype": pair.dtype, "value_range": [lo, hi],
        "scaling": scaling, "range_used": round(used, 6), "mask": args.mask, "mask_objects": pair.mask_objects,
        "warnings": [advice] if advice else [], "mask_values": pair.mask_values,
        "mask_fraction": round(pair.mask_fraction(), 6),
        "patch_size": p, "patches": patches, "smaller_than_patch": small,
        "images_sha256": pair.images_sha256, "masks_sha256": pair.masks_sha256,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        if advice:
            print(f"warning: {advice}", file=sys.stderr)
        return 0
    n, h, w, c = info["image_shape"]
    size = f"{h}x{w}" if h is not None else "mixed sizes"
    sizes = sorted({a.shape[1:3] for a in pair.images})
    print(f"{kind}: {images}")
    print(f"  masks:      {masks}")
    files = f"{pair.count} files, " if kind == "folders" else ""
    print(f"  images:     {files}{n} slice(s) of {size}, {c} channel(s), {pair.dtype}, values {lo:g}..{hi:g}")
    if len(sizes) > 1:
        print(f"  sizes:      {', '.join(f'{a}x{b}' for a, b in sizes[:8])}{' ...' if len(sizes) > 8 else ''}")
    print(f"  scaling:    {normalize.describe(scaling)}: the pixels span {100 * used:.1f} % of [0, 1]")
    if advice:
        print(f"  warning:    {advice}")
    objects = f", {pair.mask_objects} objects (labels > 0 per slice)" if pair.mask_objects is not None else ""
    print(f"  masks:      values {', '.join(f'{v:g}' for v in pair.mask_values)} -> foreground fraction "
          f"{info['mask_fraction']:.4f}{objects}")
    dropped = sorted({(a.shape[1] % p, a.shape[2] % p) for a in pair.images})
    print(f"  patches:    {patches} of {p}x{p} (edge pixels dropped bottom x right: "
          f"{', '.join(f'{b}x{r}' for b, r in dropped)})")
    if small:
        print(f"  warning:    {len(small)} image(s) smaller than {p}x{p}, e.g. {small[0]}; prepare will refuse them")
    print(f"  sha256:     images {pair.images_sha256[:16]}..., masks {pair.masks_sha256[:16]}...")
    if np.isclose(info["mask_fraction"], 0) or np.isclose(info["mask_fraction"], 1):
        print("  warning:    the masks are all background or all foreground; check that they are the right files")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from hpc_unet.data.prepare import prepare_study
    from hpc_unet.study import Study

    for prep in prepare_study(Study.at(args.study)):
        pv = prep.provenance
        state = "cached already" if prep.from_cache else "built"
        print(f"{state}: {prep.entry} (train {pv['patches_train']}, val {pv['patches_val']}, test "
              f"{pv['patches_test']} patches of {pv['patch_size']}, mask fraction {pv['mask_fraction']:.3f})")
    return 0
