"""``hpc-unet evaluate``: score a study's models on a dataset, singly and as a top-K ensemble.

Entries: the best completed run of each architecture (by validation Jaccard) and the mean of the
probabilities of the top K runs overall (an ensemble of the study's best configurations). Each model
normalises the images with its own training scaling and predicts whole images with the sliding window
of ``hpc-unet predict``; scores are pooled IoU and Dice at the model threshold with 95 % bootstrap
intervals (over images, or over patch-sized blocks when there are fewer than 10 images).

The dataset is the study's own test set, any dataset spec's (transfer: another microscope, another
lab), or image/mask files. Results go to ``<study>/analysis/evaluate/<name>.csv|json|png``, which the
report includes when present.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.data import sources
from hpc_unet.errors import UserError
from hpc_unet.predict import scores
from hpc_unet.study import Study, atomic_write, atomic_write_json

HELD_OUT_SEED_OFFSET = 1000  # synthetic studies without a test set: a fresh stack of synth_seed + 1000
CHUNK = 16


@dataclass
class Dataset:
    name: str
    description: str
    pairs: list[tuple[Path, Path]]
    mask_mode: str


def _pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    if images.is_dir():
        return sources.pair_folder_files(images, masks, "test_")
    sources.check_paths("tiff", images, masks, "test_")
    return [(images, masks)]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "dataset"


def _from_data_table(data: dict[str, Any], study: Study | None, label: str) -> Dataset:
    from hpc_unet.data.prepare import _path, ensure_synthetic, normalize_config

    cfg = normalize_config({k: v for k, v in data.items()})
    mode = cfg["mask"]
    if cfg["test_images"]:
        ti, tm = _path(cfg["test_images"]), _path(cfg["test_masks"])
        return Dataset(f"{label}test", f"test set {ti}", _pairs(ti, tm), mode)
    if cfg["kind"] == "synthetic":
        if study is None:
            raise UserError("a synthetic dataset needs --study (it is generated into the study's data folder)")
        from hpc_unet.data import cache

        images, masks = ensure_synthetic(cfg, study.data_dir, study.cache_dir / cache.LOCK_NAME)
        return Dataset(f"{label}synthetic-seed{cfg['synth_seed']}",
                       f"synthetic stack {cfg['synth_slices']}x{cfg['synth_height']}x{cfg['synth_width']}, "
                       f"seed {cfg['synth_seed']}", _pairs(images, masks), mode)
    images, masks = _path(cfg["images"]), _path(cfg["masks"])
    return Dataset(f"{label}{_safe_name(images.stem)}", f"images {images}", _pairs(images, masks), mode)


def resolve_dataset(study: Study | None, images: str | None, masks: str | None, spec: str | None,
                    mask_mode: str | None) -> Dataset:
    """``--images/--masks``, else ``--data SPEC``'s [data], else the study's own test set (a held-out
    synthetic stack for synthetic studies without one)."""
    if images or masks:
        if not (images and masks):
            raise UserError("--images and --masks go together: give both")
        i, m = Path(images).expanduser().resolve(), Path(masks).expanduser().resolve()
        return Dataset(_safe_name(i.stem), f"images {i}", _pairs(i, m), mask_mode or "binary")
    if spec:
        from hpc_unet.spec import load_spec

        s = load_spec(spec, base=Path(spec).resolve().parent)
        ds = _from_data_table(s.data, study, f"{_safe_name(s.name)}-")
        ds.mask_mode = mask_mode or ds.mask_mode
        return ds
    if study is None:
        raise UserError("name a dataset: --images A --masks B, or --data SPEC.toml (or --study for its test set)")
    from hpc_unet.data.prepare import config_from_row
    from hpc_unet.manifest import read_manifest, row_dict

    cfg = config_from_row(row_dict(read_manifest(study).iloc[0]))
    if not cfg.get("test_images"):
        if cfg.get("kind") != "synthetic":
            raise UserError(f"{study.root} has no test set ([data] test_images); pass --images/--masks or --data "
                            "SPEC.toml to evaluate on other data")
        cfg["synth_seed"] = int(cfg.get("synth_seed", 0)) + HELD_OUT_SEED_OFFSET
    ds = _from_data_table(cfg, study, "")
    ds.mask_mode = mask_mode or ds.mask_mode
    return ds


@dataclass
class Entry:
    name: str
    kind: str  # single | ensemble
    members: list[int]  # indices into the loaded models
    architecture: str
    val_jaccard: float


def plan_entries(runs: pd.DataFrame, top_k: int) -> list[Entry]:
    """Best run per architecture, then the top-K ensemble (when K >= 2 and there are that many runs)."""
    entries = []
    for arch, group in runs.groupby("architecture", sort=False):
        i = int(group.index[0])
        entries.append(Entry(str(runs.loc[i, "exp_id"]), "single", [i], str(arch), float(runs.loc[i, "best_val_jaccard"])))
    k = min(top_k, len(runs))
    if k >= 2:
        archs = sorted(set(runs["architecture"].iloc[:k]))
        entries.append(Entry(f"ensemble-top{k}", "ensemble", list(range(k)), "+".join(archs), float("nan")))
    return entries


def evaluate(models: list[Any], entries: list[Entry], dataset: Dataset, seed: int = 0,
             quiet: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every entry on every slice of the dataset; models are ``engine.LoadedModel``."""
    from hpc_unet.predict.images import read_truth

    used = sorted({m for e in entries for m in e.members})
    per_image: dict[str, list[dict[str, Any]]] = {e.name: [] for e in entries}
    blocks: dict[str, list[np.ndarray]] = {e.name: [] for e in entries}
    block = models[used[0]].patch
    for n, (ipath, mpath) in enumerate(dataset.pairs):
        raw = sources.read_image(ipath, "images")
        truth = read_truth(mpath, raw.shape[:3], dataset.mask_mode)
        for lo in range(0, len(raw), CHUNK):
            probs = {}
            for m in used:
                models[m].check_channels(raw, f"images: {ipath}")
                probs[m] = np.stack(models[m].probabilities(list(models[m].normalized(raw[lo:lo + CHUNK]))))
            for e in entries:
                # float64: the mean of K identical float32 maps is exactly that map (K copies == one model)
                mean = np.mean([probs[m] for m in e.members], axis=0, dtype=np.float64)
                thr = float(np.mean([models[m].threshold for m in e.members]))
                pred = mean > thr
                for s in range(len(pred)):
                    t = truth[lo + s]
                    name = ipath.stem if len(raw) == 1 else f"{ipath.stem}[{lo + s}]"
                    per_image[e.name].append(scores.image_row(name, t, pred[s]))
                    blocks[e.name].append(scores.block_counts(t, pred[s], block))
        if not quiet:
            print(f"evaluate: {n + 1}/{len(dataset.pairs)} file(s) scored", file=sys.stderr)
    rows, detail = [], {}
    for e in entries:
        s = scores.summarize(per_image[e.name], np.concatenate(blocks[e.name]), seed)
        rows.append({"entry": e.name, "kind": e.kind, "architecture": e.architecture,
                     "members": " ".join(models[m].name for m in e.members), "best_val_jaccard": e.val_jaccard,
                     "iou": s["iou"], "iou_lo": s["iou_ci"][0], "iou_hi": s["iou_ci"][1],
                     "dice": s["dice"], "dice_lo": s["dice_ci"][0], "dice_hi": s["dice_ci"][1],
                     "mean_image_iou": s["mean_image_iou"], "images": s["images"],
                     "interval_unit": s["interval_unit"], "interval_units": s["interval_units"]})
        detail[e.name] = {"summary": s, "per_image": per_image[e.name]}
    for row, e in zip(rows, entries, strict=True):
        # an ensemble against its best member (by validation Jaccard), on the same units: a paired bootstrap
        ref = next((r for r in entries if r.kind == "single" and r.members == e.members[:1]), None)
        if e.kind != "ensemble" or ref is None:
            row.update({"iou_vs_best_member": float("nan"), "iou_vs_best_member_lo": float("nan"),
                        "iou_vs_best_member_hi": float("nan")})
            continue
        _, a = scores.units(per_image[e.name], np.concatenate(blocks[e.name]))
        _, b = scores.units(per_image[ref.name], np.concatenate(blocks[ref.name]))
        d = scores.paired_difference(a, b, seed)
        row.update({"iou_vs_best_member": d["diff"], "iou_vs_best_member_lo": d["ci"][0],
                    "iou_vs_best_member_hi": d["ci"][1]})
    return pd.DataFrame(rows), detail


def figure(table: pd.DataFrame, title: str) -> bytes:
    """IoU with its 95 % interval per entry (PNG bytes)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(table) + 1.4))
    y = np.arange(len(table))[::-1]
    err = np.array([table["iou"] - table["iou_lo"], table["iou_hi"] - table["iou"]])
    colours = ["#1f77b4" if k == "single" else "#d62728" for k in table["kind"]]
    ax.errorbar(table["iou"], y, xerr=np.clip(err, 0, None), fmt="none", ecolor="grey", capsize=3)
    ax.scatter(table["iou"], y, c=colours, zorder=3)
    ax.set_yticks(y, table["entry"])
    ax.set_xlabel("IoU (95 % bootstrap interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write(out_dir: Path, dataset: Dataset, table: pd.DataFrame, detail: dict[str, Any], extra: dict[str, Any]
          ) -> dict[str, Path]:
    """``<name>.csv`` (the table), ``<name>.png`` (the figure), then ``<name>.json`` (everything, last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{dataset.name}.{ext}" for ext in ("csv", "png", "json")}
    atomic_write(paths["csv"], lambda tmp: table.to_csv(tmp, index=False))
    png = figure(table, f"{dataset.description} ({table['images'].iloc[0]} images)")
    atomic_write(paths["png"], lambda tmp: tmp.write_bytes(png))
    atomic_write_json(paths["json"], {"dataset": {"name": dataset.name, "description": dataset.description,
                                                  "pairs": [[str(a), str(b)] for a, b in dataset.pairs],
                                                  "mask": dataset.mask_mode},
                                      **extra, "table": table.to_dict("records"), "entries": detail})
    return paths


def job(argv: list[str]) -> int:
    """What the ``--slurm`` job runs: the same command without ``--slurm``."""
    from hpc_unet.cli import main

    code = main(["evaluate", *argv])
    if code:
        raise RuntimeError(f"hpc-unet evaluate {' '.join(argv)} exited with {code}")
    return code
