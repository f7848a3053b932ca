"""The train setting ``init_from``: which trained model a run starts from, resolved and checked without TensorFlow.

Forms: ``"none"`` (train from scratch), a ``.keras`` file, ``"<study>:<experiment id>"``, ``"<study>:best"``
(the study's best completed run by validation Jaccard) and ``"<study>:best:<architecture>"``. Relative paths
resolve against the directory ``manifest`` runs in, like ``[data]`` paths.

A ``.keras`` file is a zip archive; its ``config.json`` is the Keras model config, which names every layer
(``enc<level>_pool``, ``enc0_conv1``, ...: models/unet.py), so the architecture (the model's name), depth
(pooling layers), base filters (the first convolution), input channels and batch norm are read from it
by a zip read. Those must equal the run's, or the weights do not fit; the patch size may differ (the
network is fully convolutional).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError

NONE = "none"
FREEZES = ("none", "encoder", "encoder_then_all")
MATCHED = ("architecture", "depth", "base_filters", "channels", "batch_norm")


@dataclass(frozen=True)
class SourceModel:
    """A resolved source: the ``.keras`` path, its SHA-256 and what its config says about the network."""

    path: Path
    sha256: str
    architecture: str
    depth: int
    base_filters: int
    channels: int
    batch_norm: bool
    metadata: dict[str, Any]


def normalize(value: str, base: Path) -> str:
    """``value`` with its path made absolute (against ``base``); the selector after the study is kept."""
    if value == NONE:
        return value
    value = os.path.expandvars(value)
    if "$" in value:
        raise UserError(f"[train] init_from = {value!r} uses an unset environment variable; export it")
    if value == "best" or value.startswith("best:"):
        raise UserError(f"[train] init_from = {value!r} names no study; write '<study dir>:{value}', "
                        "e.g. '../em-study:best:UNet'")
    if value.endswith(".keras"):
        return str((base / Path(value).expanduser()).resolve())
    study, sep, selector = value.partition(":")
    if not sep or not study or not selector:
        raise UserError(f"[train] init_from = {value!r} is invalid: it must be none, a .keras file, or "
                        "'<study dir>:<experiment id>' / '<study dir>:best' / '<study dir>:best:<architecture>'")
    return f"{(base / Path(study).expanduser()).resolve()}:{selector}"


def label(value: str) -> str:
    """A short, path-free name of a source for experiment ids: scratch, best, best-unet, the run's id."""
    if value == NONE:
        return "scratch"
    if value.endswith(".keras"):
        path = Path(value)
        text = path.parent.parent.name if path.parent.name == "model" else path.stem
    else:
        text = value.rpartition(":")[2] if value.count(":") == 1 else "-".join(value.split(":")[1:])
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-") or "model"


def resolve_path(value: str) -> Path:
    """The ``.keras`` file an (absolute) ``init_from`` names."""
    if value.endswith(".keras"):
        path = Path(value)
        if not path.is_file():
            raise UserError(f"[train] init_from: {path} does not exist; name a saved model "
                            "(runs/<experiment>/model/best.keras) or '<study dir>:best'")
        return path
    from hpc_unet.predict.selection import choose
    from hpc_unet.study import Study

    study_dir, _, selector = value.partition(":")
    study = Study.at(study_dir)
    if not study.root.is_dir():
        raise UserError(f"[train] init_from: study {study.root} does not exist; fix the path before ':'")
    kind, _, arch = selector.partition(":")
    try:
        if kind == "best":
            run = choose(study, architecture=arch or None)
        else:
            run = choose(study, experiment=selector)
    except UserError as exc:
        raise UserError(f"[train] init_from = {value!r}: {str(exc).replace('--experiment', 'experiment')}") from None
    return Path(run["model"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_source(path: Path) -> SourceModel:
    """What the ``.keras`` archive's config says about its network (a zip read, no TensorFlow)."""
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
            names = zf.namelist()
            meta = json.loads(zf.read("hpc_unet.json")) if "hpc_unet.json" in names else {}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"[train] init_from: {path} is not a readable .keras model ({exc}); name a model saved "
                        "by a study (runs/<experiment>/model/best.keras)") from None
    layers = config.get("config", {}).get("layers", [])
    by_name = {layer.get("config", {}).get("name", layer.get("name")): layer for layer in layers}
    first = by_name.get("enc0_conv1") or by_name.get("enc0_conv")
    inputs = [layer for layer in layers if layer.get("class_name") == "InputLayer"]
    if first is None or not inputs:
        raise UserError(f"[train] init_from: {path} is not a U-Net of this package (no layer 'enc0_conv1'); "
                        "name a model saved by a study")
    return SourceModel(
        path=path, sha256=sha256_file(path), architecture=str(config.get("config", {}).get("name", "")),
        depth=sum(1 for n in by_name if re.fullmatch(r"enc\d+_pool", str(n))),
        base_filters=int(first["config"]["filters"]),
        channels=int(inputs[0]["config"]["batch_shape"][-1]),
        batch_norm=any(layer.get("class_name") == "BatchNormalization" for layer in layers),
        metadata=meta)


def mismatch(source: SourceModel, row: dict[str, Any], channels: int | None) -> str:
    """'' when ``source`` fits the run of ``row``, else which setting differs (the first one)."""
    wanted = {"architecture": row["architecture"], "depth": int(row["depth"]),
              "base_filters": int(row["base_filters"]), "channels": channels,
              "batch_norm": bool(row["batch_norm"])}
    for key in MATCHED:
        if wanted[key] is not None and getattr(source, key) != wanted[key]:
            where = "the target data have" if key == "channels" else f"this experiment has {key} ="
            return (f"source {source.path} has {key} = {getattr(source, key)} but {where} {wanted[key]} "
                    f"({row.get('exp_id', '')}); use a source with the same {key} or set [train] {key} = "
                    f"{json.dumps(getattr(source, key))}")
    return ""


def resolve(value: str, cache: dict[str, SourceModel] | None = None) -> SourceModel:
    """``init_from`` (normalized) -> the checked source model; ``cache`` avoids hashing a file twice."""
    cache = {} if cache is None else cache
    if value not in cache:
        cache[value] = read_source(resolve_path(value))
    return cache[value]


def resolve_rows(rows: list[dict[str, Any]], channels: int | None) -> list[tuple[str, str]]:
    """(path, sha256) of each manifest row's source ('' for scratch); raises on the first mismatch."""
    cache: dict[str, SourceModel] = {}
    out = []
    for row in rows:
        if row.get("init_from", NONE) == NONE:
            out.append(("", ""))
            continue
        source = resolve(row["init_from"], cache)
        problem = mismatch(source, row, channels)
        if problem:
            raise UserError(f"[train] init_from: {problem}")
        out.append((str(source.path), source.sha256))
    return out


def data_channels(data: dict[str, Any]) -> int | None:
    """Channels of a ``[data]`` table's images from one file's header (None when that is not cheap or fails:
    the training task checks again with the data in hand)."""
    if data.get("kind") == "synthetic":
        return 1
    try:
        path = Path(data["images"])
        if path.is_dir():
            from hpc_unet.data.sources import IMAGE_EXTS

            path = next(p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_EXTS)
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                channels = series.shape[series.axes.index("S")] if "S" in series.axes else 1
        else:
            from PIL import Image

            with Image.open(path) as image:
                channels = len(image.getbands())
        return {2: 1, 4: 3}.get(channels, channels)  # gray+alpha and RGBA drop alpha (data/sources.py)
    except Exception:  # a probe only: unreadable data is reported by the data checks
        return None
