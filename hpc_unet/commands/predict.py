"""Segment images with a trained model (sliding window, Gaussian blending, the training normalisation).

  hpc-unet predict --model runs/<exp>/model/best.keras --images stack.tif --out DIR
  hpc-unet predict --study S --best [--architecture UNet] --images FOLDER --out DIR [--masks FOLDER]
  hpc-unet predict --study S --experiment ID --images img.png --out DIR --probabilities --overlay DIR

Writes uint8 0/255 masks (a stack in, a TIFF stack out; a folder in, one file per image with the same
stem), optionally float32 probability TIFFs (DIR/probabilities/) and RGB overlays, and DIR/predict.json.
With --masks it also scores the prediction: IoU and Dice per image and overall, with 95 % intervals.
A .keras file alone is enough: patch size, channels, normalisation and threshold travel inside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    src = parser.add_argument_group("model (one of --model, or --study with --experiment or --best)")
    src.add_argument("--model", help="a .keras file saved by a study")
    src.add_argument("--study", help="study directory")
    src.add_argument("--experiment", metavar="ID", help="the experiment whose model to use")
    src.add_argument("--best", action="store_true", help="the completed run with the best validation Jaccard")
    src.add_argument("--architecture", help="with --best: the best run of this architecture")
    parser.add_argument("--images", required=True, help="a TIFF stack, a single .tif/.png image, or a folder of them")
    parser.add_argument("--out", required=True, help="folder for the masks and predict.json (created if missing)")
    parser.add_argument("--masks", help="ground truth to score against (a file for a file, a folder paired by stem)")
    parser.add_argument("--mask", choices=("binary", "labels"), help="how to read --masks (default: as the "
                        "model's training masks)")
    parser.add_argument("--probabilities", action="store_true", help="also write float32 probability TIFFs")
    parser.add_argument("--overlay", metavar="DIR", help="write RGB PNG overlays (one per slice) into DIR")
    parser.add_argument("--format", choices=("tif", "png"), help="mask file type for single images (default: the "
                        "input's; stacks are always TIFF)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the model's, 0.5)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_model(args: argparse.Namespace) -> tuple[Path, str]:
    """The .keras file the flags name, and a label for it (no TensorFlow)."""
    from hpc_unet.errors import UserError

    if args.model:
        if args.study or args.experiment or args.best:
            raise UserError("give either --model or --study (with --experiment or --best), not both")
        return Path(args.model).expanduser(), ""
    if not args.study:
        raise UserError("name a model: --model PATH.keras, or --study DIR with --experiment ID or --best")
    if bool(args.experiment) == bool(args.best):
        raise UserError("with --study give exactly one of --experiment ID or --best")
    if args.architecture and not args.best:
        raise UserError("--architecture goes with --best (the best run of that architecture)")
    from hpc_unet.predict.selection import choose
    from hpc_unet.study import Study

    run = choose(Study.at(args.study), args.experiment, args.architecture)
    return Path(run["model"]), str(run["exp_id"])


def run(args: argparse.Namespace) -> int:
    from hpc_unet.errors import UserError
    from hpc_unet.predict import images, metadata, runner

    if args.batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError("--threshold must be between 0 and 1, e.g. 0.5")
    path, label = resolve_model(args)
    if not path.exists():
        raise UserError(f"--model: {path} does not exist; pass a .keras file saved by a study")
    from hpc_unet.pathguard import check_files, check_outputs, study_inputs

    check_outputs({"--out": args.out, "--overlay": args.overlay},
                  {"--images": args.images, "--masks": args.masks, "--model": path,
                   **(study_inputs(args.study) if args.study else {})}, folders=("--out", "--overlay"))
    items = images.list_inputs(Path(args.images))
    folder_input = Path(args.images).expanduser().is_dir()
    out = Path(args.out).expanduser()
    overlay = Path(args.overlay).expanduser() if args.overlay else None
    masks = Path(args.masks).expanduser() if args.masks else None
    truth_paths = {}
    if masks is not None:
        if not masks.exists():
            raise UserError(f"--masks: {masks} does not exist; pass the ground-truth file or folder")
        truth_paths = {i.stem: images.mask_for(i, masks, folder_input) for i in items}
    inputs = [i.path for i in items] + list(truth_paths.values())
    check_files("--out", [out / f"{i.stem}.{ext}" for i in items for ext in images.FORMATS], inputs)
    if overlay is not None:  # one PNG per slice: <stem>.png, or <stem>-NNNN.png for stacks
        check_files("--overlay", [overlay / f"{i.stem}.png" for i in items], inputs)
    meta = metadata.read(path) or {}
    req = runner.Request(items=items, out=out, folder_input=folder_input, masks=masks,
                         mask_mode=args.mask or meta.get("mask", "binary"), probabilities=args.probabilities,
                         overlay=overlay, fmt=args.format or "", threshold=args.threshold, quiet=args.quiet,
                         truth_paths=truth_paths)
    from hpc_unet.predict.engine import load_model

    model = load_model(path, name=label, batch_size=args.batch_size)
    record = runner.run(model, req)
    runner.report(record, req.out)
    return 0
