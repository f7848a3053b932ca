"""``hpc-unet predict``: segment files with one model; optional scoring against ground truth.

Every output file is written atomically; ``predict.json`` (what ran, how fast, and the scores when
``--masks`` is given) is written last, so its presence means the run finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_unet.predict import images, scores
from hpc_unet.predict.engine import LoadedModel
from hpc_unet.predict.progress import TileProgress
from hpc_unet.study import atomic_write_json
from hpc_unet.tempfiles import OWNER, owned_stage

CHUNK = 32  # slices whose tiles share batches (bounds memory on long stacks)


@dataclass
class Request:
    """What to predict and where to write it (validated by the command before the model loads)."""

    items: list[images.Item]
    out: Path
    folder_input: bool
    masks: Path | None = None
    mask_mode: str = "binary"
    probabilities: bool = False
    overlay: Path | None = None
    fmt: str = ""
    threshold: float | None = None
    quiet: bool = False
    truth_paths: dict[str, Path] = field(default_factory=dict)


@contextlib.contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A hidden folder inside ``folder`` to write into; its files move into ``folder`` only when the block
    succeeds, so bad input met halfway (a later file with the wrong channels) leaves no partial outputs."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with owned_stage(folder, ".predict") as stage:  # also removes the stages of killed predicts
        try:
            yield stage
            for path in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != OWNER):
                target = folder / path.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: leave the file system as it was
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def run(model: LoadedModel, req: Request) -> dict[str, Any]:
    """Predict every item; return (and write as ``predict.json``) the run's record."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(staged(req.out))
        overlay = stack.enter_context(staged(req.overlay)) if req.overlay is not None else None
        record = _run(model, req, out, overlay)
    atomic_write_json(req.out / "predict.json", record)
    return record


def _run(model: LoadedModel, req: Request, out: Path, overlay: Path | None) -> dict[str, Any]:
    threshold = model.threshold if req.threshold is None else req.threshold
    rows: list[dict[str, Any]] = []
    blocks: list[np.ndarray] = []
    written: list[str] = []
    n_slices = tiles = 0
    start = time.perf_counter()
    first = None if req.folder_input else req.items[0].read()
    bar = TileProgress(len(req.items), quiet=req.quiet)
    try:
        for item in req.items:
            raw = first if first is not None else item.read()
            model.check_channels(raw, f"--images: {item.path}")
            bar.begin_file(item.path.name, model.tile_count([s.shape[:2] for s in raw]))
            norm = model.normalized(raw)
            probs_list = []
            for lo in range(0, len(norm), CHUNK):
                probs_list += model.probabilities(list(norm[lo:lo + CHUNK]), advance=bar.advance)
            probs = np.stack(probs_list)
            tiles += model.tile_count([p.shape for p in probs_list])
            n_slices += len(probs)
            pred = probs > threshold
            fmt = req.fmt or ("png" if item.path.suffix.lower() == ".png" else "tif")
            written.append(str(req.out / images.write_mask(out, item, pred, fmt).name))
            if req.probabilities:
                images.write_tiff(out / "probabilities" / f"{item.stem}.tif",
                                  probs if len(probs) > 1 else probs[0])
            truth = None
            if req.masks is not None:
                truth = images.read_truth(req.truth_paths[item.stem], pred.shape, req.mask_mode)
                for s in range(len(pred)):
                    name = item.stem if len(pred) == 1 else f"{item.stem}[{s}]"
                    rows.append({**scores.image_row(name, truth[s], pred[s]), "file": str(item.path), "slice": s})
                    blocks.append(scores.block_counts(truth[s], pred[s], model.patch))
            if overlay is not None:
                for s in range(len(pred)):
                    name = item.stem if len(pred) == 1 else f"{item.stem}-{s:04d}"
                    images.write_png(overlay / f"{name}.png",
                                     images.overlay(norm[s], pred[s], None if truth is None else truth[s]))
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    record: dict[str, Any] = {
        "model": str(model.path), "exp_id": model.meta.get("exp_id", ""), "patch_size": model.patch,
        "channels": model.channels, "scaling": model.meta.get("scaling"), "threshold": threshold,
        "inputs": [str(i.path) for i in req.items], "outputs": written, "slices": n_slices, "tiles": tiles,
        "seconds": round(seconds, 3), "images_per_second": round(n_slices / seconds, 3) if seconds else None,
        "masks": str(req.masks) if req.masks else None,
    }
    if rows:
        record["overall"] = scores.summarize(rows, np.concatenate(blocks))
        record["per_image"] = rows
    return record


def report(record: dict[str, Any], out: Path) -> None:
    """The few lines the command prints."""
    print(f"predicted {record['slices']} image(s) ({record['tiles']} tiles of {record['patch_size']}) with "
          f"{record['exp_id'] or record['model']} in {record['seconds']:.2f} s "
          f"({record['images_per_second']} images/s); masks in {out}")
    if "overall" in record:
        o = record["overall"]
        print(f"IoU {o['iou']:.4f} (95% interval {o['iou_ci'][0]:.4f}-{o['iou_ci'][1]:.4f}), Dice {o['dice']:.4f} "
              f"(95% interval {o['dice_ci'][0]:.4f}-{o['dice_ci'][1]:.4f}) over {o['images']} image(s); "
              f"per image: {out / 'predict.json'}")
    sys.stdout.flush()
