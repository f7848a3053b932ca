"""Grid spec (TOML) -> validated spec.

A spec has the tables ``[study]``, ``[data]``, ``[train]`` (settings shared by every experiment),
``[grid]`` (axes: any train setting given as a list, plus ``replicates``), ``[slurm]`` and ``[policy]``.
Every error names the table, the key and the fix, with a did-you-mean for misspellings.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError

ARCHITECTURES = ("UNet", "Attention_UNet", "Attention_ResUNet")
ARCH_SHORT = {"UNet": "unet", "Attention_UNet": "attunet", "Attention_ResUNet": "attresunet"}
LOSSES = ("focal", "bce", "dice_bce")
PRECISIONS = ("float32", "mixed_bfloat16")
DATA_KINDS = ("tiff", "folders", "synthetic")
OOM_POLICIES = ("record", "skip-larger-batches")
AUGMENTS = ("none", "d4")
DEVICES = ("auto", "gpu", "cpu")  # train/device.py
NORMALIZE_METHODS = ("auto", "dtype", "minmax", "percentile")
NORMALIZE_PER = ("image", "dataset")
MASK_KINDS = ("binary", "labels")
FREEZES = ("none", "encoder", "encoder_then_all")  # train/finetune.py


def _pos_float(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _nonneg_float(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number_in(lo: float, hi: float, *, low_open: bool = False) -> Any:
    """A finite number in [lo, hi] ((lo, hi] with ``low_open``): inf and nan fail every bound."""
    def check(v: Any) -> bool:
        return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and (v > lo if low_open else v >= lo) and v <= hi)
    return check


def _int_in(lo: int, hi: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


# Upper bounds: far above any real study, low enough that a typo (an extra zero run, inf) is caught here
# rather than as a "diverged" run or an array task that never ends.
MAX_EPOCHS = 10_000
MAX_BATCH = 4096
MAX_REPLICATES = 10_000
SEED_LIMIT = 2**32  # NumPy's seed range, which keras.utils.set_random_seed uses


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _unit(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


def _fraction(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1


# name: (default, check, what the check means)
TRAIN_PARAMS: dict[str, tuple[Any, Any, str]] = {
    "architecture": ("UNet", lambda v: v in ARCHITECTURES, f"one of {', '.join(ARCHITECTURES)}"),
    "learning_rate": (1e-3, _number_in(0, 10, low_open=True), "a positive number, at most 10"),
    "batch_size": (8, _int_in(1, MAX_BATCH), f"a positive integer, at most {MAX_BATCH}"),
    "epochs": (30, _int_in(1, MAX_EPOCHS), f"a positive integer, at most {MAX_EPOCHS}"),
    "seed": (0, _int_in(0, SEED_LIMIT - 1), "a non-negative integer below 2**32"),
    "loss": ("focal", lambda v: v in LOSSES, f"one of {', '.join(LOSSES)}"),
    "focal_gamma": (2.0, _number_in(0, 10), "a non-negative number, at most 10"),
    "class_balancing": (False, _bool, "true or false"),
    "focal_alpha": (0.25, _fraction, "a number between 0 and 1"),
    "clipnorm": (1.0, _number_in(0, 1000), "a non-negative number, at most 1000 (0 turns clipping off)"),
    "reduce_lr": (True, _bool, "true or false"),
    "reduce_lr_factor": (0.5, _fraction, "a number between 0 and 1"),
    "reduce_lr_patience": (5, _int_in(0, MAX_EPOCHS), f"a non-negative integer, at most {MAX_EPOCHS}"),
    "min_lr": (1e-6, _number_in(0, 1), "a non-negative number, at most 1"),
    "early_stopping": (True, _bool, "true or false"),
    "early_stopping_patience": (10, _int_in(0, MAX_EPOCHS), f"a non-negative integer, at most {MAX_EPOCHS}"),
    "base_filters": (64, _int_in(1, 1024), "a positive integer, at most 1024"),
    "depth": (4, lambda v: _pos_int(v) and v <= 6, "an integer from 1 to 6"),
    "dropout": (0.0, _unit, "a number in [0, 1)"),
    "batch_norm": (True, _bool, "true or false"),
    "precision": ("float32", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "jit_compile": (False, _bool, "true or false"),
    "run_eagerly": (False, _bool, "true or false (eager is faster only for tiny models on a CPU)"),
    "graph_rewrites": (True, _bool, "true or false (false skips Grappler at trace time: a faster start for "
                       "tiny CPU models, slower steps on GPUs)"),
    "augment": ("none", lambda v: v in AUGMENTS, f"one of {', '.join(AUGMENTS)} (d4: the 8 flips/90-degree rotations)"),
    "tensorboard": (False, _bool, "true or false"),
    "device": ("auto", lambda v: v in DEVICES, "one of auto, gpu, cpu (auto: a GPU is required when one was "
               "allocated; cpu: GPUs hidden)"),
    # transfer learning (docs/transfer.md)
    "init_from": ("none", lambda v: isinstance(v, str) and bool(v), "none, a .keras file, or '<study dir>:"
                  "<experiment id>' / '<study dir>:best' / '<study dir>:best:<architecture>'"),
    "freeze": ("none", lambda v: v in FREEZES, f"one of {', '.join(FREEZES)} (encoder: the contracting path and "
               "bottleneck stay as the source trained them; only with init_from)"),
    "unfreeze_epoch": (5, _pos_int, "a positive integer (freeze = encoder_then_all: epochs before all layers train)"),
    "train_fraction": (1.0, lambda v: _pos_float(v) and v <= 1, "a number in (0, 1]: the share of training "
                       "patches kept, the first ones in the split's order (the data budget)"),
}

DATA_PARAMS: dict[str, tuple[Any, Any, str]] = {
    "kind": ("tiff", lambda v: v in DATA_KINDS, f"one of {', '.join(DATA_KINDS)}"),
    "images": ("", lambda v: isinstance(v, str), "a path"),
    "masks": ("", lambda v: isinstance(v, str), "a path"),
    "test_images": ("", lambda v: isinstance(v, str), "a path or empty"),
    "test_masks": ("", lambda v: isinstance(v, str), "a path or empty"),
    "patch_size": (256, _int_in(8, 8192), "an integer from 8 to 8192"),
    "val_fraction": (0.1, _fraction, "a number between 0 and 1"),
    "split_seed": (0, _int_in(0, SEED_LIMIT - 1), "a non-negative integer below 2**32"),
    "split": ("patch", lambda v: v in SPLITS, "patch (patches split at random) or slice (whole slices, or whole "
              "files of a folder dataset, go to validation)"),
    "max_patches": (0, _int_in(0, 10**9), "a non-negative integer, at most 10**9 (0 = all patches)"),
    "synth_slices": (8, _int_in(1, 10_000), "a positive integer, at most 10000"),
    "synth_height": (256, _int_in(8, 16384), "an integer from 8 to 16384"),
    "synth_width": (256, _int_in(8, 16384), "an integer from 8 to 16384"),
    "synth_seed": (0, _int_in(0, SEED_LIMIT - 1), "a non-negative integer below 2**32"),
    "normalize": ("auto", lambda v: v in NORMALIZE_METHODS,
                  f"one of {', '.join(NORMALIZE_METHODS)} (auto: dtype for 8-bit, percentile for other integers, "
                  "minmax for floats)"),
    "percentile_low": (1.0, lambda v: _nonneg_float(v) and v < 100, "a number in [0, 100)"),
    "percentile_high": (99.8, lambda v: _pos_float(v) and v <= 100, "a number in (0, 100]"),
    "normalize_per": ("image", lambda v: v in NORMALIZE_PER, f"one of {', '.join(NORMALIZE_PER)}"),
    "mask": ("binary", lambda v: v in MASK_KINDS, f"one of {', '.join(MASK_KINDS)} (labels: every value > 0 is "
             "foreground)"),
}

SLURM_KEYS = (
    "partition", "gpu_type", "gpus_per_task", "cpus_per_task", "mem", "time", "account", "qos",
    "constraint", "array_parallelism", "sbatch", "setup", "max_array_size", "timeout_requeues", "then_analyze",
)
STUDY_KEYS = ("name", "description")
POLICY_KEYS = ("on_oom",)
TABLES = ("study", "data", "train", "grid", "slurm", "policy", "hypothesis", "analysis")
# [analysis] primary_metric: what ranks configurations ("best", recommendations, follow-ups); docs/analysis.md
PRIMARY_METRICS = ("soft_jaccard", "iou")
SPLITS = ("patch", "slice")

# [[hypothesis]] tables: the claims the analysis judges. rule -> the keys it needs (besides id, claim).
# The verdict engine (analysis/verdicts/) implements each rule; docs/analysis.md states them.
HYPOTHESIS_RULES: dict[str, tuple[str, ...]] = {
    "lr_range_best": ("learning_rate",),        # [low, high]: lrs in the range beat every lr outside it
    "best_lr": ("architecture", "learning_rate"),
    "std_falls_with_batch": ("batch_size",),    # val-loss std falls along the listed batch sizes
    "stability_gain_strongest": ("architecture",),
    "most_sensitive": ("architecture",),
    "batch_gain_largest": ("architecture",),
    "most_robust": ("architecture",),
    "baseline_stability": ("reduction",),
    "baseline_performance": (),
    "consistency": (),
    "baseline_convergence": (),
    "baseline_efficiency": (),
    "recommended_beats_median": (),
}
HYPOTHESIS_KEYS = ("id", "claim", "rule", "architecture", "learning_rate", "batch_size", "reduction")


def _hypothesis_value(where: str, key: str, value: Any) -> Any:
    """One level (or a list of levels) of a [[hypothesis]] key, checked like a grid value."""
    if key in ("id", "claim"):
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where} {key} = {value!r} is invalid: it must be a non-empty string")
        return value
    if key == "reduction":
        if not _fraction(value):
            raise UserError(f"{where} reduction = {value!r} is invalid: it must be a number between 0 and 1")
        return float(value)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise UserError(f"{where} {key} is an empty list; give at least one level")
    for v in values:
        try:
            check_value("hypothesis", TRAIN_PARAMS, key, v)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return value


def validate_hypotheses(raw: Any) -> list[dict[str, Any]]:
    """The spec's [[hypothesis]] tables, each checked: known rule, its keys present, valid levels."""
    if not isinstance(raw, list) or not all(isinstance(h, dict) for h in raw):
        raise UserError("'hypothesis' must be an array of tables ([[hypothesis]]) in the grid spec")
    out, seen = [], set()
    for i, table in enumerate(raw, start=1):
        where = f"[[hypothesis]] #{i}"
        for key in table:
            if key not in HYPOTHESIS_KEYS:
                raise _unknown(where, key, HYPOTHESIS_KEYS)
        for key in ("id", "claim", "rule"):
            if key not in table:
                raise UserError(f"{where} lacks '{key}'; every hypothesis needs id, claim and rule")
        rule = table["rule"]
        if rule not in HYPOTHESIS_RULES:
            raise UserError(f"{where} rule = {rule!r} is unknown{did_you_mean(rule, HYPOTHESIS_RULES)}; "
                            f"known rules: {', '.join(HYPOTHESIS_RULES)}")
        for key in HYPOTHESIS_RULES[rule]:
            if key not in table:
                raise UserError(f"{where} (rule {rule}) lacks '{key}'; add it (see manifests/seed-grid.toml)")
        if rule == "lr_range_best" and (not isinstance(table["learning_rate"], list)
                                        or len(table["learning_rate"]) != 2):
            raise UserError(f"{where} (rule lr_range_best) learning_rate must be [low, high]")
        entry = {k: _hypothesis_value(where, k, v) for k, v in table.items() if k != "rule"}
        entry["rule"] = rule
        if entry["id"] in seen:
            raise UserError(f"{where} id '{entry['id']}' is used twice; give each hypothesis its own id")
        seen.add(entry["id"])
        out.append(entry)
    return out


def validate_analysis(table: dict[str, Any]) -> dict[str, Any]:
    """The [analysis] table with defaults: primary_metric (soft_jaccard, the seed's; or iou)."""
    for key in table:
        if key != "primary_metric":
            raise _unknown("[analysis]", key, ("primary_metric",))
    metric = table.get("primary_metric", PRIMARY_METRICS[0])
    if metric not in PRIMARY_METRICS:
        raise UserError(f"[analysis] primary_metric = {metric!r} is invalid{did_you_mean(metric, PRIMARY_METRICS)}: "
                        f"it must be one of {', '.join(PRIMARY_METRICS)}")
    return {"primary_metric": metric}


def did_you_mean(word: str, choices: Any) -> str:
    """A suggestion for a misspelt choice; case-insensitive, so 'unet' finds 'UNet'."""
    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def _unknown(where: str, key: str, allowed: Any) -> UserError:
    return UserError(
        f"unknown key '{key}' in {where}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"
    )


def check_value(table: str, params: dict[str, tuple[Any, Any, str]], key: str, value: Any) -> None:
    if key not in params:
        raise _unknown(f"[{table}]", key, params)
    _default, ok, meaning = params[key]
    if not ok(value):
        hint = ""
        if key == "architecture" or key == "loss" or key == "precision" or key == "kind":
            hint = did_you_mean(value, ARCHITECTURES if key == "architecture" else LOSSES if key == "loss"
                                else PRECISIONS if key == "precision" else DATA_KINDS)
        raise UserError(f"[{table}] {key} = {value!r} is invalid{hint}: it must be {meaning}")


@dataclass
class GridSpec:
    """A validated grid spec. ``axes`` keeps the order the user wrote; ``replicates`` repeats seeds."""

    name: str
    description: str
    data: dict[str, Any]
    train: dict[str, Any]
    axes: dict[str, list[Any]]
    replicates: int
    slurm: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    hypotheses: list[dict[str, Any]] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Hash of everything that determines the manifest (not Slurm settings)."""
        payload = json.dumps(
            {"data": self.data, "train": self.train, "axes": self.axes, "replicates": self.replicates},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _resolve_path(value: str, base: Path) -> str:
    if not value:
        return ""
    # "$$" is a literal "$" (a lone "$" that is no set variable is refused as a likely typo)
    parts = [os.path.expandvars(part) for part in value.split("$$")]
    if any("$" in part for part in parts):
        raise UserError(f"[data] path '{value}' uses an unset environment variable; export it, write a literal $ "
                        "as $$, or edit the spec")
    expanded = os.path.expanduser("$".join(parts))
    p = Path(expanded)
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``table.key=value`` strings (values parsed as TOML) -> nested dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--set '{item}' must look like table.key=value, e.g. data.images=/path/stack.tif")
        dotted, raw = item.split("=", 1)
        table, key = dotted.split(".", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(table, {})[key] = value
    return out


def load_spec(path: str | os.PathLike, overrides: list[str] | None = None, base: Path | None = None) -> GridSpec:
    """Read and validate a grid spec file. Relative data paths resolve against ``base`` (default: CWD)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"grid spec {path} does not exist; pass an existing TOML file with --grid")
    try:
        text = path.read_text()
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read grid spec {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"grid spec {path} is not valid TOML: {exc}") from exc
    for table, values in parse_overrides(overrides).items():
        raw.setdefault(table, {})
        if not isinstance(raw[table], dict):
            raise UserError(f"--set {table}.*: [{table}] is not a table in {path}")
        raw[table].update(values)
    spec = validate_spec(raw, base=base or Path.cwd())
    spec.source = text
    return spec


def _normalize_init_from(train: dict[str, Any], axes: dict[str, list[Any]], base: Path) -> None:
    """``init_from`` paths made absolute (against ``base``, like [data] paths), in [train] and the axis."""
    from hpc_unet.transfer.source import label, normalize

    train["init_from"] = normalize(train["init_from"], base)
    if "init_from" in axes:
        axes["init_from"] = [normalize(v, base) for v in axes["init_from"]]
        names: dict[str, str] = {}
        for value in axes["init_from"]:
            if names.setdefault(label(value), value) != value:
                raise UserError(f"[grid] init_from values {names[label(value)]!r} and {value!r} both name their "
                                f"experiments 'init{label(value)}'; name runs ('<study>:<experiment id>') or "
                                "files instead, or split the grid into two studies")


def validate_spec(raw: dict[str, Any], base: Path) -> GridSpec:
    for table in raw:
        if table not in TABLES:
            raise _unknown("the grid spec", table, TABLES)
        if table != "hypothesis" and not isinstance(raw[table], dict):
            raise UserError(f"'{table}' must be a table ([{table}]) in the grid spec")

    study = raw.get("study", {})
    for key in study:
        if key not in STUDY_KEYS:
            raise _unknown("[study]", key, STUDY_KEYS)
    name = str(study.get("name", "study"))

    data = {k: v[0] for k, v in DATA_PARAMS.items()}
    for key, value in raw.get("data", {}).items():
        if key == "train_fraction":
            continue  # moved to [train] below
        check_value("data", DATA_PARAMS, key, value)
        data[key] = value
    if data["kind"] in ("tiff", "folders"):
        for key in ("images", "masks"):
            if not data[key]:
                raise UserError(f"[data] {key} is required for kind = '{data['kind']}'; set it to a path")
    if bool(data["test_images"]) != bool(data["test_masks"]):
        raise UserError("[data] test_images and test_masks go together: set both or neither")
    if data["percentile_low"] >= data["percentile_high"]:
        raise UserError(f"[data] percentile_low = {data['percentile_low']} must be below percentile_high = "
                        f"{data['percentile_high']} (e.g. 1 and 99.8)")
    for key in ("images", "masks", "test_images", "test_masks"):
        data[key] = _resolve_path(data[key], base)

    train = {k: v[0] for k, v in TRAIN_PARAMS.items()}
    for key, value in raw.get("train", {}).items():
        check_value("train", TRAIN_PARAMS, key, value)
        train[key] = value

    if "train_fraction" in raw.get("data", {}):  # the data budget is a row setting (a grid axis): kept in train
        if "train_fraction" in raw.get("train", {}):
            raise UserError("train_fraction is set in both [data] and [train]; keep one")
        check_value("data", {"train_fraction": TRAIN_PARAMS["train_fraction"]}, "train_fraction",
                    raw["data"]["train_fraction"])
        train["train_fraction"] = raw["data"]["train_fraction"]
    axes: dict[str, list[Any]] = {}
    replicates = 1
    for key, value in raw.get("grid", {}).items():
        if key == "replicates":
            if not _int_in(1, MAX_REPLICATES)(value):
                raise UserError(f"[grid] replicates = {value!r} is invalid: it must be a positive integer, at most "
                                f"{MAX_REPLICATES}")
            replicates = value
            continue
        if key not in TRAIN_PARAMS:
            raise _unknown("[grid]", key, [*TRAIN_PARAMS, "replicates"])
        values = value if isinstance(value, list) else [value]
        if not values:
            raise UserError(f"[grid] {key} is an empty list; give at least one value")
        for v in values:
            check_value("grid", TRAIN_PARAMS, key, v)
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"[grid] {key} lists a value twice ({values}); remove the duplicate")
        axes[key] = values
    _normalize_init_from(train, axes, base)
    if "seed" in axes and replicates > 1:
        raise UserError("[grid] give either a seed axis or replicates, not both")

    depth = max([train["depth"], *axes.get("depth", [])])
    if data["patch_size"] % 2**depth:
        raise UserError(
            f"[data] patch_size = {data['patch_size']} must be divisible by 2**depth for the U-Net pooling; "
            f"choose a multiple of {2**depth} (depth {depth})"
        )

    slurm = dict(raw.get("slurm", {}))
    for key in slurm:
        if key not in SLURM_KEYS:
            raise _unknown("[slurm]", key, SLURM_KEYS)
    policy = {"on_oom": "record"}
    for key, value in raw.get("policy", {}).items():
        if key not in POLICY_KEYS:
            raise _unknown("[policy]", key, POLICY_KEYS)
        if value not in OOM_POLICIES:
            raise UserError(f"[policy] on_oom = {value!r} is invalid{did_you_mean(value, OOM_POLICIES)}: "
                            f"it must be one of {', '.join(OOM_POLICIES)}")
        policy[key] = value
    validate_analysis(raw.get("analysis", {}))
    return GridSpec(name=name, description=str(study.get("description", "")), data=data, train=train,
                    axes=axes, replicates=replicates, slurm=slurm, policy=policy,
                    hypotheses=validate_hypotheses(raw.get("hypothesis", [])))
